"""The neighbour files: ``index`` and ``similarity`` of each query's nearest keys (numpy only).

Written by the kernel jobs, read by k-NN, figures, studies and checks; none of the readers
needs torch.
"""

from __future__ import annotations

import os

import numpy as np

from multirun.contracts import ContractError, load_npz, remake, save_npz


def save_neighbours(path: str | os.PathLike, index: np.ndarray, similarity: np.ndarray,
                    **extra: np.ndarray) -> None:
    """Write the neighbour contract: ``index`` (..., Nq, k) int32, ``similarity`` float32.

    The workflow stacks one (Nq, k) pair per model subset: (subsets, Nq, k), with ``models``
    (subsets, max size) int64 (-1 padded) and ``sizes`` (subsets,) as ``extra`` arrays.
    """
    save_npz(path, index=np.asarray(index, dtype=np.int32),
             similarity=np.asarray(similarity, dtype=np.float32), **extra)


def load_neighbours(path: str | os.PathLike, num_keys: int | None = None,
                    extra: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Read and check a neighbour file written by :func:`save_neighbours`: all its arrays.

    ``extra``: further arrays that must be present (the workflow's ``models``, ``sizes``).
    """
    data = load_npz(path, ("index", "similarity", *extra))
    index, similarity = data["index"], data["similarity"]
    if index.ndim < 2 or index.shape != similarity.shape or index.dtype != np.int32 \
            or similarity.dtype != np.float32:
        raise ContractError(f"{path}: expected index (..., Nq, k) int32 and similarity "
                            f"float32, got {index.shape} {index.dtype} and {similarity.shape} "
                            f"{similarity.dtype}; {remake(path)}")
    if not np.isfinite(similarity).all():
        raise ContractError(f"{path}: similarity holds NaN or inf; {remake(path)}")
    if num_keys is not None and index.size and (index.min() < 0 or index.max() >= num_keys):
        raise ContractError(f"{path}: neighbour indices outside [0, {num_keys}); the kernel was "
                            f"computed on another dataset: {remake(path)}")
    return data
