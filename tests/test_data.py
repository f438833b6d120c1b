"""Datasets: MNIST-1D generated offline, CIFAR-10 from its real archive layout, hub log.pt files."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
import torchvision.datasets.cifar

from multirun import data, io


def test_mnist1d_is_deterministic_by_seed():
    a, b = data.make_mnist1d(seed=3, num_samples=200), data.make_mnist1d(seed=3, num_samples=200)
    c = data.make_mnist1d(seed=4, num_samples=200)
    assert a["x_train"].shape == (160, 40) and a["x_test"].shape == (40, 40)
    assert a["x_train"].dtype == np.float32 and a["y_train"].dtype == np.int64
    np.testing.assert_array_equal(a["x_train"], b["x_train"])
    np.testing.assert_array_equal(a["y_test"], b["y_test"])
    assert not np.array_equal(a["x_train"], c["x_train"])
    assert set(np.unique(a["y_train"])) <= set(range(10))


def _fake_cifar_batches(folder, per_batch=6):
    """The real cifar-10-batches-py layout: protocol-2 pickles of dicts with 'data' (N, 3072)
    uint8 rows (R, G, B planes of 32x32), 'labels', 'batch_label' and 'filenames'."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        batch = {"batch_label": name, "data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                 "labels": rng.integers(0, 10, per_batch).tolist(),
                 "filenames": [f"img_{i}.png" for i in range(per_batch)]}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
    meta = {"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                            "horse", "ship", "truck"]}
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump(meta | {"num_cases_per_batch": per_batch, "num_vis": 3072}, f, protocol=2)


def test_cifar10_reads_the_torchvision_layout(tmp_path, monkeypatch):
    _fake_cifar_batches(tmp_path / "cifar-10-batches-py")
    # Our fabricated batches cannot match torchvision's MD5 table; everything else is real.
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a, **k: True)
    ds = data.load_cifar10(tmp_path, download=False)
    assert ds["x_train"].shape == (30, 3, 32, 32) and ds["x_test"].shape == (6, 3, 32, 32)
    assert ds["images_train"].shape == (30, 32, 32, 3) and ds["images_train"].dtype == np.uint8
    assert ds["classes"][0] == "airplane"
    # the normalised tensor is the image, channel-first
    img = ds["images_test"][2].astype(np.float32) / 255.0
    np.testing.assert_allclose(
        ds["x_test"][2, 1], (img[:, :, 1] - data.CIFAR10_MEAN[1]) / data.CIFAR10_STD[1], rtol=1e-5
    )


def test_cifar10_missing_says_where_and_what_to_do(tmp_path):
    with pytest.raises(io.ContractError, match="cifar-10-batches-py.*dataset.root"):
        data.load_cifar10(tmp_path, download=False)


def _fake_log(path, models=3, n_train=12, n_test=5):
    """A log.pt with the published keys and dtypes, at a small size."""
    g = torch.Generator().manual_seed(0)
    torch.save({
        "logits": torch.randn(models, n_test, 10, generator=g).half(),
        "logits_tta": torch.randn(models, n_test, 10, generator=g).half(),
        "logits_train": torch.randn(models, n_train, 10, generator=g).half(),
        "accs": torch.rand(models),
        "code": "print('training script')",
    }, path)


def test_read_published_log(tmp_path):
    _fake_log(tmp_path / "log.pt")
    out = data.read_published(tmp_path / "log.pt", num_train=12, num_test=5)
    assert out["train"].shape == (3, 12, 10) and out["test"].dtype == np.float16
    with pytest.raises(io.ContractError, match="log.pt: logits cover 12 train / 5 test"):
        data.read_published(tmp_path / "log.pt", num_train=50000, num_test=10000)
    torch.save({"logits": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(io.ContractError, match="bad.pt: lacks key 'logits_train'"):
        data.read_published(tmp_path / "bad.pt", num_train=12, num_test=5)


def test_download_published_uses_the_real_hub_client_and_cache(tmp_path, monkeypatch):
    """A pre-filled hub cache in huggingface_hub's on-disk layout, read offline by the real client."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    filename = "logs_saveoutputs_main/0000/log.pt"
    repo = tmp_path / "datasets--kjj0--cifar10-multirun-logits"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    target = repo / "snapshots" / commit / filename
    target.parent.mkdir(parents=True)
    _fake_log(target)
    path = data.download_published(filename, cache_dir=str(tmp_path))
    assert data.read_published(path, num_train=12, num_test=5)["test"].shape == (3, 5, 10)
    with pytest.raises(io.ContractError, match="missing/log.pt: download failed"):
        data.download_published("missing/log.pt", cache_dir=str(tmp_path))
