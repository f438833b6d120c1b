"""The whole workflow on a tiny config: outputs, contracts, caching and bad input."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from conftest import planned_jobs, snakemake, write_config

pytestmark = pytest.mark.workflow


def test_run_produces_every_output(tiny_run):
    workdir, cfg = tiny_run
    res = workdir / "results"
    for name in ("accuracy_vs_models", "hessian_spectrum", "width_sweep_default"):
        assert (res / "figures" / f"{name}.png").stat().st_size > 10_000
    for shard, seeds in (("000", [0, 1]), ("001", [2, 3])):
        test = np.load(res / "logits" / f"shard-{shard}" / "test.npy", mmap_mode="r")
        train = np.load(res / "logits" / f"shard-{shard}" / "train.npy", mmap_mode="r")
        assert test.dtype == np.float16 and test.shape == (2, 60, 10)
        assert train.shape == (2, 240, 10)
        assert np.load(res / "logits" / f"shard-{shard}" / "seeds.npy").tolist() == seeds
    nb = np.load(res / "kernel" / "logsoftmax" / "neighbours.npz")
    assert nb["index"].dtype == np.int32 and nb["index"].shape == (3, 60, 5)  # 2 subsets of 2, 1 of 4
    assert nb["sizes"].tolist() == [2, 2, 4]
    assert np.all(np.diff(nb["similarity"], axis=-1) <= 1e-6)  # sorted descending
    with open(res / "knn" / "logsoftmax" / "scores.csv") as f:
        rows = list(csv.DictReader(f))
    kinds = {(r["method"], r["k"], r["vote"]) for r in rows}
    assert ("kernel", "3", "weighted") in kinds and ("ensemble", "", "") in kinds
    assert all(0.0 <= float(r["accuracy"]) <= 1.0 for r in rows)
    with open(res / "effdim" / "sweep-default.csv") as f:
        widths = {int(r["width"]) for r in csv.DictReader(f)}
    assert widths == {4, 8}


def test_second_run_schedules_nothing(tiny_run):
    workdir, _ = tiny_run
    assert planned_jobs(workdir) == {}


def test_knn_setting_reruns_only_scoring_and_its_figure(tiny_copy):
    workdir, cfg = tiny_copy
    cfg["knn"]["power"] = 2
    write_config(workdir, cfg)
    # both kernel variants' scores (logsoftmax, raw) and the two figures that read scores
    assert planned_jobs(workdir) == {"knn": 2, "figure_accuracy": 1, "figure_neighbours": 1, "all": 1}


def test_one_more_shard_trains_only_that_shard(tiny_copy):
    workdir, cfg = tiny_copy
    cfg["train"]["seeds"] = 6
    write_config(workdir, cfg)
    jobs = planned_jobs(workdir)
    assert jobs["train_shard"] == 1 and jobs["logits"] == 1
    assert jobs["kernel"] == 2 and jobs["knn"] == 2  # both variants read every shard
    assert "hessian" not in jobs and "train_width" not in jobs and "dataset" not in jobs


def test_hessian_setting_touches_neither_training_nor_kernel(tiny_copy):
    workdir, cfg = tiny_copy
    cfg["hessian"]["steps"] = 12
    write_config(workdir, cfg)
    jobs = planned_jobs(workdir)
    assert jobs.get("hessian", 0) >= 1
    assert not {"train_shard", "train_width", "logits", "kernel", "knn", "dataset"} & set(jobs)


def test_device_and_figure_settings_rerun_no_computation(tiny_copy):
    workdir, cfg = tiny_copy
    for section in ("train", "kernel", "hessian"):
        cfg[section]["device"] = "cpu"  # where a job runs does not change what it computes
    write_config(workdir, cfg)
    assert planned_jobs(workdir) == {}
    cfg["hessian"]["slq"]["sigma"] = 0.05  # density broadening: drawing only
    write_config(workdir, cfg)
    assert planned_jobs(workdir) == {"figure_spectrum": 1, "figure_width_sweep": 1, "all": 1}


def test_unknown_config_key_is_named_before_any_job(tiny_copy):
    workdir, cfg = tiny_copy
    cfg["knn"]["powr"] = 2
    write_config(workdir, cfg)
    proc = snakemake(workdir, "--dry-run", check=False)
    assert proc.returncode != 0
    assert "knn.powr: unknown key" in proc.stdout + proc.stderr


@pytest.mark.parametrize("damage", ["truncate", "nan"])
def test_bad_logits_fail_clearly_and_leave_no_output(tiny_copy, damage):
    workdir, _ = tiny_copy
    res = workdir / "results"
    bad = res / "logits" / "shard-001" / "train.npy"
    if damage == "truncate":
        bad.write_bytes(bad.read_bytes()[:500])
    else:
        arr = np.load(bad)
        arr[1, 7, 3] = np.nan
        np.save(bad, arr)
    proc = snakemake(workdir, "--forcerun", "kernel", check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "shard-001/train.npy" in text
    assert ("truncated" in text) if damage == "truncate" else ("NaN" in text)
    # the kernel job(s) that ran and failed left no output (the first failure stops the run;
    # which variant runs first is the scheduler's choice, the other keeps its earlier output)
    failed = [v for v in ("logsoftmax", "raw")
              if "error:" in (res / "logs" / "kernel" / f"{v}.log").read_text()]
    assert failed
    for variant in failed:
        out = res / "kernel" / variant / "neighbours.npz"
        assert not out.exists()
        assert not list(out.parent.glob(".neighbours*"))  # no temporary left behind
