"""Vectorised multi-seed training vs the plain one-model loop, against the compute floor.

Speed (default): the ``config.yaml`` ``train`` model and recipe on MNIST-1D, trained by
``multirun.train.train_shard`` (a shard of ``train.shard_size`` seeds as one program;
where a hand-written step program applies (plain MLP: ``mlp``; 1-D CNN: ``cnn1d``)
both it, which ``auto`` picks, and the generic ``vmap`` program are timed) against
``multirun.train.train_one`` (a plain ``nn.Module`` + ``torch.optim.SGD`` loop, one seed
after another), in this process with the same thread count. The machine may be shared,
so the programs are timed in short interleaved units (``--epochs`` (5) epochs of a shard /
of ``--loop-seeds`` seeds, ``--repeats`` times; a unit includes its set-up) and
compared per seed-epoch (the cost of a step does not depend on the seed or the epoch).

``compute floor``: the training FLOPs of one plain step (``torch.utils.flop_counter``:
the matrix products and convolutions) at this machine's fp32 GEMM rate measured in the
same run (1024^3 ``torch.mm``, measured before every repeat; the best so far counts):
no exact fp32 program can be faster. ``of floor`` is
floor / time (1.0 = the GEMM peak), the measure that travels between machines.
``seeds/s``: seeds of the whole recipe (its epochs) trained per second.

Rows: the config's MLP, ``--widths`` (other MLP widths), the 1-D CNN (``cnn1d`` width 25,
the MNIST-1D paper's ConvBase; ``--no-cnn`` skips it) and the airbench net
(``--airbench-width`` 64 as in the CIFAR-10 preset, BatchNorm, flip+crop, on fabricated
CIFAR-shaped data: the cost does not depend on the values), timed as the difference of a
1- and a 2-epoch run of ``--airbench-steps`` steps of ``--airbench-batch`` images (so
set-up is excluded) for a shard of ``--airbench-seeds`` seeds and for the loop;
``seeds/s`` for it is projected to the preset's recipe (50,000 images x 10 epochs).
``--no-airbench`` skips it. ``--full-shard`` (default on) also times one whole shard of
the config recipe. ``--cpu-clock``: one thread, every time (GEMM rate included) read from
the process's CPU clock, so time spent descheduled on a loaded machine does not count
(cache and memory contention still do). ``--accuracy``: MNIST-1D test accuracies of the MLP and the 1-D CNN.

``--sweep``: instead of the rows above, a learning-rate sweep of the config's model and
recipe, ``--sweep-rates`` (8) rates (the recipe's lr times 2^-4 .. 2^3) x ``--sweep-seeds``
(4) seeds, trained as ONE program of 32 members with per-member learning rates against
8 separate 4-seed shard programs, interleaved ``--repeats`` times in units of ``--epochs``
epochs, for the config's model (the hand-written program where one applies), for the
same model with BatchNorm (the ``vmap`` program, as the BatchNorm study trains it) and,
unless ``--no-cnn``, for the 1-D CNN (the ``cnn1d`` program); and
the cost of per-epoch test evaluation (``evaluation=(x_test, y_test)``) on a shard of
``train.shard_size`` seeds of the default recipe: the seconds spent evaluating inside each
run (``phases["evaluation"]``) against the rest of that run.

``--device cuda`` (or ``auto``) trains on the GPU, every time synchronised, the floor at the
GPU's fp32 GEMM rate (``--cpu-clock`` is CPU only).

OpenMP's wait policy is left as the environment has it, as in a workflow job (torch's
default lets workers spin briefly between operations, the fast choice on cores the job
owns). On a machine shared with other work, export ``OMP_WAIT_POLICY=PASSIVE`` or use
``--cpu-clock``: spinning workers then wait on descheduled peers.

Run: ``.venv/bin/python benchmarks/bench_train.py [--threads 1]`` (3-6 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from benchlib import device_name, sync
from torch.utils.flop_counter import FlopCounterMode

from multirun.checkpoint import evaluate_shard
from multirun.contracts import pick_device
from multirun.data import make_mnist1d
from multirun.model_spec import normalize_spec
from multirun.programs import pick_program
from multirun.recipe import normalize_recipe
from multirun.train import init_model, train_one, train_shard

ROOT = Path(__file__).resolve().parents[1]
CLOCK = {"now": time.perf_counter}  # --cpu-clock: time.process_time
DEVICE = {"device": torch.device("cpu")}  # --device


def mnist1d(seed: int, num_samples: int) -> dict[str, torch.Tensor]:
    """MNIST-1D generated offline with the package's default arguments (80/20 split)."""
    d = make_mnist1d(seed=seed, num_samples=num_samples)
    return {"x": torch.from_numpy(d["x_train"]), "y": torch.from_numpy(d["y_train"]),
            "x_test": torch.from_numpy(d["x_test"]), "y_test": torch.from_numpy(d["y_test"])}


