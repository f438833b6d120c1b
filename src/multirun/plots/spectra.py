"""Hessian spectrum figures: Ritz values and SLQ densities, and the width sweep (Figure 1).

Inputs are plain mappings of numpy arrays (what ``np.load`` of a spectrum ``.npz`` gives,
or the dicts of :func:`multirun.hessian.spectrum` / :func:`multirun.hessian.slq`), so
the functions can be driven from files or from memory. Both return the figure; save it
with :func:`multirun.plots.style.save_figure`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullLocator  # noqa: E402

from multirun.hessian import spectral_density  # noqa: E402

Spectrum = Mapping[str, np.ndarray]


def _slq_arrays(spec: Spectrum) -> tuple[np.ndarray, np.ndarray] | None:
    """(nodes, weights) from either ``slq_nodes``/``slq_weights`` or ``nodes``/``weights``."""
    for n, w in (("slq_nodes", "slq_weights"), ("nodes", "weights")):
        if n in spec and w in spec:
            return np.atleast_2d(np.asarray(spec[n], float)), np.atleast_2d(np.asarray(spec[w], float))
    return None


def _colors(n: int) -> list:
    cmap = plt.get_cmap("viridis" if n > 6 else "tab10")
    return [cmap(i / max(n - 1, 1)) if n > 6 else cmap(i) for i in range(n)]


def plot_spectrum(
    spectra: Mapping[str, Spectrum],
    *,
    sigma: float = 0.01,
    grid_points: int = 2000,
    title: str | None = None,
) -> plt.Figure:
    """Top/bottom Ritz values and SLQ densities of one or several models, overlaid.

    Args:
        spectra: label -> spectrum mapping with ``top`` (k,) descending, ``bottom`` (k,)
            ascending and optional ``top_converged``/``bottom_converged`` (bool); optional
            SLQ ``slq_nodes``/``slq_weights`` (probes, m) (or ``nodes``/``weights``).
        sigma: Gaussian broadening of the densities, relative to the common spectral range.
        grid_points: density grid size.
        title: figure title.

    Left panel: eigenvalue against rank from each end (top: rank 1 = largest; bottom:
    rank 1 = smallest, drawn with dashed lines), symmetric-log y axis so that negative
    and tiny eigenvalues stay visible; filled markers are converged Ritz values, hollow
    ones are not. Right panel (when any model has SLQ data): the broadened density on a
    log y axis.
    """
    if not spectra:
        raise ValueError("plot_spectrum needs at least one spectrum")
    has_slq = any(_slq_arrays(s) is not None for s in spectra.values())
    fig, axes = plt.subplots(1, 2 if has_slq else 1, figsize=(11 if has_slq else 5.8, 4.2),
                             squeeze=False)
    ax = axes[0, 0]
    colors = _colors(len(spectra))
    scale = 0.0
    for (label, spec), color in zip(spectra.items(), colors, strict=True):
        for end, style in (("top", "-"), ("bottom", "--")):
            vals = np.asarray(spec.get(end, []), float)
            if vals.size == 0:
                continue
            ok = np.isfinite(vals)
            conv = np.asarray(spec.get(f"{end}_converged", np.ones_like(vals, bool)), bool)
            rank = np.arange(1, len(vals) + 1)
            ax.plot(rank[ok], vals[ok], style, color=color, lw=1.2, alpha=0.8,
                    label=label if end == "top" else None)
            ax.scatter(rank[ok & conv], vals[ok & conv], s=18, color=color, zorder=3)
            ax.scatter(rank[ok & ~conv], vals[ok & ~conv], s=18, facecolors="white",
                       edgecolors=color, zorder=3)
            if ok.any():
                scale = max(scale, float(np.abs(vals[ok]).max()))
    linthresh = max(scale * 1e-3, np.finfo(float).tiny)
    ax.set_yscale("symlog", linthresh=linthresh)
    decades = ax.yaxis.get_major_formatter()  # label 0 and the decades, not +-linthresh next to 0
    ax.yaxis.set_major_formatter(FuncFormatter(
        lambda v, pos: "" if 0 < abs(v) <= 1.01 * linthresh else decades(v, pos)))
    ax.axhline(0.0, color="0.6", lw=0.8, zorder=0)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("rank from each end (top: largest first, bottom: smallest first)")
    ax.set_ylabel("Hessian eigenvalue (symlog)")
    ax.set_title("Lanczos Ritz values")
    handles, labels = ax.get_legend_handles_labels()
    handles += [Line2D([], [], color="0.3", ls="-", label="top"),
                Line2D([], [], color="0.3", ls="--", label="bottom"),
                Line2D([], [], marker="o", color="0.3", ls="", label="converged"),
                Line2D([], [], marker="o", color="0.3", mfc="white", ls="", label="not converged")]
    ncol = 2 if len(handles) > 8 else 1  # many models: a wider, shorter legend
    ax.legend(handles=handles, fontsize=7 if ncol > 1 else 8, loc="best", framealpha=0.9, ncol=ncol)
    ax.grid(alpha=0.3)

    if has_slq:
        dax = axes[0, 1]
        lo, hi = np.inf, -np.inf
        for spec in spectra.values():
            arrays = _slq_arrays(spec)
            if arrays is not None:
                lo, hi = min(lo, arrays[0].min()), max(hi, arrays[0].max())
        span = (hi - lo) or max(abs(hi), 1.0)
        s = sigma * span
        grid = np.linspace(lo - 0.05 * span - 3 * s, hi + 0.05 * span + 3 * s, grid_points)
        peak = 0.0
        for (label, spec), color in zip(spectra.items(), colors, strict=True):
            arrays = _slq_arrays(spec)
            if arrays is None:
                continue
            phi = spectral_density(arrays[0], arrays[1], grid, s)
            peak = max(peak, float(phi.max()))
            dax.plot(grid, phi, color=color, lw=1.3, label=label)
        dax.set_yscale("log")
        dax.set_ylim(peak * 1e-7, peak * 3)
        dax.set_xlabel("eigenvalue")
        dax.set_ylabel("spectral density (log)")
        dax.set_title(f"SLQ density (Gaussian, sigma = {sigma:g} x range)")
        dax.axvline(0.0, color="0.6", lw=0.8, zorder=0)
        dax.grid(alpha=0.3)
        dax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _columns(table) -> dict[str, np.ndarray]:
    """Rows (sequence of mappings) or columns (mapping of arrays) -> columns of arrays."""
    if isinstance(table, Mapping):
        return {k: np.asarray(v) for k, v in table.items()}
    rows = list(table)
    if not rows:
        raise ValueError("plot_width_sweep needs at least one row")
    return {k: np.asarray([r[k] for r in rows]) for k in rows[0]}


def _group(x: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Unique x ascending; mean, min and max of v per x (over seeds)."""
    xs = np.unique(x)
    groups = [v[x == u] for u in xs]
    return (xs, np.array([g.mean() for g in groups]), np.array([g.min() for g in groups]),
            np.array([g.max() for g in groups]))


