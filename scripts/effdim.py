"""Effective dimensionality N_eff(H, z): the whole spectrum by SLQ, and the top-k lower bound.

* ``effective_dimension`` (+ ``effective_dimension_se``): ``tr(H (H + zI)^-1)`` over the
  whole spectrum, estimated by stochastic Lanczos quadrature from the spectrum file's SLQ
  nodes and weights (mean over probes, standard error std / sqrt(probes)).
* ``effective_dimension_topk``: ``sum_i l_i / (l_i + z)`` over the converged Lanczos Ritz
  values only (the top ones): a lower bound while the rest of the spectrum is >= 0.

Negative eigenvalues are kept as they are. Where the smallest Ritz value is <= -z (the pole
of l / (l + z) inside the spectrum: N_eff is then dominated by the eigenvalues near -z and
SLQ cannot resolve it), the whole-spectrum columns are NaN. H is the Hessian of the *mean* training loss,
so the write-up's heuristic z = N x weight decay (which goes with the Hessian of the
summed loss, N H) is applied as z = weight decay: N_eff(N H, N wd) = N_eff(H, wd).
"""

from pathlib import Path

import numpy as np

from multirun import contracts, hessian, snake

FIELDS = list(contracts.TABLES["effdim"].columns)


def main(smk):
    rows = []
    for path in smk.input.spectra:
        s = hessian.load_spectrum(path)
        eig = s["ritz_values"][s["ritz_converged"]]  # every converged eigenvalue, raw (negatives too)
        zs = list(smk.params.z)
        if s["weight_decay"] > 0:  # the write-up's N x weight decay, in mean-loss units
            zs.append(float(s["weight_decay"]))
        for z in zs:
            full, se = hessian.effective_dimension_slq(s["slq_nodes"], s["slq_weights"],
                                                       int(s["num_params"]), z)
            if np.nanmin(s["bottom"]) <= -z:  # the pole of l / (l + z) lies inside the spectrum
                print(f"{path}: smallest eigenvalue {np.nanmin(s['bottom']):.3g} <= -z = {-z:g}: "
                      "N_eff is dominated by eigenvalues near -z; SLQ estimate left out (NaN)")
                full = se = float("nan")
            rows.append({
                "spectrum": Path(path).stem, "width": int(s["width"]),
                "depth": int(s["depth"]), "seed": int(s["seed"]),
                "num_params": int(s["num_params"]), "train_loss": float(s["loss"]),
                "test_loss": float(s["test_loss"]), "test_accuracy": float(s["test_accuracy"]),
                "top_eigenvalue": float(np.nanmax(s["top"])),
                "bottom_eigenvalue": float(np.nanmin(s["bottom"])), "converged": int(eig.size),
                "probes": len(s["slq_nodes"]), "z": z,
                "effective_dimension": full, "effective_dimension_se": se,
                "effective_dimension_topk": hessian.effective_dimension(eig, z),
            })
            print(rows[-1])

    contracts.save_csv(smk.output[0], rows, FIELDS)


snake.run(snakemake, main)
