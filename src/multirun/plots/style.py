"""Shared figure conventions: one palette, one way to save."""

from __future__ import annotations

import os
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from multirun.contracts import save_with  # noqa: E402

#: colours of the three inference methods, the same in every figure
METHOD_COLORS = {"kernel": "tab:red", "ensemble": "tab:blue", "single": "tab:gray"}


def save_figure(fig: plt.Figure, paths: Sequence[str | os.PathLike], dpi: int = 150) -> None:
    """Save ``fig`` to each path (format from the suffix) atomically, then close it."""
    for path in paths:
        fmt = os.path.splitext(str(path))[1].lstrip(".")
        save_with(path, lambda tmp, fmt=fmt: fig.savefig(tmp, format=fmt, dpi=dpi,
                                                          bbox_inches="tight"))
    plt.close(fig)
