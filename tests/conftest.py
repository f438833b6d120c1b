"""Shared fixtures: the tiny workflow config and a finished tiny run (built once per session)."""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def tiny_config() -> dict:
    """The default config shrunk so the whole DAG runs in about a minute on 2 cores."""
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg["dataset"]["num_samples"] = 300
    cfg["train"].update(seeds=4, shard_size=2)
    cfg["train"]["model"].update(width=16)
    cfg["train"]["recipe"].update(epochs=2)
    cfg["logits"]["batch_size"] = 128
    cfg["kernel"].update(k_max=5, model_counts=[2, 4], subsets=2, block=64, chunk_models=3)
    cfg["knn"]["k"] = [1, 3]
    cfg["hessian"].update(models=1, top_k=3, steps=10, examples=100, batch_size=64)
    cfg["hessian"]["slq"].update(probes=2, steps=8)
    cfg["sweep"].update(widths=[4, 8], default_widths=[4, 8])
    cfg["sweep"]["recipe"].update(epochs=2)
    cfg["figures"].update(formats=["png"])
    mem, noise, err = (cfg["studies"][k] for k in ("memorization", "label_noise", "label_errors"))
    mem.update(seeds=2, shard_size=2, epochs=[1, 2], examples=3)
    mem["model"].update(width=16)
    noise.update(alphas=[0, 2], clean_examples=100, validation=20, seeds=2, shard_size=2)
    noise["architectures"] = {"perceptron": {"name": "mlp", "width": 1, "depth": 0},
                              "conv": {"name": "cnn1d", "width": 4}}
    noise["recipe"].update(epochs=4, patience=2)
    err.update(seeds=4, shard_size=4, k=3, model_counts=[2, 4], subsets=2)
    err["model"].update(width=16)
    err["recipe"].update(epochs=2)
    return cfg


def write_config(workdir: Path, cfg: dict) -> None:
    (workdir / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))


def snakemake(workdir: Path, *args: str, check: bool = True, env: dict | None = None
              ) -> subprocess.CompletedProcess:
    """Run the project's Snakefile in ``workdir`` (which holds config.yaml)."""
    cmd = [*SNAKEMAKE, "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir),
           "--cores", "2", "--workflow-profile", "none", *args]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        tail = f"{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{tail}")
    return proc


def planned_jobs(workdir: Path, *args: str) -> dict[str, int]:
    """Rule name -> number of jobs a dry run would execute (empty when nothing to do)."""
    proc = snakemake(workdir, "--dry-run", *args)
    out = proc.stdout + proc.stderr
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


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> tuple[Path, dict]:
    """A finished run of the whole workflow on the tiny config (shared, do not modify)."""
    workdir = tmp_path_factory.mktemp("tiny_run")
    cfg = tiny_config()
    write_config(workdir, cfg)
    snakemake(workdir)
    return workdir, cfg


@pytest.fixture
def tiny_copy(tiny_run, tmp_path) -> tuple[Path, dict]:
    """A private copy of the finished tiny run (results and Snakemake metadata), to modify."""
    src, cfg = tiny_run
    dst = tmp_path / "run"
    subprocess.run(["cp", "-a", str(src), str(dst)], check=True)
    return dst, copy.deepcopy(cfg)
