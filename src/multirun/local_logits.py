"""Your own logits as logit shards (config section ``local_logits``, docs/published.md).

``local_logits.train`` and ``.test`` list ``.npy`` files or glob patterns, each file
``(models, examples, classes)`` float16, float32 or float64; train file ``i`` and test file ``i``
hold the same models and become shard ``i``. ``labels`` is ``dataset`` (the ``dataset:``
section's dataset) or a ``FILE.npz`` holding ``y_train``/``y_test`` (and optionally the
rest of the dataset contract, for the pictures). :func:`check` reads every file once
(memory-mapped, streamed); :func:`import_shard` then links each file into the results
(a symbolic link: memory-mapped by every reader, not copied) when all files share one
dtype that the readers take (float16 or float32; :func:`linkable`), and writes float16 a
chunk of models at a time otherwise.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

import numpy as np

from multirun.config import ConfigError
from multirun.contracts import ContractError, atomic_path, load_npy

DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))
LINKED = ("float16", "float32")  # the logit shards' dtypes: files of these can be linked


def linkable(dtypes: list[str]) -> bool:
    """Whether files of ``dtypes`` (:func:`check`'s ``dtypes``) become shards as links: one
    dtype, and one the readers take; else every shard is written as float16, so all agree."""
    return len(dtypes) == 1 and dtypes[0] in LINKED


def resolve(entries: list[str], key: str) -> list[str]:
    """Paths and glob patterns -> files, in the order given (a pattern's matches sorted).

    Raises :class:`ConfigError` naming ``key`` (``local_logits.train``) for an entry that
    names no file.
    """
    files: list[str] = []
    for entry in entries:
        found = sorted(glob.glob(entry)) if glob.has_magic(entry) else [entry]
        found = [f for f in found if Path(f).is_file()]
        if not found:
            raise ConfigError(f"config key {key}: {entry!r} names no file (paths are relative "
                              f"to the working directory {os.getcwd()})")
        files += found
    return files


def pair(train: list[str], test: list[str]) -> list[tuple[str, str]]:
    """Train and test files, one pair per shard (the same number of each)."""
    if len(train) != len(test):
        raise ConfigError(f"config key local_logits.test: {len(test)} test files for "
                          f"{len(train)} train files; file i of each holds the same models")
    return list(zip(train, test, strict=True))


def header(path: str | os.PathLike) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of a ``.npy`` from its header (nothing else is read)."""
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise ContractError(f"{path}: cannot be read as .npy ({err}); local_logits files are "
                            "numpy.save'd arrays (models, examples, classes)") from err
    return tuple(array.shape), array.dtype


def check(pairs: list[tuple[str, str]], y_train: np.ndarray, y_test: np.ndarray) -> dict:
    """Check every file once; return ``{"models": [per shard], "classes", "dtypes"}``.

    Each file: 3 dimensions, float16, float32 or float64, no NaN/inf (streamed); every file the
    same number of classes ``C``; train files ``len(y_train)`` examples, test files
    ``len(y_test)``; train and test file of a shard the same number of models; the labels
    in ``0..C-1``. Raises :class:`ContractError` naming the file.
    """
    models, classes, dtypes = [], None, set()
    for train, test in pairs:
        counts = []
        for path, n, split in ((train, len(y_train), "train"), (test, len(y_test), "test")):
            array = load_npy(path, ndim=3, fix=f"fix the file (local_logits.{split}): "
                             "numpy.save'd (models, examples, classes) floating "
                             "logits, finite (docs/published.md)")  # NaN/inf streamed
            m, examples, c = array.shape
            if array.dtype not in DTYPES:
                raise ContractError(f"{path}: dtype {array.dtype}; local_logits files are "
                                    "float16, float32 or float64")
            if examples != n:
                raise ContractError(f"{path}: {examples} examples, the labels' {split} split "
                                    f"has {n} (local_logits.{split} and local_logits.labels "
                                    "must describe the same examples, in the same order)")
            if classes is None:
                classes, first = c, path
            elif c != classes:
                raise ContractError(f"{path}: {c} classes, {first} has {classes}; every file "
                                    "must have the same classes")
            if m < 1:
                raise ContractError(f"{path}: holds no models")
            counts.append(m)
            dtypes.add(str(array.dtype))
        if counts[0] != counts[1]:
            raise ContractError(f"{test}: {counts[1]} models, its train file {train} has "
                                f"{counts[0]}; file i of train and test hold the same models")
        models.append(counts[0])
    for split, y in (("train", y_train), ("test", y_test)):
        if len(y) and (y.min() < 0 or y.max() >= classes):
            raise ContractError(f"local_logits.labels: y_{split} holds labels "
                                f"{int(y.min())}..{int(y.max())}, the logits have {classes} "
                                f"classes (0..{classes - 1})")
    return {"models": models, "classes": int(classes), "dtypes": sorted(dtypes)}


def import_shard(source: str | os.PathLike, path: str | os.PathLike, *, link: bool) -> None:
    """Make ``path`` the logit shard of ``source`` (checked by :func:`check`).

    ``link``: a symbolic link to the resolved source (nothing copied; readers memory-map
    the source). Otherwise the logits are written as float16, a chunk of models at a time.
    """
    from multirun.published import write_shard  # torch only where a shard is written

    path = Path(path)
    if link:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            tmp.unlink()
            os.symlink(Path(source).resolve(), tmp)
        return
    import warnings

    import torch

    array = load_npy(source, ndim=3, check_finite=False)  # memory-mapped, read-only
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch: "the array is not writable"
        logits = torch.from_numpy(array)
    write_shard(path, logits, mapped=True, source=str(source))


def shards(models: list[int]) -> dict[str, list[int]]:
    """Shard names ``'000', ...`` -> the model numbers of each file, counted in file order."""
    out, start = {}, 0
    for i, m in enumerate(models):
        out[f"{i:03d}"] = list(range(start, start + m))
        start += m
    return out


def check_counts(model_counts: list[int], shard_seeds: dict[str, list[int]]) -> None:
    """``kernel.model_counts`` may not exceed the models the files hold."""
    total = sum(len(s) for s in shard_seeds.values())
    too_many = [n for n in model_counts if n > total]
    if too_many:
        raise ConfigError(f"config key kernel.model_counts: sizes {too_many} exceed the {total} "
                          "models of the local_logits files; lower them")


def has_inputs(labels: str | os.PathLike) -> bool:
    """Whether a labels ``.npz`` also holds ``x_train`` (examples to draw), from its index."""
    path = Path(labels)
    if not path.is_file():
        raise ConfigError(f"config key local_logits.labels: {labels} does not exist (paths are "
                          f"relative to the working directory {os.getcwd()})")
    try:
        with np.load(path, allow_pickle=False) as f:
            return "x_train" in f.files
    except Exception as err:
        raise ContractError(f"{path}: cannot be read as .npz ({err}); local_logits.labels is "
                            "a numpy.savez file with y_train and y_test") from err
