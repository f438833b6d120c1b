"""Logit shards on disk, memory-mapped as one (models, examples, classes) stack."""

from __future__ import annotations

import contextlib
import mmap as mmap_module
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from multirun.contracts import ContractError, load_npy, remake

SUPPORTED_DTYPES = (np.dtype(np.float16), np.dtype(np.float32))


class ShardedLogits:
    """Logit shards ``(S_i, N, C)`` (float16, or float32) memory-mapped as one (M, N, C) stack.

    Models are numbered across shards in the order of ``paths``. Nothing is read
    until :meth:`models` gathers a chunk.
    """

    def __init__(self, paths: Sequence[str | os.PathLike]):
        self.paths = [Path(p) for p in paths]
        if not self.paths:
            raise ContractError("ShardedLogits: no shard files given")
        self._arrays = [load_npy(p, ndim=3, mmap=True, check_finite=False) for p in self.paths]
        first, ref = self._arrays[0], self.paths[0]
        if first.dtype not in SUPPORTED_DTYPES:
            raise ContractError(f"{ref}: logits have dtype {first.dtype}; expected float16 "
                                f"(or float32); {remake(ref)}")
        for path, array in zip(self.paths[1:], self._arrays[1:], strict=True):
            if array.shape[1] != first.shape[1]:
                raise ContractError(f"{path}: {array.shape[1]} examples but {ref} has "
                                    f"{first.shape[1]}; every shard must hold the same examples")
            if array.shape[2] != first.shape[2]:
                raise ContractError(f"{path}: {array.shape[2]} classes but {ref} has "
                                    f"{first.shape[2]}; every shard must hold the same classes")
            if array.dtype != first.dtype:
                raise ContractError(f"{path}: dtype {array.dtype} but {ref} has {first.dtype}; "
                                    "every shard must have the same dtype")
        sizes = [a.shape[0] for a in self._arrays]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.num_models = int(self.offsets[-1])
        self.num_examples = int(first.shape[1])
        self.num_classes = int(first.shape[2])
        self.dtype = first.dtype
        self.bytes_read = 0  # bytes gathered by models() so far (the engine logs it)
        self._viewed: set[int] = set()  # shards with views handed out (release() unmaps)
        if self.num_models < 2:
            raise ContractError(f"{', '.join(map(str, self.paths))}: {self.num_models} model(s) in "
                                "all; the kernel's std across models needs at least 2")

    def __repr__(self) -> str:
        return (f"ShardedLogits({len(self.paths)} shards, models={self.num_models}, "
                f"examples={self.num_examples}, classes={self.num_classes}, dtype={self.dtype})")

    def shard_of(self, model: int) -> tuple[Path, int]:
        """The shard file holding global model ``model`` and its index inside that file."""
        s = int(np.searchsorted(self.offsets, model, side="right") - 1)
        return self.paths[s], int(model - self.offsets[s])

    def models(self, index: np.ndarray, rows: slice | None = None, *,
               view: bool = False) -> np.ndarray:
        """Gather models ``index`` across shards: (len(index), N, C) in the shards' dtype.

        ``rows`` restricts the examples read (e.g. one query block). ``view``: where the
        models are one run of consecutive models of one shard and every example is wanted,
        the memory-mapped slice itself (read-only, no copy: the consumer reads the page
        cache directly), valid until :meth:`release`; otherwise, and by default, a copy.
        """
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        if index.size and (index.min() < 0 or index.max() >= self.num_models):
            raise ContractError(f"model index out of range [0, {self.num_models}) for shards "
                                f"{[str(p) for p in self.paths]}")
        rows = rows if rows is not None else slice(None)
        shard = np.searchsorted(self.offsets, index, side="right") - 1
        every_row = rows.indices(self.num_examples) == (0, self.num_examples, 1)
        if view and every_row and index.size and shard[0] == shard[-1] and \
                np.all(np.diff(index) == 1):
            s = int(shard[0])
            first = int(index[0] - self.offsets[s])
            block = self._arrays[s][first : first + len(index)]
            self.bytes_read += block.nbytes
            self._viewed.add(s)
            return block
        n = len(range(*rows.indices(self.num_examples)))
        out = np.empty((len(index), n, self.num_classes), dtype=self.dtype)
        self.bytes_read += out.nbytes
        for s in np.unique(shard):
            where = np.flatnonzero(shard == s)
            local = index[where] - self.offsets[s]
            if len(local) > 1 and np.all(np.diff(local) == 1):  # contiguous: one slice read
                block = self._arrays[s][local[0] : local[-1] + 1, rows]
            else:
                block = self._arrays[s][local, rows]
            if len(where) == len(index):
                out[...] = block
            else:
                out[where] = block
            self._release(s)
        return out

    def release(self) -> None:
        """Unmap the pages of the shards that :meth:`models` handed out as views."""
        for s in self._viewed:
            self._release(s)
        self._viewed.clear()

    def _release(self, s: int) -> None:
        """Unmap the pages of shard ``s`` read so far (they stay in the page cache).

        Without this, every page of a memory-mapped file that was touched counts in
        the process's resident memory until exit, so streaming 20,000 models would
        look like 24 GB of RSS although only one chunk is in use.
        """
        mm = getattr(self._arrays[s], "_mmap", None)
        if mm is not None and hasattr(mm, "madvise") and hasattr(mmap_module, "MADV_DONTNEED"):
            with contextlib.suppress(OSError, ValueError):
                mm.madvise(mmap_module.MADV_DONTNEED)
