"""Seconds per phase of a hot loop, for the benchmarks' breakdowns (nothing when off).

``with timed_phase(phases, "gemm", device): ...`` adds the block's wall seconds to
``phases["gemm"]``; with ``phases=None`` (every workflow job) it only enters and leaves a
context manager. On CUDA the device is synchronised before and after, so the phase holds
its kernels' time (that serialises the GPU: a breakdown run is slower than a plain one).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import torch

_OFF = contextlib.nullcontext()


def timed_phase(phases: dict | None, name: str, device: torch.device | None = None):
    """A context manager that adds its block's seconds to ``phases[name]`` (None: off)."""
    if phases is None:
        return _OFF
    return _timed(phases, name, device)


@contextlib.contextmanager
def _timed(phases: dict, name: str, device: torch.device | None) -> Iterator[None]:
    cuda = device is not None and device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    yield
    if cuda:
        torch.cuda.synchronize(device)
    phases[name] = phases.get(name, 0.0) + time.perf_counter() - start
