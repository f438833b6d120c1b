"""The width x depth figure (the effective-dimensionality write-up's second figure).

Heatmaps over (width, depth) of the whole-spectrum effective dimensionality, its top-k
lower bound, the test loss and the train loss, with curves of equal parameter count and
the edge of the (nearly) interpolating models. Input: rows of ``scripts/effdim.py``'s
CSV (or columns). Returns the figure; save it with :func:`multirun.plots.style.save_figure`.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import patheffects  # noqa: E402

from multirun.plots.spectra import _columns  # noqa: E402

PANELS = (
    ("effective_dimension", r"$N_\mathrm{eff}(H, z)$, whole spectrum (SLQ)", "viridis"),
    ("effective_dimension_topk", r"$N_\mathrm{eff}$, converged top eigenvalues (lower bound)",
     "viridis"),
    ("test_loss", "test loss", "magma"),
    ("train_loss", "train loss", "magma"),
)


def grid_means(table, z: float | None = None) -> dict[str, np.ndarray]:
    """Seed means on the grid: ``widths`` (W,), ``depths`` (D,) ascending, and per column (D, W).

    Args:
        table: rows or columns with ``width``, ``depth``, ``num_params``, ``z`` and the
            columns of :data:`PANELS`.
        z: which regulariser's rows (default: the smallest z in the table).

    Missing cells are NaN.
    """
    cols = _columns(table)
    need = ("width", "depth", "num_params", "z") + tuple(k for k, _, _ in PANELS)
    missing = [k for k in need if k not in cols]
    if missing:
        raise ValueError(f"plot_width_depth: table lacks columns {missing}")
    zs = cols["z"].astype(float)
    z = float(np.min(zs)) if z is None else float(z)
    sel = np.isclose(zs, z)
    if not sel.any():
        raise ValueError(f"plot_width_depth: no rows with z = {z:g} (have {sorted(set(zs))})")
    width, depth = cols["width"][sel].astype(int), cols["depth"][sel].astype(int)
    widths, depths = np.unique(width), np.unique(depth)
    out = {"widths": widths, "depths": depths, "z": np.float64(z)}
    for key in ("num_params",) + tuple(k for k, _, _ in PANELS):
        v = cols[key][sel].astype(float)
        grid = np.full((len(depths), len(widths)), np.nan)
        for i, d in enumerate(depths):
            for j, w in enumerate(widths):
                cell = v[(depth == d) & (width == w)]
                if cell.size:
                    grid[i, j] = cell.mean()
        out[key] = grid
    return out


def _param_levels(params: np.ndarray) -> list[float]:
    """Round parameter counts (1, 2, 5 x 10^k) strictly inside the grid's range."""
    lo, hi = np.nanmin(params), np.nanmax(params)
    levels = [m * 10.0**e for e in range(1, 9) for m in (1, 2, 5)]
    return [v for v in levels if lo < v < hi]


def _round_label(n: float) -> str:
    """2000 -> '2k', 1e5 -> '100k', 2e6 -> '2M' (labels of the equal-parameter curves)."""
    for unit, suffix in ((1e6, "M"), (1e3, "k")):
        if n >= unit:
            return f"{n / unit:g}{suffix}"
    return f"{n:g}"


def _label_spots(cs, x: np.ndarray, y: np.ndarray, clear: float = 0.3
                 ) -> list[tuple[float, float]]:
    """Where to label each contour line: its point farthest from every cell centre.

    Cells are one unit apart along both axes (log2 width, depth). A line that never
    gets ``clear`` away from a centre (a short one in a corner) stays unlabelled, so a
    label never covers a cell's value.
    """
    centres = np.stack(np.meshgrid(x, y), -1).reshape(-1, 2)
    spots = []
    for segs in cs.allsegs:
        points = np.concatenate([seg for seg in segs if len(seg)] or [np.empty((0, 2))])
        if len(points) < 2:
            continue
        # resample each path densely so the best spot is not limited to its vertices
        fine = np.concatenate([np.linspace(a, b, 12, endpoint=False)
                               for a, b in zip(points[:-1], points[1:], strict=True)])
        far = np.min(np.linalg.norm(fine[:, None, :] - centres[None], axis=-1), axis=1)
        if far.max() >= clear:
            spots.append(tuple(fine[int(np.argmax(far))]))
    return spots


def plot_width_depth(table, *, z: float | None = None, interpolating: float = 0.05,
                     title: str | None = None) -> plt.Figure:
    """Four heatmaps over width (x, log2) and depth (y) with equal-parameter curves.

    Args:
        table: see :func:`grid_means`.
        z: the regulariser whose N_eff is drawn (default: the smallest in the table).
        interpolating: train-loss level of the dashed curve that encloses the models
            that (nearly) interpolate their training set.
        title: figure title.

    Each cell is written with its value (seed mean). White curves join equal parameter
    counts (interpolated in log parameters between cells), each labelled at its point
    farthest from the cell values; the values are drawn above the curves.
    """
    g = grid_means(table, z)
    widths, depths = g["widths"], g["depths"]
    x, y = np.log2(widths), depths.astype(float)
    X, Y = np.meshgrid(x, y)
    fig, axes = plt.subplots(2, 2, figsize=(10.5, 8.2))
    levels = _param_levels(g["num_params"])
    for ax, (key, label, cmap) in zip(axes.flat, PANELS, strict=True):
        v = g[key]
        mesh = ax.pcolormesh(X, Y, v, cmap=cmap, shading="nearest")
        fig.colorbar(mesh, ax=ax, fraction=0.05, pad=0.03)
        finite = v[np.isfinite(v)]
        mid = (finite.min() + finite.max()) / 2 if finite.size else 0.0
        for i in range(len(depths)):
            for j in range(len(widths)):
                if np.isfinite(v[i, j]):
                    text = f"{v[i, j]:.0f}" if abs(v[i, j]) >= 10 else f"{v[i, j]:.2f}"
                    ax.text(x[j], y[i], text, ha="center", va="center", fontsize=7,
                            color="black" if v[i, j] > mid else "white", zorder=5,
                            bbox={"boxstyle": "square,pad=0.15", "ec": "none",
                                  "fc": mesh.cmap(mesh.norm(v[i, j]))})  # above the curves
        if levels and min(X.shape) > 1:
            cs = ax.contour(X, Y, np.log10(g["num_params"]), levels=np.log10(levels),
                            colors="white", linewidths=1.2)
            # a dark outline keeps the white curves and their labels visible on pale cells
            cs.set_path_effects([patheffects.withStroke(linewidth=2.2, foreground="0.3")])
            for curve_label in ax.clabel(cs, fmt=lambda lv: _round_label(round(10**lv)),
                                         fontsize=7, manual=_label_spots(cs, x, y)):
                curve_label.set_path_effects([patheffects.withStroke(linewidth=1.5,
                                                                     foreground="0.3")])
            tl = g["train_loss"]
            if np.nanmin(tl) < interpolating < np.nanmax(tl):
                ax.contour(X, Y, tl, levels=[interpolating], colors="tab:green",
                           linewidths=1.8, linestyles="--")
        ax.set_xticks(x, [str(w) for w in widths])
        ax.set_yticks(y, [str(d) for d in depths])
        ax.set_xlabel("width (log2 scale)")
        ax.set_ylabel("depth (hidden layers)")
        ax.set_title(label, fontsize=9)
    note = (f"z = {g['z']:g}; white: equal parameter counts; green dashed: train loss = "
            f"{interpolating:g}")
    fig.suptitle(f"{title}\n{note}" if title else note, fontsize=10)
    fig.tight_layout()
    return fig
