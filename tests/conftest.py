"""Shared fixtures: the tiny workflow config and a finished tiny run (built once per session)."""

from __future__ import annotations

import copy
import csv
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
import yaml
from filelock import FileLock

from multirun.config import check

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
TINY_CONFIG = ROOT / "configs" / "test.yaml"


def pytest_generate_tests(metafunc):
    """Tests that take ``device`` run on the CPU, and on CUDA too where a GPU is visible (the
    GPU correctness checks of the kernel, training and Hessian stages; never a skip here)."""
    if "device" in metafunc.fixturenames:
        metafunc.parametrize("device", ["cpu", *(["cuda"] if torch.cuda.is_available() else [])])


def pytest_collection_modifyitems(items):
    """The order in which pytest-xdist hands out test files (make test: --dist loadfile
    --no-loadscope-reorder): the SLURM run first (it mostly waits on sbatch and squeue, so
    the other worker's tests fill that time), then the files that run workflows (minutes
    each), then the unit tests (seconds), which even out the workers at the end."""
    heavy = {item.path for item in items if item.get_closest_marker("workflow")}
    items.sort(key=lambda item: (item.path.name != "test_slurm.py", item.path not in heavy))


WARM = ROOT / "tests" / "warm"


def job_env(root: Path = ROOT, env: dict | None = None) -> dict:
    """The environment of a snakemake run: jobs import the library of checkout ``root``
    (and, while the suite's warm interpreter runs, start as its forks: ``warm_interpreter``)."""
    warm = str(WARM) if os.environ.get("MULTIRUN_WARM") else None
    path = os.pathsep.join(p for p in (warm, str(root / "src"), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONWARNINGS": "ignore", "MKL_CBWR": "AUTO,STRICT",
            "PYTHONPATH": path, **(env or {})}


@pytest.fixture(scope="session", autouse=True)
def warm_interpreter():
    """One warm interpreter per pytest process (tests/warm/warmstart.py): the Snakemake runs
    and jobs that the tests start run as forks of a process that has imported torch and
    Snakemake, instead of spending 3-5 s of CPU each on those imports. Processes started
    before it is ready start cold. ``MULTIRUN_TEST_COLD=1`` turns it off."""
    if os.environ.get("MULTIRUN_TEST_COLD"):
        yield None
        return
    folder = Path(tempfile.mkdtemp(prefix="multirun-warm-"))  # short: a socket path < 108 bytes
    with open(folder / "server.log", "w") as log:  # job_env: MULTIRUN_WARM is not set yet
        server = subprocess.Popen([sys.executable, str(WARM / "warmstart.py"),
                                   str(folder / "socket"), str(os.getpid())], env=job_env(),
                                  stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    os.environ["MULTIRUN_WARM"] = str(folder / "socket")
    os.environ["MULTIRUN_WARM_PID"] = str(server.pid)  # for benchmarks/pytest_cost.py
    yield folder / "socket"
    del os.environ["MULTIRUN_WARM"]
    server.terminate()
    server.wait()
    del os.environ["MULTIRUN_WARM_PID"]  # reaped: its CPU is now in RUSAGE_CHILDREN
    shutil.rmtree(folder, ignore_errors=True)


def tiny_config() -> dict:
    """configs/test.yaml, the default config shrunk so the whole DAG runs in about a minute,
    with every key it leaves out filled in from the schema's defaults (as the workflow does)."""
    return check(yaml.safe_load(TINY_CONFIG.read_text()))


def write_config(workdir: Path, cfg: dict) -> None:
    (workdir / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))


# Every job of the tiny config is a few seconds of imports and a moment of work: at one
# thread each, two jobs share the two cores instead of one job holding both.
ONE_THREAD = ("--max-threads", "1")


def snakemake(workdir: Path, *args: str, check: bool = True, env: dict | None = None,
              root: Path = ROOT) -> subprocess.CompletedProcess:
    """Run the Snakefile of checkout ``root`` (this one) in ``workdir`` (which holds config.yaml)."""
    cmd = [*SNAKEMAKE, "--snakefile", str(root / "Snakefile"), "--directory", str(workdir),
           "--cores", "2", *ONE_THREAD, "--workflow-profile", "none", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=job_env(root, env))
    if check and proc.returncode != 0:
        tail = f"{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{tail}")
    return proc


