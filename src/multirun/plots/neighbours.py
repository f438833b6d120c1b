"""Interpretability figures of the ensemble kernel (matplotlib; each function returns a Figure).

Examples are drawn as images when ``images_*`` (N, H, W[, 3]) uint8 are given, otherwise as
1-D line plots of ``x_*`` (N, L) signals (MNIST-1D: L = 40). Neighbours come from
:func:`multirun.kernel.neighbours`: ``index`` (Nq, k) int, ``similarity`` (Nq, k), sorted
descending. Accuracy rows are dicts with ``n_models``, ``subset``, ``method``, ``vote``, ``k``,
``accuracy`` (methods ``kernel``, ``ensemble``, ``single``), as in the workflow's
``knn/{variant}/scores.csv`` (strings from a CSV reader are fine) and as returned by
:func:`multirun.knn.score_model_subsets`.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from multirun.contracts import ContractError  # noqa: E402
from multirun.plots.style import (  # noqa: E402, F401 (re-exported)
    METHOD_COLORS,
    method_style,
    save_figure,
    show_image,
)

TEST_COLOR = "black"
TRAIN_COLOR = "tab:orange"
FEATURE_COLOR = "tab:blue"
WRONG_COLOR = "tab:red"
#: font size (pt) of the grid figures' panel titles and legends, at the saved size
GRID_FONT = 8


def colour_legend(fig: Figure, entries: Sequence[tuple[str, str, str]]) -> None:
    """A legend under the figure explaining each (colour, line style, meaning) it draws
    (call after ``tight_layout``; ``save_figure``'s tight bounding box keeps it)."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=c, linestyle=ls, linewidth=1.6, label=text)
               for c, ls, text in entries]
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0),
               ncol=len(handles), fontsize=GRID_FONT, frameon=False)


def _labels_text(classes: Sequence[str] | None, y: int) -> str:
    return str(classes[y]) if classes is not None else str(y)


def draw_example(ax, x: np.ndarray, image: np.ndarray | None = None, *, color: str = TEST_COLOR,
                 linestyle: str = "-", ylim: tuple[float, float] | None = None) -> None:
    """Draw one example on ``ax``: an image when given, else the 1-D signal ``x`` as a line."""
    if image is not None:
        show_image(ax, image)
    else:
        ax.plot(np.asarray(x, dtype=np.float32).reshape(-1), color=color, linestyle=linestyle,
                linewidth=1.2)
        if ylim is not None:
            ax.set_ylim(*ylim)
    ax.set_xticks([])
    ax.set_yticks([])


def _ylim(*arrays: np.ndarray) -> tuple[float, float]:
    lo = min(float(np.min(a)) for a in arrays)
    hi = max(float(np.max(a)) for a in arrays)
    pad = 0.05 * (hi - lo or 1.0)
    return lo - pad, hi + pad


def _check_neighbours(index: np.ndarray, similarity: np.ndarray, num_train: int) -> None:
    if index.ndim != 2 or index.shape != similarity.shape:
        raise ContractError(f"neighbours: index {index.shape} and similarity {similarity.shape} "
                            "must both be (Nq, k)")
    if index.size and (index.min() < 0 or index.max() >= num_train):
        raise ContractError(f"neighbours: indices outside [0, {num_train}) train examples; the "
                            "neighbours were computed on another dataset")


def rank_by_top_similarity(similarity: np.ndarray) -> np.ndarray:
    """Test indices sorted by the similarity of their nearest train example, most similar first."""
    return np.argsort(-similarity[:, 0], kind="stable")


