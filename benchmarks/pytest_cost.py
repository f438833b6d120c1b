"""What each test costs: wall time, CPU time (the test process and its children) and the
snakemake processes it starts. A pytest plugin for docs/testing.md's table:

    PYTHONPATH=src:benchmarks .venv/bin/python -m pytest -p pytest_cost [pytest args]

(with ``-n 2`` too: each worker's rows are collected at the end; the totals then add up
the workers, so the CPU total is the work done and the wall total exceeds the elapsed time).

At the end it prints the 30 costliest tests by CPU and the totals; with
``MULTIRUN_COST_JSON=path`` it also writes every test's row as JSON. CPU seconds (user +
system, children included once they have exited) depend much less on what else the machine
runs than wall seconds do, so they compare runs taken on a shared machine. A SLURM job runs
under slurmd, not under the test, so its CPU is not counted here (its wall time is). The
suite's warm interpreter (tests/warm) runs jobs as its own descendants, not the test's: its
CPU (``MULTIRUN_WARM_PID``, read from /proc while it runs) is counted with the children's,
for the test during which it reaped each one (half a second after the job ends at most).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

_rows: dict[str, dict] = {}
_snakemakes = 0
_popen_init = subprocess.Popen.__init__


def _counting_init(self, args, *rest, **kwargs):
    global _snakemakes
    words = [str(a) for a in args] if isinstance(args, list | tuple) else [str(args)]
    if any(w == "snakemake" or w.endswith("/snakemake") for w in words):
        _snakemakes += 1
    _popen_init(self, args, *rest, **kwargs)


subprocess.Popen.__init__ = _counting_init


def _warm_cpu() -> float:
    """CPU seconds of the warm interpreter and its reaped descendants (0 once it has itself
    been reaped: its time is then in RUSAGE_CHILDREN)."""
    pid = os.environ.get("MULTIRUN_WARM_PID")
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, TypeError):
        return 0.0
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")  # u/s, cu/cs time


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime + _warm_cpu()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    wall, cpu, calls = time.perf_counter(), _cpu(), _snakemakes
    yield
    _rows[item.nodeid] = {"wall_s": time.perf_counter() - wall, "cpu_s": _cpu() - cpu,
                          "snakemake": _snakemakes - calls}


def pytest_configure(config):
    """Under pytest-xdist, the workers leave their rows in a folder the controller reads."""
    if not os.environ.get("PYTEST_XDIST_WORKER") and "MULTIRUN_COST_DIR" not in os.environ:
        os.environ["MULTIRUN_COST_DIR"] = tempfile.mkdtemp(prefix="multirun-cost-")


def pytest_sessionfinish(session):
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker:
        with open(Path(os.environ["MULTIRUN_COST_DIR"]) / f"{worker}.json", "w") as f:
            json.dump(_rows, f)


def pytest_terminal_summary(terminalreporter):
    for path in sorted(Path(os.environ["MULTIRUN_COST_DIR"]).glob("*.json")):
        _rows.update(json.loads(path.read_text()))
    rows = sorted(_rows.items(), key=lambda kv: -kv[1]["cpu_s"])
    write = terminalreporter.write_line
    write(f"\n{'cpu s':>8} {'wall s':>8} {'snakemake':>9}  test (setup of shared fixtures included)")
    for name, row in rows[:30]:
        write(f"{row['cpu_s']:8.1f} {row['wall_s']:8.1f} {row['snakemake']:9d}  {name}")
    total = {k: sum(r[k] for r in _rows.values()) for k in ("cpu_s", "wall_s", "snakemake")}
    write(f"{total['cpu_s']:8.1f} {total['wall_s']:8.1f} {total['snakemake']:9d}  "
          f"total of {len(_rows)} tests (load average now {os.getloadavg()[0]:.1f})")
    path = os.environ.get("MULTIRUN_COST_JSON")
    if path:
        with open(path, "w") as f:
            json.dump({"tests": _rows, "total": total}, f, indent=1)