CNN = {"name": "cnn1d", "width": 25, "batchnorm": False}  # the MNIST-1D paper's ConvBase

_RATES: list[float] = []


def gemm_rate(n: int = 1024, repeats: int = 10) -> float:
    """The fp32 GEMM rate (FLOP/s) with the current thread count: the best seen so far.

    Each call measures again (best of 3) and returns the best of all calls, so that on a
    shared machine the floor comes from the least disturbed measurement of the run.
    """
    dev = DEVICE["device"]
    a, b = torch.randn(n, n, device=dev), torch.randn(n, n, device=dev)
    a @ b
    best = float("inf")
    for _ in range(3):
        sync(DEVICE["device"])
        t = CLOCK["now"]()
        for _ in range(repeats):
            a @ b
        sync(DEVICE["device"])
        best = min(best, (CLOCK["now"]() - t) / repeats)
    _RATES.append(2 * n**3 / best)
    return max(_RATES)


def conv_rate(repeats: int = 3) -> float:
    """fp32 rate (FLOP/s) of a 3x3 convolution (oneDNN): 32 x 64 x 32 x 32, 64 channels out."""
    dev = DEVICE["device"]
    x, w = torch.randn(32, 64, 32, 32, device=dev), torch.randn(64, 64, 3, 3, device=dev)
    F.conv2d(x, w, padding=1)
    best = float("inf")
    for _ in range(3):
        sync(DEVICE["device"])
        t = CLOCK["now"]()
        for _ in range(repeats):
            F.conv2d(x, w, padding=1)
        sync(DEVICE["device"])
        best = min(best, (CLOCK["now"]() - t) / repeats)
    return 2 * 32 * 64 * 64 * 9 * 32 * 32 / best


def flops_per_step(x: torch.Tensor, y: torch.Tensor, spec: dict, batch_size: int) -> int:
    """FLOPs of one plain training step (forward + backward) of one model."""
    model = init_model(0, spec, tuple(x.shape[1:]), int(y.max()) + 1)
    xb, yb = x[:batch_size], y[:batch_size]
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(xb), yb).backward()
    return counter.get_total_flops()


def _seconds(fn) -> float:
    sync(DEVICE["device"])
    t = CLOCK["now"]()
    fn()
    sync(DEVICE["device"])
    return CLOCK["now"]() - t


