"""Datasets as arrays, and the published CIFAR-10 logits of the hub.

Every dataset is returned in the dataset contract of :func:`multirun.io.load_dataset`:
``x_train`` (N, ...) float32, ``y_train`` (N,) int64, the same for test, an optional
``images_*`` (N, H, W, 3) uint8 for picture grids, and ``classes`` (C,) names.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from multirun.io import ContractError

CIFAR10_MEAN = np.array([0.4914, 0.4822, 0.4465], dtype=np.float32)
CIFAR10_STD = np.array([0.2470, 0.2435, 0.2616], dtype=np.float32)
PUBLISHED_REPO = "kjj0/cifar10-multirun-logits"


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
        try:
            ds = CIFAR10(str(root), train=train, download=download)
        except RuntimeError as err:  # torchvision: "Dataset not found or corrupted"
            raise ContractError(
                f"{Path(root) / 'cifar-10-batches-py'}: {err} Run with network access once "
                "(dataset.root is where it is stored), or delete the folder to download it again."
            ) from err
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


def download_published(filename: str, *, repo_id: str = PUBLISHED_REPO, revision: str | None = None,
                       cache_dir: str | None = None) -> Path:
    """Fetch one ``log.pt`` of the published runs with ``huggingface_hub`` (cached)."""
    import huggingface_hub

    try:
        path = huggingface_hub.hf_hub_download(
            repo_id, filename, repo_type="dataset", revision=revision, cache_dir=cache_dir
        )
    except Exception as err:  # network errors, missing files, offline mode
        raise ContractError(
            f"hub file {repo_id}/{filename}: download failed ({type(err).__name__}: {err}); "
            "check the name in published.files and the network, or prefill the hub cache"
        ) from err
    return Path(path)


def read_published(path: str | os.PathLike, *, num_train: int, num_test: int) -> dict[str, np.ndarray]:
    """Read one published ``log.pt`` and check it against the dataset sizes.

    The file holds ``logits`` (M, num_test, 10) fp16 (test), ``logits_tta`` (same),
    ``logits_train`` (M, num_train, 10) fp16, ``accs`` (M,), ``code`` (str).
    Returns ``train`` (M, num_train, C) and ``test`` (M, num_test, C) float16 arrays.
    """
    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise ContractError(f"{path}: cannot be loaded by torch ({err}); delete it to fetch again") from err
    for key in ("logits", "logits_train"):
        if not isinstance(obj, dict) or key not in obj:
            raise ContractError(f"{path}: lacks key {key!r}; is it a log.pt of {PUBLISHED_REPO}?")
    test, train = obj["logits"], obj["logits_train"]
    same = test.shape[0] == train.shape[0] and test.shape[2:] == train.shape[2:]
    if test.ndim != 3 or train.ndim != 3 or not same:
        raise ContractError(
            f"{path}: logits {tuple(test.shape)} and logits_train {tuple(train.shape)} "
            "do not agree as (models, examples, classes)"
        )
    if test.shape[1] != num_test or train.shape[1] != num_train:
        raise ContractError(
            f"{path}: logits cover {train.shape[1]} train / {test.shape[1]} test examples, "
            f"the dataset has {num_train} / {num_test}"
        )
    return {"train": train.to(torch.float16).numpy(), "test": test.to(torch.float16).numpy()}
