"""What the benchmark scripts share: the machine's name and device synchronisation.

The scripts run as ``python benchmarks/<name>.py``, so this folder is on ``sys.path``.
"""

from __future__ import annotations

import torch

from multirun import timing


def cpu_name() -> str:
    """The CPU's model name, family, model and vector width (``multirun.timing``)."""
    return timing.device_name()


def device_name(device: torch.device) -> str:
    """The GPU's name for a CUDA device, else the CPU's."""
    return timing.device_name(device)


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA timings), nothing on a CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
