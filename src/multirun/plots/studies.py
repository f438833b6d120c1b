"""Figures of the studies (docs/studies.md): memorization, label noise, label errors."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

import numpy as np

from multirun.plots.style import method_style, plt, show_image
from multirun.studies.memorization import binomial_reference, extremes

VARIANT_STYLE = {"real": ("tab:blue", "real data"), "randx": ("tab:orange", "RandX (noise inputs)"),
                 "randy": ("tab:green", "RandY (random labels)")}
#: rankings of the label-error figure: (method whose line style they take, label)
RANKING_STYLE = {"kernel": ("kernel", "kernel neighbours disagree"),
                 "margin": ("ensemble", "ensemble margin"),
                 "loss": ("single", "single-model loss")}


def memorization_curves(p: Mapping[str, np.ndarray], variants: Sequence[str],
                        epochs: Sequence[int], models: int) -> plt.Figure:
    """Sorted P(correct) per training example, one panel per training length.

    ``p[f"p_{variant}_e{epochs}"]`` (N,) in [0, 1]. The dotted line is the spread of
    equally hard examples (binomial with RandX's mean, as in the note).
    """
    fig, axes = plt.subplots(1, len(epochs), figsize=(4.2 * len(epochs), 3.6), sharey=True,
                             squeeze=False)
    for ax, e in zip(axes[0], epochs, strict=True):
        for v in variants:
            q = np.sort(p[f"p_{v}_e{e}"])
            color, label = VARIANT_STYLE[v]
            ax.plot(np.linspace(0, 1, len(q)), q, color=color, lw=2,
                    label=f"{label}, mean {q.mean():.2f}")
        ref_variant = "randx" if "randx" in variants else variants[-1]
        ref = binomial_reference(float(p[f"p_{ref_variant}_e{e}"].mean()), models,
                                 len(p[f"p_{ref_variant}_e{e}"]))
        ax.plot(np.linspace(0, 1, len(ref)), ref, color="k", ls=":", lw=1.2,
                label=f"binomial ({VARIANT_STYLE[ref_variant][1].split()[0]} mean)")
        ax.set_title(f"{e} epoch{'s' if e != 1 else ''}, {models} seeds per variant")
        ax.set_xlabel("training examples, sorted by P(correct) (fraction)")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    axes[0, 0].set_ylabel("P(correct) across seeds")
    fig.tight_layout()
    return fig


def memorization_extremes(p: np.ndarray, x: np.ndarray, y: np.ndarray, n: int, *,
                          classes: Sequence[str] | None = None, images: np.ndarray | None = None,
                          title: str = "") -> plt.Figure:
    """The ``n`` hardest (top row) and ``n`` easiest (bottom row) training examples.

    ``x`` (N, L) 1-D signals are drawn as curves; ``images`` (N, H, W[, 3]) uint8 as pictures.
    Each panel's title: the label and P(correct).
    """
    hard, easy = extremes(p, n)
    fig, axes = plt.subplots(2, n, figsize=(1.35 * n, 3.3), squeeze=False)
    for r, (row, name) in enumerate(((hard, "hardest"), (easy, "easiest"))):
        for ax, i in zip(axes[r], row, strict=True):
            if images is not None:
                show_image(ax, images[i])
            else:
                sig = np.asarray(x[i]).reshape(-1)
                ax.plot(sig, np.arange(len(sig)), color="tab:blue" if r else "tab:red", lw=1.5)
                ax.invert_yaxis()  # MNIST-1D digits read top to bottom
            label = classes[y[i]] if classes is not None else str(y[i])
            ax.set_title(f"{label}  P={p[i]:.2f}", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(name, fontsize=9)
    fig.suptitle(title or "hardest (top) and easiest (bottom) training examples", fontsize=10)
    fig.tight_layout()
    return fig


def _mean_band(ax, cells: Mapping[int, Sequence[float]], color, label: str,
               style: Mapping | None = None) -> None:
    """Mean over a cell's values as a line with markers, min-max band, x = the cell keys;
    ``style``: line keywords (a method's, :func:`method_style`) over the default solid line."""
    xs = sorted(cells)
    vals = [np.asarray(cells[x]) for x in xs]
    line = {"marker": "o", "linestyle": "-", "color": color, **(style or {})}
    ax.plot(xs, [v.mean() for v in vals], lw=2, ms=4, label=label, **line)
    ax.fill_between(xs, [v.min() for v in vals], [v.max() for v in vals], color=line["color"],
                    alpha=0.2, lw=0)


def _axes(ax, xlabel: str, ylabel: str, legend: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc=legend)


def label_noise_accuracy(rows: Sequence[Mapping[str, str]]) -> plt.Figure:
    """Test accuracy vs alpha (noisy copies per clean example), a line per architecture:
    mean over seeds, band from the lowest to the highest seed."""
    acc: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        acc[r["architecture"]][int(r["alpha"])].append(float(r["test_accuracy"]))
    fig, ax = plt.subplots(figsize=(5.6, 3.9))
    colors = plt.get_cmap("viridis")(np.linspace(0, 0.9, len(acc)))
    for color, (arch, cells) in zip(colors, acc.items(), strict=True):
        _mean_band(ax, cells, color, f"{arch} ({len(next(iter(cells.values())))} seeds)")
    _axes(ax, "alpha: noisy labels per clean label", "test accuracy (early-stopped)", "best")
    fig.tight_layout()
    return fig


def label_errors_pr(curves: Mapping[str, np.ndarray], rows: Sequence[Mapping[str, str]]
                    ) -> plt.Figure:
    """Left: precision-recall of finding the corrupted labels with all models (``pr_<method>``
    (2, N): precision, recall). Right: average precision vs number of models (kernel and
    margin: mean over subsets, band min-max; single-model loss: mean and range over models)."""
    noise = float(curves["noise"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.9))
    for method in ("kernel", "margin", "loss"):
        if f"pr_{method}" not in curves:
            continue
        precision, recall = curves[f"pr_{method}"]
        kind, label = RANKING_STYLE[method]
        suffix = " (model 0)" if method == "loss" else f" ({int(curves['n_models'])} models)"
        left.plot(recall, precision, lw=2, label=label + suffix,
                  **method_style(kind, marker=None))
    left.axhline(noise, color="k", ls=":", lw=1, label=f"random ranking ({noise:.0%} corrupted)")
    left.set_ylim(0, 1.02)
    _axes(left, "recall (corrupted labels found)", "precision", "lower left")
    ap: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        ap[r["method"]][int(r["n_models"])].append(float(r["average_precision"]))
    sizes = sorted({n for m in ("kernel", "margin") for n in ap.get(m, {})})
    for method in ("kernel", "margin"):
        if ap.get(method):
            kind, label = RANKING_STYLE[method]
            _mean_band(right, ap[method], None, label, method_style(kind))
    if ap.get("loss") and sizes:
        single = np.asarray(ap["loss"][1])
        kind, label = RANKING_STYLE["loss"]
        style = method_style(kind, marker=None)
        right.axhline(single.mean(), lw=2, label=f"{label} (mean of {len(single)})", **style)
        right.axhspan(single.min(), single.max(), color=style["color"], alpha=0.15, lw=0)
    right.axhline(noise, color="k", ls=":", lw=1)
    right.set_xscale("log", base=2)
    right.set_xticks(sizes, [str(n) for n in sizes])
    right.minorticks_off()
    _axes(right, "number of models", "average precision", "lower right")
    fig.tight_layout()
    return fig
