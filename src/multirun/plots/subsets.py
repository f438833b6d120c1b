"""Figures of subset training (docs/attribution.md, docs/studies.md): memorization, influence
pairs beside the kernel's pairs, out-of-sample label errors, and the LDS of the attributions."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

import numpy as np

from multirun.plots.style import plt, show_image

METHOD_STYLE = {
    "datamodels": ("tab:green", "datamodels (ridge on masks)"),
    "trak": ("tab:purple", "TRAK (ours)"),
    "traker": ("tab:pink", "TRAK (traker package)"),
    "kernel": ("tab:red", "ensemble kernel, signed"),
    "cleanlab": ("tab:brown", "cleanlab, out of sample"),
    "oos_self_confidence": ("tab:olive", "self-confidence, out of sample"),
    "subset_kernel": ("tab:orange", "kernel neighbours, subset models"),
    "in_sample_kernel": ("tab:red", "kernel neighbours, in sample"),
    "in_sample_margin": ("tab:blue", "ensemble margin, in sample"),
    "in_sample_loss": ("tab:gray", "single-model loss, in sample"),
}


def _style(method: str) -> tuple[str, str]:
    if method.startswith("kernel_top"):
        return "tab:orange", f"ensemble kernel, signed, top {method.removeprefix('kernel_top')}"
    return METHOD_STYLE.get(method, ("k", method))


def _draw(ax, x, image=None, color="tab:blue", label=None):
    """One example: an image where the dataset has them, else the 1-D signal (read top down)."""
    if image is not None:
        show_image(ax, image)
        return
    sig = np.asarray(x).reshape(-1)
    ax.plot(sig, np.arange(len(sig)), color=color, lw=1.5, label=label)
    if not ax.yaxis_inverted():
        ax.invert_yaxis()


def _bare(ax, title):
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


def memorization(mem: np.ndarray, se: np.ndarray, x: np.ndarray, y: np.ndarray, n: int, *,
                 models: int, alpha: float, images: np.ndarray | None = None) -> plt.Figure:
    """Top: histogram of mem over training examples. Bottom: the ``n`` most memorized."""
    fig = plt.figure(figsize=(max(8.0, 1.3 * n), 6.0))
    grid = fig.add_gridspec(2, n, height_ratios=[1.3, 1.0])
    ax = fig.add_subplot(grid[0, :])
    ok = np.isfinite(mem)
    ax.hist(mem[ok], bins=60, color="tab:blue", alpha=0.8)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yscale("log")
    ax.set_xlabel("memorization  P(correct | in) - P(correct | out)")
    ax.set_ylabel("training examples")
    ax.set_title(f"{ok.sum()} training examples, {models} models on {alpha:.0%} subsets; "
                 f"median SE {np.nanmedian(se):.3f}; mean mem {np.nanmean(mem):.3f}", fontsize=9)
    ax.grid(alpha=0.3)
    top = np.argsort(-np.where(ok, mem, -np.inf), kind="stable")[:n]
    for j, i in enumerate(top):
        a = fig.add_subplot(grid[1, j])
        _draw(a, x[i], None if images is None else images[i], color="tab:red")
        _bare(a, f"#{i} label {y[i]}\nmem {mem[i]:.2f}±{se[i]:.2f}")
        if j == 0:
            a.set_ylabel("most memorized", fontsize=9)
    fig.tight_layout()
    return fig


def influence_pairs(summary: Mapping[str, np.ndarray], precision: Sequence[Mapping[str, str]],
                    x_train, y_train, x_test, y_test, n: int, *,
                    images_train=None, images_test=None) -> plt.Figure:
    """Row 1: the ``n`` (train, test) pairs of highest influence on correctness. Row 2: the
    ensemble kernel's ``n`` most similar (test, train) pairs, with their influence. Each
    panel: test example (blue) over training example (red)."""
    fig, axes = plt.subplots(2, n, figsize=(1.45 * n, 5.0), squeeze=False)
    rows = (("influence", summary["influence_train"], summary["influence_test"],
             summary["influence"], None),
            ("kernel", summary["kernel_train"], summary["kernel_test"],
             summary["kernel_influence"], summary["kernel_similarity"]))
    for r, (name, tr, te, infl, sim) in enumerate(rows):
        for j in range(min(n, len(tr))):
            ax, i, t = axes[r, j], int(tr[j]), int(te[j])
            if images_train is not None:
                show_image(ax, np.concatenate([images_test[t], images_train[i]], axis=1))
            else:
                _draw(ax, x_test[t], color="tab:blue")
                _draw(ax, x_train[i], color="tab:red")
            extra = f"\nsim {sim[j]:.2f}" if sim is not None else ""
            _bare(ax, f"test {y_test[t]} / train {y_train[i]}\ninfl {infl[j]:.2f}{extra}")
        axes[r, 0].set_ylabel("top influence" if name == "influence" else "kernel's top",
                              fontsize=9)
    text = ", ".join(f"P@{r['k']} {float(r['precision']):.2f}" for r in precision
                     if r["ranking"] == "kernel")
    base = next((float(r["precision"]) for r in precision if r["ranking"] == "random"), np.nan)
    fig.suptitle(f"high-influence pairs (influence >= {float(summary['threshold']):.2f}) among "
                 f"the kernel's most similar pairs: {text} (random pairs {base:.2g})\n"
                 "blue: test example, red: training example", fontsize=9)
    fig.tight_layout()
    return fig


def _by_method(rows, value: str):
    out: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        out[r["method"]][int(r["n_models"])].append(float(r[value]))
    return out


def label_errors(rows: Sequence[Mapping[str, str]], noise: float) -> plt.Figure:
    """Average precision (left) and precision at the number of corrupted labels (right) vs
    models, per ranking; in-sample rankings as in the label-errors study (mean over subsets;
    the single-model loss as a line: mean over models)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, value, ylabel in ((axes[0], "average_precision", "average precision"),
                              (axes[1], "precision_at_noise",
                               "precision at the number of corrupted labels")):
        for method, cells in _by_method(rows, value).items():
            color, label = _style(method)
            ls = "--" if method.startswith("in_sample") else "-"
            if method == "in_sample_loss":
                vals = np.asarray(cells[1])
                ax.axhline(vals.mean(), color=color, ls=ls, lw=1.5,
                           label=f"{label} (mean of {len(vals)})")
                continue
            xs = sorted(cells)
            ax.plot(xs, [np.mean(cells[x]) for x in xs], "o" + ls, color=color, lw=2, ms=4,
                    label=label)
        ax.axhline(noise, color="k", ls=":", lw=1, label=f"random ({noise:.0%} corrupted)")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("models")
        ax.set_ylabel(ylabel)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=4, fontsize=8,
               frameon=False)  # below both panels: inside, it hides curves
    fig.suptitle("finding the corrupted training labels: out-of-sample (subset models) vs "
                 "in-sample (full-data models) rankings", fontsize=10)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    return fig


