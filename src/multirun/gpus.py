"""A device slot per GPU job on a local run: each job on its own GPU (docs/gpu.md).

Snakemake's ``--resources gpu=G`` caps how many GPUs the running jobs ask for in total, but
it gives no job a device id: every job would use device 0. So a job that asks for the
``gpu`` resource (``gpu: N`` in the config, N > 0) takes ``N`` *slots* before its script's
work starts: one lock file per (device, share) in a per-user folder, held with
``fcntl.flock`` for the job's lifetime. The kernel drops the lock when the process ends,
however it ends, so a killed job frees its slot. The job then sees only its devices
(``CUDA_VISIBLE_DEVICES``, set before CUDA starts).

* Devices are those CUDA can use, among an existing ``CUDA_VISIBLE_DEVICES`` when it is
  set (by SLURM or the user): the slot's devices are named as that variable names them.
* ``gpu_jobs_per_device`` (config, K) gives each device K shares. A job takes the device
  whose shares are least taken, the lowest of those first: with K = 1 the lowest free
  device. A job of ``gpu: N`` takes one share on each of N distinct devices, all at once
  or none (so two such jobs cannot deadlock). While no slot is free the job waits.
* Under SLURM (``SLURM_JOB_ID`` set) the locks live in a folder of that job, because two
  jobs on one node may both see their own GPU as device 0.

For tests, ``MULTIRUN_FAKE_GPUS=N`` makes the allocator believe CUDA sees N devices (no
CUDA is touched; the job still runs where its ``device`` setting says),
``MULTIRUN_GPU_LOCKS=FOLDER`` moves the lock folder, and, on fake devices only,
``MULTIRUN_FAKE_GPUS_MEET=M`` makes a job that has taken its slot wait until M slots are
held at once (the first time only), so that a test sees concurrent jobs without depending
on how fast they start. Nothing else reads them.
"""

from __future__ import annotations

import fcntl
import os
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO

FAKE_ENV = "MULTIRUN_FAKE_GPUS"
LOCKS_ENV = "MULTIRUN_GPU_LOCKS"
MEET_ENV = "MULTIRUN_FAKE_GPUS_MEET"


def _error(message: str) -> Exception:
    """A :class:`multirun.contracts.ContractError`, imported late: the allocator itself needs
    only the standard library, which keeps it quick to import (its test starts many
    processes)."""
    from multirun.contracts import ContractError

    return ContractError(message)


def _fake_count(environ: Mapping[str, str]) -> int | None:
    """``MULTIRUN_FAKE_GPUS`` as a device count (None when unset)."""
    value = environ.get(FAKE_ENV)
    if value is None:
        return None
    if not value.strip().isdigit():
        raise _error(f"{FAKE_ENV}={value!r}: give a number of fake devices (0 or more)")
    return int(value)


def visible_devices(environ: Mapping[str, str] = os.environ) -> list[str]:
    """The devices a job may take, as ``CUDA_VISIBLE_DEVICES`` names them (``["0", "1"]``).

    Without ``CUDA_VISIBLE_DEVICES``: ``"0" .. "n-1"`` for the n devices CUDA sees. With it:
    its entries (indices, ``GPU-``/``MIG-`` UUIDs) up to the first empty or negative one, as
    CUDA reads it, and no more than CUDA can use. The count comes from
    ``torch.cuda.device_count()``, which asks NVML and leaves CUDA unstarted, so the variable
    can still be narrowed afterwards; ``MULTIRUN_FAKE_GPUS`` replaces that count.
    """
    count = _fake_count(environ)
    if count is None:
        import torch

        count = torch.cuda.device_count()
    listed = environ.get("CUDA_VISIBLE_DEVICES")
    if listed is None:
        return [str(i) for i in range(count)]
    names = []
    for name in (part.strip() for part in listed.split(",")):
        if not name or name.startswith("-"):
            break
        names.append(name)
    return names[:count]


