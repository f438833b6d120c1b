"""Whole-spectrum N_eff by SLQ against the dense float64 spectrum of the same model and data.

For each spectrum file given (``results/hessian/width-W-I.npz`` of the width sweep), rebuild
its model from the checkpoint in float64, form the dense Hessian of the mean training loss
on the same examples and labels (``HessianOperator.matmat`` on identity blocks: P HVPs),
take ``eigvalsh``, and print one table row per model and z:

    width | P | SLQ estimate +- SE | top-k lower bound | dense | (estimate - dense) / SE | seconds

Usage (after the default run or ``snakemake width_sweep``)::

    PYTHONPATH=src .venv/bin/python benchmarks/bench_effdim.py \
        results/hessian/width-8-0.npz results/hessian/width-32-0.npz --z 1

Cost: P HVPs plus an O(P^3) eigendecomposition per model (width 128, P = 6.5k: minutes on
a 2-core CPU; width 256, P = 13k: about 4x that).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from multirun import checkpoint, contracts, hessian, streams


def dense_spectrum(spectrum_path: Path, results: Path, block: int) -> np.ndarray:
    """Eigenvalues (P,) ascending of the float64 Hessian behind one spectrum file."""
    s = contracts.load_npz(spectrum_path, ("num_examples", "seed"))
    stem = spectrum_path.stem  # width-W-I
    ckpt_name, index = stem.rsplit("-", 1)
    ckpt = checkpoint.load_checkpoint(results / "train" / f"{ckpt_name}.pt")
    ds = contracts.load_dataset(results / "data" / "dataset.npz")
    member = int(index)
    seed = ckpt["seeds"][member]
    y = streams.training_labels(torch.from_numpy(ds["y_train"]), seed,
                              ckpt["recipe"]["label_noise"], ckpt["num_classes"])
    n = int(s["num_examples"])
    model = checkpoint.load_member(ckpt, member).double()
    x = torch.from_numpy(ds["x_train"][:n]).double()
    op = hessian.HessianOperator(model, x, y[:n], batch_size=n)
    H = torch.zeros(op.dim, op.dim, dtype=torch.float64)
    for start in range(0, op.dim, block):
        cols = torch.zeros(op.dim, min(block, op.dim - start), dtype=torch.float64)
        cols[start + torch.arange(cols.shape[1]), torch.arange(cols.shape[1])] = 1.0
        H[:, start:start + cols.shape[1]] = op.matmat(cols)
    H = (H + H.T) / 2  # symmetric up to rounding
    return torch.linalg.eigvalsh(H).numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("spectra", nargs="+", type=Path)
    ap.add_argument("--results", type=Path, default=Path("results"))
    ap.add_argument("--z", type=float, nargs="+", default=[1.0])
    ap.add_argument("--block", type=int, default=128, help="HVPs per vmapped block")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print("| width | P | z | SLQ estimate +- SE | top-k lower bound | dense | (est - dense) / SE "
          "| negative eigenvalues (dense) | seconds |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for path in args.spectra:
        s = contracts.load_npz(path, ("slq_nodes", "slq_weights", "num_params", "ritz_values",
                               "ritz_converged", "width"))
        t0 = time.perf_counter()
        ev = dense_spectrum(path, args.results, args.block)
        secs = time.perf_counter() - t0
        conv = s["ritz_values"][s["ritz_converged"]]
        for z in args.z:
            est, se = hessian.effective_dimension_slq(s["slq_nodes"], s["slq_weights"],
                                                      int(s["num_params"]), z)
            dense = hessian.effective_dimension(ev, z)
            topk = hessian.effective_dimension(conv, z)
            print(f"| {int(s['width'])} | {len(ev)} | {z:g} | {est:.1f} +- {se:.1f} | {topk:.1f} "
                  f"| {dense:.1f} | {(est - dense) / se:+.2f} | {int((ev < 0).sum())} "
                  f"| {secs:.0f} |", flush=True)


if __name__ == "__main__":
    main()
