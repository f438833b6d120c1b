"""File contracts: atomic writes, validated reads with messages that name the file."""

from __future__ import annotations

import numpy as np
import pytest

from multirun import contracts


def test_save_npy_is_atomic_and_memory_mappable(tmp_path):
    path = tmp_path / "sub" / "a.npy"
    contracts.save_npy(path, np.arange(12, dtype=np.float16).reshape(3, 4))
    arr = contracts.load_npy(path, ndim=2, dtype="float16")
    assert isinstance(arr, np.memmap) and arr[2, 3] == 11
    assert [p.name for p in path.parent.iterdir()] == ["a.npy"]


def test_failed_write_leaves_nothing(tmp_path):
    path = tmp_path / "b.npz"

    def boom(tmp):
        tmp.write_bytes(b"partial")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        contracts.save_with(path, boom)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "damage, message",
    [
        ("missing", "file is missing"),
        ("truncate", "truncated or corrupt"),
        ("nan", "NaN or inf (first at index 2"),
        ("rank", "expected 3 dimensions"),
        ("dtype", "expected dtype float16"),
    ],
)
def test_load_npy_names_the_file_and_the_fault(tmp_path, damage, message):
    path = tmp_path / "logits.npy"
    arr = np.zeros((4, 5, 3), dtype=np.float16)
    if damage == "nan":
        arr[2, 1, 0] = np.nan
    if damage == "rank":
        arr = arr[0]
    if damage == "dtype":
        arr = arr.astype(np.float32)
    if damage != "missing":
        np.save(path, arr)
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(contracts.ContractError) as err:
        contracts.load_npy(path, ndim=3, dtype="float16")
    assert str(path) in str(err.value) and message in str(err.value)


def test_load_dataset_checks_the_contract(tmp_path):
    good = dict(x_train=np.zeros((4, 2), np.float32), y_train=np.zeros(4, np.int64),
                x_test=np.zeros((2, 2), np.float32), y_test=np.zeros(2, np.int64))
    contracts.save_npz(tmp_path / "ok.npz", **good)
    assert contracts.load_dataset(tmp_path / "ok.npz")["x_train"].shape == (4, 2)
    contracts.save_npz(tmp_path / "bad.npz", **(good | {"y_test": np.zeros(3, np.int64)}))
    with pytest.raises(contracts.ContractError, match="bad.npz: test split"):
        contracts.load_dataset(tmp_path / "bad.npz")
