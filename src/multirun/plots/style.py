"""Shared figure conventions: one palette, one way to save."""

from __future__ import annotations

import os
from collections.abc import Sequence

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from multirun.contracts import save_with  # noqa: E402

#: line style of each inference method, the same in every figure that draws it: the kernel
#: (k-NN on the ensemble kernel; ``kernel_raw``: on raw logits), the logit-averaging ensemble
#: (``ensemble``; the label-error study's ensemble margin) and one model (``single``)
METHOD_STYLES = {
    "kernel": {"color": "tab:red", "linestyle": "-", "marker": "o"},
    "kernel_raw": {"color": "tab:red", "linestyle": "-.", "marker": "s"},
    "ensemble": {"color": "tab:blue", "linestyle": "--", "marker": "^"},
    "single": {"color": "tab:gray", "linestyle": ":", "marker": "v"},
}
#: colours of the methods (from METHOD_STYLES)
METHOD_COLORS = {m: s["color"] for m, s in METHOD_STYLES.items() if m != "kernel_raw"}


def method_style(method: str, **overrides) -> dict:
    """matplotlib line keywords of ``method`` (a key of METHOD_STYLES) with ``gid=method``, so
    that the line can be found again (tests), updated by ``overrides``."""
    return {**METHOD_STYLES[method], "gid": method, **overrides}


def show_image(ax, image) -> None:
    """Draw one example image on ``ax``: (H, W) in grey, (H, W, 3) in colour, pixels unblurred."""
    ax.imshow(image, cmap="gray" if np.ndim(image) == 2 else None, interpolation="nearest")


def save_figure(fig: plt.Figure, paths: Sequence[str | os.PathLike], dpi: int = 150) -> None:
    """Save ``fig`` to each path (format from the suffix) atomically, then close it."""
    for path in paths:
        fmt = os.path.splitext(str(path))[1].lstrip(".")
        save_with(path, lambda tmp, fmt=fmt: fig.savefig(tmp, format=fmt, dpi=dpi,
                                                          bbox_inches="tight"))
    plt.close(fig)
