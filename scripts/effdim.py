"""Effective dimensionality N_eff(H, z) = sum_i l_i / (l_i + z) from converged eigenvalues."""

from pathlib import Path

import numpy as np

from multirun import hessian, io
from multirun.snake import run

FIELDS = ["spectrum", "width", "seed", "num_params", "train_loss", "test_loss", "test_accuracy",
          "top_eigenvalue", "converged", "z", "effective_dimension"]


def main(smk):
    rows = []
    for path in smk.input.spectra:
        s = io.load_npz(path, ("ritz_values", "ritz_converged", "top", "loss", "num_params"))
        eig = s["ritz_values"][s["ritz_converged"]]  # every converged eigenvalue, raw (negatives too)
        zs = list(smk.params.z)
        if s["weight_decay"] > 0:  # the write-up's heuristic: N * weight decay
            zs.append(float(s["num_examples"] * s["weight_decay"]))
        for z in zs:
            rows.append({
                "spectrum": Path(path).stem, "width": int(s["width"]), "seed": int(s["seed"]),
                "num_params": int(s["num_params"]), "train_loss": float(s["loss"]),
                "test_loss": float(s["test_loss"]), "test_accuracy": float(s["test_accuracy"]),
                "top_eigenvalue": float(np.max(s["top"])), "converged": int(eig.size),
                "z": z, "effective_dimension": hessian.effective_dimension(eig, z),
            })
            print(rows[-1])

    io.save_csv(smk.output[0], rows, FIELDS)


run(snakemake, main)
