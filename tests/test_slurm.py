"""The README's SLURM command against a real one-node SLURM on localhost (tests/services.py).

Every stage of the tiny workflow runs through `snakemake --workflow-profile profiles/slurm`
(every job an sbatch job, no accounting database) and must produce the same results as the
local run. The suite starts with this file (tests/conftest.py): its run mostly waits on
SLURM, so the other worker's tests fill that time.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import ONE_THREAD, ROOT, job_env, tiny_config, write_config
from services import slurm_unavailable, start_slurm

pytestmark = pytest.mark.workflow
PROFILE = ROOT / "profiles" / "slurm"
CPU_ONLY_RULES = ("dataset", "knn", "effdim")  # and every figure rule without a GPU request
# Every stage once, both partitions (training, logits, kernel, Hessian on gpu; the dataset,
# k-NN, effdim and a figure on cpu): 12 sbatch jobs, not the whole run's 26 (each is a
# Snakefile parse and a job step; the run is compared with the local one file by file).
TARGETS = ("results/knn/logsoftmax/scores.csv", "results/knn/raw/scores.csv",
           "results/effdim/main.csv", "results/figures/accuracy_vs_models.png")


def test_profile_follows_threads_and_works_without_accounting():
    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    assert profile["executor"] == "slurm"
    assert profile["slurm-status-command"] == "squeue"
    requested = [profile.get("default-resources", {}), *profile.get("set-resources", {}).values()]
    assert not any("cpus_per_task" in r for r in requested), "CPUs must follow each rule's threads"
    parts = yaml.safe_load((PROFILE / profile["slurm-partition-config"]).read_text())["partitions"]
    assert parts["cpu"]["max_gpu"] == 0 and parts["gpu"]["max_gpu"] > 0


@pytest.fixture(scope="module")
def slurm():
    reason = slurm_unavailable()
    if reason:
        pytest.skip(reason)
    cluster = start_slurm()
    yield cluster
    cluster.stop()
    shutil.rmtree(cluster.root, ignore_errors=True)


@pytest.fixture(scope="module")
def slurm_run(slurm, tmp_path_factory):
    """The tiny config with gpu: 1 through the README's SLURM command; account from SBATCH_ACCOUNT."""
    workdir = tmp_path_factory.mktemp("slurm_run")
    cfg = tiny_config()
    cfg["gpu"] = 1  # GPU rules ask for one GPU (the test node's GRES), so they go to partition gpu
    write_config(workdir, cfg)
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"),
           "--directory", str(workdir), "--workflow-profile", str(PROFILE),
           *ONE_THREAD,  # as the local tiny run (tests/conftest.py), so results are bitwise equal
           # test only: the first squeue 8 s after a submission instead of the plugin's 40 s.
           # A job here takes 5-6 s (two warm `snakemake` starts, then the script); a check
           # that finds none finished makes the plugin wait 10 s longer than the last one, so
           # 3 s cost 16 s per stage and 8 s costs 8 (the run: 117 s, then 73 s, quiet).
           "--slurm-init-seconds-before-status-checks", "8", *TARGETS]
    # job_env: this checkout's library, and the suite's warm interpreter for the job steps'
    # `python -m snakemake` and their scripts (docs/testing.md)
    env = job_env(env={"SLURM_CONF": slurm.env["SLURM_CONF"], "SBATCH_ACCOUNT": "multirun-test"})
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1500)
    except subprocess.TimeoutExpired as err:
        raise AssertionError(f"the SLURM run hung; jobs: {slurm.jobs()}\n{err.stderr}") from err
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        logs = "".join(f"--- {p}\n{p.read_text()[-2000:]}\n"
                       for p in sorted(workdir.glob(".snakemake/slurm_logs/**/*.log")))
        raise AssertionError(f"SLURM run failed:\n{out[-6000:]}\njobs: {slurm.jobs()}\n{logs}")
    return workdir, cfg, out, slurm.jobs()


def rule_of(comment: str) -> str:
    return re.match(r"rule_(.+?)(?:_wildcards_.*)?$", comment).group(1)


def test_every_job_ran_through_sbatch_in_its_partition(slurm_run):
    _, _, out, jobs = slurm_run
    stats = out.split("Job stats:", 1)[1].split("total", 1)[0]
    planned = {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", stats, re.M)}
    planned.pop("all", None)  # the target rule (local), when the run asks for it
    ran = [rule_of(j["comment"]) for j in jobs]
    assert {r: ran.count(r) for r in ran} == planned  # one sbatch job per Snakemake job
    assert {j["state"] for j in jobs} == {"COMPLETED"}
    assert {j["account"] for j in jobs} == {"multirun-test"}  # SBATCH_ACCOUNT reached sbatch
    ncpus = os.cpu_count()
    for job in jobs:
        rule, gpu = rule_of(job["comment"]), job["gpus"] != "N/A"
        assert job["partition"] == ("gpu" if gpu else "cpu"), job
        assert 1 <= int(job["cpus"]) <= ncpus, job
        if rule in CPU_ONLY_RULES or rule.startswith("figure"):
            assert not gpu or rule == "figure_neighbours", job
    rules = {rule_of(j["comment"]): j["partition"] for j in jobs}
    assert rules["train_shard"] == rules["hessian"] == "gpu"
    assert rules["dataset"] == rules["knn"] == rules["effdim"] == rules["figure_accuracy"] == "cpu"


def same_files(a: Path, b: Path, pattern: str) -> list[str]:
    """Compare every file matching pattern under two results folders; .npz array by array."""
    files = sorted(p.relative_to(a) for p in a.glob(pattern))
    assert files, f"no {pattern} under {a}"
    assert files == sorted(p.relative_to(b) for p in b.glob(pattern))
    for rel in files:
        if rel.suffix == ".npz":
            with np.load(a / rel) as x, np.load(b / rel) as y:
                assert sorted(x.files) == sorted(y.files), rel
                for key in x.files:
                    assert x[key].dtype == y[key].dtype and np.array_equal(x[key], y[key]), (rel, key)
        else:
            assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    return [str(f) for f in files]


def test_slurm_results_equal_the_local_run(slurm_run, tiny_run):
    workdir, cfg, _, _ = slurm_run
    local, local_cfg = tiny_run
    assert {k: v for k, v in cfg.items() if k != "gpu"} == {k: v for k, v in local_cfg.items() if k != "gpu"}
    a, b = workdir / cfg["results"], local / local_cfg["results"]
    same_files(a, b, "logits/**/*.npy")
    same_files(a, b, "kernel/**/neighbours.npz")
    same_files(a, b, "knn/**/scores.csv")
    same_files(a, b, "effdim/main.csv")
    assert [p.name for p in (a / "figures").glob("*.png")] == ["accuracy_vs_models.png"]
