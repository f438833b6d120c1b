"""The report's headline tables, read off a run's score and effective-dimension tables.

* :func:`accuracy_table`: test accuracy (95% interval) at the largest model count of a
  ``knn/VARIANT/scores.csv``: mean single model, logit-averaging ensemble and the kernel
  k-NN series that ``accuracy_vs_models`` draws (:func:`knn_series`);
* :func:`effdim_table`: per width of ``effdim/sweep-default.csv`` at one regulariser z:
  parameter count, test loss (mean over seeds) and ``N_eff(H, z)`` per seed with its standard
  error.

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
        raise ContractError("scores.csv: no rows; rerun the knn rule")
    largest = max(int(r["n_models"]) for r in rows)
    series = [("mean single model", "single", "", 0),
              ("logit-averaging ensemble", "ensemble", "", 0)]
    series += [(f"kernel {k}-NN, {vote} vote", "kernel", vote, k) for vote, k in knn_series(ks)]
    out = [["method", f"test accuracy at {largest} models (95% interval)"]]
    for label, method, vote, k in series:
        sizes, mean, lo, hi = curve_ci(rows, method=method, vote=vote, k=k)
        if int(sizes[-1]) != largest:
            raise ContractError(f"scores.csv: no {label} rows at {largest} models; rerun knn")
        out.append([label, _interval(mean[-1], lo[-1], hi[-1])])
    return out


def effdim_table(rows: Sequence[Mapping[str, str]], z: float) -> list[list[str]]:
    """[header of widths, parameters, test loss, N_eff per seed]: one column per width."""
    by_width: dict[int, list[Mapping[str, str]]] = defaultdict(list)
    for r in rows:
        if abs(float(r["z"]) - z) <= 1e-12 * max(1.0, z):
            by_width[int(r["width"])].append(r)
    if not by_width:
        raise ContractError(f"effdim table: no rows at z = {z:g} (hessian.z); rerun effdim")
    widths = sorted(by_width)
    seeds = [sorted(by_width[w], key=lambda r: int(r["seed"])) for w in widths]
    return [
        ["width", *map(str, widths)],
        ["parameters", *(f"{int(s[0]['num_params']):,}" for s in seeds)],
        ["test loss (mean over seeds)",
         *(f"{sum(float(r['test_loss']) for r in s) / len(s):.3g}" for s in seeds)],
        [f"N_eff(H, {z:g}) per seed (+- SE)",
         *(" / ".join(f"{float(r['effective_dimension']):.1f} +- "
                      f"{float(r['effective_dimension_se']):.1f}" for r in s) for s in seeds)],
    ]
