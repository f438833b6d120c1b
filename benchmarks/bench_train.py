"""Vectorised multi-seed training vs the plain one-model loop, on MNIST-1D.

Speed (default): the ``config.yaml`` ``train`` model and recipe, trained by
``multirun.train.train_shard`` (a shard of ``train.shard_size`` seeds as one
program) against ``multirun.train.train_one`` (a plain ``nn.Module`` +
``torch.optim.SGD`` loop, one seed after another) on the same data and settings,
in this process with the same thread count. The machine is shared, so the two
are timed in short interleaved units (``--epochs`` epochs of a shard / of
``--loop-seeds`` seeds, ``--repeats`` times) and compared per seed-epoch (the cost
of a step does not depend on the seed or the epoch); projections to ``--seeds``
(64) seeds x the recipe's epochs scale these. ``--full-shard`` (default on) also
times one whole shard of the recipe. The line
``compute floor`` is the time the training FLOPs (counted by
``torch.utils.flop_counter`` on one plain step) would take at this machine's
measured fp32 GEMM rate: no exact fp32 program can be faster, which bounds the
possible ratio.

``--widths 32 64 ...``: the same comparison at other MLP widths (fewer epochs).
``--cnn``: also the 1-D CNN (``cnn1d``, width 25).
``--accuracy``: MNIST-1D test accuracies of the MLP (config recipe) and the 1-D CNN
(width 25, ``--cnn-lr``), ``--acc-seeds`` seeds each, for docs/training.md.

Run: ``.venv/bin/python benchmarks/bench_train.py [--threads 1] [--accuracy]``
"""

from __future__ import annotations

import os

# Sleeping (not spinning) OpenMP workers: on a shared, oversubscribed machine spinning
# workers wait on descheduled peers and 2-thread runs get several times slower.
# Must be set before torch loads its OpenMP runtime; export OMP_WAIT_POLICY to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import copy  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F
import yaml  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from multirun.data import make_mnist1d  # noqa: E402
from multirun.train import evaluate_shard, init_model, train_one, train_shard  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def mnist1d(seed: int, num_samples: int) -> dict[str, torch.Tensor]:
    """MNIST-1D generated offline with the package's default arguments (80/20 split)."""
    d = make_mnist1d(seed=seed, num_samples=num_samples)
    return {"x": torch.from_numpy(d["x_train"]), "y": torch.from_numpy(d["y_train"]),
            "x_test": torch.from_numpy(d["x_test"]), "y_test": torch.from_numpy(d["y_test"])}


