"""Ensemble-kernel throughput against the write-up's reference code and the machine's GEMM peak.

Default (a few minutes on a 2-core CPU): synthetic fp16 logits (512 models, 10,000 train,
2,000 test, 10 classes) written as two .npy shards per split, then, in this one process:

* ``GEMM reference``: ``torch.addmm`` at the engine's own shape (a query block of every test
  row times a chunk of models x classes against every key; the chunk that
  ``chunk_models: auto`` measured for this machine), best of 5, measured right before and
  after every engine run;
* ``reference``: the write-up's ``compute_kernel`` (adapted from .cuda() to CPU, below) + top-k;
* ``engine``: :func:`multirun.kernel.neighbours` (fused CPU kernels), with the seconds and
  share of each phase (read, statistics, transform, GEMM, top-k), each product inside the
  engine against the same product repeated at once, and the same run with plain torch ops
  (the fallback without a C++ compiler);
* ``precision``: error of bf16 (run) and TF32 (emulated: inputs rounded to 10 mantissa bits)
  against float64, on a smaller problem.

Ratios printed: engine GFLOP/s / GEMM reference, bytes of logits read / their size (2.00: one pass
for the statistics, one for the products), reference time / engine time.

``--exactness``: max abs error of the engine (fused and plain-torch paths) against the
formula evaluated exactly in float64, per logit scale (3, 12, 30, 60), classes (10, 100),
variant and kind of fabricated logits (37 models in shards of 5, 20, 12).

``--memory``: peak resident memory of the engine at M and 8M models (child processes).
``--scale``: ``--scale-models`` (20,000) models x ``--train`` x ``--test`` streamed from disk
(written in shards of 1,000 models to a temp dir; 4.8 GB at the default sizes, 24 GB at CIFAR-10's
``--train 50000 --test 10000``): time, GFLOP/s, peak memory, and the ratio of the engine's time
to ``max(GEMM time, read time)`` (the FLOPs at the GEMM rate measured on ``--device`` in
``--precision``; one sequential read of every file, in the page-cache state the engine meets),
and the engine's phases. ``--precision`` may list several (``tf32,bf16,fp32``) over the same files.
Takes many minutes.

    .venv/bin/python benchmarks/bench_kernel.py [--models 512] [--memory] [--exactness]
    .venv/bin/python benchmarks/bench_kernel.py --skip-default --scale --scale-models 500 \\
        --train 50000 --test 10000 [--device cuda --precision tf32]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from benchlib import device_name, sync

import multirun.kernel as K
from multirun.contracts import pick_device
from multirun.kernel import ShardedLogits, neighbours, tune
from multirun.kernel import engine as kernel_engine

TOPK = 20


# --------------------------------------------------------------------------- the reference


def reference_normalize(logits):
    logits = logits.float()
    logits = logits.log_softmax(-1)
    logits = (logits - logits.mean(0, keepdim=True)) / logits.std(0, keepdim=True)
    return logits


def reference_compute_kernel(logits1, logits2):
    """The write-up's compute_kernel, with .cuda() removed and 10 read from the shape."""
    logits1 = reference_normalize(logits1)
    logits2 = reference_normalize(logits2)
    assert len(logits1) == len(logits2)
    num_classes = logits1.shape[-1]
    kernel = torch.zeros(logits1.shape[1], logits2.shape[1])
    for c in range(num_classes):
        logits1_cls = logits1[..., c]
        logits2_cls = logits2[..., c]
        corr_cls = (logits1_cls.T @ logits2_cls) / len(logits1)
        kernel += corr_cls / num_classes
    return kernel


# --------------------------------------------------------------------------- helpers


def synthetic_logits(rng, models, examples, classes, chunk=256):
    """fp16 logits with structure: a per-example class profile shared by models, plus noise."""
    profile = rng.standard_normal((examples, classes)).astype(np.float32) * 3
    out = np.empty((models, examples, classes), dtype=np.float16)
    for start in range(0, models, chunk):
        m = min(chunk, models - start)
        noise = rng.standard_normal((m, examples, classes), dtype=np.float32)
        out[start : start + m] = profile + 2 * noise
    return out


def write_shards(folder: Path, name: str, array: np.ndarray, shards: int = 2) -> list[Path]:
    paths = []
    for i, part in enumerate(np.array_split(array, shards)):
        paths.append(folder / f"{name}-{i:03d}.npy")
        np.save(paths[-1], part)
    return paths