def compare(data, spec, recipe, *, shard_size, epochs, loop_seeds, repeats,
            programs=("auto",)) -> dict:
    """Time the shard programs and the loop, interleaved ``repeats`` times.

    One unit of a shard program is ``shard_size`` seeds trained for ``epochs``
    epochs; one unit of the loop is ``loop_seeds`` seeds for ``epochs`` epochs each.
    Units alternate so that all see the same machine load. Returns seconds per
    seed-epoch, ``{program or "loop": [one per repeat]}``, and ``"floor"``.
    """
    x, y = data["x"], data["y"]
    rec = {**recipe, "epochs": epochs}
    steps = len(x) // min(recipe["batch_size"], len(x))
    out: dict = {p: [] for p in (*programs, "loop")}
    for p in programs:  # warm-up (first calls pay one-off costs)
        train_shard(x[:2 * steps], y[:2 * steps], [0, 1], spec, {**rec, "epochs": 1}, DEVICE["device"],
                    progress=False, program=p)
    for _ in range(repeats):
        gemm_rate()
        for p in programs:
            out[p].append(_seconds(lambda p=p: train_shard(
                x, y, list(range(shard_size)), spec, rec, DEVICE["device"], progress=False, program=p,
            )) / (shard_size * epochs))
        out["loop"].append(_seconds(lambda: [train_one(x, y, seed, spec, rec, DEVICE["device"])
                                             for seed in range(loop_seeds)])
                           / (loop_seeds * epochs))
    out["floor"] = flops_per_step(x, y, spec, recipe["batch_size"]) * steps / gemm_rate()
    return out


def _programs(spec: dict, recipe: dict) -> tuple[str, ...]:
    """The hand-written program and ``vmap`` where one applies, else ``auto`` (= ``vmap``)."""
    own = pick_program("auto", normalize_spec(spec), normalize_recipe(recipe))
    return (own, "vmap") if own != "vmap" else ("auto",)


def _time(t: float) -> str:
    return f"{t:.1f} s" if t >= 10 else f"{t * 1e3:.2f} ms"


def report(name: str, r: dict, full_epochs: int) -> None:
    """One line per program: best (median) time per seed-epoch, of floor, seeds/s, vs loop."""
    loop = min(r["loop"])
    print(f"{name}: compute floor {_time(r['floor'])}/seed-epoch; one-model loop "
          f"{_time(loop)} (median {_time(statistics.median(r['loop']))}), "
          f"{r['floor'] / loop:.2f} of floor, {1 / (loop * full_epochs):.3g} seeds/s")
    for p, times in r.items():
        if p in ("loop", "floor"):
            continue
        best = min(times)
        print(f"    {p:>5}: {_time(best)}/seed-epoch (median {_time(statistics.median(times))}), "
              f"{r['floor'] / best:.2f} of floor, {1 / (best * full_epochs):.3g} seeds/s, "
              f"{loop / best:.2f}x the loop")


def mlp_gemm_seconds(spec: dict, in_features: int, classes: int, seeds: int, batch: int,
                     repeats: int = 5, calls: int = 20) -> float:
    """Seconds of one step's matrix products alone, as :class:`multirun.programs.MLPProgram`
    calls them (``torch.bmm`` with ``out=``, the same shapes, layouts and transposes):
    forward ``M_l @ a_l``, backward ``dz @ a_l^T`` and ``M_l[..., :-1]^T @ dz``. Best of
    ``repeats`` runs of ``calls`` steps' products: the reference the program is a fraction of."""
    dims = [in_features] + [spec["width"]] * spec["depth"] + [classes]
    s, b, dev = seeds, batch, DEVICE["device"]
    M = [torch.randn(s, o, i + 1, device=dev) for i, o in zip(dims, dims[1:], strict=False)]
    acts = [torch.randn(s, b, dims[0] + 1, device=dev).transpose(1, 2)]
    acts += [torch.randn(s, d + 1, b, device=dev) for d in dims[1:-1]]
    z = [torch.empty(s, o, b, device=dev) for o in dims[1:]]
    grads = [torch.empty_like(m) for m in M]
    dh = [torch.empty(s, d, b, device=dev) for d in dims[1:-1]]

    def step_products():
        for i, m in enumerate(M):
            torch.bmm(m, acts[i], out=z[i])
        for i in range(len(M) - 1, -1, -1):
            torch.bmm(z[i], acts[i].transpose(1, 2), out=grads[i])
            if i:
                torch.bmm(M[i][..., :-1].transpose(1, 2), z[i], out=dh[i - 1])

    step_products()
    best = float("inf")
    for _ in range(repeats):
        best = min(best, _seconds(lambda: [step_products() for _ in range(calls)]) / calls)
    return best