def gemm_rate(n: int = 1024, repeats: int = 20) -> float:
    """Measured fp32 GEMM rate (FLOP/s) with the current thread count (best of 3)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(repeats):
            a @ b
        best = min(best, (time.perf_counter() - t) / repeats)
    return 2 * n**3 / best


def flops_per_step(x: torch.Tensor, y: torch.Tensor, spec: dict, batch_size: int) -> int:
    """FLOPs of one plain training step (forward + backward) of one model."""
    model = init_model(0, spec, tuple(x.shape[1:]), int(y.max()) + 1)
    xb, yb = x[:batch_size], y[:batch_size]
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(xb), yb).backward()
    return counter.get_total_flops()


def _seconds(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def compare(data, spec, recipe, *, shard_size, epochs, loop_seeds, repeats, peak) -> dict:
    """Time both programs, interleaved ``repeats`` times; seconds per seed-epoch.

    One unit of the vectorised program is a shard of ``shard_size`` seeds trained
    for ``epochs`` epochs; one unit of the loop is ``loop_seeds`` seeds for
    ``epochs`` epochs each. Units alternate so that both see the same machine
    load; the best (least disturbed) and the median unit are reported.
    """
    x, y = data["x"], data["y"]
    rec = {**recipe, "epochs": epochs}
    steps = len(x) // min(recipe["batch_size"], len(x))
    vec, loop = [], []
    for _ in range(repeats):
        vec.append(_seconds(lambda: train_shard(x, y, list(range(shard_size)), spec, rec, "cpu",
                                                progress=False)) / (shard_size * epochs))
        loop.append(_seconds(lambda: [train_one(x, y, seed, spec, rec, "cpu")
                                      for seed in range(loop_seeds)]) / (loop_seeds * epochs))
    floor = flops_per_step(x, y, spec, recipe["batch_size"]) * steps / peak
    return {"vec": min(vec), "loop": min(loop), "vec_med": statistics.median(vec),
            "loop_med": statistics.median(loop), "floor": floor}


def report(name: str, r: dict, seeds: int, full_epochs: int) -> None:
    n = seeds * full_epochs
    print(f"{name}: vectorised {r['vec'] * 1e3:7.2f} ms/seed-epoch (median "
          f"{r['vec_med'] * 1e3:.2f}) | one-model loop {r['loop'] * 1e3:7.2f} (median "
          f"{r['loop_med'] * 1e3:.2f}) | ratio {r['loop'] / r['vec']:5.2f}x (medians "
          f"{r['loop_med'] / r['vec_med']:.2f}x)")
    print(f"    compute floor {r['floor'] * 1e3:.2f} ms/seed-epoch (max ratio "
          f"{r['loop'] / r['floor']:.1f}x); projected {seeds} seeds x {full_epochs} epochs: "
          f"vectorised {r['vec'] * n:.0f} s, loop {r['loop'] * n:.0f} s")


def accuracy(data, spec, recipe, seeds: int) -> tuple[float, float, float]:
    """Mean/std/min-max test accuracy (%) of ``seeds`` models and the wall time (s)."""
    t = time.perf_counter()
    ckpt = train_shard(data["x"], data["y"], list(range(seeds)), spec, recipe, "cpu",
                       progress=False)
    dt = time.perf_counter() - t
    logits, _ = evaluate_shard(ckpt, data["x_test"], batch_size=4096, device="cpu")
    acc = (logits.argmax(-1) == data["y_test"]).double().mean(1) * 100
    return float(acc.mean()), float(acc.std()), dt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(ROOT / "config.yaml"))
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads for both programs (default: torch's default)")
    parser.add_argument("--seeds", type=int, default=64, help="seeds the projection is for")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per timed unit")
    parser.add_argument("--loop-seeds", type=int, default=4, help="seeds per timed loop unit")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved timed units")
    parser.add_argument("--widths", type=int, nargs="*", default=[32],
                        help="other MLP widths to compare")
    parser.add_argument("--full-shard", action=argparse.BooleanOptionalAction, default=True,
                        help="also time one whole shard of the config recipe")
    parser.add_argument("--cnn", action="store_true")
    parser.add_argument("--accuracy", action="store_true")
    parser.add_argument("--acc-seeds", type=int, default=8)
    parser.add_argument("--cnn-lr", type=float, default=0.2)
    parser.add_argument("--cnn-epochs", type=int, default=30)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    cfg = yaml.safe_load(Path(args.config).read_text())
    train_cfg = cfg["train"]
    spec, recipe = dict(train_cfg["model"]), dict(train_cfg["recipe"])
    data = mnist1d(cfg["dataset"]["seed"], cfg["dataset"]["num_samples"])
    peak = gemm_rate()
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, fp32 GEMM {peak / 1e9:.0f} GFLOP/s; MNIST-1D "
          f"{len(data['x'])} train / {len(data['x_test'])} test")
    print(f"model {spec}; recipe {recipe}")
    full_epochs = recipe["epochs"]
    shard = int(train_cfg["shard_size"])
    timing = {"shard_size": shard, "epochs": args.epochs, "loop_seeds": args.loop_seeds,
              "repeats": args.repeats, "peak": peak}
    r = compare(data, spec, recipe, **timing)
    report(f"{spec['name']} width {spec['width']}", r, args.seeds, full_epochs)
    for width in args.widths:
        r = compare(data, {**spec, "width": width}, recipe, **timing)
        report(f"{spec['name']} width {width}", r, args.seeds, full_epochs)
    cnn = {"name": "cnn1d", "width": 25, "batchnorm": False}
    cnn_recipe = {**recipe, "lr": args.cnn_lr, "epochs": args.cnn_epochs}
    if args.cnn:
        r = compare(data, cnn, cnn_recipe, **timing)
        report("cnn1d width 25", r, args.seeds, args.cnn_epochs)
    if args.full_shard:
        seeds = list(range(shard))
        dt = _seconds(lambda: train_shard(data["x"], data["y"], seeds, spec, recipe, "cpu",
                                          progress=False))
        print(f"one full shard ({shard} seeds x {full_epochs} epochs, {spec['name']} width "
              f"{spec['width']}): {dt:.1f} s")

    if args.accuracy:
        for name, s, rec in (("mlp", spec, recipe), ("cnn1d", cnn, cnn_recipe)):
            mean, std, dt = accuracy(data, s, copy.deepcopy(rec), args.acc_seeds)
            print(f"accuracy {name} {s} lr {rec['lr']} epochs {rec['epochs']}: test "
                  f"{mean:.2f} +- {std:.2f} % over {args.acc_seeds} seeds ({dt:.0f} s)")


if __name__ == "__main__":
    main()