def planned_jobs(workdir: Path, *args: str, root: Path = ROOT) -> dict[str, int]:
    """Rule name -> number of jobs a dry run would execute (empty when nothing to do)."""
    proc = snakemake(workdir, "--dry-run", *args, root=root)
    return job_stats(proc.stdout + proc.stderr)


def job_stats(out: str) -> dict[str, int]:
    """Rule name -> jobs, from the "Job stats:" table of snakemake's output (empty if none)."""
    if "Job stats:" not in out:
        return {}
    table = out.split("Job stats:", 1)[1]
    jobs = {}
    for line in table.splitlines():
        m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if m and m.group(1) != "total":
            jobs[m.group(1)] = int(m.group(2))
        if line.startswith("total"):
            break
    return jobs


def shared_run(tmp_path_factory, name: str, *targets: str) -> tuple[Path, dict]:
    """A finished run of ``targets`` on the tiny config, made once for the whole test session.

    Under pytest-xdist (``make test`` runs two workers) the first worker that needs it runs
    it in the session's shared temporary folder while the others wait on a file lock, then
    all read the same finished run. Nothing may modify it: copy it first (``tiny_copy``).
    """
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the folder shared by this session's workers
    workdir, cfg = base / name, tiny_config()
    with FileLock(str(base / f"{name}.lock")):
        if not (base / f"{name}.done").exists():
            shutil.rmtree(workdir, ignore_errors=True)  # a run that failed half-way
            workdir.mkdir()
            write_config(workdir, cfg)
            snakemake(workdir, *targets)
            (base / f"{name}.done").touch()
    return workdir, cfg


@pytest.fixture(scope="session", autouse=True)
def measured_settings(tmp_path_factory) -> Path:
    """``kernel.chunk_models: auto`` caches its measurement per machine: for the suite in the
    session's temporary folder (shared by the xdist workers), never in the user's cache."""
    base = tmp_path_factory.getbasetemp()
    folder = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "multirun-cache"
    os.environ["MULTIRUN_CACHE"] = str(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> tuple[Path, dict]:
    """A finished run of the whole workflow on the tiny config (shared, do not modify)."""
    return shared_run(tmp_path_factory, "tiny_run")


def private_copy(run: tuple[Path, dict], tmp_path: Path) -> tuple[Path, dict]:
    """A copy of a finished shared run (results and Snakemake metadata, modification times
    kept) in ``tmp_path / "run"``, and of its config, for a test to modify."""
    src, cfg = run
    dst = tmp_path / "run"
    subprocess.run(["cp", "-a", str(src), str(dst)], check=True)
    return dst, copy.deepcopy(cfg)


def commands_in(path: Path, programs: tuple[str, ...], unlabelled: bool = False) -> list[str]:
    """The commands of a Markdown file, in order, each once: every line of its ``bash``
    blocks (and unlabelled ones with ``unlabelled``), comments dropped, and inline code in
    the prose that starts with one of ``programs``."""
    text = path.read_text()
    commands = []
    fence = r"^```(?:bash)?\n(.*?)^```" if unlabelled else r"^```bash\n(.*?)^```"
    for block in re.findall(fence, text, re.S | re.M):
        commands += [line.split(" #")[0].strip() for line in block.splitlines()]
    prose = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    commands += [span for span in re.findall(r"`([^`\n]+)`", prose)
                 if span.split()[0] in programs]
    return list(dict.fromkeys(c for c in commands if c))


def csv_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV file with a header, as dicts of strings."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def tiny_copy(tiny_run, tmp_path) -> tuple[Path, dict]:
    """A private copy of the finished tiny run (results and Snakemake metadata), to modify."""
    return private_copy(tiny_run, tmp_path)
