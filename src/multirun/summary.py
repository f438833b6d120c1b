"""The README's measured tables, printed from a finished run's ``results/``.

    python -m multirun.summary [RESULTS] [--z 1.0] [--readme README.md]

prints two Markdown tables:

* **accuracy** at the largest model count of ``knn/logsoftmax/scores.csv``: the mean single
  model, the logit-averaging ensemble, kernel 3-NN by majority vote and kernel k-NN (the
  largest k) by similarity-weighted vote, each with its 95% interval over test examples,
  and the same two kernel rows on raw logits when ``knn/raw/scores.csv`` exists;
* **width sweep** from ``effdim/sweep-default.csv`` at regulariser ``z``: per width its
  parameter count, train and test loss (mean over seeds), ``N_eff(H, z)`` over the whole
  spectrum +- one standard error (the SLQ probe noise) for each seed, and the top-k lower
  bound (mean over seeds).

With ``--readme FILE`` the tables replace what stands between the markers
``<!-- multirun.summary: begin -->`` and ``<!-- multirun.summary: end -->`` in FILE, so
the README's numbers are regenerated, never typed. Reads CSV and NPZ only (no torch).
"""

from __future__ import annotations

import argparse
import csv
import math
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

BEGIN, END = "<!-- multirun.summary: begin -->", "<!-- multirun.summary: end -->"


def _rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; finish the run first (snakemake --cores 2)")
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def percent(row: dict[str, str]) -> str:
    """``61.2% (61.0-61.4)``: accuracy and its 95% interval, in percent, one decimal."""
    a, lo, hi = (100 * float(row[k]) for k in ("accuracy", "ci_low", "ci_high"))
    return f"{a:.1f}% ({lo:.1f}-{hi:.1f})"


def _pick(rows: list[dict[str, str]], method: str, k: int | None = None, vote: str = "") -> dict:
    found = [r for r in rows if r["method"] == method
             and (k is None or r["k"] == str(k)) and (not vote or r["vote"] == vote)]
    if len(found) != 1:
        raise ValueError(f"scores.csv: expected one row of {method} k={k} vote={vote!r} at the "
                         f"largest model count, found {len(found)}")
    return found[0]


def accuracy_table(results: Path) -> str:
    """The accuracy table at the largest model count (one subset: all models)."""
    rows = _rows(results / "knn" / "logsoftmax" / "scores.csv")
    largest = max(int(r["n_models"]) for r in rows)
    top = [r for r in rows if int(r["n_models"]) == largest]
    ks = sorted({int(r["k"]) for r in top if r["method"] == "kernel"})
    k_big = ks[-1]
    if 3 not in ks:
        raise ValueError("scores.csv: no kernel 3-NN rows (knn.k must include 3)")
    n_test = len(np.load(results / "data" / "dataset.npz")["y_test"])
    lines = [f"| {largest} models, {n_test:,} test examples | test accuracy (95% interval) |",
             "| --- | --- |",
             f"| mean single model | {percent(_pick(top, 'single'))} |",
             f"| logit-averaging ensemble | {percent(_pick(top, 'ensemble'))} |",
             "| kernel 3-NN, majority vote (the write-up's reference setting) | "
             f"{percent(_pick(top, 'kernel', 3, 'majority'))} |",
             f"| kernel {k_big}-NN, similarity-weighted vote (the write-up's 95.53% setting) | "
             f"{percent(_pick(top, 'kernel', k_big, 'weighted'))} |"]
    raw_path = results / "knn" / "raw" / "scores.csv"
    if raw_path.is_file():
        raw = [r for r in _rows(raw_path) if int(r["n_models"]) == largest]
        three, big = (100 * float(_pick(raw, "kernel", k, v)["accuracy"])
                      for k, v in ((3, "majority"), (k_big, "weighted")))
        lines.append(f"| the same two on raw logits instead of log_softmax | {three:.1f}% / {big:.1f}% |")
    return "\n".join(lines)


def _compact(n: int) -> str:
    """418 -> 418, 1,638 -> 1.6k, 13,258 -> 13k, 52,234 -> 52k."""
    if n < 1000:
        return str(n)
    return f"{n / 1000:.1f}k" if n < 10_000 else f"{round(n / 1000)}k"


def _loss(x: float) -> str:
    return f"{x:.3f}" if abs(x) < 0.01 else f"{x:.2f}"


def width_table(results: Path, z: float = 1.0) -> str:
    """The width sweep's table: columns are widths, each cell lists the seeds in order."""
    rows = [r for r in _rows(results / "effdim" / "sweep-default.csv")
            if math.isclose(float(r["z"]), z)]
    if not rows:
        raise ValueError(f"effdim/sweep-default.csv: no rows at z = {z:g} (hessian.z)")
    widths = sorted({int(r["width"]) for r in rows})
    by = {w: sorted((r for r in rows if int(r["width"]) == w), key=lambda r: int(r["seed"]))
          for w in widths}
    seeds = sorted({int(r["seed"]) for r in rows})
    label = " / ".join(map(str, seeds))

    def cells(fmt) -> str:
        return " | ".join(" / ".join(fmt(r) for r in by[w]) for w in widths)

    def neff(r) -> str:
        value, se = float(r["effective_dimension"]), float(r["effective_dimension_se"])
        return "NaN (pole inside the spectrum)" if math.isnan(value) else f"{value:.1f} +- {se:.1f}"

    def one_decimal(x: float) -> str:
        return f"{x:.1f}"

    def mean(key: str, fmt) -> str:
        return " | ".join(fmt(float(np.mean([float(r[key]) for r in by[w]]))) for w in widths)

    head = " | ".join(f"{w} ({_compact(int(by[w][0]['num_params']))})" for w in widths)
    return "\n".join([
        f"| width (parameters) | {head} |",
        "| --- |" + " --- |" * len(widths),
        f"| train loss, mean of seeds {label} | {mean('train_loss', _loss)} |",
        f"| test loss, mean of seeds {label} | {mean('test_loss', _loss)} |",
        f"| `N_eff(H, {z:g})`, whole spectrum +- one SE, seeds {label} | {cells(neff)} |",
        f"| top-k lower bound, mean of seeds {label} | {mean('effective_dimension_topk', one_decimal)} |",
    ])


def tables(results: Path, z: float = 1.0) -> str:
    """Both tables, as the README shows them (accuracy first, a blank line between)."""
    parts = [accuracy_table(results)]
    if (results / "effdim" / "sweep-default.csv").is_file():
        parts.append(width_table(results, z))
    return "\n\n".join(parts)


def replace_block(text: str, block: str, where: str = "README.md") -> str:
    """``text`` with what stands between the summary markers replaced by ``block``."""
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.S)
    if len(pattern.findall(text)) != 1:
        raise ValueError(f"{where}: needs exactly one {BEGIN} ... {END} block")
    return pattern.sub(lambda _: f"{BEGIN}\n{block}\n{END}", text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m multirun.summary", description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="?", default="results", type=Path,
                        help="the run's results folder (default: results)")
    parser.add_argument("--z", type=float, default=1.0, help="the N_eff regulariser (default: 1)")
    parser.add_argument("--readme", type=Path, help="write the tables into this file's summary block")
    args = parser.parse_args(argv)
    try:
        out = tables(args.results, args.z)
        if args.readme:
            args.readme.write_text(replace_block(args.readme.read_text(), out, str(args.readme)))
    except (OSError, ValueError, KeyError) as err:
        print(f"multirun.summary: {err}", file=sys.stderr)
        return 1
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
