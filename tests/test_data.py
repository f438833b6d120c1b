"""Datasets: MNIST-1D generated offline, CIFAR-10 from its real archive layout (hub files: test_published)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torchvision.datasets.cifar

from multirun import contracts, data


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
    with pytest.raises(contracts.ContractError, match="cifar-10-batches-py.*dataset.root"):
        data.load_cifar10(tmp_path, download=False)


def test_cifar10_failed_download_is_one_message(tmp_path, monkeypatch):
    """torchvision's real download path against a port that refuses connections (offline)."""
    monkeypatch.setattr(torchvision.datasets.cifar.CIFAR10, "url",
                        "http://127.0.0.1:9/cifar-10-python.tar.gz")
    with pytest.raises(contracts.ContractError) as err:
        data.load_cifar10(tmp_path, download=True)
    msg = str(err.value)
    assert "cifar-10-batches-py: downloading CIFAR-10 from http://127.0.0.1:9/" in msg
    assert "URLError" in msg and "connect to the network" in msg and "dataset.root=" in msg
    assert err.value.__cause__ is None and err.value.__suppress_context__  # no chained traceback