def _errorbars(ax, rows, value: str, error: str) -> None:
    """One line per method: ``value`` +- ``error`` against n_models."""
    for method in dict.fromkeys(r["method"] for r in rows):
        rs = sorted((r for r in rows if r["method"] == method), key=lambda r: int(r["n_models"]))
        color, label = _style(method)
        ax.errorbar([int(r["n_models"]) for r in rs], [float(r[value]) for r in rs],
                    yerr=[float(r[error]) for r in rs], fmt="o-", color=color, lw=2, ms=4,
                    capsize=2, label=label)


def attribution(lds_rows: Sequence[Mapping[str, str]], agreement: Sequence[Mapping[str, str]]
                ) -> plt.Figure:
    """Left: LDS on the held-out subset models vs models used, +- SE. Right: per-test
    correlation of each attribution's rows with the datamodels' (most models)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    held = lds_rows[0]["heldout"] if lds_rows else "?"
    dm = agreement[0]["datamodel_models"] if agreement else "?"
    for ax, rows, value, ylabel, xlabel in (
            (left, lds_rows, "lds", f"LDS (Spearman, {held} held-out models)",
             "models used (datamodels: subset models; TRAK, kernel: full-data models)"),
            (right, agreement, "correlation", f"correlation with datamodel rows ({dm} models)",
             "models used")):
        _errorbars(ax, rows, value, "se" if value == "lds" else "correlation_se")
        ax.set_xscale("log", base=2)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.axhline(0, color="k", lw=0.8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig
