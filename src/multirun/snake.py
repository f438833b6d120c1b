"""The one entry point every ``scripts/*.py`` goes through.

``run(snakemake, main)`` sends the job's stdout/stderr (tqdm bars included) to its
``log:`` file, uses the job's ``threads``, gives a job that asks for the ``gpu`` resource
its own device slot (:mod:`multirun.gpus`), and turns a :class:`ContractError` (a
:class:`ConfigError` is one) into one line on the console naming the file or key, exit 1.
Snakemake then removes the job's outputs, so nothing half-written stays behind.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable

import torch

from multirun import gpus
from multirun.contracts import ContractError


def device(snakemake, section: str) -> str:
    """The ``device`` of config section ``section`` (``auto``: CUDA when present).

    Read from the config rather than ``params:`` on purpose: where a job runs does not
    change what it computes, so switching devices must not rerun anything.
    """
    return snakemake.config[section]["device"]


def run(snakemake, main: Callable[[object], None]) -> None:
    """Run ``main(snakemake)`` with logging, threads and clear errors."""
    console = sys.__stderr__
    log_path = snakemake.log[0] if len(snakemake.log) else None
    log = open(log_path, "w", buffering=1) if log_path else None  # noqa: SIM115
    if log:
        sys.stdout = sys.stderr = log
    torch.set_num_threads(max(1, int(snakemake.threads)))
    try:
        with gpus.job_slot(snakemake):
            main(snakemake)
    except ContractError as err:
        print(f"multirun error in rule {snakemake.rule}: {err}", file=console)
        if log:
            print(f"error: {err}", file=log)
        sys.exit(1)
    except BaseException:
        if log:  # the traceback belongs in the job's log too
            traceback.print_exc(file=log)
        raise
    finally:
        if log:
            sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
            log.close()
