"""Datasets as arrays (the published logits of the hub: :mod:`multirun.published`).

Every dataset is returned in the dataset contract of :func:`multirun.contracts.load_dataset`:
``x_train`` (N, ...) float32, ``y_train`` (N,) int64, the same for test, optional
``x_val``/``y_val``, an optional ``images_*`` (N, H, W) or (N, H, W, 3) uint8 for picture
grids, and ``classes`` (C,) names. Built in: MNIST-1D (generated), CIFAR-10 (downloaded),
scikit-learn's digits (shipped with scikit-learn); your own as a ``.npz`` file, checked by
:func:`load_npz_dataset` (docs/datasets.md).
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from multirun import contracts
from multirun.contracts import ContractError

CIFAR10_MEAN = np.array([0.4914, 0.4822, 0.4465], dtype=np.float32)
CIFAR10_STD = np.array([0.2470, 0.2435, 0.2616], dtype=np.float32)


def make_mnist1d(seed: int = 42, num_samples: int = 5000) -> dict[str, np.ndarray]:
    """Generate MNIST-1D offline with the ``mnist1d`` package (no download).

    Returns ``x_*`` (N, 40) float32 signals (standardised by the generator),
    ``y_*`` (N,) int64; 80% train, 20% test, deterministic in ``seed``.
    """
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.seed, args.num_samples = seed, num_samples
    state = np.random.get_state()  # noqa: NPY002 -- the generator seeds numpy's global RNG; leave it as found
    try:
        raw = make_dataset(args)
    finally:
        np.random.set_state(state)  # noqa: NPY002
    return {
        "x_train": raw["x"].astype(np.float32),
        "y_train": raw["y"].astype(np.int64),
        "x_test": raw["x_test"].astype(np.float32),
        "y_test": raw["y_test"].astype(np.int64),
        "classes": np.array([str(c) for c in range(10)]),
    }


def load_cifar10(root: str | os.PathLike, download: bool = True) -> dict[str, np.ndarray]:
    """CIFAR-10 through torchvision (downloaded once, MD5-checked by torchvision).

    Rows keep torchvision's order (the order of the published logits).
    ``x_*`` (N, 3, 32, 32) float32 normalised per channel, ``images_*`` (N, 32, 32, 3) uint8.
    """
    from torchvision.datasets import CIFAR10

    out: dict[str, np.ndarray] = {}
    for split, train in (("train", True), ("test", False)):
        folder = Path(root) / "cifar-10-batches-py"
        try:
            ds = CIFAR10(str(root), train=train, download=download)
        except RuntimeError as err:  # torchvision: "Dataset not found or corrupted"
            raise ContractError(
                f"{folder}: {err} Run with network access once "
                "(dataset.root is where it is stored), or delete the folder to download it again."
            ) from None
        except Exception as err:  # the download: URLError (offline, DNS), HTTPError, timeouts, bad tar
            reason = getattr(err, "reason", None) or (str(err).splitlines() or [""])[0]
            raise ContractError(
                f"{folder}: downloading CIFAR-10 from {CIFAR10.url} failed "
                f"({type(err).__name__}: {reason}); connect to the network and rerun, or put "
                f"{CIFAR10.filename} (or its extracted cifar-10-batches-py folder) in "
                f"dataset.root={root}"
            ) from None
        images = np.asarray(ds.data, dtype=np.uint8)  # (N, 32, 32, 3)
        x = (images.astype(np.float32) / 255.0 - CIFAR10_MEAN) / CIFAR10_STD
        out[f"x_{split}"] = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        out[f"y_{split}"] = np.asarray(ds.targets, dtype=np.int64)
        out[f"images_{split}"] = images
        out["classes"] = np.array(ds.classes)
    return out


def make_digits(seed: int = 42, test_fraction: float = 0.2) -> dict[str, np.ndarray]:
    """scikit-learn's 8x8 handwritten digits (1,797 images, shipped with scikit-learn).

    A random ``test_fraction`` of the rows (drawn from ``seed``) is the test split.
    ``x_*`` (N, 1, 8, 8) float32: pixels 0..16 scaled to [0, 1], then standardised with
    the train split's mean and std (one number each); ``images_*`` (N, 8, 8) uint8
    (0..255) for the picture grids; ``classes`` the digits "0".."9".
    """
    from sklearn.datasets import load_digits

    raw = load_digits()
    pixels = np.asarray(raw.images, dtype=np.float32) / 16.0  # (N, 8, 8) in [0, 1]
    labels = np.asarray(raw.target, dtype=np.int64)
    order = np.random.default_rng(seed).permutation(len(labels))
    n_test = int(round(test_fraction * len(labels)))
    splits = {"train": np.sort(order[n_test:]), "test": np.sort(order[:n_test])}
    mean, std = pixels[splits["train"]].mean(), pixels[splits["train"]].std()
    out: dict[str, np.ndarray] = {}
    for split, rows in splits.items():
        out[f"x_{split}"] = ((pixels[rows] - mean) / std)[:, None].astype(np.float32)
        out[f"y_{split}"] = labels[rows]
        out[f"images_{split}"] = np.round(pixels[rows] * 255).astype(np.uint8)
    out["classes"] = np.array([str(c) for c in raw.target_names])
    return out


def _bad(path, key: str, what: str) -> ContractError:
    return ContractError(f"{path}: {key}: {what} (dataset.path; the keys, dtypes and shapes are "
                         "in docs/datasets.md)")


def load_npz_dataset(path: str | os.PathLike, *, labels_only: bool = False
                     ) -> dict[str, np.ndarray]:
    """Your own dataset: a ``.npz`` checked key by key and returned in the dataset contract.

    Keys (docs/datasets.md): ``x_train``, ``x_test`` (N, ...) floating, the same
    trailing shape; ``y_train``, ``y_test`` (N,) integer labels in ``0..C-1``; optional
    ``x_val``/``y_val`` (both or neither); optional ``images_train``/``images_test``
    (N, H, W) or (N, H, W, 3) uint8 of the same N; optional ``classes`` (C,) strings,
    which set ``C`` (else ``C = max label + 1``). ``x`` becomes float32, ``y`` int64.
    Raises :class:`ContractError` naming the file and the key: a missing key, a wrong
    dtype or shape, mismatched lengths, labels outside ``0..C-1``, NaN or inf.
    ``labels_only`` (the labels of ``local_logits``): a file without ``x_train``/``x_test``
    is accepted and gets ``x_*`` of shape (N, 0) (no inputs: no pictures to draw).
    """
    path = Path(path)
    if not path.is_file():
        raise ContractError(f"{path}: dataset file does not exist (dataset.path is relative to "
                            "the working directory; docs/datasets.md)")
    if not zipfile.is_zipfile(path):  # np.load would take it for a pickle
        raise ContractError(f"{path}: not an .npz archive (a .npz is a zip file of arrays); "
                            "save it with numpy.savez of plain arrays (docs/datasets.md)")
    try:
        with np.load(path, allow_pickle=False) as f:
            raw = {k: f[k] for k in f.files}
    except Exception as err:  # BadZipFile, pickled object arrays, truncation
        raise ContractError(f"{path}: cannot be read as .npz without pickles ({err}); save it "
                            "with numpy.savez of plain arrays (docs/datasets.md)") from err
    known = {"x_train", "y_train", "x_test", "y_test", "x_val", "y_val", "images_train",
             "images_test", "classes"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise _bad(path, unknown[0], f"unknown key (the file has {sorted(raw)}; valid keys are "
                   f"{sorted(known)})")
    splits = ["train", "test"]
    if labels_only and "x_train" not in raw and "x_test" not in raw:
        for split in splits:
            if f"y_{split}" in raw:
                raw[f"x_{split}"] = np.zeros((len(raw[f"y_{split}"]), 0), np.float32)
    for key in ("x_train", "y_train", "x_test", "y_test"):
        if key not in raw:
            raise _bad(path, key, f"missing (the file has {sorted(raw)})")
    if ("x_val" in raw) != ("y_val" in raw):
        raise _bad(path, "y_val" if "x_val" in raw else "x_val",
                   "missing: give x_val and y_val together")
    if "x_val" in raw:
        splits.append("val")
    out: dict[str, np.ndarray] = {}
    for split in splits:
        x, y = raw[f"x_{split}"], raw[f"y_{split}"]
        if x.dtype.kind != "f":
            raise _bad(path, f"x_{split}", f"dtype {x.dtype}, expected floating point "
                       "(float32; convert with x.astype(numpy.float32))")
        if x.ndim < 2 or len(x) == 0 or (x.size == 0 and not labels_only):
            raise _bad(path, f"x_{split}", f"shape {x.shape}, expected (N, ...) with N >= 1 "
                       "and at least one feature axis")
        if x.shape[1:] != raw["x_train"].shape[1:]:
            raise _bad(path, f"x_{split}", f"examples of shape {x.shape[1:]}, x_train's are "
                       f"{raw['x_train'].shape[1:]}")
        if y.dtype.kind not in "iu":
            raise _bad(path, f"y_{split}", f"dtype {y.dtype}, expected integer class labels "
                       "(int64)")
        if y.shape != (len(x),):
            raise _bad(path, f"y_{split}", f"shape {y.shape}, expected ({len(x)},) like "
                       f"x_{split}")
        if not np.isfinite(x).all():
            bad = int(np.argwhere(~np.isfinite(x.reshape(len(x), -1)))[0][0])
            raise _bad(path, f"x_{split}", f"holds NaN or inf (first at row {bad})")
        out[f"x_{split}"] = x.astype(np.float32, copy=False)
        out[f"y_{split}"] = y.astype(np.int64)
    if "classes" in raw:
        classes = raw["classes"]
        if classes.dtype.kind not in "US" or classes.ndim != 1:
            raise _bad(path, "classes", f"dtype {classes.dtype} shape {classes.shape}, expected "
                       "(C,) strings")
        out["classes"] = classes.astype(str)
    num_classes = contracts.num_classes(out)
    for split in splits:
        y = out[f"y_{split}"]
        if y.min() < 0 or y.max() >= num_classes:
            where = "len(classes)" if "classes" in out else "max(y_train) + 1"
            raise _bad(path, f"y_{split}", f"labels {int(y.min())}..{int(y.max())} outside "
                       f"0..{num_classes - 1} (C = {where})")
    if num_classes < 2:
        raise _bad(path, "y_train", "a single class; need at least 2")
    for split in ("train", "test"):
        key = f"images_{split}"
        if key not in raw:
            continue
        images = raw[key]
        if images.dtype != np.uint8:
            raise _bad(path, key, f"dtype {images.dtype}, expected uint8 (0..255)")
        if not (images.ndim == 3 or (images.ndim == 4 and images.shape[-1] == 3)):
            raise _bad(path, key, f"shape {images.shape}, expected (N, H, W) or (N, H, W, 3)")
        if len(images) != len(out[f"x_{split}"]):
            raise _bad(path, key, f"{len(images)} images for {len(out[f'x_{split}'])} examples "
                       f"of x_{split}")
        if "images_train" in out and images.shape[1:3] != out["images_train"].shape[1:3]:
            raise _bad(path, key, f"images of {images.shape[1]} x {images.shape[2]} pixels, "
                       f"images_train's are {out['images_train'].shape[1]} x "
                       f"{out['images_train'].shape[2]} (the figures' grid cells)")
        out[key] = images
    return out


DATASETS = ("mnist1d", "cifar10", "digits", "npz")


def make_dataset(name: str, *, seed: int = 42, num_samples: int = 5000, root: str = "data",
                 path: str | None = None, labels_only: bool = False):
    """The dataset named in ``dataset.name``, in the dataset contract (``labels_only``: an
    npz of labels for ``local_logits``, :func:`load_npz_dataset`)."""
    if name == "mnist1d":
        return make_mnist1d(seed=seed, num_samples=num_samples)
    if name == "cifar10":
        return load_cifar10(root)
    if name == "digits":
        return make_digits(seed=seed)
    if name == "npz":
        if not path:
            raise ContractError("config key dataset.path: dataset.name npz needs the file, "
                                "dataset.path: FILE.npz (docs/datasets.md)")
        return load_npz_dataset(path, labels_only=labels_only)
    raise ContractError(f"config key dataset.name: unknown dataset {name!r}; use one of "
                        f"{', '.join(DATASETS)}")
