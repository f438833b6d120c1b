"""Your own logits (local_logits, docs/published.md): checked once, imported as shards, and the
kernel, k-NN and figures run on them with no training. All files are fabricated here."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from conftest import planned_jobs, snakemake, tiny_config, write_config

from multirun import contracts, local_logits
from multirun.config import ConfigError, check
from multirun.contracts import ContractError
from multirun.data import make_mnist1d


def fabricate(y: np.ndarray, models: int, classes: int, seed: int, dtype=np.float16) -> np.ndarray:
    """(models, N, C) logits: the true class raised by a per-model margin, plus noise."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(models, len(y), classes))
    logits[:, np.arange(len(y)), y] += rng.uniform(0.5, 2.0, size=(models, 1))
    return logits.astype(dtype)


@pytest.fixture
def labels():
    rng = np.random.default_rng(0)
    return rng.integers(0, 4, 20), rng.integers(0, 4, 8)


def write_pair(tmp_path, name, y_train, y_test, models, **kw):
    train, test = tmp_path / f"{name}_train.npy", tmp_path / f"{name}_test.npy"
    np.save(train, fabricate(y_train, models, 4, 1, **kw))
    np.save(test, fabricate(y_test, models, 4, 2, **kw))
    return str(train), str(test)


def test_check_reads_every_file_and_summarises(tmp_path, labels):
    y_train, y_test = labels
    pairs = [write_pair(tmp_path, "a", *labels, 3), write_pair(tmp_path, "b", *labels, 2, dtype=np.float32)]
    summary = local_logits.check(pairs, y_train, y_test)
    assert summary == {"models": [3, 2], "classes": 4, "dtypes": ["float16", "float32"]}
    assert local_logits.shards(summary["models"]) == {"000": [0, 1, 2], "001": [3, 4]}


