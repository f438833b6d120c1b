"""Models per GEMM chunk (``kernel.chunk_models: auto``), measured on first use, cached per machine.

A larger chunk makes each product ``(block, m*C) @ (m*C, Nt)`` deeper, so the float32
accumulator is read and written fewer times per FLOP; past some depth the chunk's
normalised copies fall out of cache. Where that balance lies depends on the CPU (cache
sizes, vector width) or GPU, so it is measured, not fixed: the engine itself runs on
synthetic fp16 logits (:data:`MODELS` models x :data:`EXAMPLES` examples x the problem's
classes, kernel of the examples with themselves) with each of :data:`CANDIDATES`, best of
:data:`REPEATS` interleaved runs (a few seconds), and the fastest is kept.

The choice is stored in ``$MULTIRUN_CACHE`` (default ``$XDG_CACHE_HOME/multirun``, else
``~/.cache/multirun``) as ``kernel-chunks.json``, one entry per (device name, torch version,
threads, classes, precision, variant); a file lock makes concurrent jobs measure once.
The chunk changes only the float32 summation order (results agree to ~1e-7, not bit for
bit across choices): pin an integer ``kernel.chunk_models`` for bit-identical kernels on
machines whose measurements differ.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from multirun import timing
from multirun.contracts import atomic_path

CANDIDATES = (32, 64, 128, 256)
MODELS = 256
EXAMPLES = 2048
REPEATS = 2
FILE = "kernel-chunks.json"


def cache_dir() -> Path:
    """Where measured settings live: ``$MULTIRUN_CACHE``, else the XDG cache's ``multirun``."""
    if os.environ.get("MULTIRUN_CACHE"):
        return Path(os.environ["MULTIRUN_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "multirun"


def key(device, classes: int, precision: str, log_softmax: bool) -> str:
    """The cache entry's name: what the best chunk depends on."""
    import torch

    return (f"{timing.device_name(device)} | torch {torch.__version__} | {torch.get_num_threads()} "
            f"threads | {classes} classes | {precision} | "
            f"{'log_softmax' if log_softmax else 'raw'}")


def measure(device, classes: int, precision: str = "fp32", log_softmax: bool = True,
            candidates=CANDIDATES, models: int = MODELS, examples: int = EXAMPLES,
            repeats: int = REPEATS) -> dict[int, float]:
    """{chunk: best seconds} of the engine on synthetic (models, examples, classes) fp16 logits."""
    from multirun.kernel.engine import KernelOptions, kernel_blocks
    from multirun.kernel.shards import ShardedLogits

    rng = np.random.default_rng(0)
    logits = (rng.standard_normal((models, examples, classes)) * 3).astype(np.float16)
    best = dict.fromkeys(candidates, float("inf"))
    with tempfile.TemporaryDirectory(prefix="multirun-tune-") as tmp:
        path = Path(tmp) / "logits.npy"
        np.save(path, logits)
        shards = ShardedLogits([path])
        for _ in range(repeats):
            for chunk in candidates:  # interleaved: a load change hits every candidate
                options = KernelOptions(log_softmax=log_softmax, chunk_models=chunk,
                                        precision=precision, device=device.type, progress=False)
                start = time.perf_counter()
                with contextlib.redirect_stdout(None):
                    for *_, block in kernel_blocks(shards, shards, [None], options):
                        block.sum().item()  # waits for a GPU's queued work
                best[chunk] = min(best[chunk], time.perf_counter() - start)
    return best


@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _read(path: Path) -> dict:
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # missing or damaged: a cache, measured again
    return entries if isinstance(entries, dict) else {}


def chunk_models(device, classes: int, precision: str = "fp32", log_softmax: bool = True) -> int:
    """The cached best chunk for this machine and problem; measured (and stored) if absent."""
    path = cache_dir() / FILE
    name = key(device, classes, precision, log_softmax)
    with _locked(path):
        entries = _read(path)
        chosen = entries.get(name, {}).get("chunk_models")
        if isinstance(chosen, int) and chosen >= 1:
            return chosen
        seconds = measure(device, classes, precision, log_softmax)
        chosen = min(seconds, key=seconds.get)
        entries[name] = {"chunk_models": chosen, "seconds": {str(c): round(s, 4) for c, s in
                                                             seconds.items()},
                         "measured": time.strftime("%Y-%m-%d %H:%M:%S")}
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(entries, indent=1, sort_keys=True) + "\n")
        timings = ", ".join(f"{c}: {s:.3f} s" for c, s in seconds.items())
        print(f"kernel: chunk_models auto -> {chosen} (measured now: {timings}; stored in "
              f"{path})", flush=True)
        return chosen
