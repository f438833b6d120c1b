"""Datasets as arrays (the published logits of the hub: :mod:`multirun.published`).

Every dataset is returned in the dataset contract of :func:`multirun.contracts.load_dataset`:
``x_train`` (N, ...) float32, ``y_train`` (N,) int64, the same for test, an optional
``images_*`` (N, H, W, 3) uint8 for picture grids, and ``classes`` (C,) names.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

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


def make_dataset(name: str, *, seed: int = 42, num_samples: int = 5000, root: str = "data"):
    """The dataset named in ``dataset.name``, in the dataset contract."""
    if name == "mnist1d":
        return make_mnist1d(seed=seed, num_samples=num_samples)
    if name == "cifar10":
        return load_cifar10(root)
    raise ContractError(f"config key dataset.name: unknown dataset {name!r}; use mnist1d or cifar10")
