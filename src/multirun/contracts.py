"""File contracts between stages: atomic writes and validated reads.

Every reader checks shape, dtype and finiteness and raises :class:`ContractError`
naming the file and what to do; every writer writes a temporary file in the
destination folder and renames it into place, so a killed job leaves no
half-written output behind.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch


class ContractError(ValueError):
    """An input file breaks its contract (missing, truncated, wrong shape, NaN...)."""


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA when present, else CPU; ``cpu``/``cuda`` as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ContractError("device 'cuda' was requested but no CUDA device is visible; use 'auto'")
    return torch.device(name)


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    The temporary file keeps ``path``'s suffix (or ``suffix``) so that writers
    which append one (``np.save``) write exactly where they are told.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix or path.suffix)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write one array as ``.npy`` atomically (memory-mappable by readers)."""
    with atomic_path(path) as tmp:
        np.save(tmp, np.ascontiguousarray(array))


def save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """Write named arrays as an uncompressed ``.npz`` atomically."""
    with atomic_path(path) as tmp:
        np.savez(tmp, **arrays)


def save_json(path: str | os.PathLike, obj) -> None:
    """Write JSON atomically (sorted keys, indented)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def save_csv(path: str | os.PathLike, rows: list[dict], fields: list[str]) -> None:
    """Write ``rows`` (dicts with keys ``fields``) as CSV with a header, atomically.

    Every row must hold exactly the keys ``fields`` (a :class:`ContractError` naming the
    file and the row otherwise), so a table never gets a silently empty column.
    """
    want = set(fields)
    for i, row in enumerate(rows):
        if set(row) != want:
            missing, extra = sorted(want - set(row)), sorted(set(row) - want)
            raise ContractError(f"{path}: row {i} does not match the columns {list(fields)} "
                                f"(missing {missing}, unexpected {extra})")
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fields)
        writer.writeheader()
        writer.writerows(rows)


def load_csv(path: str | os.PathLike) -> list[dict[str, str]]:
    """Rows of a CSV written by :func:`save_csv` (values as strings)."""
    path = Path(path)
    if not path.exists():
        raise _fail(path, "file is missing", "run the stage that makes it (snakemake makes it for you)")
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def save_torch(path: str | os.PathLike, obj) -> None:
    """``torch.save`` atomically."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def save_with(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)`` and rename the result onto ``path`` (figures, CSV...)."""
    with atomic_path(path) as tmp:
        write(tmp)


def _fail(path, what: str, fix: str = "delete it and rerun the stage that makes it") -> ContractError:
    return ContractError(f"{path}: {what}; {fix}")


def load_npy(
    path: str | os.PathLike,
    *,
    ndim: int | None = None,
    dtype: np.dtype | str | None = None,
    mmap: bool = True,
    check_finite: bool = True,
) -> np.ndarray:
    """Read a ``.npy`` (memory-mapped by default) and check its contract.

    Raises :class:`ContractError` naming ``path`` when the file is missing,
    truncated or corrupt, has the wrong rank or dtype, or holds NaN/inf.
    The finiteness check streams over the leading axis so a memory-mapped
    file is never loaded whole.
    """
    path = Path(path)
    if not path.exists():
        raise _fail(path, "file is missing", "run the stage that makes it (snakemake makes it for you)")
    try:
        array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise _fail(path, f"cannot be read as .npy ({err}); the file is truncated or corrupt") from err
    if ndim is not None and array.ndim != ndim:
        raise _fail(path, f"expected {ndim} dimensions, found shape {array.shape}")
    if dtype is not None and array.dtype != np.dtype(dtype):
        raise _fail(path, f"expected dtype {np.dtype(dtype)}, found {array.dtype}")
    if check_finite and array.dtype.kind == "f":
        step = max(1, (1 << 26) // max(1, array[:1].size * array.itemsize))
        for start in range(0, max(len(array), 1), step):
            block = np.asarray(array[start : start + step])
            if not np.isfinite(block).all():
                bad = start + int(np.argwhere(~np.isfinite(block))[0][0])
                raise _fail(path, f"holds NaN or inf (first at index {bad} of axis 0)",
                            "the run that produced it diverged; check its training log, then rerun")
    return array


def load_npz(path: str | os.PathLike, keys: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Read a whole ``.npz`` into memory, checking that ``keys`` are present."""
    path = Path(path)
    if not path.exists():
        raise _fail(path, "file is missing", "run the stage that makes it (snakemake makes it for you)")
    try:
        with np.load(path, allow_pickle=False) as f:
            out = {k: f[k] for k in f.files}
    except Exception as err:  # zipfile.BadZipFile, ValueError, OSError, EOFError
        raise _fail(path, f"cannot be read as .npz ({err}); the file is truncated or corrupt") from err
    missing = [k for k in keys if k not in out]
    if missing:
        raise _fail(path, f"lacks arrays {missing} (has {sorted(out)})")
    return out


def load_torch(path: str | os.PathLike, keys: tuple[str, ...] = ()) -> dict:
    """``torch.load`` a dict on the CPU, checking that ``keys`` are present."""
    path = Path(path)
    if not path.exists():
        raise _fail(path, "file is missing", "run the stage that makes it (snakemake makes it for you)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise _fail(path, f"cannot be loaded by torch ({err}); the file is truncated or corrupt") from err
    if not isinstance(obj, dict):
        raise _fail(path, f"expected a dict, found {type(obj).__name__}")
    missing = [k for k in keys if k not in obj]
    if missing:
        raise _fail(path, f"lacks keys {missing}")
    return obj


def load_dataset(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a dataset ``.npz``: ``x_train`` (N, ...), ``y_train`` (N,) int64, same for test.

    Optional ``images_train``/``images_test`` (N, H, W[, 3]) uint8 for picture grids;
    ``classes`` (C,) str.
    """
    data = load_npz(path, ("x_train", "y_train", "x_test", "y_test"))
    for split in ("train", "test"):
        x, y = data[f"x_{split}"], data[f"y_{split}"]
        if y.ndim != 1 or y.dtype != np.int64 or len(x) != len(y):
            raise _fail(path, f"{split} split: x {x.shape} and y {y.shape} {y.dtype} do not match "
                        "the contract x (N, ...), y (N,) int64")
        if not np.isfinite(x).all():
            raise _fail(path, f"x_{split} holds NaN or inf")
    return data
