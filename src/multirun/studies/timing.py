"""Seeds per second from Snakemake's benchmark files of the training jobs."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence

from multirun.contracts import ContractError, remake


def benchmark_seconds(path: str | os.PathLike) -> float:
    """Wall-clock seconds of one job: the ``s`` column of its benchmark TSV (mean of repeats)."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
        return sum(float(r["s"]) for r in rows) / len(rows)
    except (OSError, KeyError, ValueError, ZeroDivisionError) as err:
        raise ContractError(f"{path}: not a Snakemake benchmark file ({err}); "
                            f"{remake(path)}") from err


def seeds_per_second(paths: Sequence[str | os.PathLike], seeds: int) -> tuple[float, float]:
    """(total training seconds, seeds per second) of ``seeds`` seeds trained by the jobs ``paths``."""
    seconds = sum(benchmark_seconds(p) for p in paths)
    return seconds, (seeds / seconds if seconds > 0 else float("inf"))