def similar_pairs(index: np.ndarray, similarity: np.ndarray, x_test: np.ndarray,
                  x_train: np.ndarray, *, ranks: Sequence[int] = (601, 648),
                  y_test: np.ndarray | None = None, y_train: np.ndarray | None = None,
                  images_test: np.ndarray | None = None, images_train: np.ndarray | None = None,
                  classes: Sequence[str] | None = None, columns: int = 8) -> Figure:
    """Most similar (test, nearest train) pairs whose rank lies in ``ranks`` (1-based, inclusive).

    Test examples are ranked by the similarity of their nearest train example. Line plots
    overlay the test signal (black) and its neighbour (orange, dashed); images are stacked
    (test above its neighbour). The window is clipped to the number of test examples.
    """
    _check_neighbours(index, similarity, len(x_train))
    first, last = int(ranks[0]), int(ranks[1])
    if not 1 <= first <= last:
        raise ContractError(f"figures.pair_ranks: {list(ranks)} must be 1 <= first <= last")
    order = rank_by_top_similarity(similarity)
    if first > len(order):  # a window past the end (a small test set): the last ranks instead
        first = max(1, len(order) - (last - first))
    last = min(last, len(order))
    chosen = order[first - 1 : last]
    images = images_test is not None and images_train is not None
    n = len(chosen)
    cols = min(columns, n)
    rows = int(np.ceil(n / cols))
    per = 2 if images else 1
    fig, axes = plt.subplots(rows * per, cols, figsize=(1.9 * cols, (1.5 if images else 1.45)
                                                        * rows * per + 0.6), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, q in enumerate(chosen):
        r, c = divmod(i, cols)
        t = int(index[q, 0])
        label = f"#{first + i}  s={similarity[q, 0]:.2f}"
        if y_test is not None and y_train is not None:
            label += f"\n{_labels_text(classes, int(y_test[q]))}/{_labels_text(classes, int(y_train[t]))}"
        if images:
            top, bottom = axes[r * 2, c], axes[r * 2 + 1, c]
            top.axis("on")
            bottom.axis("on")
            draw_example(top, x_test[q], images_test[q])
            draw_example(bottom, x_train[t], images_train[t])
            top.set_title(label, fontsize=GRID_FONT)
        else:
            ax = axes[r, c]
            ax.axis("on")
            ylim = _ylim(x_test[q], x_train[t])
            draw_example(ax, x_test[q], color=TEST_COLOR, ylim=ylim)
            draw_example(ax, x_train[t], color=TRAIN_COLOR, linestyle="--", ylim=ylim)
            ax.set_title(label, fontsize=GRID_FONT)
    how = "test above, train below" if images else "test: black, nearest train: orange dashed"
    fig.suptitle(f"Most similar (test, train) pairs, ranks {first}-{last} of {len(order)} "
                 f"({how}; s = kernel similarity, labels test/train)", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / fig.get_figheight()))  # room for the title
    if not images:
        colour_legend(fig, [(TEST_COLOR, "-", "test example"),
                            (TRAIN_COLOR, "--", "its nearest train example (by the kernel)")])
    return fig


def confident_failures(index: np.ndarray, similarity: np.ndarray, y_test: np.ndarray,
                       y_train: np.ndarray, x_test: np.ndarray, x_train: np.ndarray, *,
                       rows: int = 8, neighbours: int = 9, images_test: np.ndarray | None = None,
                       images_train: np.ndarray | None = None,
                       classes: Sequence[str] | None = None) -> Figure:
    """Test examples whose nearest train example has another label, most similar first.

    Row = one such test example (first column) and its ``neighbours`` nearest train examples;
    a neighbour's title is red when its label differs from the test label.
    """
    _check_neighbours(index, similarity, len(x_train))
    neighbours = min(neighbours, index.shape[1])
    order = rank_by_top_similarity(similarity)
    wrong = order[y_train[index[order, 0]] != y_test[order]][:rows]
    if len(wrong) == 0:
        raise ContractError("confident_failures: every test example's nearest train example has "
                            "its label; nothing to show")
    images = images_test is not None and images_train is not None
    fig, axes = plt.subplots(len(wrong), neighbours + 1,
                             figsize=(1.35 * (neighbours + 1), 1.25 * len(wrong) + 0.6),
                             squeeze=False)
    for r, q in enumerate(wrong):
        nbrs = index[q, :neighbours]
        ylim = None if images else _ylim(x_test[q], *x_train[nbrs])
        draw_example(axes[r, 0], x_test[q], images_test[q] if images else None, ylim=ylim)
        axes[r, 0].set_title(f"test {_labels_text(classes, int(y_test[q]))}",
                             fontsize=GRID_FONT, fontweight="bold")
        for j, t in enumerate(nbrs):
            ax = axes[r, j + 1]
            same = y_train[t] == y_test[q]
            draw_example(ax, x_train[t], images_train[t] if images else None,
                         color=TRAIN_COLOR if same else WRONG_COLOR, ylim=ylim)
            ax.set_title(f"{_labels_text(classes, int(y_train[t]))}  {similarity[q, j]:.2f}",
                         fontsize=GRID_FONT, color="black" if same else WRONG_COLOR)
    fig.suptitle("Most confident failures: test examples (left) whose nearest train example has "
                 "another label,\nwith their nearest train examples (label, similarity; red = "
                 "another label)", fontsize=9)
    fig.tight_layout()
    line = "line and title" if not images else "title"
    colour_legend(fig, ([] if images else [(TEST_COLOR, "-", "test example")]) + [
        (TRAIN_COLOR if not images else "black", "-", "train neighbour with the test's label"),
        (WRONG_COLOR, "-", f"train neighbour with another label (red {line})")])
    return fig


