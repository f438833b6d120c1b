"""The report's headline tables, read off a run's score and effective-dimension tables.

* :func:`accuracy_table`: test accuracy (95% interval) at the largest model count of a
  ``knn/VARIANT/scores.csv``: mean single model, logit-averaging ensemble and the kernel
  k-NN series that ``accuracy_vs_models`` draws (:func:`knn_series`);
* :func:`effdim_table`: per width of ``effdim/sweep-default.csv`` at one regulariser z:
  parameter count, test loss (mean over seeds) and ``N_eff(H, z)`` per seed with its standard
  error (the standard error of the SLQ estimate).

Both return rows (lists of strings, the first one the header) that
:func:`multirun.contracts.save_csv`-like writers store and the report's landing page shows
with a ``csv-table`` directive. Rows as read by :func:`multirun.contracts.load_csv`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

from multirun.contracts import ContractError


def knn_series(ks: Sequence[int]) -> list[tuple[str, int]]:
    """The (vote, k) kernel series the accuracy figure and the headline show: the write-up's
    two, majority-vote 3-NN (else the smallest k) and similarity-weighted at the largest k."""
    ks = sorted(int(k) for k in ks)
    return [("majority", 3 if 3 in ks else ks[0]), ("weighted", ks[-1])]


def _interval(acc: float, lo: float, hi: float) -> str:
    return f"{100 * acc:.1f}% ({100 * lo:.1f}-{100 * hi:.1f})"


def accuracy_table(rows: Sequence[Mapping[str, str]], ks: Sequence[int]) -> list[list[str]]:
    """[header, single, ensemble, kernel series...]: accuracy at the largest model count
    (mean over its subsets, with the interval :func:`multirun.knn.curve_ci` gives)."""
    from multirun.knn import curve_ci

    if not rows:
        raise ContractError("a scores table without rows")
    largest = max(int(r["n_models"]) for r in rows)
    series = [("mean single model", "single", "", 0),
              ("logit-averaging ensemble", "ensemble", "", 0)]
    series += [(f"kernel {k}-NN, {vote} vote", "kernel", vote, k) for vote, k in knn_series(ks)]
    out = [["method", f"test accuracy, {largest} models (95% CI)"]]
    for label, method, vote, k in series:
        sizes, mean, lo, hi = curve_ci(rows, method=method, vote=vote, k=k)
        if int(sizes[-1]) != largest:
            raise ContractError(f"no {label} rows at {largest} models")
        out.append([label, _interval(mean[-1], lo[-1], hi[-1])])
    return out


def effdim_widths(rows: Sequence[Mapping[str, str]], z: float) -> list[tuple[int, list[Mapping[str, str]]]]:
    """[(width, its rows at z sorted by seed)] in increasing width: the numbers both
    :func:`effdim_table` and :mod:`multirun.summary` format (one place for the grouping)."""
    by_width: dict[int, list[Mapping[str, str]]] = defaultdict(list)
    for r in rows:
        if abs(float(r["z"]) - z) <= 1e-12 * max(1.0, z):
            by_width[int(r["width"])].append(r)
    if not by_width:
        raise ContractError(f"no rows at z = {z:g} (hessian.z)")
    return [(w, sorted(by_width[w], key=lambda r: int(r["seed"]))) for w in sorted(by_width)]


def parameters_cell(seeds: Sequence[Mapping[str, str]]) -> str:
    """``1,642``: the width's parameter count."""
    return f"{int(seeds[0]['num_params']):,}"


def mean_cell(seeds: Sequence[Mapping[str, str]], key: str, fmt: str = ".3g") -> str:
    """The mean of column ``key`` over the width's seeds."""
    return format(sum(float(r[key]) for r in seeds) / len(seeds), fmt)


def neff_cell(seeds: Sequence[Mapping[str, str]]) -> str:
    """``23.8 +- 0.9 / 22.3 +- 0.5``: N_eff +- its SE per seed, seeds in order."""
    return " / ".join(f"{float(r['effective_dimension']):.1f} +- "
                      f"{float(r['effective_dimension_se']):.1f}" for r in seeds)


def effdim_table(rows: Sequence[Mapping[str, str]], z: float) -> list[list[str]]:
    """[header of widths (parameter counts), test loss (mean over seeds), N_eff per seed (seeds
    separated by " / ")]: one column per width (cells from :func:`effdim_widths`)."""
    widths = effdim_widths(rows, z)
    return [
        ["width (parameters)", *(f"{w} ({parameters_cell(s)})" for w, s in widths)],
        ["test loss", *(mean_cell(s, "test_loss") for _, s in widths)],
        [f"N_eff(H, {z:g}) +- SE", *(neff_cell(s) for _, s in widths)],
    ]
