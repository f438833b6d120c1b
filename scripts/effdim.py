"""Effective dimensionality N_eff(H, z) = sum_i l_i / (l_i + z) from converged eigenvalues.

H is the Hessian of the *mean* training loss, so the write-up's heuristic z = N x weight
decay (which goes with the Hessian of the summed loss, N H) is applied as z = weight decay:
N_eff(N H, N wd) = N_eff(H, wd).
"""

from pathlib import Path

import numpy as np

from multirun import hessian, io
from multirun.snake import run

KEYS = ("ritz_values", "ritz_converged", "top", "loss", "num_params", "width", "seed",
        "test_loss", "test_accuracy", "weight_decay")
FIELDS = ["spectrum", "width", "seed", "num_params", "train_loss", "test_loss", "test_accuracy",
          "top_eigenvalue", "converged", "z", "effective_dimension"]


def main(smk):
    rows = []
    for path in smk.input.spectra:
        s = io.load_npz(path, KEYS)
        eig = s["ritz_values"][s["ritz_converged"]]  # every converged eigenvalue, raw (negatives too)
        zs = list(smk.params.z)
        if s["weight_decay"] > 0:  # the write-up's N x weight decay, in mean-loss units
            zs.append(float(s["weight_decay"]))
        for z in zs:
            rows.append({
                "spectrum": Path(path).stem, "width": int(s["width"]), "seed": int(s["seed"]),
                "num_params": int(s["num_params"]), "train_loss": float(s["loss"]),
                "test_loss": float(s["test_loss"]), "test_accuracy": float(s["test_accuracy"]),
                "top_eigenvalue": float(np.nanmax(s["top"])), "converged": int(eig.size),
                "z": z, "effective_dimension": hessian.effective_dimension(eig, z),
            })
            print(rows[-1])

    io.save_csv(smk.output[0], rows, FIELDS)


run(snakemake, main)