def random_neighbours(kernel_index: np.ndarray, feature_index: np.ndarray | None,
                      x_test: np.ndarray, x_train: np.ndarray, *, examples: int = 10,
                      seed: int = 0, y_test: np.ndarray | None = None,
                      y_train: np.ndarray | None = None, images_test: np.ndarray | None = None,
                      images_train: np.ndarray | None = None,
                      classes: Sequence[str] | None = None,
                      feature_note: str | None = None) -> Figure:
    """Random test examples (top row) with 2 kernel neighbours and 2 penultimate-feature neighbours.

    ``kernel_index`` and ``feature_index``: (Nq, >= 2) nearest train indices by the ensemble
    kernel and by cosine similarity of one model's penultimate features (None: kernel only,
    and the title says why, from ``feature_note``).
    """
    sources = [("kernel", kernel_index, TRAIN_COLOR)]
    if feature_index is not None:
        sources.append(("features", feature_index, FEATURE_COLOR))
    for _, idx, _ in sources:
        _check_neighbours(idx, idx.astype(np.float32), len(x_train))
        if idx.shape[1] < 2:
            raise ContractError("random_neighbours: need at least 2 neighbours per test example")
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(x_test), min(examples, len(x_test)), replace=False))
    images = images_test is not None and images_train is not None
    names, colors = ["test"], [TEST_COLOR]
    for name, _, color in sources:
        names += [f"{name} 1", f"{name} 2"]
        colors += [color, color]
    fig, axes = plt.subplots(len(names), len(chosen),
                             figsize=(1.45 * len(chosen) + 0.8, 1.3 * len(names) + 0.6),
                             squeeze=False)
    for c, q in enumerate(chosen):
        picks = [None] + [int(idx[q, j]) for _, idx, _ in sources for j in (0, 1)]
        ylim = None if images else _ylim(x_test[q], *[x_train[p] for p in picks[1:]])
        for r, p in enumerate(picks):
            ax = axes[r, c]
            if p is None:
                draw_example(ax, x_test[q], images_test[q] if images else None, ylim=ylim)
                lab = y_test[q] if y_test is not None else None
            else:
                draw_example(ax, x_train[p], images_train[p] if images else None, color=colors[r],
                             ylim=ylim)
                lab = y_train[p] if y_train is not None else None
            if lab is not None:
                wrong = r > 0 and y_test is not None and lab != y_test[q]
                ax.set_title(_labels_text(classes, int(lab)), fontsize=GRID_FONT,
                             color=WRONG_COLOR if wrong else "black")
            if c == 0:
                ax.set_ylabel(names[r], fontsize=GRID_FONT, color=colors[r])
    tail = (" and by cosine similarity of one model's penultimate features (blue)"
            if feature_index is not None else
            f" (no feature neighbours: {feature_note or 'none given'})")
    fig.suptitle("Random test examples (top) with their 2 nearest train examples by the ensemble "
                 f"kernel (orange){tail};\ntitles are labels, red = another label than the test "
                 "example's", fontsize=9)
    fig.tight_layout()
    entries = [(TEST_COLOR, "-", "test example")] if not images else []
    entries += [(color, "-", f"{name} neighbours") for name, _, color in sources]
    colour_legend(fig, entries + [(WRONG_COLOR, "-", "red title: another label than the test's")])
    return fig


def probability_correct_histogram(p_correct: np.ndarray, *, num_models: int | None = None,
                                  bins: int | None = None) -> Figure:
    """Histogram of the per-example fraction of models that classify it correctly."""
    p = np.asarray(p_correct, dtype=np.float64)
    if bins is None and num_models and num_models <= 64:  # one bar per possible value j / M
        edges = (np.arange(num_models + 2) - 0.5) / num_models
    else:
        edges = np.linspace(0, 1, (bins or 40) + 1)
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    ax.hist(p, bins=edges, color="tab:purple", edgecolor="white")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("fraction of models correct on the example")
    ax.set_ylabel("test examples (log scale)")
    always = np.mean(p == 1.0)
    never = np.mean(p == 0.0)
    ax.set_title(f"Per-example probability correct across seeds"
                 f"{f' ({num_models} models)' if num_models else ''}\n"
                 f"always right: {always:.1%}, never right: {never:.1%}, mean {p.mean():.1%}",
                 fontsize=9)
    fig.tight_layout()
    return fig