BAD = {
    "classes": (
        lambda t, s: np.save(s, np.zeros((2, 8, 5), np.float16)),
        r"b_test\.npy: 5 classes, .*a_train\.npy has 4",
    ),
    "examples": (
        lambda t, s: np.save(t, np.zeros((2, 19, 4), np.float16)),
        r"b_train\.npy: 19 examples, the labels' train split has 20",
    ),
    "models": (
        lambda t, s: np.save(s, np.zeros((3, 8, 4), np.float16)),
        r"b_test\.npy: 3 models, its train file .*b_train\.npy has 2",
    ),
    "nan": (
        lambda t, s: np.save(t, np.full((2, 20, 4), np.nan, np.float32)),
        r"b_train\.npy: holds NaN or inf .*; fix the file \(local_logits\.train\)",
    ),
    "dtype": (
        lambda t, s: np.save(t, np.zeros((2, 20, 4), np.int32)),
        r"b_train\.npy: dtype int32; local_logits files are float16, float32 or float64",
    ),
    "rank": (lambda t, s: np.save(s, np.zeros((20, 4), np.float16)),
             r"b_test\.npy: expected 3 dimensions, found shape \(20, 4\); fix the file "
             r"\(local_logits\.test\): numpy\.save'd \(models, examples, classes\)"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_files_are_named(case, tmp_path, labels):
    spoil, message = BAD[case]
    pairs = [write_pair(tmp_path, "a", *labels, 2), write_pair(tmp_path, "b", *labels, 2)]
    spoil(*pairs[1])
    with pytest.raises(ContractError, match=message):
        local_logits.check(pairs, *labels)


def test_labels_out_of_range_and_bad_config(tmp_path, labels):
    y_train, y_test = labels
    pairs = [write_pair(tmp_path, "a", y_train, y_test, 2)]
    message = r"local_logits\.labels: y_test holds labels 0\.\.4, the logits have 4 classes"
    with pytest.raises(ContractError, match=message):
        local_logits.check(pairs, y_train, np.append(y_test[:-1], 4))
    with pytest.raises(ConfigError, match=r"local_logits\.train: 'nowhere/\*\.npy' names no file"):
        local_logits.resolve(["nowhere/*.npy"], "local_logits.train")
    with pytest.raises(ConfigError, match=r"local_logits\.test: 1 test files for 2 train files"):
        local_logits.pair(["a", "b"], ["c"])
    with pytest.raises(ConfigError, match=r"local_logits\.labels: 'labels\.csv' is neither"):
        check({"local_logits": {"train": ["a"], "test": ["b"], "labels": "labels.csv"}})
    with pytest.raises(ConfigError, match=r"either published .* or local_logits"):
        check({"local_logits": {"train": ["a"], "test": ["b"], "labels": "dataset"},
               "published": {"repo_id": "r", "files": ["f"]}})


def test_import_links_one_dtype_and_writes_float16_otherwise(tmp_path, labels):
    train, _ = write_pair(tmp_path, "a", *labels, 3, dtype=np.float32)
    linked, written = tmp_path / "out/linked.npy", tmp_path / "out/written.npy"
    local_logits.import_shard(train, linked, link=True)
    assert linked.is_symlink() and linked.resolve() == (tmp_path / "a_train.npy").resolve()
    local_logits.import_shard(train, written, link=False)
    got = contracts.load_npy(written, ndim=3)
    assert got.dtype == np.float16 and not written.is_symlink()
    np.testing.assert_array_equal(got, np.load(train).astype(np.float16))
    assert local_logits.linkable(["float32"]) and not local_logits.linkable(["float16", "float32"])
    assert not local_logits.linkable(["float64"])  # numpy's default: written as float16
    double, _ = write_pair(tmp_path, "d", *labels, 2, dtype=np.float64)
    local_logits.import_shard(double, tmp_path / "out/double.npy", link=False)
    np.testing.assert_array_equal(contracts.load_npy(tmp_path / "out/double.npy", ndim=3),
                                  np.load(double).astype(np.float16))


@pytest.mark.workflow
def test_local_logits_run_the_kernel_knn_and_figures_without_training(tmp_path):
    cfg = tiny_config()
    data = make_mnist1d(seed=cfg["dataset"]["seed"], num_samples=cfg["dataset"]["num_samples"])
    y_train, y_test = data["y_train"], data["y_test"]
    (tmp_path / "mine").mkdir()
    full = {"train": [], "test": []}
    for i, models in enumerate((3, 2)):
        for split, y in (("train", y_train), ("test", y_test)):
            logits = fabricate(y, models, 10, seed=10 * i + (split == "test"))
            np.save(tmp_path / "mine" / f"run{i}_{split}.npy", logits)
            full[split].append(logits)
    cfg["local_logits"] = {"train": ["mine/run*_train.npy"], "test": ["mine/run*_test.npy"],
                           "labels": "dataset"}
    cfg["kernel"]["model_counts"] = [2, 5]
    write_config(tmp_path, cfg)
    jobs = planned_jobs(tmp_path)
    assert jobs["check_local_logits"] == 1 and jobs["import_local_logits"] == 2
    assert not {"train_shard", "logits", "hessian", "train_width"} & set(jobs)
    snakemake(tmp_path)
    shard = tmp_path / "results/logits/shard-001"
    assert (shard / "test.npy").is_symlink()  # one dtype: linked, not copied
    np.testing.assert_array_equal(np.load(shard / "seeds.npy"), [3, 4])
    assert (tmp_path / "results/figures/neighbour_pairs.png").is_file()
    # the ensemble of all 5 models in scores.csv is the argmax of the mean of the files' logits
    mean = np.concatenate(full["test"]).astype(np.float32).mean(0)
    expected = float((mean.argmax(-1) == y_test).mean())
    with open(tmp_path / "results/knn/logsoftmax/scores.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["method"] == "ensemble" and r["n_models"] == "5"]
    assert rows and float(rows[0]["accuracy"]) == pytest.approx(expected, abs=1e-12)
    assert planned_jobs(tmp_path) == {}
    proc = snakemake(tmp_path, "check")  # the imported shards against their contracts
    assert "intermediates of the default targets meet their contracts" in proc.stderr
    assert "rule train_shard" not in proc.stdout + proc.stderr  # local logits train nothing
    np.save(tmp_path / "mine" / "run1_test.npy", full["test"][1] * 2)  # an edited file reruns
    jobs = planned_jobs(tmp_path)
    assert jobs["check_local_logits"] == 1 and jobs["import_local_logits"] >= 1
    assert jobs["kernel"] >= 1 and "dataset" not in jobs


def test_labels_only_file_draws_no_examples(tmp_path):
    """labels: FILE.npz without inputs: kernel, k-NN and the accuracy figure, no pictures."""
    cfg = tiny_config()
    y_train, y_test = np.arange(30) % 3, np.arange(9) % 3
    np.savez(tmp_path / "labels.npz", y_train=y_train, y_test=y_test)
    np.save(tmp_path / "tr.npy", fabricate(y_train, 4, 3, 0))
    np.save(tmp_path / "te.npy", fabricate(y_test, 4, 3, 1))
    cfg["local_logits"] = {"train": ["tr.npy"], "test": ["te.npy"], "labels": "labels.npz"}
    cfg["kernel"]["model_counts"] = [2, 4]
    write_config(tmp_path, cfg)
    jobs = planned_jobs(tmp_path)
    assert jobs["dataset"] == 1 and jobs["kernel"] >= 1 and jobs["figure_accuracy"] == 1
    assert "figure_neighbours" not in jobs and "train_shard" not in jobs
    cfg["kernel"]["model_counts"] = [2, 8]
    write_config(tmp_path, cfg)
    proc = snakemake(tmp_path, "--dry-run", check=False)
    assert proc.returncode != 0
    assert "kernel.model_counts: sizes [8] exceed the 4 models" in proc.stdout + proc.stderr
