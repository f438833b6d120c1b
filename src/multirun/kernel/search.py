"""Top-k neighbours and dense kernels from the streaming engine, and the neighbour files."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence

import numpy as np
import torch

from multirun.contracts import ContractError, load_npz, remake, save_npz
from multirun.kernel.engine import KernelOptions, kernel_blocks
from multirun.kernel.shards import ShardedLogits
from multirun.timing import timed_phase


def _options(options: KernelOptions | None, overrides: dict) -> KernelOptions:
    """``options`` (default: KernelOptions()) with keyword ``overrides`` of its fields."""
    return dataclasses.replace(options or KernelOptions(), **overrides)


def _check_k(queries: ShardedLogits, keys: ShardedLogits, k: int, exclude_self: bool) -> None:
    limit = keys.num_examples - (1 if exclude_self else 0)
    if not 1 <= k <= limit:
        raise ContractError(f"kernel.k_max: k={k} must lie in [1, {limit}] "
                            f"({keys.num_examples} keys{', minus self' if exclude_self else ''})")
    if exclude_self and queries.num_examples != keys.num_examples:
        raise ContractError("exclude_self needs queries and keys to be the same examples, got "
                            f"{queries.num_examples} and {keys.num_examples}")


def subset_neighbours(queries: ShardedLogits, keys: ShardedLogits,
                      subsets: Sequence[np.ndarray | None], *, k: int, exclude_self: bool = False,
                      classes: Sequence[int] | None = None, options: KernelOptions | None = None,
                      **overrides) -> tuple[np.ndarray, np.ndarray]:
    """Top-k keys of every query by ensemble-kernel similarity, for each model subset.

    ``subsets``: model index arrays (None = all models); they are computed together, so
    subsets that share models share the reads of those models. Returns ``index``
    (len(subsets), Nq, k) int32 and ``similarity`` (len(subsets), Nq, k) float32, sorted
    descending along the last axis. ``exclude_self``: queries and keys are the same
    examples (train-to-train near-duplicate search); query i never lists key i.
    ``classes``: per-class kernel(s) (None = all classes). ``options`` / ``overrides``:
    :class:`KernelOptions` (its fields may be given as keywords). NaN/inf in a shard ->
    :class:`ContractError` naming it.
    """
    _check_k(queries, keys, k, exclude_self)
    nq = queries.num_examples
    index = np.empty((len(subsets), nq, k), dtype=np.int32)
    similarity = np.empty((len(subsets), nq, k), dtype=np.float32)
    options = _options(options, overrides)
    for s, start, stop, acc in kernel_blocks(queries, keys, subsets, options, classes):
        with timed_phase(options.phases, "topk", acc.device):
            if exclude_self:
                acc.diagonal(offset=start).fill_(-math.inf)
            top = torch.topk(acc, k, dim=1, largest=True, sorted=True)
            index[s, start:stop] = top.indices.cpu().numpy()
            similarity[s, start:stop] = top.values.cpu().numpy()
    return index, similarity


def neighbours(queries: ShardedLogits, keys: ShardedLogits, *, k: int,
               models: np.ndarray | None = None, exclude_self: bool = False,
               classes: Sequence[int] | None = None, options: KernelOptions | None = None,
               **overrides) -> tuple[np.ndarray, np.ndarray]:
    """:func:`subset_neighbours` of one subset ``models`` (None = all): (Nq, k) int32, float32."""
    index, similarity = subset_neighbours(queries, keys, [models], k=k, exclude_self=exclude_self,
                                          classes=classes, options=options, **overrides)
    return index[0], similarity[0]


def dense_kernel(queries: ShardedLogits, keys: ShardedLogits, *, models: np.ndarray | None = None,
                 classes: Sequence[int] | None = None, options: KernelOptions | None = None,
                 **overrides) -> np.ndarray:
    """The whole (Nq, Nt) float32 kernel (only on request: it is Nq * Nt * 4 bytes).

    Options as for :func:`subset_neighbours`.
    """
    out = np.empty((queries.num_examples, keys.num_examples), dtype=np.float32)
    for _, start, stop, acc in kernel_blocks(queries, keys, [models],
                                             _options(options, overrides), classes):
        out[start:stop] = acc.cpu().numpy()
    return out


# --------------------------------------------------------------------------- files


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