def curve(rows: Sequence[dict], *, method: str, vote: str = "", k: int = 0
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(n_models, mean, min, max) of accuracy over subsets for one (method, vote, k) series."""
    from multirun.knn import series_rows

    sel = series_rows(rows, method=method, vote=vote, k=k)
    sizes = np.array(sorted({int(r["n_models"]) for r in sel}))
    acc = [[float(r["accuracy"]) for r in sel if int(r["n_models"]) == s] for s in sizes]
    return (sizes, np.array([np.mean(a) for a in acc]), np.array([np.min(a) for a in acc]),
            np.array([np.max(a) for a in acc]))


def _plot_curves(ax, curves: dict[str, tuple], styles: dict[str, dict] | None = None) -> None:
    styles = styles or {}
    ticks: set[int] = set()
    for label, (x, mean, lo, hi) in curves.items():
        ticks.update(int(v) for v in x)
        style = {"marker": "o", "markersize": 3, **styles.get(label, {})}
        (line,) = ax.plot(x, 100 * mean, label=label, **style)
        if np.any(hi > lo):
            ax.fill_between(x, 100 * lo, 100 * hi, color=line.get_color(), alpha=0.18,
                            linewidth=0)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(ticks), [str(t) for t in sorted(ticks)])
    ax.minorticks_off()
    ax.set_xlabel("number of models")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def accuracy_vs_models(rows: Sequence[dict], *, knn: Sequence[tuple[str, int]] = (
        ("majority", 3), ("weighted", 20))) -> Figure:
    """Kernel k-NN, logit ensemble and mean single model vs number of models.

    Lines: mean over random model subsets; bands: 95% confidence intervals
    (:func:`multirun.knn.curve_ci`). ``knn``: the (vote, k) series to draw (those present).
    """
    from multirun.knn import curve_ci

    curves = {}
    for vote, k in knn:
        try:
            curves[f"kernel {k}-NN ({vote})"] = curve_ci(rows, method="kernel", vote=vote, k=k)
        except ContractError:
            continue
    curves["logit-averaging ensemble"] = curve_ci(rows, method="ensemble")
    curves["single model (mean)"] = curve_ci(rows, method="single")
    styles = {"single model (mean)": method_style("single"),
              "logit-averaging ensemble": method_style("ensemble")}
    shades = ["tab:red", "darkred", "salmon", "maroon"]  # the kernel's line, one shade per k
    for i, name in enumerate(n for n in curves if n.startswith("kernel")):
        styles[name] = method_style("kernel", color=shades[i % len(shades)])
    fig, ax = plt.subplots(figsize=(6, 4))
    _plot_curves(ax, curves, styles)
    ticks = sorted({int(v) for c in curves.values() for v in c[0]})
    if len(ticks) > 10:  # a long log grid (up to 61,565 models): label every other count
        keep = ticks[::-2][::-1]
        ax.set_xticks(keep, [f"{t:,}" for t in keep], fontsize=7)
    ax.set_title("Accuracy vs number of models (band: 95% confidence interval)", fontsize=9)
    fig.tight_layout()
    return fig


def per_class_vs_summed(summed: Sequence[dict], per_class: dict[int, Sequence[dict]], *,
                        vote: str, k: int, classes: Sequence[str] | None = None) -> Figure:
    """k-NN accuracy of each single-class kernel (thin) against their average (thick)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    curves = {f"class {_labels_text(classes, c)} kernel": curve(rows, method="kernel",
                                                                 vote=vote, k=k)
              for c, rows in sorted(per_class.items())}
    # single-class kernels: thin, the kernel's line style, colours apart from the methods'
    colors = plt.get_cmap("viridis")(np.linspace(0, 0.95, max(len(curves), 1)))
    styles = {name: {"linestyle": "-", "linewidth": 0.9, "alpha": 0.8, "markersize": 2,
                     "color": color} for name, color in zip(curves, colors, strict=True)}
    curves["all classes (the kernel)"] = curve(summed, method="kernel", vote=vote, k=k)
    styles["all classes (the kernel)"] = method_style("kernel", linewidth=2.4)
    _plot_curves(ax, curves, styles)
    ax.legend(fontsize=6, ncol=2)
    ax.set_title(f"Per-class kernels vs their average ({k}-NN, {vote} vote)", fontsize=9)
    fig.tight_layout()
    return fig


def logsoftmax_vs_raw(with_lsm: Sequence[dict], raw: Sequence[dict], *, vote: str, k: int,
                      ensemble: bool = True) -> Figure:
    """k-NN accuracy of the kernel with and without log_softmax vs number of models."""
    curves = {"kernel, log_softmax": curve(with_lsm, method="kernel", vote=vote, k=k),
              "kernel, raw logits": curve(raw, method="kernel", vote=vote, k=k)}
    styles = {"kernel, log_softmax": method_style("kernel"),
              "kernel, raw logits": method_style("kernel_raw")}
    if ensemble:
        curves["logit-averaging ensemble"] = curve(with_lsm, method="ensemble")
        styles["logit-averaging ensemble"] = method_style("ensemble")
    fig, ax = plt.subplots(figsize=(6, 4))
    _plot_curves(ax, curves, styles)
    ax.set_title(f"log_softmax vs raw logits in the kernel ({k}-NN, {vote} vote)", fontsize=9)
    fig.tight_layout()
    return fig