def gemm_peak(n: int = 4096, repeats: int = 2, device: str = "cpu",
              precision: str = "fp32") -> float:
    """Measured GEMM rate (FLOP/s) on ``device``: best of ``repeats`` square n x n products.

    ``precision`` as the engine's: fp32, tf32 (CUDA tensor cores) or bf16 inputs.
    """
    dev = torch.device(device)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a, b = (torch.randn(n, n, device=dev).to(dtype) for _ in range(2))
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    try:
        torch.mm(a, b)
        best = float("inf")
        for _ in range(repeats):
            sync(dev)
            t = time.perf_counter()
            torch.mm(a, b)
            sync(dev)
            best = min(best, time.perf_counter() - t)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved
    return 2 * n**3 / best


def gemm_at_shape(rows: int, inner: int, cols: int, repeats: int = 5) -> float:
    """The engine's own product, measured alone (FLOP/s): ``acc += zq.T @ zk`` with ``zq``
    (inner, rows) and ``zk`` (inner, cols) fp32, as :func:`multirun.kernel.engine._product`
    calls it, best of ``repeats``. The reference the engine's rate is a fraction of."""
    zq, zk = torch.randn(inner, rows), torch.randn(inner, cols)
    acc = torch.zeros(rows, cols)
    acc.addmm_(zq.T, zk, beta=0.0)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        acc.addmm_(zq.T, zk, beta=1.0, alpha=0.5)
        best = min(best, time.perf_counter() - t)
    return 2.0 * rows * inner * cols / best


def paired_gemm(run) -> tuple[float, float]:
    """Each product of one engine ``run()``, timed as it runs inside the engine and then
    repeated at once on the same operands into a scratch accumulator (the same moment of a
    shared machine, the engine's own operands): median seconds of (inside, repeated)."""
    inside, repeated, scratch = [], [], {}
    product = kernel_engine._product

    def timed_product(p, acc, zq, zk, alpha, first):
        t = time.perf_counter()
        product(p, acc, zq, zk, alpha, first)
        inside.append(time.perf_counter() - t)
        if acc.shape not in scratch:
            scratch[acc.shape] = torch.empty_like(acc)
        spare = scratch[acc.shape]
        t = time.perf_counter()
        product(p, spare, zq, zk, alpha, first)
        repeated.append(time.perf_counter() - t)

    kernel_engine._product = timed_product
    try:
        run()
    finally:
        kernel_engine._product = product
    return float(np.median(inside)), float(np.median(repeated))


PHASES = {"read": "read the chunks (memory-mapped fp16)",
          "moments": "statistics (fp16 -> fp32, log_softmax, Chan merge)",
          "transform": "transform (fp16 -> fp32, log_softmax, z-score, layout)",
          "gemm": "GEMM (addmm into the accumulator)",
          "topk": "top-k of each finished block"}


def print_phases(phases: dict, total: float, flops: float) -> None:
    """Each phase's seconds and share of ``total``; GEMM also as GFLOP/s."""
    for name, what in PHASES.items():
        sec = phases.get(name, 0.0)
        rate = f"  {flops / sec / 1e9:7.1f} GFLOP/s" if name == "gemm" and sec else ""
        print(f"  {what:55s}: {sec:6.2f} s  {sec / total:6.1%}{rate}")
    other = total - sum(phases.values())
    print(f"  {'other (planning, masks, Python, progress bar)':55s}: {other:6.2f} s  "
          f"{other / total:6.1%}")


def read_seconds(paths: list[Path], block: int = 64 << 20) -> float:
    """Seconds to read every file once, sequentially in ``block``-byte reads: the time a
    streaming pass cannot beat, measured in the page-cache state the engine then meets."""
    buf = bytearray(block)
    t = time.perf_counter()
    for path in paths:
        with open(path, "rb", buffering=0) as f:
            while f.readinto(buf):
                pass
    return time.perf_counter() - t


