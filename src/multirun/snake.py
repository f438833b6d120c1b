"""The one entry point every ``scripts/*.py`` goes through.

``run(snakemake, main)`` sends the job's stdout/stderr (tqdm bars included) to its
``log:`` file, uses the job's ``threads``, gives a job that asks for the ``gpu`` resource
its own device slot (:mod:`multirun.gpus`), and turns a :class:`ContractError` (a
:class:`ConfigError` is one) into one line on the console naming the file or key, exit 1.
A full disk (or a file-size limit) anywhere in the job is one such line too, naming the
path and the space it needs, and nothing more is written to that disk. Snakemake then
removes the job's outputs, so nothing half-written stays behind; temporaries a killed
job left beside its outputs are removed when the job runs again.
"""

from __future__ import annotations

import contextlib
import os
import sys
import traceback
from collections.abc import Callable

# Run-to-run reproducibility of MKL's BLAS (the CPU matrix products): without a CNR mode
# its results may depend on memory alignment and, for ?gemm, on the number of threads.
# Read by MKL at its first call, so setting it here (before any work) is in time.
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")

from multirun import gpus  # noqa: E402
from multirun.contracts import (  # noqa: E402
    NO_SPACE,
    ContractError,
    DiskFullError,
    no_space,
    space_errno,
    sweep_temporaries,
)


def device(snakemake, section: str) -> str:
    """The ``device`` of config section ``section`` (``auto``: CUDA when present).

    Read from the config rather than ``params:`` on purpose: where a job runs does not
    change what it computes, so switching devices must not rerun anything. ``cuda`` where
    no CUDA device is visible raises :class:`ContractError` naming the key.
    """
    name = snakemake.config[section]["device"]
    if name == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ContractError(f"config key {section}.device: cuda, but this job sees no CUDA "
                                "device; use auto (CUDA when present) or cpu")
    return name


def run(snakemake, main: Callable[[object], None]) -> None:
    """Run ``main(snakemake)`` with logging, threads and clear errors."""
    for path in _paths(getattr(snakemake, "output", [])):  # what a killed run of this job left
        sweep_temporaries(path)
    log_path = snakemake.log[0] if len(snakemake.log) else None
    try:
        log = open(log_path, "w", buffering=1) if log_path else None  # noqa: SIM115
    except OSError as err:
        _fail(snakemake, no_space(log_path, err) if err.errno in NO_SPACE else err, None)
    if log:
        sys.stdout = sys.stderr = log
    _use_threads(max(1, int(snakemake.threads)))
    try:
        with gpus.job_slot(snakemake):
            main(snakemake)
    except DiskFullError as err:  # the log is on that disk too: the console only
        _fail(snakemake, err, None)
    except ContractError as err:
        _fail(snakemake, err, log)
    except (OSError, RuntimeError) as err:
        cause = space_errno(err, os.path.dirname(getattr(err, "filename", None) or log_path or "."))
        if cause is None:
            if log:  # the traceback belongs in the job's log too
                traceback.print_exc(file=log)
            raise
        where = getattr(err, "filename", None) or log_path or "an output of this job"
        _fail(snakemake, no_space(where, OSError(cause, os.strerror(cause))), None)
    except BaseException:
        if log:  # the traceback belongs in the job's log too
            traceback.print_exc(file=log)
        raise
    finally:
        if log:
            sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
            with contextlib.suppress(OSError):  # a full disk: the log stays as it is
                log.close()


def _use_threads(n: int) -> None:
    """The job's thread count for torch: now if a script's imports loaded it, else when it
    loads (torch reads ``OMP_NUM_THREADS``; jobs that never need it never pay its 3-4 s)."""
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(n)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)


def _paths(output) -> list[str]:
    """The files of a job's ``output``: Snakemake's list, or a stand-in's attributes."""
    items = output if isinstance(output, list | tuple) else (
        output.values() if isinstance(output, dict) else vars(output).values())
    paths = []
    for item in items:
        paths += [item] if isinstance(item, str | os.PathLike) else _paths(list(item))
    return paths


def _fail(snakemake, err: Exception, log) -> None:
    """One line on the console (and the log, when given), exit 1, no traceback."""
    print(f"multirun error in rule {snakemake.rule}: {err}", file=sys.__stderr__)
    if log:
        with contextlib.suppress(OSError):
            print(f"error: {err}", file=log)
    sys.exit(1)
