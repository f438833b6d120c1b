"""The published-logits path end to end: hub cache -> logit shards -> kernel -> k-NN -> figure.

The hub client is the real one (huggingface_hub, offline mode) reading a cache laid out as it
lays it out; the log.pt files have the published keys and dtypes at a small size.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from conftest import snakemake, tiny_config, write_config

from multirun import data, published

pytestmark = pytest.mark.workflow
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _hub_cache(root, files, n_train, n_test, models=3):
    repo = root / "datasets--kjj0--cifar10-multirun-logits"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    g = torch.Generator().manual_seed(1)
    for name in files:
        target = repo / "snapshots" / COMMIT / name
        target.parent.mkdir(parents=True)
        torch.save({
            "logits": torch.randn(models, n_test, 10, generator=g).half(),
            "logits_tta": torch.randn(models, n_test, 10, generator=g).half(),
            "logits_train": torch.randn(models, n_train, 10, generator=g).half(),
            "accs": torch.rand(models), "code": "# training code",
        }, target)


def test_published_logits_flow_through_kernel_and_knn(tmp_path):
    files = ["logs_saveoutputs_main/aaaa/log.pt", "logs_saveoutputs_main/bbbb/log.pt"]
    cfg = tiny_config()
    cfg["published"] = {"repo_id": published.REPO, "files": files}
    cfg["kernel"]["model_counts"] = [2, 6]
    ds = data.make_mnist1d(seed=cfg["dataset"]["seed"], num_samples=cfg["dataset"]["num_samples"])
    _hub_cache(tmp_path / "hub", files, len(ds["y_train"]), len(ds["y_test"]))
    workdir = tmp_path / "run"
    workdir.mkdir()
    write_config(workdir, cfg)
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")}
    snakemake(workdir, env=env)
    res = workdir / "results"
    assert np.load(res / "logits" / "shard-001" / "seeds.npy").tolist() == [3, 4, 5]
    assert np.load(res / "logits" / "shard-000" / "train.npy").shape == (3, 240, 10)
    assert not (res / "train").exists()  # nothing was trained
    with open(res / "knn" / "logsoftmax" / "scores.csv") as f:
        sizes = {int(r["n_models"]) for r in csv.DictReader(f)}
    assert sizes == {2, 6}
    assert (res / "figures" / "accuracy_vs_models.png").exists()


def test_missing_hub_file_is_named(tmp_path):
    cfg = tiny_config()
    cfg["published"] = {"repo_id": published.REPO, "files": ["nowhere/log.pt"]}
    cfg["kernel"]["model_counts"] = [2]
    _hub_cache(tmp_path / "hub", [], 1, 1)
    workdir = tmp_path / "run"
    workdir.mkdir()
    write_config(workdir, cfg)
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")}
    proc = snakemake(workdir, check=False, env=env)
    assert proc.returncode != 0
    assert "nowhere/log.pt: download failed" in proc.stdout + proc.stderr
    assert not (workdir / "results" / "logits" / "shard-000" / "test.npy").exists()