def timed(fn, repeats: int = 1):
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def peak_rss_mib() -> float:
    """Peak resident set (VmHWM) of this process in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> str:
    return (f"{device_name()}, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads")


# --------------------------------------------------------------------------- sections


def bench_default(models: int, train: int, test: int, classes: int, repeats: int) -> None:
    rng = np.random.default_rng(0)
    flops = 2.0 * test * train * models * classes
    print(f"machine: {machine()}")
    print(f"problem: {models} models, {train} train, {test} test, {classes} classes, top-{TOPK}; "
          f"{flops / 1e9:.1f} GFLOP per kernel")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        x_train = synthetic_logits(rng, models, train, classes)
        x_test = synthetic_logits(rng, models, test, classes)
        q = ShardedLogits(write_shards(tmp, "test", x_test))
        t = ShardedLogits(write_shards(tmp, "train", x_train))
        K._fused()  # build/load outside the timings

        def reference():
            kern = reference_compute_kernel(torch.from_numpy(x_test), torch.from_numpy(x_train))
            return kern.topk(TOPK, dim=1)

        phases: dict = {}

        def engine():
            q.bytes_read = t.bytes_read = 0
            phases.clear()
            return neighbours(q, t, k=TOPK, progress=False, device="cpu", phases=phases)

        # The engine's own GEMM: a query block of all test rows (the plan when the
        # accumulator fits) times a chunk of models x classes stacked, against all keys; the
        # chunk is kernel.chunk_models: auto, measured here on first use (multirun.kernel.tune).
        chunk = tune.chunk_models(torch.device("cpu"), classes, test, train)
        print(f"chunk_models auto: {chunk} on this machine (cache: {tune.cache_dir() / tune.FILE})")
        shape = (test, min(chunk, models) * classes, train)
        # The machine may be shared: measure the reference right before and after every
        # engine run and pair each write-up run with an engine run; report medians of ratios.
        peaks, engine_s, reference_s, of_peak, speedup, runs = [], [], [], [], [], []
        for r in range(repeats):
            before = gemm_at_shape(*shape)
            t_eng, (index, sim) = timed(engine)
            read = (q.bytes_read + t.bytes_read) / (x_test.nbytes + x_train.nbytes)
            after = gemm_at_shape(*shape)
            peaks += [before, after]
            engine_s.append(t_eng)
            runs.append((t_eng, dict(phases)))
            of_peak.append(flops / t_eng / ((before + after) / 2))
            if r < max(1, repeats - 1):
                t_ref, ref = timed(reference)
                reference_s.append(t_ref)
                speedup.append(t_ref / t_eng)
        peak = float(np.median(peaks))
        t_eng, t_ref = float(np.median(engine_s)), float(np.median(reference_s))
        print(f"GEMM reference: torch addmm at the engine's shape ({shape[0]} x {shape[1]}) @ "
              f"({shape[1]} x {shape[2]}), best of 5, before and after each engine run: "
              f"{peak / 1e9:7.1f} GFLOP/s (median; range {min(peaks) / 1e9:.1f}-"
              f"{max(peaks) / 1e9:.1f})")
        print(f"reference (write-up code on CPU)     : {t_ref:7.2f} s  "
              f"{flops / t_ref / 1e9:7.1f} GFLOP/s  {flops / t_ref / peak:6.1%} of peak")
        print(f"engine (fused CPU kernels)           : {t_eng:7.2f} s  "
              f"{flops / t_eng / 1e9:7.1f} GFLOP/s  {flops / t_eng / peak:6.1%} of peak")
        median_run = sorted(runs, key=lambda run: run[0])[len(runs) // 2]
        print(f"engine phases (the median run, {median_run[0]:.2f} s):")
        print_phases(median_run[1], median_run[0], flops)
        inside, repeated = paired_gemm(engine)
        print(f"GEMM inside the engine / the same product repeated at once: {repeated / inside:.2f} "
              f"(median per product {inside * 1e3:.0f} ms against {repeated * 1e3:.0f} ms: whether "
              "the phases around it slow the GEMM down)")
        saved = K._fused_module
        K._fused_module = False
        try:
            t_torch, _ = timed(engine)
        finally:
            K._fused_module = saved
        print(f"engine (plain torch ops, fallback)   : {t_torch:7.2f} s  "
              f"{flops / t_torch / 1e9:7.1f} GFLOP/s  {flops / t_torch / peak:6.1%} of peak")
        err = float(np.abs(sim - ref.values.numpy()).max())
        print(f"max |similarity - reference|         : {err:.2e}")
        print(f"RATIO engine / GEMM reference        : {np.median(of_peak):.3f} (target >= 0.85; "
              f"per run, against the reference measured around it: "
              f"{', '.join(f'{x:.3f}' for x in of_peak)})")
        print(f"RATIO bytes read / data size         : {read:.2f} (statistics + products; "
              "2.00 = each pass reads the data once)")
        print(f"RATIO reference time / engine time   : {np.median(speedup):.2f} (target >= 2; per "
              f"pair: {', '.join(f'{x:.2f}' for x in speedup)})")
        precision_errors(x_test[:128, :1000], x_train[:128, :4000])


def precision_errors(x_test: np.ndarray, x_train: np.ndarray) -> None:
    """bf16 (run) and TF32 (emulated) kernels against float64."""
    def rounded_tf32(z: torch.Tensor) -> torch.Tensor:  # round to nearest, 10 mantissa bits
        bits = z.contiguous().view(torch.int32)
        return ((bits + 0x1000) & ~0x1FFF).view(torch.float32)

    def stacked(x):
        return K.normalize(torch.from_numpy(x)).permute(1, 0, 2).reshape(x.shape[1], -1)

    zq, zk = stacked(x_test), stacked(x_train)
    alpha = 1.0 / (x_test.shape[0] * x_test.shape[2])
    exact = (zq.double() @ zk.double().T) * alpha
    variants = {
        "fp32": (zq @ zk.T) * alpha,
        "tf32 (emulated)": (rounded_tf32(zq) @ rounded_tf32(zk).T) * alpha,
        "bf16": (zq.bfloat16().float() @ zk.bfloat16().float().T) * alpha,
    }
    with tempfile.TemporaryDirectory() as tmp:
        q = ShardedLogits(write_shards(Path(tmp), "q", x_test, 1))
        t = ShardedLogits(write_shards(Path(tmp), "t", x_train, 1))
        variants["bf16 (engine, CPU)"] = torch.from_numpy(
            K.dense_kernel(q, t, precision="bf16", device="cpu", chunk_models=64))
    top_exact = exact.topk(TOPK, dim=1).indices
    print(f"precision vs float64 ({x_test.shape[0]} models, {x_test.shape[1]} x "
          f"{x_train.shape[1]}): max abs error, mean abs error, top-{TOPK} sets identical")
    for name, kern in variants.items():
        diff = (kern.double() - exact).abs()
        top = kern.topk(TOPK, dim=1).indices
        same = np.mean([set(a.tolist()) == set(b.tolist()) for a, b in zip(top, top_exact,
                                                                             strict=True)])
        print(f"  {name:20s}: {diff.max():.2e}  {diff.mean():.2e}  {same:6.1%}")


def child_memory(models: int, train: int, test: int, classes: int, folder: str) -> None:
    """Run the engine on shards in ``folder`` (made by the parent) and print JSON."""
    paths = sorted(Path(folder).glob("*.npy"))
    t = ShardedLogits([p for p in paths if p.name.startswith("train")])
    q = ShardedLogits([p for p in paths if p.name.startswith("test")])
    sel = np.arange(models)
    t0 = time.perf_counter()
    neighbours(q, t, k=TOPK, models=sel, progress=False, device="cpu")
    print(json.dumps({"models": models, "seconds": time.perf_counter() - t0,
                      "peak_rss_mib": peak_rss_mib()}))


def bench_memory(models: int, train: int, test: int, classes: int) -> None:
    """Peak RSS at M and 8M models: bounded by chunk and block, not by M."""
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory() as tmp:
        for split, n in (("train", train), ("test", test)):
            write_shards(Path(tmp), split, synthetic_logits(rng, 8 * models, n, classes), 8)
        for m in (models, 8 * models):
            out = subprocess.run([sys.executable, __file__, "--child-memory", str(m), "--train",
                                  str(train), "--test", str(test), "--classes", str(classes),
                                  "--folder", tmp], capture_output=True, text=True, check=True)
            row = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"memory: {row['models']:6d} models  {row['seconds']:7.1f} s  "
                  f"peak RSS {row['peak_rss_mib']:7.0f} MiB")


def bench_scale(models: int, train: int, test: int, classes: int, folder: str | None,
                device: str, precisions: list[str]) -> None:
    """Stream ``models`` models from disk (shards of 1,000 models, written chunk by chunk).

    Prints the engine's time against its bound ``max(GEMM time, read time)``: the FLOPs at
    the GEMM rate measured on ``device`` in ``precision``, and one sequential read of every
    file (the engine reads the data twice: statistics, then products).
    """
    bad = [p for p in precisions if p not in kernel_engine.PRECISIONS]
    if bad:
        raise SystemExit(f"--precision: {', '.join(bad)} not among {kernel_engine.PRECISIONS}")
    rng = np.random.default_rng(2)
    dev = pick_device(device)
    flops = 2.0 * test * train * models * classes
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        paths: dict[str, list[Path]] = {"train": [], "test": []}
        profiles = {s: rng.standard_normal((n, classes)).astype(np.float32) * 3
                    for s, n in (("train", train), ("test", test))}
        per_shard = 1000
        for i, start in enumerate(range(0, models, per_shard)):
            m = min(per_shard, models - start)
            for split, n in (("train", train), ("test", test)):
                path = tmp / f"{split}-{i:03d}.npy"
                out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16,
                                                shape=(m, n, classes))
                for a in range(0, m, 100):
                    b = min(a + 100, m)
                    noise = rng.standard_normal((b - a, n, classes), dtype=np.float32)
                    out[a:b] = profiles[split] + 2 * noise
                out.flush()
                del out
                paths[split].append(path)
        files = [p for v in paths.values() for p in v]
        size = sum(p.stat().st_size for p in files)
        print(f"scale: wrote {models} models in {time.perf_counter() - t0:.0f} s "
              f"({size / 2**30:.1f} GiB); machine: {machine()}; device: {dev} ({device_name(dev)})")
        read = read_seconds(files)
        q, t = ShardedLogits(paths["test"]), ShardedLogits(paths["train"])
        if dev.type == "cpu":
            K._fused()
        warm = {s: tmp / f"warm-{s}.npy" for s in ("train", "test")}  # one-off costs (CUDA's
        for split, path in warm.items():                             # lazily loaded kernels)
            np.save(path, np.load(paths[split][0], mmap_mode="r")[:2, :500])
        for precision in precisions:
            neighbours(ShardedLogits([warm["test"]]), ShardedLogits([warm["train"]]), k=TOPK,
                       device=str(dev), precision=precision)
            t0 = time.perf_counter()  # the chunk, measured once per machine and precision:
            chunk = tune.chunk_models(dev, classes, test, train, precision)  # not timed below
            print(f"scale: chunk_models auto -> {chunk} for {precision} "
                  f"({time.perf_counter() - t0:.1f} s, cached in {tune.cache_dir() / tune.FILE})")
            peak = gemm_peak(device=str(dev), precision=precision)
            phases: dict = {}  # on a CPU from the timed run (its timers cost nothing there)
            t0 = time.perf_counter()
            neighbours(q, t, k=TOPK, progress=True, device=str(dev), precision=precision,
                       phases=None if dev.type == "cuda" else phases)
            sync(dev)
            dt = time.perf_counter() - t0
            bound = max(flops / peak, read)
            print(f"scale: {models} models x {train} train x {test} test, {precision}: {dt:.1f} s, "
                  f"{flops / dt / 1e9:.1f} GFLOP/s ({flops / dt / peak:.1%} of the "
                  f"{peak / 1e9:.1f} GFLOP/s GEMM peak), peak RSS {peak_rss_mib():.0f} MiB, bytes "
                  f"read / data size {(q.bytes_read + t.bytes_read) / size:.2f}")
            print(f"RATIO engine time / max(GEMM time, read time): {dt / bound:.2f} (target <= 2; "
                  f"GEMM time {flops / peak:.1f} s, one read of the {size / 2**30:.1f} GiB "
                  f"{read:.1f} s = {size / read / 2**30:.2f} GiB/s)")
            if dev.type == "cuda":  # the phases synchronise the GPU: a second run of their own
                t0 = time.perf_counter()
                neighbours(q, t, k=TOPK, device=str(dev), precision=precision, phases=phases)
                dt = time.perf_counter() - t0
                print(f"phases (a second run, {dt:.1f} s, each phase synchronised):")
            print_phases(phases, dt, flops)
            q.bytes_read = t.bytes_read = 0


def exact_kernel64(x1: np.ndarray, x2: np.ndarray, log_softmax: bool) -> np.ndarray:
    """The formula in float64, the top class's log-probability as -log1p(sum of the others)."""
    def z(x):
        x = x.astype(np.float64)
        if log_softmax:
            d = x - x.max(-1, keepdims=True)
            e = np.exp(d)
            np.put_along_axis(e, d.argmax(-1)[..., None], 0.0, -1)
            x = d - np.log1p(e.sum(-1, keepdims=True))
        return (x - x.mean(0)) / x.std(0, ddof=1)

    m, _, c = x1.shape
    z1, z2 = z(x1), z(x2)
    return sum(z1[..., k].T @ z2[..., k] for k in range(c)) / m / c