def lock_folder(environ: Mapping[str, str] = os.environ) -> Path:
    """The folder of the slot locks (created, readable by this user only).

    ``/tmp/multirun-gpus-UID`` (fixed, not ``$TMPDIR``: Snakemake points each job's
    ``TMPDIR`` at its ``tmpdir`` resource, and every job of this user on this machine must
    meet in one folder), or ``MULTIRUN_GPU_LOCKS``; a subfolder per SLURM job under SLURM,
    and ``fake/`` for fake devices, so that they never hold a real device's slot.
    """
    folder = Path(environ.get(LOCKS_ENV) or f"/tmp/multirun-gpus-{os.getuid()}")
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    if folder.lstat().st_uid != os.getuid():
        raise _error(f"the GPU lock folder {folder} belongs to another user; "
                            f"set {LOCKS_ENV} to a folder of yours")
    if environ.get("SLURM_JOB_ID"):
        folder = folder / f"slurm-{environ['SLURM_JOB_ID']}"
    if _fake_count(environ) is not None:
        folder = folder / "fake"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    return folder


def _lock_path(folder: Path, device: str, share: int) -> Path:
    return folder / f"gpu-{re.sub(r'[^A-Za-z0-9_.-]', '_', device)}.share-{share}.lock"


def _try_lock(path: Path) -> IO | None:
    """The open, exclusively locked file at ``path``, or None when another process holds it."""
    handle = open(path, "a")  # noqa: SIM115 (held for the job's lifetime)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    os.utime(path)  # in use: keeps /tmp cleaners (which go by age) off it
    return handle


@dataclass
class Slot:
    """Slots held by this process: ``devices[i]`` (named as ``CUDA_VISIBLE_DEVICES`` names it)
    is entry ``positions[i]`` of the visible devices, share ``shares[i]`` of ``per_device``."""

    devices: tuple[str, ...]
    positions: tuple[int, ...]
    shares: tuple[int, ...]
    per_device: int
    folder: Path
    _handles: list[IO] = field(default_factory=list, repr=False)

    def release(self) -> None:
        """Give the slots back (the kernel does the same when the process dies)."""
        for handle in self._handles:
            handle.close()  # closing the last descriptor drops the flock
        self._handles.clear()


def acquire(devices: int | Sequence[str], count: int = 1, per_device: int = 1, *,
            folder: str | os.PathLike, wait: bool = True, poll: float = 0.2,
            on_wait=None) -> Slot | None:
    """Take ``count`` slots on distinct devices among ``devices`` (a count n means ``"0" ..
    "n-1"``), each device holding at most ``per_device`` jobs, locks in ``folder``.

    The devices whose shares are least taken go first, the lowest of them first. All
    ``count`` or none are taken, under a folder-wide lock, so allocators never see each
    other's half-made choice. Where too few are free: wait (polling every ``poll`` seconds,
    calling ``on_wait(message)`` once) or, with ``wait=False``, return None.
    """
    names = [str(i) for i in range(devices)] if isinstance(devices, int) else list(devices)
    if not 1 <= count <= len(names):
        raise _error(f"a job asks for {count} GPU slots among {len(names)} devices")
    if per_device < 1:
        raise _error(f"gpu_jobs_per_device must be 1 or more, not {per_device}")
    folder = Path(folder)
    waited = False
    while True:
        with open(folder / "allocate.lock", "a") as guard:
            fcntl.flock(guard, fcntl.LOCK_EX)  # one allocator at a time; released on close
            free = [[(k, h) for k in range(per_device)
                     if (h := _try_lock(_lock_path(folder, name, k)))] for name in names]
            order = sorted((i for i in range(len(names)) if free[i]),
                           key=lambda i: (per_device - len(free[i]), i))
            chosen = order[:count] if len(order) >= count else []
            for i, held in enumerate(free):  # keep one share on each chosen device
                for j, (_, handle) in enumerate(held):
                    if not (i in chosen and j == 0):
                        handle.close()
        if chosen:
            return Slot(devices=tuple(names[i] for i in chosen), positions=tuple(chosen),
                        shares=tuple(free[i][0][0] for i in chosen), per_device=per_device,
                        folder=folder, _handles=[free[i][0][1] for i in chosen])
        if not wait:
            return None
        if on_wait and not waited:
            on_wait(f"gpu slot: waiting, fewer than {count} of {len(names)} devices x "
                    f"{per_device} shares are free (locks in {folder})")
        waited = True
        time.sleep(poll)


