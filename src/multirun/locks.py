"""Tell a live Snakemake run from a dead one before anyone removes its lock.

Snakemake locks a working directory with files in ``.snakemake/locks``; a run killed
with ``kill -9`` (or a power loss) leaves them behind, and Snakemake's message then
suggests ``--unlock``. Following that advice while another run is *alive* lets two runs
execute the same jobs at once. :func:`lock_advice` looks first: it lists the Snakemake
processes of this machine working in the same directory (from ``/proc``) and says
whether to wait or to unlock.
"""

from __future__ import annotations

import os
from pathlib import Path

CHECK = "pgrep -af snakemake"  # what to run by hand, here and on other machines


def _ancestors() -> set[int]:
    """This process and its parents (not "another run")."""
    pids, pid = set(), os.getpid()
    while pid > 1 and pid not in pids:
        pids.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            pid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return pids


def _workdir(pid: int, argv: list[str]) -> Path | None:
    """The directory a Snakemake process works in: ``--directory``/``-d``, else its cwd."""
    try:
        cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
    except OSError:
        return None
    for i, arg in enumerate(argv):
        if arg in ("--directory", "-d") and i + 1 < len(argv):
            return (cwd / argv[i + 1]).resolve()
        if arg.startswith("--directory="):
            return (cwd / arg.split("=", 1)[1]).resolve()
    return cwd.resolve()


def live_runs(workdir: str | os.PathLike) -> list[tuple[int, str]]:
    """(pid, command line) of the Snakemake processes working in ``workdir`` (not this one).

    Reads ``/proc``; empty where there is none (or on a system without ``/proc``). A run
    on another machine that shares the folder cannot be seen from here.
    """
    target, mine, found = Path(workdir).resolve(), _ancestors(), []
    proc = Path("/proc")
    for entry in proc.iterdir() if proc.is_dir() else ():
        if not entry.name.isdigit() or int(entry.name) in mine:
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if not any("snakemake" in Path(a).name for a in argv[:3]):
            continue
        if _workdir(int(entry.name), argv) == target:
            found.append((int(entry.name), " ".join(a for a in argv if a)))
    return sorted(found)


def lock_advice(workdir: str | os.PathLike) -> str | None:
    """What to do about the locks in ``workdir/.snakemake/locks``, or None when there are none."""
    locks = Path(workdir) / ".snakemake" / "locks"
    if not locks.is_dir() or not any(locks.iterdir()):
        return None
    runs = live_runs(workdir)
    if runs:
        listed = "; ".join(f"pid {pid}: {cmd[:120]}" for pid, cmd in runs)
        return (f"multirun: {locks} holds the lock of a run that is still alive ({listed}). "
                "Do NOT use --unlock: wait for it to finish, or stop it (kill PID) first.")
    return (f"multirun: {locks} holds a lock, but no Snakemake process on this machine works "
            f"in {Path(workdir).resolve()} (checked /proc; `{CHECK}` shows them). If no run on "
            "another machine shares this folder, the lock is left by a killed run: "
            "`snakemake --unlock`, then rerun.")