def bench_exactness(test: int = 517, train: int = 2049, models: int = 37) -> None:
    """Max abs error vs float64 per logit scale x path (chunks of 64 and of 7 models)."""
    print(f"exactness: {models} models in shards of 5, 20, {models - 25} (3 models: 1, 2); "
          f"{test} x {train}; max abs error vs the float64 formula (nan: the float64 formula "
          "itself is NaN)")
    kinds = {
        "random": lambda rng, m, n, c, s: rng.standard_normal((m, n, c)) * s,
        "confident": lambda rng, m, n, c, s: s * (rng.uniform(0, 1, (n, c))
                                                  + 0.05 * rng.standard_normal((m, n, c))),
        "shared": lambda rng, m, n, c, s: s * (rng.standard_normal((n, c))
                                               + 0.1 * rng.standard_normal((m, n, c))),
    }
    print(f"  {'kind':10s} {'M':>3s} {'C':>4s} {'scale':>5s} {'variant':8s} {'fused':>9s} "
          f"{'torch':>9s}")
    cases = [(kind, models) for kind in kinds] + [("shared", 3)]
    with tempfile.TemporaryDirectory() as tmp:
        for kind, m in cases:
            make = kinds[kind]
            for c in (10, 100):
                for scale in (3, 12, 30, 60):
                    rng = np.random.default_rng([scale, c])
                    x = {n: make(rng, m, size, c, scale).astype(np.float16)
                         for n, size in (("q", test), ("t", train))}
                    shards = {}
                    for name, arr in x.items():
                        paths = []
                        for i, part in enumerate(np.split(arr, [5, 25] if m > 25 else [1])):
                            paths.append(Path(tmp) / f"{name}{i}.npy")
                            np.save(paths[-1], part)
                        shards[name] = ShardedLogits(paths)
                    for ls in (True, False):
                        want = exact_kernel64(x["q"], x["t"], ls)
                        errors = []
                        for fused in (True, False):
                            saved = K._fused_module
                            K._fused_module = None if fused else False
                            try:
                                errors.append(max(float(np.abs(K.dense_kernel(
                                    shards["q"], shards["t"], log_softmax=ls, chunk_models=chunk,
                                    device="cpu", progress=False) - want).max())
                                    for chunk in (64, 7)))
                            finally:
                                K._fused_module = saved
                        print(f"  {kind:10s} {m:3d} {c:4d} {scale:5d} "
                              f"{'lsm' if ls else 'raw':8s} {errors[0]:9.1e} {errors[1]:9.1e}",
                              flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", type=int, default=512)
    p.add_argument("--train", type=int, default=10_000)
    p.add_argument("--test", type=int, default=2_000)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3, help="engine runs (each between two peaks)")
    p.add_argument("--memory", action="store_true", help="peak RSS at --memory-models and 8x")
    p.add_argument("--memory-models", type=int, default=128)
    p.add_argument("--scale", action="store_true", help="20,000 models streamed from disk")
    p.add_argument("--scale-models", type=int, default=20_000)
    p.add_argument("--scale-dir", default=None, help="where the temporary shards go")
    p.add_argument("--device", default="auto", help="--scale: auto | cpu | cuda")
    p.add_argument("--precision", default="fp32",
                   help="--scale: fp32 | tf32 | bf16, or several, comma-separated (same files)")
    p.add_argument("--exactness", action="store_true", help="error table vs float64 per scale")
    p.add_argument("--skip-default", action="store_true")
    p.add_argument("--child-memory", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--folder", default="", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child_memory:
        child_memory(a.child_memory, a.train, a.test, a.classes, a.folder)
        return
    if not a.skip_default:
        bench_default(a.models, a.train, a.test, a.classes, a.repeats)
    if a.memory:
        bench_memory(a.memory_models, a.train, a.test, a.classes)
    if a.exactness:
        bench_exactness()
    if a.scale:
        bench_scale(a.scale_models, a.train, a.test, a.classes, a.scale_dir, a.device,
                    a.precision.split(","))


if __name__ == "__main__":
    main()
