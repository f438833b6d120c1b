"""What the benchmark scripts share: the machine's name and device synchronisation.

The scripts run as ``python benchmarks/<name>.py``, so this folder is on ``sys.path``.
"""

from __future__ import annotations

import torch

from multirun.timing import device_name  # the GPU's name, else the CPU's (and its vector width)

__all__ = ["device_name", "sync"]


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA timings), nothing on a CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
