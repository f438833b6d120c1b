"""Models per GEMM chunk (``kernel.chunk_models: auto``), measured on first use, cached per machine.

A larger chunk makes each product ``(block, m*C) @ (m*C, Nt)`` deeper, so the float32
accumulator is read and written fewer times per FLOP; past some depth the chunk's
normalised copies fall out of cache. Where that balance lies depends on the CPU (cache
sizes, vector width) or GPU and on the problem's shape, so it is measured, not fixed: the
engine itself runs on synthetic fp16 logits of :data:`MODELS` models and the problem's
classes, with the problem's query and key counts rounded up to a power of two and capped at
:data:`MAX_QUERIES` x :data:`MAX_KEYS`, for each chunk of :data:`CANDIDATES`, best of
:data:`REPEATS` interleaved runs (a few seconds), and the fastest is kept if it beats
64 (the former fixed value) by more than 10%.

The choice is stored in ``$MULTIRUN_CACHE`` (default ``$XDG_CACHE_HOME/multirun``, else
``~/.cache/multirun``) as ``kernel-chunks.json``, one entry per (device name, torch version,
threads, classes kept and in the logits, shape bucket, precision, variant); a file lock makes concurrent jobs
measure once. The chunk changes only the float32 summation order (results agree to ~1e-7,
not bit for bit across choices): pin an integer ``kernel.chunk_models`` for bit-identical
kernels on machines whose measurements differ.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from multirun import timing
from multirun.contracts import atomic_path

CANDIDATES = (32, 64, 128, 256)
DEFAULT = 64  # kept unless another candidate is faster by more than MARGIN
MARGIN = 0.10
MODELS = 256
MAX_QUERIES, MAX_KEYS = 1024, 4096
REPEATS = 3
FILE = "kernel-chunks.json"


def cache_dir() -> Path:
    """Where measured settings live: ``$MULTIRUN_CACHE``, else the XDG cache's ``multirun``."""
    if os.environ.get("MULTIRUN_CACHE"):
        return Path(os.environ["MULTIRUN_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "multirun"


def bucket(queries: int, keys: int) -> tuple[int, int]:
    """The measured shape of a (queries, keys) problem: each rounded up to a power of two,
    capped at (:data:`MAX_QUERIES`, :data:`MAX_KEYS`)."""
    def up(n: int, cap: int) -> int:
        return min(cap, 1 << max(0, int(n) - 1).bit_length())

    return up(queries, MAX_QUERIES), up(keys, MAX_KEYS)


def key(device, classes: int, queries: int, keys: int, precision: str, log_softmax: bool,
        used: int | None = None) -> str:
    """The cache entry's name: what the best chunk depends on (``used``: the classes the
    kernel keeps, of ``classes``; None: all of them)."""
    nq, nt = bucket(queries, keys)
    return (f"{timing.device_name(device)} | torch {torch.__version__} | "
            f"{torch.get_num_threads()} threads | {used or classes} of {classes} classes | "
            f"{nq} x {nt} examples | "
            f"{precision} | {'log_softmax' if log_softmax else 'raw'}")


def measure(device, classes: int, queries: int, keys: int, precision: str = "fp32",
            log_softmax: bool = True, used: int | None = None, candidates=CANDIDATES,
            models: int = MODELS, repeats: int = REPEATS) -> dict[int, float]:
    """{chunk: best seconds} of the engine on synthetic fp16 logits, ``models`` x the
    :func:`bucket` of (``queries``, ``keys``) x ``classes``, keeping the first ``used``
    classes (None: all; a per-class kernel keeps one)."""
    from multirun.kernel.engine import KernelOptions, kernel_blocks
    from multirun.kernel.shards import ShardedLogits

    rng = np.random.default_rng(0)
    best = dict.fromkeys(candidates, float("inf"))
    kept = None if used in (None, classes) else list(range(used))
    with tempfile.TemporaryDirectory(prefix="multirun-tune-") as tmp:
        sides = []
        for name, n in zip(("queries", "keys"), bucket(queries, keys), strict=True):
            path = Path(tmp) / f"{name}.npy"
            np.save(path, (rng.standard_normal((models, n, classes)) * 3).astype(np.float16))
            sides.append(ShardedLogits([path]))
        for _ in range(repeats):
            for chunk in candidates:  # interleaved: a load change hits every candidate
                options = KernelOptions(log_softmax=log_softmax, chunk_models=chunk,
                                        precision=precision, device=device.type, progress=False)
                start = time.perf_counter()
                with contextlib.redirect_stdout(None):
                    for *_, block in kernel_blocks(*sides, [None], options, kept):
                        block.sum().item()  # waits for a GPU's queued work
                best[chunk] = min(best[chunk], time.perf_counter() - start)
    return best


def pick(seconds: dict[int, float]) -> int:
    """The fastest chunk, but :data:`DEFAULT` unless the fastest beats it by more than
    :data:`MARGIN` (a few percent is within a shared machine's noise: the choice should
    not flip from one measurement to the next)."""
    fastest = min(seconds, key=seconds.get)
    if DEFAULT in seconds and seconds[fastest] > (1 - MARGIN) * seconds[DEFAULT]:
        return DEFAULT
    return fastest


@contextlib.contextmanager
def _locked(path: Path):
    """Hold ``path``'s lock file; yield False (and hold nothing) where it cannot be made."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = open(path.with_suffix(".lock"), "w")  # released below
    except OSError as err:
        warnings.warn(f"{path.parent}: cannot write the measured-settings cache ({err}); "
                      "measuring for this job only. Set MULTIRUN_CACHE to a writable folder, "
                      "or pin kernel.chunk_models to an integer", stacklevel=3)
        yield False
        return
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield True
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _read(path: Path) -> dict:
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # missing or damaged: a cache, measured again
    return entries if isinstance(entries, dict) else {}


def chunk_models(device, classes: int, queries: int, keys: int, precision: str = "fp32",
                 log_softmax: bool = True, used: int | None = None) -> int:
    """The cached best chunk for this machine and problem (``classes`` in the logits,
    ``used`` of them kept, None: all); measured (and stored) if absent."""
    path = cache_dir() / FILE
    name = key(device, classes, queries, keys, precision, log_softmax, used)
    with _locked(path) as writable:
        entries = _read(path)
        entry = entries.get(name)
        chosen = entry.get("chunk_models") if isinstance(entry, dict) else None
        if isinstance(chosen, int) and chosen >= 1:
            return chosen
        seconds = measure(device, classes, queries, keys, precision, log_softmax, used)
        chosen = pick(seconds)
        entries[name] = {"chunk_models": chosen,
                         "seconds": {str(c): round(s, 4) for c, s in seconds.items()},
                         "measured": time.strftime("%Y-%m-%d %H:%M:%S")}
        if writable:
            with atomic_path(path) as tmp:
                tmp.write_text(json.dumps(entries, indent=1, sort_keys=True) + "\n")
        timings = ", ".join(f"{c}: {s:.3f} s" for c, s in seconds.items())
        shape = " x ".join(map(str, bucket(queries, keys)))
        print(f"kernel: chunk_models auto -> {chosen} (measured now at {shape} examples: "
              f"{timings}; {'stored in ' + str(path) if writable else 'not stored'})",
              flush=True)
        return chosen
