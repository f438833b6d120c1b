"""The sweep figure: test accuracy against a swept key, and the best points' learning curves."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.ticker import MaxNLocator

from multirun.knn import interval95
from multirun.plots.style import plt
from multirun.sweeps import first_numeric_key, format_value, short_keys


def _matches(row: Mapping[str, str], values: Mapping[str, Any]) -> bool:
    return all(row[k] == str(v) for k, v in values.items())


def _floats(rows: Sequence[Mapping[str, str]], key: str) -> np.ndarray:
    return np.array([float(r[key]) if r[key] != "" else np.nan for r in rows])


def plot_sweep(summary: Sequence[Mapping[str, str]], curves: Sequence[Mapping[str, str]],
               grid: Mapping[str, Sequence[Any]], title: str = "") -> plt.Figure:
    """Two panels from a sweep's ``summary.csv`` and ``curves.csv`` rows (strings, as read).

    Left: test accuracy against the first numeric grid key (log axis when its values span
    more than 10x; the first key, evenly spaced, when none is numeric), one line per
    combination of the other keys: the mean over seeds with its 95% t-interval, every
    diverged run marked by a cross at its accuracy. Right: test accuracy per epoch
    (mean and 95% interval over seeds) of each combination's best point (highest mean
    final test accuracy); train accuracy as trained where no test curve was recorded.
    ``grid``: dotted key -> values, in the config's order.
    """
    keys = list(grid)
    short = short_keys(keys)
    x_key = first_numeric_key(keys, grid) or keys[0]
    numeric = first_numeric_key(keys, grid) is not None
    xs = list(grid[x_key])
    positions = np.array(xs, dtype=float) if numeric else np.arange(len(xs), dtype=float)
    log = numeric and min(xs) > 0 and max(xs) / min(xs) > 10
    others = [k for k in keys if k != x_key]
    combos = [dict(zip(others, c, strict=True))
              for c in itertools.product(*(grid[k] for k in others))]
    has_test = any(r.get("test_acc", "") != "" for r in curves)
    metric = "test_acc" if has_test else "train_acc"

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 5), constrained_layout=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    marked = False
    for c, combo in enumerate(combos):
        color = colors[c % len(colors)]
        label = ", ".join(f"{short[k]}={format_value(v)}" for k, v in combo.items()) or "all"
        mean, half, best = [], [], None
        for x, pos in zip(xs, positions, strict=True):
            want = {short[k]: v for k, v in {**combo, x_key: x}.items()}
            rows = [r for r in summary if _matches(r, want)]
            acc = _floats(rows, "test_acc")
            m, h = interval95(acc) if len(acc) else (np.nan, 0.0)
            mean.append(m)
            half.append(h)
            if len(acc) and (best is None or m > best[0]):
                best = (m, x)
            bad = [float(r["test_acc"]) for r in rows if r["diverged"] == "True"]
            if bad:
                ax.scatter([pos] * len(bad), bad, marker="x", s=60, color=color, zorder=3,
                           label=None if marked else "diverged run", gid="diverged")
                marked = True
        mean, half = np.array(mean), np.array(half)
        ax.plot(positions, mean, "o-", color=color, label=label)
        ax.fill_between(positions, np.clip(mean - half, 0, 1), np.clip(mean + half, 0, 1),
                        color=color, alpha=0.2)
        if best is None:
            continue
        want = {short[k]: v for k, v in {**combo, x_key: best[1]}.items()}
        rows = [r for r in curves if _matches(r, want)]
        epochs = sorted({int(r["epoch"]) for r in rows})
        per_epoch = [_floats([r for r in rows if int(r["epoch"]) == e], metric) for e in epochs]
        stats = [interval95(v[np.isfinite(v)]) if np.isfinite(v).any() else (np.nan, 0.0)
                 for v in per_epoch]
        m, h = np.array([s[0] for s in stats]), np.array([s[1] for s in stats])
        bx.plot(epochs, m, color=color,
                label=f"{label}, best {short[x_key]}={format_value(best[1])}")
        bx.fill_between(epochs, np.clip(m - h, 0, 1), np.clip(m + h, 0, 1), color=color,
                        alpha=0.2)

    if log:
        ax.set_xscale("log")
    if not numeric:
        ax.set_xticks(positions, [format_value(x) for x in xs])
    ax.set_xlabel(short[x_key])
    ax.set_ylabel("test accuracy")
    seeds = max((len({r["seed"] for r in summary if r["point"] == pt})
                 for pt in {r["point"] for r in summary}), default=0)
    ax.set_title("final test accuracy: mean and 95% interval over seeds" if seeds > 1 else
                 "final test accuracy: one seed per point, no interval")
    ax.legend(fontsize=9)
    ax.grid(alpha=0.3)
    bx.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole epochs
    bx.set_xlabel("epoch")
    bx.set_ylabel("test accuracy" if has_test else "train accuracy (as trained)")
    bx.set_title("learning curve of each line's best point")
    bx.legend(fontsize=9)
    bx.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    return fig