def _meet(folder: Path, count: int, timeout: float = 120.0, poll: float = 0.05) -> bool:
    """Wait until ``count`` slots in ``folder`` are held at once (this process's among them),
    or until ``timeout`` seconds have passed; True if they were. Once they have been, a
    ``met`` file in ``folder`` lets every later job go on at once. Fake devices only."""
    marker = folder / "met"
    deadline = time.monotonic() + timeout
    while not marker.exists():
        with open(folder / "allocate.lock", "a") as guard:
            fcntl.flock(guard, fcntl.LOCK_EX)
            held = 0
            for path in folder.glob("gpu-*.lock"):
                handle = _try_lock(path)  # a second open file conflicts with our own lock too
                if handle:
                    handle.close()
                else:
                    held += 1
            if held >= count:
                marker.touch()
                return True
        if time.monotonic() > deadline:
            return False
        time.sleep(poll)
    return True


def _bind(slot: Slot, fake: bool) -> str:
    """Make the job use the slot's devices; returns what to say about it in the log.

    ``CUDA_VISIBLE_DEVICES`` narrows CUDA to them if CUDA has not started yet. Where it had
    (CUDA then still counts every device), ``torch.cuda.set_device`` makes the first slot
    the job's default device instead.
    """
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(slot.devices)
    if fake:
        return "fake devices, CUDA untouched"
    import torch

    try:
        torch.cuda.init()
    except Exception as err:  # a broken driver: say so, the job runs where `device` says
        return f"CUDA did not start: {err}"
    if torch.cuda.device_count() != len(slot.devices):  # CUDA started before the narrowing
        torch.cuda.set_device(slot.positions[0])
        return f"CUDA had started; torch.cuda.set_device({slot.positions[0]})"
    return torch.cuda.get_device_name(0)


def _stamp() -> str:
    return datetime.now().isoformat(timespec="microseconds")


@contextmanager
def job_slot(snakemake, environ: Mapping[str, str] = os.environ) -> Iterator[Slot | None]:
    """Hold a GPU slot for the job ``snakemake`` while the block runs (none for ``gpu: 0``,
    a rule without the ``gpu`` resource, or no visible device), saying which in the log
    (``print``; :func:`multirun.snake.run` has pointed stdout at the job's log)."""
    resources = getattr(snakemake, "resources", None) or {}
    wanted = int(resources.get("gpu", 0) or 0)
    if wanted <= 0:
        yield None
        return
    devices = visible_devices(environ)
    if not devices:
        print("gpu slot: none taken, no CUDA device is visible")
        yield None
        return
    if wanted > len(devices):
        listed = environ.get("CUDA_VISIBLE_DEVICES")
        raise _error(
            f"config key gpu asks {wanted} GPUs per job but only {len(devices)} devices are "
            f"visible{f' (CUDA_VISIBLE_DEVICES={listed})' if listed is not None else ''}; "
            f"lower gpu")
    per_device = int(snakemake.config["gpu_jobs_per_device"])
    slot = acquire(devices, wanted, per_device, folder=lock_folder(environ), on_wait=print)
    before = os.environ.get("CUDA_VISIBLE_DEVICES")
    try:
        where = _bind(slot, _fake_count(environ) is not None)
        shares = ",".join(str(s) for s in slot.shares)
        print(f"gpu slot taken at {_stamp()}: CUDA_VISIBLE_DEVICES={','.join(slot.devices)} "
              f"(entries {','.join(map(str, slot.positions))} of visible {','.join(devices)}; "
              f"share {shares} of {per_device}; {where}; locks in {slot.folder})")
        meet = environ.get(MEET_ENV)
        if meet and _fake_count(environ) is not None:
            met = _meet(slot.folder, int(meet))
            print(f"gpu slot: {meet} slots held at once {'seen' if met else 'not seen in 120 s'} "
                  f"({MEET_ENV})")
        yield slot
    finally:
        slot.release()
        if before is None:  # as it was (it matters only to a caller that goes on)
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = before
        print(f"gpu slot released at {_stamp()}: CUDA_VISIBLE_DEVICES={','.join(slot.devices)}")
