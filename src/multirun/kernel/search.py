"""Top-k neighbours and dense kernels from the streaming engine (the files: :mod:`.files`)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
import torch

from multirun.contracts import ContractError
from multirun.kernel import build
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


def _topk(acc: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest values of every row of ``acc`` (R, N) float32 and their columns, each
    (R, k), sorted descending: the fused CPU loop where it is built (equal values by column
    ascending), else ``torch.topk``."""
    fused = build.fused() if acc.device.type == "cpu" and acc.dtype == torch.float32 else None
    if fused is not None:
        return fused.topk(acc.contiguous(), k)
    top = torch.topk(acc, k, dim=1, largest=True, sorted=True)
    return top.values, top.indices


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
            values, columns = _topk(acc, k)
            index[s, start:stop] = columns.cpu().numpy()
            similarity[s, start:stop] = values.cpu().numpy()
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
