"""What the benchmark scripts share: the machine's name and device synchronisation.

The scripts run as ``python benchmarks/<name>.py``, so this folder is on ``sys.path``.
"""

from __future__ import annotations

import platform
from pathlib import Path

import torch


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    info = Path("/proc/cpuinfo")
    if info.exists():
        for line in info.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def device_name(device: torch.device) -> str:
    """The GPU's name for a CUDA device, else the CPU's."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA timings), nothing on a CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