def _band(ax, x: np.ndarray, v: np.ndarray, color) -> None:
    """Seed mean as an errorbar line (no bars) and a min..max band over seeds."""
    xs, mean, lo, hi = _group(x, v)
    ax.errorbar(xs, mean, marker="o", ms=5, lw=1.6, color=color)
    if np.any(hi > lo):
        ax.fill_between(xs, lo, hi, color=color, alpha=0.18, lw=0)


def plot_width_sweep(table, *, title: str | None = None) -> plt.Figure:
    """Train loss, test loss and effective dimensionality against width (the write-up's Figure 1).

    Args:
        table: rows (mappings) or columns with ``width``, ``num_params``, ``train_loss``,
            ``test_loss``, ``effective_dimension`` (the whole-spectrum SLQ estimate) and
            ``z`` (several z give one curve each); optional ``effective_dimension_se`` (its
            standard error) and ``effective_dimension_topk`` (the top-k lower bound).
            Several rows per (width, z) (seeds) are averaged.
        title: figure title.

    Every curve is the seed mean with a min..max band over seeds. The whole-spectrum
    N_eff is solid with bars of 2 standard errors of the seed mean's probe noise
    (``sqrt(sum se^2) / seeds``); the top-k lower bound is dashed. x axis: width on a log2
    scale (ticks at the measured widths); the parameter count of each width is written
    on a secondary top axis.
    """
    cols = _columns(table)
    need = ("width", "num_params", "train_loss", "test_loss", "effective_dimension")
    missing = [k for k in need if k not in cols]
    if missing:
        raise ValueError(f"plot_width_sweep: table lacks columns {missing}")
    width = cols["width"].astype(float)
    z = cols["z"].astype(float) if "z" in cols else np.zeros(len(width))
    zs = np.unique(z)
    first = z == zs[0]  # losses repeat for each z: take one copy
    fig, axes = plt.subplots(1, 3, figsize=(13.5, 4.3))
    panels = [("train_loss", "train loss", axes[0]), ("test_loss", "test loss", axes[1])]
    for key, label, ax in panels:
        _band(ax, width[first], cols[key].astype(float)[first], "tab:blue")
        ax.set_ylabel(label)
        ax.set_title(label)
    ax = axes[2]
    colors = _colors(len(zs)) if len(zs) > 1 else ["tab:red"]
    neff = cols["effective_dimension"].astype(float)
    for zi, color in zip(zs, colors, strict=True):
        sel = z == zi
        xs, mean, lo, hi = _group(width[sel], neff[sel])
        yerr = None
        if "effective_dimension_se" in cols:
            se = cols["effective_dimension_se"].astype(float)[sel]
            yerr = 2 * np.array([np.sqrt(np.sum(se[width[sel] == u] ** 2)) / np.sum(width[sel] == u)
                                 for u in xs])
        ax.errorbar(xs, mean, yerr=yerr, marker="o", ms=5, lw=1.6, capsize=3, color=color,
                    label=f"z = {zi:g}: whole spectrum (SLQ, $\\pm$2 SE)")
        if np.any(hi > lo):
            ax.fill_between(xs, lo, hi, color=color, alpha=0.18, lw=0)
        if "effective_dimension_topk" in cols:
            xs, mean, lo, hi = _group(width[sel], cols["effective_dimension_topk"].astype(float)[sel])
            ax.plot(xs, mean, ls="--", marker="s", ms=4, lw=1.3, color=color, alpha=0.8,
                    label=f"z = {zi:g}: converged top eigenvalues (lower bound)")
            if np.any(hi > lo):
                ax.fill_between(xs, lo, hi, color=color, alpha=0.1, lw=0)
    if np.all(neff[np.isfinite(neff)] > 0) and ("effective_dimension_topk" not in cols
                             or np.all(cols["effective_dimension_topk"].astype(float) > 0)):
        ax.set_yscale("log")
    lo, hi = ax.get_ylim()  # head room for the legend above the curves
    ax.set_ylim(lo, hi * 6 if ax.get_yscale() == "log" else hi + 0.35 * (hi - lo))
    ax.set_ylabel(r"$N_\mathrm{eff}(H, z)$")
    ax.set_title("effective dimensionality")
    ax.legend(fontsize=7, loc="upper right")
    ticks = np.unique(width)
    params = {w: int(np.median(cols["num_params"][width == w])) for w in ticks}
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        if len(ticks) > 8:  # keep neighbouring width labels apart
            ax.tick_params(axis="x", labelsize=8, labelrotation=45)
        ax.set_xlabel("width (log2 scale)")
        ax.grid(alpha=0.3)
        top = ax.secondary_xaxis("top")
        top.xaxis.set_major_locator(FixedLocator(ticks))
        top.xaxis.set_minor_locator(NullLocator())
        top.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _short(params.get(v))))
        top.tick_params(labelsize=7, labelrotation=45)
        top.set_xlabel("parameters", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _short(n: int | None) -> str:
    """12345 -> '12k', 1234567 -> '1.2M'."""
    if n is None:
        return ""
    if n >= 1e6:
        return f"{n / 1e6:.1f}M"
    if n >= 1e4:
        return f"{n / 1e3:.0f}k"
    if n >= 1e3:
        return f"{n / 1e3:.1f}k"
    return str(n)


__all__: Sequence[str] = ("plot_spectrum", "plot_width_sweep")
