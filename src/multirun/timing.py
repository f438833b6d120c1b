"""Seconds per phase of a hot loop, for the benchmarks' breakdowns (nothing when off), and
the name of the machine a measurement belongs to.

``with timed_phase(phases, "gemm", device): ...`` adds the block's wall seconds to
``phases["gemm"]``; with ``phases=None`` (every workflow job) it only enters and leaves a
context manager. On CUDA the device is synchronised before and after, so the phase holds
its kernels' time (that serialises the GPU: a breakdown run is slower than a plain one).
"""

from __future__ import annotations

import contextlib
import platform
import time
from collections.abc import Iterator
from pathlib import Path

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


def device_name(device: torch.device | None = None) -> str:
    """The GPU's name for a CUDA device; else the CPU's model name with its family and model
    numbers and whether it has AVX-512 (``/proc/cpuinfo``), or what ``platform`` knows."""
    if device is not None and device.type == "cuda":
        return torch.cuda.get_device_name(device)
    info: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    if "model name" not in info:
        return platform.processor() or platform.machine() or "unknown CPU"
    avx512 = "AVX-512" if "avx512f" in info.get("flags", "").split() else "no AVX-512"
    return (f"{info['model name']} (family {info.get('cpu family', '?')} model "
            f"{info.get('model', '?')}, {avx512})")