STEP_PHASES = ("forward GEMM", "backward GEMM", "elementwise", "optimiser", "data gather")


def breakdown(data, spec, recipe, *, shard_size, epochs, repeats) -> None:
    """The ``mlp`` program's time per phase, against its own GEMMs timed alone (interleaved)."""
    x, y = data["x"], data["y"]
    rec = {**recipe, "epochs": epochs}
    batch = min(recipe["batch_size"], len(x))
    steps = len(x) // batch * epochs
    classes = int(y.max()) + 1
    seeds = list(range(shard_size))
    train_shard(x, y, seeds, spec, {**rec, "epochs": 1}, DEVICE["device"], progress=False,
                program="mlp")  # warm-up
    runs, refs = [], []
    for _ in range(repeats):
        refs.append(mlp_gemm_seconds(spec, x[0].numel(), classes, shard_size, batch))
        phases: dict = {}
        total = _seconds(lambda phases=phases: train_shard(
            x, y, seeds, spec, rec, DEVICE["device"], progress=False, program="mlp",
            phases=phases))
        runs.append((total, phases))
        refs.append(mlp_gemm_seconds(spec, x[0].numel(), classes, shard_size, batch))
    gemm_step = min(refs)
    total, phases = sorted(runs, key=lambda run: run[0])[len(runs) // 2]  # the median run
    ratio = [steps * gemm_step / t for t, _ in runs]
    print(f"mlp program, {shard_size} seeds x {epochs} epochs ({steps} steps of batch {batch}), "
          f"the median of {repeats} runs: {total:.2f} s")
    print(f"  GEMM reference: the step's {3 * (spec['depth'] + 1) - 1} torch.bmm alone at their "
          f"shapes, {gemm_step * 1e6:.0f} us/step (best of the {len(refs)} measured around the "
          f"runs), {steps * gemm_step:.2f} s for the run")
    for name in STEP_PHASES:
        sec = phases.get(name, 0.0)
        print(f"  {name:42s}: {sec:6.2f} s  {sec / total:6.1%}")
    other = total - sum(phases.values())
    print(f"  {'other (loop, schedule, history, set-up)':42s}: {other:6.2f} s  {other / total:6.1%}")
    print(f"RATIO mlp program / its GEMMs alone: {statistics.median(ratio):.2f} (target >= 0.5; "
          f"per run {', '.join(f'{r:.2f}' for r in ratio)}; the timers add a little)")


def airbench(args) -> None:
    """The airbench net at CIFAR-10 size on fabricated data: shard vs loop, steps only."""
    b, steps, s = args.airbench_batch, args.airbench_steps, args.airbench_seeds
    g = torch.Generator().manual_seed(0)
    x = torch.randn(b * steps, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (b * steps,), generator=g)
    spec = {"name": "airbench", "width": args.airbench_width, "batchnorm": True}
    preset = yaml.safe_load((ROOT / "configs" / "cifar10.yaml").read_text())["train"]["recipe"]
    recipe = {**preset, "batch_size": b, "warmup_epochs": 0}

    def per_step(fn) -> float:  # seconds per step: a 2-epoch run minus a 1-epoch run
        fn({**recipe, "epochs": 1})  # warm-up: one-off costs (cuDNN's plans, CUDA's modules)
        t1 = _seconds(lambda: fn({**recipe, "epochs": 1}))
        t2 = _seconds(lambda: fn({**recipe, "epochs": 2}))
        return (t2 - t1) / steps if t2 > t1 else math.nan  # nan: noise above the steps' time

    vec = per_step(lambda r: train_shard(x, y, list(range(s)), spec, r, DEVICE["device"],
                                         progress=False)) / s
    loop = per_step(lambda r: train_one(x, y, 0, spec, r, DEVICE["device"]))
    floor = flops_per_step(x, y, spec, b) / gemm_rate()
    epoch_steps = 50_000 / b  # CIFAR-10 train set; the preset trains preset["epochs"] epochs
    r = {"vmap": [vec], "loop": [loop], "floor": floor}
    print(f"airbench width {args.airbench_width} (BatchNorm, flip_crop), batch {b}, shard of {s}; "
          f"seeds/s projected to {preset['epochs']} epochs of 50,000 images:")
    report("  airbench", {k: ([t * epoch_steps for t in v] if isinstance(v, list)
                               else v * epoch_steps) for k, v in r.items()}, preset["epochs"])


def accuracy(data, spec, recipe, seeds: int) -> tuple[float, float, float]:
    """Mean/std/min-max test accuracy (%) of ``seeds`` models and the wall time (s)."""
    t = time.perf_counter()
    ckpt = train_shard(data["x"], data["y"], list(range(seeds)), spec, recipe, DEVICE["device"],
                       progress=False)
    dt = time.perf_counter() - t
    logits, _ = evaluate_shard(ckpt, data["x_test"], batch_size=4096, device=DEVICE["device"])
    acc = (logits.argmax(-1) == data["y_test"]).double().mean(1) * 100
    return float(acc.mean()), float(acc.std()), dt


def sweep(data, spec, recipe, args) -> None:
    """``--sweep``: a packed lr sweep vs separate shards, for the config's model (its own
    program), the same model with BatchNorm (the ``vmap`` program) and the 1-D CNN (the
    ``cnn1d`` program, unless ``--no-cnn``); the per-epoch evaluation overhead."""
    dev, x, y = DEVICE["device"], data["x"], data["y"]
    epochs, full = args.epochs, recipe["epochs"]
    seeds = list(range(args.sweep_seeds))
    shard = list(range(args.shard_size))
    evaluation = (data["x_test"], data["y_test"])
    unit = {**recipe, "epochs": epochs}
    # program -> (model, unit recipe): the config's model, with BatchNorm, the 1-D CNN
    specs = {pick_program("auto", spec, recipe): (spec, unit)}
    if "batchnorm" in spec:  # the same model with BatchNorm: the generic program
        specs.setdefault("vmap", ({**spec, "batchnorm": True}, unit))
    if args.cnn:
        specs.setdefault("cnn1d", (CNN, {**unit, "lr": args.cnn_lr}))

    def points(rec):  # the sweep's 8 recipes: the unit's lr times 2^-4 .. 2^3
        return [{**rec, "lr": rec["lr"] * 2.0 ** k} for k in range(-4, args.sweep_rates - 4)]

    def packed(s, rec):
        members = [p for p in points(rec) for _ in seeds]
        return train_shard(x, y, seeds * args.sweep_rates, s, members, dev, progress=False,
                           on_diverge="record")

    def separate(s, rec):
        return [train_shard(x, y, seeds, s, p, dev, progress=False, on_diverge="record")
                for p in points(rec)]

    fractions: list[float] = []  # each evaluated run: evaluation / the rest of the run

    def evaluated():
        phases: dict = {}
        start = CLOCK["now"]()
        train_shard(x, y, shard, spec, unit, dev, progress=False, evaluation=evaluation,
                    phases=phases)
        fractions.append(phases["evaluation"] / (CLOCK["now"]() - start - phases["evaluation"]))

    runs = {(k, prog): (lambda fn=fn, s=s, r=r: fn(s, r)) for prog, (s, r) in specs.items()
            for k, fn in (("packed", packed), ("separate", separate))}
    runs["evaluated", ""] = evaluated
    for s, r in specs.values():  # warm-up
        train_shard(x[:512], y[:512], seeds, s, {**r, "epochs": 1}, dev, progress=False)
    times: dict = {k: [] for k in runs}
    for _ in range(args.repeats):
        for k, fn in runs.items():
            times[k].append(_seconds(fn))
    n = len(seeds) * args.sweep_rates
    scale = full / epochs  # seeds/s of the whole recipe
    print(f"sweep: {args.sweep_rates} rates (each program's lr x 2^-4 .. 2^{args.sweep_rates - 5})"
          f" x {len(seeds)} seeds = {n} members, units of {epochs} epochs, {args.repeats} repeats")
    for prog, (s, r) in specs.items():
        t_pack, t_sep = times["packed", prog], times["separate", prog]
        rates = [f"{p['lr']:.4g}" for p in points(r)]
        print(f"  {prog} program ({s}; rates {rates})")
        for k, t in (("packed", t_pack), ("separate", t_sep)):
            print(f"    {k:>8}: best {min(t):.2f} s (median {statistics.median(t):.2f} s) per "
                  f"unit, {n / (min(t) * scale):.2f} seeds/s")
        print(f"    packed / separate speed-up: {min(t_sep) / min(t_pack):.2f}x best, "
              f"{statistics.median(t_sep) / statistics.median(t_pack):.2f}x median; per repeat "
              f"{[round(a / b, 2) for a, b in zip(t_sep, t_pack, strict=True)]}")
        if prog == "mlp":  # the same comparison, the products alone
            batch, classes = min(recipe["batch_size"], len(x)), int(y.max()) + 1
            gemm = {m: min(mlp_gemm_seconds(s, x[0].numel(), classes, m, batch)
                           for _ in range(args.repeats)) for m in (len(seeds), n)}
            print(f"    the step's products alone (torch.bmm at the program's shapes): "
                  f"{args.sweep_rates} x {1e3 * gemm[len(seeds)]:.2f} ms for {len(seeds)} "
                  f"members against {1e3 * gemm[n]:.2f} ms for {n}: "
                  f"{args.sweep_rates * gemm[len(seeds)] / gemm[n]:.2f}x, the part of the "
                  "speed-up the matrix products allow; the rest is per-step and per-program "
                  "overhead")
    print(f"evaluation: shard of {len(shard)} seeds, {len(data['x_test'])} test examples per "
          f"epoch: {100 * statistics.median(fractions):.1f} % of the training time (the median "
          f"run; per run {', '.join(f'{100 * f:.1f}' for f in fractions)} %; timed inside "
          "each run, so the machine's drift between runs does not enter)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(ROOT / "config.yaml"))
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads for both programs (default: torch's default)")
    parser.add_argument("--epochs", type=int, default=5, help="epochs per timed unit")
    parser.add_argument("--loop-seeds", type=int, default=4, help="seeds per timed loop unit")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved timed units")
    parser.add_argument("--widths", type=int, nargs="*", default=[],
                        help="other MLP widths to compare")
    parser.add_argument("--full-shard", action=argparse.BooleanOptionalAction, default=True,
                        help="also time one whole shard of the config recipe")
    parser.add_argument("--cnn", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--cnn-repeats", type=int, default=2)
    parser.add_argument("--airbench", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--airbench-width", type=int, default=64)
    parser.add_argument("--airbench-batch", type=int, default=128)
    parser.add_argument("--airbench-steps", type=int, default=2)
    parser.add_argument("--airbench-seeds", type=int, default=2)
    parser.add_argument("--sweep", action="store_true",
                        help="a packed 8-rate x 4-seed lr sweep vs 8 separate shards, and "
                             "the per-epoch evaluation overhead")
    parser.add_argument("--sweep-rates", type=int, default=8)
    parser.add_argument("--sweep-seeds", type=int, default=4)
    parser.add_argument("--breakdown", action="store_true",
                        help="only the mlp program's per-phase times against its own GEMMs")
    parser.add_argument("--accuracy", action="store_true")
    parser.add_argument("--acc-seeds", type=int, default=8)
    parser.add_argument("--cnn-lr", type=float, default=0.2)
    parser.add_argument("--cnn-epochs", type=int, default=30)
    parser.add_argument("--device", default="cpu",
                        help="cpu | cuda | auto (CUDA when present); times on CUDA are synchronised")
    parser.add_argument("--cpu-clock", action="store_true",
                        help="one thread, timed by the process's CPU clock (time the process "
                             "was descheduled does not count: for a loaded machine)")
    args = parser.parse_args()
    if args.cpu_clock:
        args.threads, CLOCK["now"] = 1, time.process_time
    if args.threads:
        torch.set_num_threads(args.threads)
    DEVICE["device"] = pick_device(args.device)
    if args.cpu_clock and DEVICE["device"].type != "cpu":
        parser.error("--cpu-clock times the CPU; use it with --device cpu")

    cfg = yaml.safe_load(Path(args.config).read_text())
    train_cfg = cfg["train"]
    spec, recipe = dict(train_cfg["model"]), dict(train_cfg["recipe"])
    data = mnist1d(cfg["dataset"]["seed"], cfg["dataset"]["num_samples"])
    peak = gemm_rate()
    dev = DEVICE["device"]
    gpu = f", device {device_name(dev)}" if dev.type == "cuda" else ""
    print(f"machine: {device_name()}{gpu}, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads, fp32 GEMM "
          f"{peak / 1e9:.0f} GFLOP/s, load average {os.getloadavg()[0]:.1f}, "
          f"{'CPU' if args.cpu_clock else 'wall'} clock; MNIST-1D "
          f"{len(data['x'])} train / {len(data['x_test'])} test")
    print(f"model {spec}; recipe {recipe}")
    full_epochs = recipe["epochs"]
    shard = int(train_cfg["shard_size"])
    if args.sweep:
        args.shard_size = shard
        sweep(data, spec, recipe, args)
        print(f"load average {os.getloadavg()[0]:.1f}")
        return
    timing = {"shard_size": shard, "epochs": args.epochs, "loop_seeds": args.loop_seeds,
              "repeats": args.repeats}
    if spec["name"] == "mlp" and not spec.get("batchnorm"):
        breakdown(data, spec, recipe, shard_size=shard, epochs=args.epochs, repeats=args.repeats)
        if args.breakdown:
            return
    programs = _programs(spec, recipe)
    r = compare(data, spec, recipe, programs=programs, **timing)
    report(f"{spec['name']} width {spec['width']}", r, full_epochs)
    for width in args.widths:
        r = compare(data, {**spec, "width": width}, recipe, programs=programs, **timing)
        report(f"{spec['name']} width {width}", r, full_epochs)
    cnn_recipe = {**recipe, "lr": args.cnn_lr, "epochs": args.cnn_epochs}
    if args.cnn:
        r = compare(data, CNN, cnn_recipe, programs=_programs(CNN, cnn_recipe),
                    **{**timing, "repeats": args.cnn_repeats})
        report("cnn1d width 25", r, args.cnn_epochs)
    if args.airbench:
        airbench(args)
    if args.full_shard:
        seeds = list(range(shard))
        dt = _seconds(lambda: train_shard(data["x"], data["y"], seeds, spec, recipe, DEVICE["device"],
                                          progress=False))
        print(f"one full shard ({shard} seeds x {full_epochs} epochs, {spec['name']} width "
              f"{spec['width']}): {dt:.1f} s, {shard / dt:.2f} seeds/s")

    print(f"fp32 GEMM rate: best {gemm_rate() / 1e9:.0f} GFLOP/s over the run (the floors use "
          f"the best measured up to their row); 3x3 convolution (oneDNN) "
          f"{conv_rate() / 1e9:.0f} GFLOP/s (above the GEMM rate, convolutions can beat the "
          f"floor); load average {os.getloadavg()[0]:.1f}")
    if args.accuracy:
        for name, s, rec in (("mlp", spec, recipe), ("cnn1d", CNN, cnn_recipe)):
            mean, std, dt = accuracy(data, s, copy.deepcopy(rec), args.acc_seeds)
            print(f"accuracy {name} {s} lr {rec['lr']} epochs {rec['epochs']}: test "
                  f"{mean:.2f} +- {std:.2f} % over {args.acc_seeds} seeds ({dt:.0f} s)")


if __name__ == "__main__":
    main()
