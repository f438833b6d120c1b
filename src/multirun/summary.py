"""The README's measured tables, printed from a finished run's ``results/``.

    python -m multirun.summary [RESULTS] [--z 1.0] [--readme README.md]

prints two Markdown tables, the report's headline tables (:mod:`multirun.headline`) with a
little more:

* **accuracy** at the largest model count of ``knn/logsoftmax/scores.csv``: the mean single
  model, the logit-averaging ensemble and the kernel k-NN series of ``accuracy_vs_models``,
  each with its 95% interval over test examples, and the same kernels on raw logits when
  ``knn/raw/scores.csv`` exists;
* **width sweep** from ``effdim/sweep-default.csv`` at regulariser ``z``: per width its
  parameter count, train and test loss (mean over seeds), ``N_eff(H, z)`` over the whole
  spectrum +- one standard error (the SLQ probe noise) for each seed, and the top-k lower
  bound (mean over seeds).

With ``--readme FILE`` the tables replace what stands between the markers
``<!-- multirun.summary: begin -->`` and ``<!-- multirun.summary: end -->`` in FILE, so
the README's numbers are regenerated, never typed.
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from multirun import headline
from multirun.contracts import ContractError

BEGIN, END = "<!-- multirun.summary: begin -->", "<!-- multirun.summary: end -->"


def _rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; finish the run first (snakemake --cores 2)")
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _naming(path: Path, table, *args):
    """``table(*args)``, its ContractError (rows the table lacks) naming the file ``path``."""
    try:
        return table(*args)
    except ContractError as err:
        raise ContractError(f"{path}: {err}") from err


def _markdown(rows: list[list[str]]) -> list[str]:
    """Rows (the first one the header) as Markdown table lines."""
    return [f"| {' | '.join(rows[0])} |", "| --- |" + " --- |" * (len(rows[0]) - 1),
            *(f"| {' | '.join(r)} |" for r in rows[1:])]


def accuracy_table(results: Path) -> str:
    """The headline accuracy table (:func:`multirun.headline.accuracy_table`) at the largest
    model count, and the same kernel rows on raw logits when that variant was scored."""
    path = results / "knn" / "logsoftmax" / "scores.csv"
    rows = _rows(path)
    ks = sorted({int(r["k"]) for r in rows if r["method"] == "kernel"})
    table = _naming(path, headline.accuracy_table, rows, ks)
    largest = max(int(r["n_models"]) for r in rows)
    n_test = len(np.load(results / "data" / "dataset.npz")["y_test"])
    table[0] = [f"{largest} models, {n_test:,} test examples", "test accuracy (95% interval)"]
    raw_path = results / "knn" / "raw" / "scores.csv"
    if raw_path.is_file():
        raw = _naming(raw_path, headline.accuracy_table, _rows(raw_path), ks)
        kernels = [r[1].split(" ")[0] for r in raw if r[0].startswith("kernel")]
        table.append(["the same kernels on raw logits instead of log_softmax", " / ".join(kernels)])
    return "\n".join(_markdown(table))


def width_table(results: Path, z: float = 1.0) -> str:
    """The headline width table's numbers (:func:`multirun.headline.effdim_widths`, cells
    formatted by the same helpers as :func:`multirun.headline.effdim_table`), laid out for
    the README: widths as the header, then parameters, train and test loss (means over seeds),
    ``N_eff`` per seed and the top-k lower bound (mean over seeds)."""
    path = results / "effdim" / "sweep-default.csv"
    widths = _naming(path, headline.effdim_widths, _rows(path), z)
    table = [
        ["width", *(str(w) for w, _ in widths)],
        ["parameters", *(headline.parameters_cell(s) for _, s in widths)],
        ["train loss (mean over seeds)", *(headline.mean_cell(s, "train_loss") for _, s in widths)],
        ["test loss (mean over seeds)", *(headline.mean_cell(s, "test_loss") for _, s in widths)],
        [f"N_eff(H, {z:g}) per seed (+- SE)", *(headline.neff_cell(s) for _, s in widths)],
        ["top-k lower bound (mean over seeds)",
         *(headline.mean_cell(s, "effective_dimension_topk", ".1f") for _, s in widths)],
    ]
    return "\n".join(_markdown(table))


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
    except (OSError, ValueError, KeyError, ContractError) as err:
        print(f"multirun.summary: {err}", file=sys.stderr)
        return 1
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
