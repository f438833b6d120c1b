"""Figures: shared style (``style``), neighbour interpretability (``neighbours``), spectra."""
