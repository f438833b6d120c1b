"""Your own dataset (docs/datasets.md): the .npz checks and scikit-learn's digits. The workflow
on your own .npz runs in tests/test_own_model.py, with the own-model door, as one run."""

from __future__ import annotations

import numpy as np
import pytest

from multirun import contracts
from multirun.config import ConfigError, check
from multirun.contracts import ContractError
from multirun.data import load_npz_dataset, make_dataset, make_digits


def valid(n=30, m=12, c=3, seed=0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"x_train": rng.normal(size=(n, 5)).astype(np.float32),
            "y_train": np.arange(n) % c, "x_test": rng.normal(size=(m, 5)),
            "y_test": (np.arange(m) % c).astype(np.int32),
            "x_val": rng.normal(size=(4, 5)).astype(np.float32), "y_val": np.arange(4) % c,
            "images_train": rng.integers(0, 255, (n, 6, 6), dtype=np.uint8),
            "images_test": rng.integers(0, 255, (m, 6, 6, 3), dtype=np.uint8),
            "classes": np.array(["a", "b", "c"])}


def test_a_valid_file_comes_back_in_the_contract(tmp_path):
    arrays = valid()
    np.savez(tmp_path / "mine.npz", **arrays)
    out = load_npz_dataset(tmp_path / "mine.npz")
    assert set(out) == set(arrays)
    for split in ("train", "test", "val"):
        assert out[f"x_{split}"].dtype == np.float32 and out[f"y_{split}"].dtype == np.int64
        np.testing.assert_array_equal(out[f"y_{split}"], arrays[f"y_{split}"])
        np.testing.assert_allclose(out[f"x_{split}"], arrays[f"x_{split}"], rtol=1e-7)
    np.testing.assert_array_equal(out["images_test"], arrays["images_test"])
    contracts.save_npz(tmp_path / "dataset.npz", **out)  # what rule dataset writes
    assert contracts.load_dataset(tmp_path / "dataset.npz")["classes"].tolist() == ["a", "b", "c"]


BAD = {
    "missing key": ({"y_test": None}, r"y_test: missing"),
    "lengths": ({"y_train": np.arange(29) % 3}, r"y_train: shape \(29,\), expected \(30,\)"),
    "label range": (
        {"y_test": np.full(12, 3)},
        r"y_test: labels 3\.\.3 outside 0\.\.2 \(C = len\(classes\)\)",
    ),
    "negative label": ({"y_train": np.arange(30) % 3 - 1}, r"y_train: labels -1\.\.1 outside 0\.\.2"),
    "nan": (
        {"x_train": np.where(np.arange(150).reshape(30, 5) == 77, np.nan, 0.0)},
        r"x_train: holds NaN or inf \(first at row 15\)",
    ),
    "inf": ({"x_val": np.full((4, 5), np.inf)}, r"x_val: holds NaN or inf"),
    "x dtype": ({"x_test": np.zeros((12, 5), np.int64)}, r"x_test: dtype int64, expected floating"),
    "y dtype": ({"y_train": np.zeros(30)}, r"y_train: dtype float64, expected integer"),
    "shape": (
        {"x_test": np.zeros((12, 4), np.float32)},
        r"x_test: examples of shape \(4,\), x_train's are \(5,\)",
    ),
    "val pair": ({"y_val": None}, r"x_val|y_val: missing: give x_val and y_val together"),
    "image dtype": (
        {"images_train": np.zeros((30, 6, 6), np.float32)},
        r"images_train: dtype float32, expected uint8",
    ),
    "image shape": (
        {"images_test": np.zeros((12, 6, 6, 4), np.uint8)},
        r"images_test: shape \(12, 6, 6, 4\), expected \(N, H, W\) or \(N, H, W, 3\)",
    ),
    "image count": (
        {"images_train": np.zeros((29, 6, 6), np.uint8)},
        r"images_train: 29 images for 30 examples",
    ),
    "image sizes": (
        {"images_train": np.zeros((30, 6, 6), np.uint8), "images_test": np.zeros((12, 5, 6), np.uint8)},
        r"images_test: images of 5 x 6 pixels, images_train's are 6 x 6",
    ),
    "unknown key": ({"x_extra": np.zeros(3)}, r"x_extra: unknown key"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_files_name_the_file_and_the_key(case, tmp_path):
    change, message = BAD[case]
    arrays = {**valid(), **change}
    np.savez(tmp_path / "mine.npz", **{k: v for k, v in arrays.items() if v is not None})
    with pytest.raises(ContractError, match=rf"mine\.npz: ({message})"):
        load_npz_dataset(tmp_path / "mine.npz")


def test_a_missing_or_pickled_file_and_a_missing_path(tmp_path):
    with pytest.raises(ContractError, match=r"nope\.npz: dataset file does not exist"):
        make_dataset("npz", path=str(tmp_path / "nope.npz"))
    np.savez(tmp_path / "obj.npz", x_train=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ContractError, match=r"obj\.npz: cannot be read as \.npz without pickles"):
        load_npz_dataset(tmp_path / "obj.npz")
    (tmp_path / "text.npz").write_text("x,y\n1,2\n")
    with pytest.raises(ContractError, match=r"text\.npz: not an \.npz archive"):
        load_npz_dataset(tmp_path / "text.npz")
    with pytest.raises(ConfigError, match=r"dataset\.path: dataset\.name npz needs"):
        check({"dataset": {"name": "npz"}})
    with pytest.raises(ConfigError, match=r"dataset\.path: mine\.npz is given, but dataset\.name "
                       r"mnist1d reads no file; set dataset\.name: npz"):
        check({"dataset": {"path": "mine.npz"}})


def test_digits_are_scikit_learns_images_split_by_the_seed():
    from sklearn.datasets import load_digits

    raw = load_digits()
    ds = make_digits(seed=42)
    n_train, n_test = len(ds["y_train"]), len(ds["y_test"])
    assert n_train + n_test == len(raw.target) and n_test == round(0.2 * len(raw.target))
    assert ds["x_train"].shape == (n_train, 1, 8, 8) and ds["images_test"].shape == (n_test, 8, 8)
    assert ds["images_train"].dtype == np.uint8 and ds["images_train"].max() == 255
    # every image is one of scikit-learn's, with its label, and no image is in both splits
    originals = np.round(raw.images * 255 / 16).astype(np.uint8)
    pixels = {img.tobytes(): lab for img, lab in zip(originals, raw.target, strict=True)}
    for split in ("train", "test"):
        for img, lab in zip(ds[f"images_{split}"], ds[f"y_{split}"], strict=True):
            assert pixels[img.tobytes()] == lab
    assert abs(float(ds["x_train"].mean())) < 1e-5 and abs(float(ds["x_train"].std()) - 1) < 1e-5
    assert sorted(ds["classes"].tolist()) == [str(c) for c in range(10)]
    other = make_digits(seed=1)
    assert not np.array_equal(other["y_test"], ds["y_test"])
    np.testing.assert_array_equal(make_digits(seed=42)["x_test"], ds["x_test"])
