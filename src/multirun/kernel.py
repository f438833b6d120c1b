"""The ensemble correlation kernel, streamed over models as one GEMM per chunk.

Reference semantics (``seeds/ensemble-kernel-README.md``)::

    z = log_softmax(logits.float(), -1)                       # (M, N, C)
    z = (z - z.mean(0)) / z.std(0)                            # unbiased std across the M models
    K = sum_c  z_test[..., c].T @ z_train[..., c] / M / C     # (N_test, N_train)

i.e. the per-class correlation across models, averaged over the classes.

The engine here computes exactly that without ever holding all models or the
dense kernel in memory:

1. a first streaming pass over chunks of models gives the per-(example, class)
   mean and unbiased std across the selected models (Chan's pairwise merge in
   float64, so the statistics do not drift with the number of models);
2. for each block of query rows, a second pass over the same chunks normalises
   the chunk and stacks classes into the inner dimension, so one chunk is one
   matrix product ``(Nq_block, m*C) @ (m*C, Nt)`` accumulated in float32;
   the top-k of the finished block is kept and the block is dropped.

Memory is bounded by ``chunk_models`` and ``block`` (``block * Nt`` floats for
the accumulator plus ``chunk_models * (block + Nt) * C`` for one normalised
chunk), never by the number of models.

Deviation from the reference, on degenerate input only: where the std across
models is 0 up to float32 rounding (every model gives the same value; std <=
``STD_FLOOR * |mean|``), the reference divides 0 (or rounding noise) by 0 (or
rounding noise) and its kernel row is NaN (or noise); here the normalised value
is 0, so that (example, class) contributes nothing to the correlation.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from multirun.io import ContractError, load_npy, pick_device, save_npz

PRECISIONS = ("fp32", "tf32", "bf16")
# A std across models below this fraction of |mean| is float32 rounding noise (the
# values are equal up to rounding): the normalised value there is set to 0.
STD_FLOOR = 8 * torch.finfo(torch.float32).eps
SUPPORTED_DTYPES = (np.dtype(np.float16), np.dtype(np.float32))


# --------------------------------------------------------------------------- in memory


def _class_index(classes: Sequence[int] | None, num_classes: int) -> list[int]:
    """Validated list of classes whose correlations are averaged (all when None)."""
    if classes is None:
        return list(range(num_classes))
    cls = [int(c) for c in classes]
    if not cls or len(set(cls)) != len(cls) or min(cls) < 0 or max(cls) >= num_classes:
        raise ContractError(f"classes={list(classes)}: expected distinct class indices in "
                            f"[0, {num_classes})")
    return cls


def normalize(logits: Tensor, log_softmax: bool = True) -> Tensor:
    """Reference normalisation: (M, N, C) any float dtype -> (M, N, C) float32.

    ``log_softmax`` over classes (optional), then z-score across models (axis 0)
    with the unbiased std. Where the std is 0 the result is 0 (the reference: NaN).
    """
    if logits.ndim != 3 or logits.shape[0] < 2:
        raise ContractError(f"normalize: expected logits (M >= 2, N, C), got {tuple(logits.shape)}")
    x = logits.float()
    if log_softmax:
        x = x.log_softmax(-1)
    mean, std = x.mean(0, keepdim=True), x.std(0, keepdim=True)
    return (x - mean) * _inverse_std(std, mean)


def _inverse_std(std: Tensor, mean: Tensor) -> Tensor:
    """1 / std, and 0 where std is 0 up to float32 rounding (<= STD_FLOOR * |mean|)."""
    ok = std > STD_FLOOR * mean.abs()
    return torch.where(ok & (std > 0), 1.0 / std, torch.zeros_like(std))


def _stack_classes(z: Tensor, cls: list[int]) -> Tensor:
    """(m, n, C) -> (n, m * len(cls)): classes stacked into the inner (GEMM) dimension."""
    if len(cls) != z.shape[-1]:
        z = z[..., cls]
    return z.permute(1, 0, 2).reshape(z.shape[1], -1)


def ensemble_kernel(queries: Tensor, keys: Tensor, *, log_softmax: bool = True,
                    classes: Sequence[int] | None = None) -> Tensor:
    """In-memory exact kernel: (M, Nq, C), (M, Nt, C) -> (Nq, Nt) float32.

    ``classes``: average the per-class correlations over these classes only
    (a single class gives that class's kernel alone); None = all classes.
    """
    if queries.ndim != 3 or keys.ndim != 3 or queries.shape[0] != keys.shape[0] \
            or queries.shape[2] != keys.shape[2]:
        raise ContractError(f"ensemble_kernel: queries {tuple(queries.shape)} and keys "
                            f"{tuple(keys.shape)} must be (M, N, C) with the same M and C")
    cls = _class_index(classes, queries.shape[2])
    zq = _stack_classes(normalize(queries, log_softmax), cls)
    zk = _stack_classes(normalize(keys, log_softmax), cls)
    return (zq @ zk.T) / (queries.shape[0] * len(cls))


# --------------------------------------------------------------------------- shards


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
                                "(or float32); rerun the logits stage")
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

    def models(self, index: np.ndarray, rows: slice | None = None) -> np.ndarray:
        """Gather models ``index`` across shards: (len(index), N, C) in the shards' dtype.

        ``rows`` restricts the examples read (e.g. one query block).
        """
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        if index.size and (index.min() < 0 or index.max() >= self.num_models):
            raise ContractError(f"model index out of range [0, {self.num_models}) for shards "
                                f"{[str(p) for p in self.paths]}")
        rows = rows if rows is not None else slice(None)
        n = len(range(*rows.indices(self.num_examples)))
        out = np.empty((len(index), n, self.num_classes), dtype=self.dtype)
        shard = np.searchsorted(self.offsets, index, side="right") - 1
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
        return out


# --------------------------------------------------------------------------- engine


def _model_selection(models: np.ndarray | None, num_models: int) -> np.ndarray:
    if models is None:
        return np.arange(num_models, dtype=np.int64)
    sel = np.asarray(models, dtype=np.int64).reshape(-1)
    if sel.size < 2:
        raise ContractError(f"kernel.model_counts: {sel.size} model(s) selected; the std across "
                            "models needs at least 2")
    if sel.min() < 0 or sel.max() >= num_models:
        raise ContractError(f"kernel.model_counts: model indices must lie in [0, {num_models}) "
                            f"(that many models are available), got [{sel.min()}, {sel.max()}]")
    if len(np.unique(sel)) != len(sel):
        raise ContractError("kernel.model_counts: model subset holds repeated indices")
    return sel


def _chunks(sel: np.ndarray, chunk_models: int) -> list[np.ndarray]:
    if chunk_models < 1:
        raise ContractError(f"kernel.chunk_models must be >= 1, got {chunk_models}")
    return [sel[i : i + chunk_models] for i in range(0, len(sel), chunk_models)]


def _load_chunk(logits: ShardedLogits, idx: np.ndarray, rows: slice | None, device: torch.device,
                log_softmax: bool, check: bool) -> Tensor:
    """Read a chunk of models to ``device`` as float32 (m, n, C), log_softmax'd if asked."""
    x = torch.from_numpy(logits.models(idx, rows)).to(device).float()
    if check and not bool(torch.isfinite(x).all()):
        bad = int(torch.nonzero(~torch.isfinite(x).flatten(1).all(1))[0, 0])
        path, local = logits.shard_of(int(idx[bad]))
        raise ContractError(f"{path}: model {local} holds NaN or inf logits; the run that produced "
                            "it diverged: drop or retrain that shard, then rerun")
    return torch.log_softmax(x, -1) if log_softmax else x


def _moments(logits: ShardedLogits, chunks: list[np.ndarray], device: torch.device,
             log_softmax: bool, bar) -> tuple[Tensor, Tensor]:
    """First pass: per-(example, class) mean and 1/std (unbiased; 0 where std == 0).

    Chunk means and centred sums of squares in float32, merged across chunks in
    float64 (Chan et al.), so the result does not drift with the number of models.
    Returns two float32 (N, C) tensors on ``device``.
    """
    count = 0
    mean = torch.zeros(logits.num_examples, logits.num_classes, dtype=torch.float64, device=device)
    m2 = torch.zeros_like(mean)
    for idx in chunks:
        x = _load_chunk(logits, idx, None, device, log_softmax, check=True)
        cmean = x.mean(0)
        cm2 = (x - cmean).square_().sum(0).double()
        n = len(idx)
        delta = cmean.double() - mean
        total = count + n
        mean += delta * (n / total)
        m2 += cm2 + delta.square() * (count * n / total)
        count = total
        bar.update(1)
    std = (m2 / (count - 1)).sqrt()
    return mean.float(), _inverse_std(std, mean).float()


def _normalised(logits: ShardedLogits, idx: np.ndarray, rows: slice, stats: tuple[Tensor, Tensor],
                cls: list[int], device: torch.device, log_softmax: bool,
                dtype: torch.dtype) -> Tensor:
    """One chunk, normalised and class-stacked: (n_rows, m * len(cls)) in ``dtype``."""
    x = _load_chunk(logits, idx, rows, device, log_softmax, check=False)
    mean, inv = stats
    x.sub_(mean[rows]).mul_(inv[rows])
    return _stack_classes(x, cls).to(dtype)


@contextlib.contextmanager
def _matmul_precision(device: torch.device, precision: str) -> Iterator[None]:
    """Set CUDA's TF32 switch for fp32/tf32 GEMMs and restore it afterwards."""
    if device.type != "cuda":
        yield
        return
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


def _progress(total: int, enabled: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, desc=desc, unit="chunk", leave=False)


def _kernel_blocks(queries: ShardedLogits, keys: ShardedLogits, *, models, log_softmax: bool,
                   classes, chunk_models: int, block: int, device: str, precision: str,
                   progress: bool) -> Iterator[tuple[int, int, Tensor]]:
    """Yield (start, stop, K[start:stop]) with K the (Nq, Nt) float32 kernel, one query block
    at a time (the block lives on the compute device)."""
    if queries.num_models != keys.num_models or queries.num_classes != keys.num_classes:
        raise ContractError(f"queries {queries!r} and keys {keys!r} must come from the same models "
                            "(same model count and classes)")
    if precision not in PRECISIONS:
        raise ContractError(f"kernel.precision: {precision!r} is not one of {PRECISIONS}")
    if block < 1:
        raise ContractError(f"kernel.block must be >= 1, got {block}")
    dev = pick_device(device)
    if precision == "tf32" and dev.type != "cuda":
        warnings.warn("precision 'tf32' is a CUDA tensor-core mode; on CPU the GEMM runs in fp32",
                      stacklevel=3)
    sel = _model_selection(models, queries.num_models)
    cls = _class_index(classes, queries.num_classes)
    chunks = _chunks(sel, chunk_models)
    same = queries is keys or queries.paths == keys.paths
    nq, nt = queries.num_examples, keys.num_examples
    nblocks = math.ceil(nq / block)
    gemm_dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    alpha = 1.0 / (len(sel) * len(cls))
    bar = _progress(len(chunks) * ((1 if same else 2) + nblocks), progress, "kernel")
    with bar, torch.no_grad(), _matmul_precision(dev, precision):
        stats_k = _moments(keys, chunks, dev, log_softmax, bar)
        stats_q = stats_k if same else _moments(queries, chunks, dev, log_softmax, bar)
        for start in range(0, nq, block):
            stop = min(start + block, nq)
            acc = torch.zeros(stop - start, nt, dtype=torch.float32, device=dev)
            for idx in chunks:
                zk = _normalised(keys, idx, slice(None), stats_k, cls, dev, log_softmax, gemm_dtype)
                if same:
                    zq = zk[start:stop]
                else:
                    zq = _normalised(queries, idx, slice(start, stop), stats_q, cls, dev,
                                     log_softmax, gemm_dtype)
                if gemm_dtype == torch.float32:
                    acc.addmm_(zq, zk.T, alpha=alpha)
                elif dev.type == "cuda":  # bf16 inputs, fp32 accumulation and output
                    acc.add_(torch.mm(zq, zk.T, out_dtype=torch.float32), alpha=alpha)
                else:  # CPU bf16 GEMM: accumulates in fp32, rounds each chunk's output to bf16
                    acc.add_(torch.mm(zq, zk.T).float(), alpha=alpha)
                bar.update(1)
            yield start, stop, acc


def neighbours(queries: ShardedLogits, keys: ShardedLogits, *, k: int,
               models: np.ndarray | None = None, log_softmax: bool = True,
               exclude_self: bool = False, chunk_models: int = 64, block: int = 4096,
               device: str = "auto", precision: str = "fp32", progress: bool = True,
               classes: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-k keys (train examples) of every query by ensemble-kernel similarity.

    Returns ``index`` (Nq, k) int32 and ``similarity`` (Nq, k) float32, sorted
    descending. ``models``: model indices to use (None = all). ``exclude_self``:
    queries and keys are the same examples (train-to-train near-duplicate search);
    query i never lists key i. ``classes``: per-class kernel(s) (None = all classes).
    ``precision``: fp32 | tf32 (CUDA only; fp32 elsewhere) | bf16 (GEMM inputs in
    bfloat16, fp32 accumulation). NaN/inf in a shard -> :class:`ContractError` naming it.
    """
    limit = keys.num_examples - (1 if exclude_self else 0)
    if not 1 <= k <= limit:
        raise ContractError(f"kernel.k_max: k={k} must lie in [1, {limit}] "
                            f"({keys.num_examples} keys{', minus self' if exclude_self else ''})")
    if exclude_self and queries.num_examples != keys.num_examples:
        raise ContractError("exclude_self needs queries and keys to be the same examples, got "
                            f"{queries.num_examples} and {keys.num_examples}")
    nq = queries.num_examples
    index = np.empty((nq, k), dtype=np.int32)
    similarity = np.empty((nq, k), dtype=np.float32)
    for start, stop, acc in _kernel_blocks(
            queries, keys, models=models, log_softmax=log_softmax, classes=classes,
            chunk_models=chunk_models, block=block, device=device, precision=precision,
            progress=progress):
        if exclude_self:
            acc.diagonal(offset=start).fill_(-math.inf)
        top = torch.topk(acc, k, dim=1, largest=True, sorted=True)
        index[start:stop] = top.indices.cpu().numpy()
        similarity[start:stop] = top.values.cpu().numpy()
    return index, similarity


def dense_kernel(queries: ShardedLogits, keys: ShardedLogits, *, models: np.ndarray | None = None,
                 log_softmax: bool = True, chunk_models: int = 64, device: str = "auto",
                 precision: str = "fp32", block: int = 4096, progress: bool = False,
                 classes: Sequence[int] | None = None) -> np.ndarray:
    """The whole (Nq, Nt) float32 kernel (only on request: it is Nq * Nt * 4 bytes)."""
    out = np.empty((queries.num_examples, keys.num_examples), dtype=np.float32)
    for start, stop, acc in _kernel_blocks(
            queries, keys, models=models, log_softmax=log_softmax, classes=classes,
            chunk_models=chunk_models, block=block, device=device, precision=precision,
            progress=progress):
        out[start:stop] = acc.cpu().numpy()
    return out


def cosine_neighbours(query_features: np.ndarray, key_features: np.ndarray, *, k: int,
                      block: int = 4096, device: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Top-k keys by cosine similarity of features (the penultimate-feature baseline).

    (Nq, D), (Nt, D) any float dtype -> index (Nq, k) int32, similarity (Nq, k) float32,
    sorted descending. All-zero feature rows have similarity 0 to everything.
    """
    if query_features.ndim != 2 or key_features.ndim != 2 \
            or query_features.shape[1] != key_features.shape[1]:
        raise ContractError(f"cosine_neighbours: features {query_features.shape} and "
                            f"{key_features.shape} must be (N, D) with the same D")
    if not 1 <= k <= len(key_features):
        raise ContractError(f"k={k} must lie in [1, {len(key_features)}]")
    dev = pick_device(device)

    def unit(x: np.ndarray) -> Tensor:
        t = torch.as_tensor(np.asarray(x)).to(dev).float()
        if not bool(torch.isfinite(t).all()):
            raise ContractError("cosine_neighbours: features hold NaN or inf")
        return t / t.norm(dim=1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)

    keys = unit(key_features)
    nq = len(query_features)
    index = np.empty((nq, k), dtype=np.int32)
    similarity = np.empty((nq, k), dtype=np.float32)
    with torch.no_grad():
        for start in range(0, nq, block):
            stop = min(start + block, nq)
            top = torch.topk(unit(query_features[start:stop]) @ keys.T, k, dim=1)
            index[start:stop] = top.indices.cpu().numpy()
            similarity[start:stop] = top.values.cpu().numpy()
    return index, similarity


# --------------------------------------------------------------------------- files


def save_neighbours(path: str | os.PathLike, index: np.ndarray, similarity: np.ndarray,
                    **extra: np.ndarray) -> None:
    """Write the neighbour contract: ``index`` (Nq, k) int32, ``similarity`` (Nq, k) float32."""
    save_npz(path, index=np.asarray(index, dtype=np.int32),
             similarity=np.asarray(similarity, dtype=np.float32), **extra)


def load_neighbours(path: str | os.PathLike, num_keys: int | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Read and check a neighbour file written by :func:`save_neighbours`."""
    from multirun.io import load_npz

    data = load_npz(path, ("index", "similarity"))
    index, similarity = data["index"], data["similarity"]
    if index.ndim != 2 or index.shape != similarity.shape or index.dtype != np.int32 \
            or similarity.dtype != np.float32:
        raise ContractError(f"{path}: expected index (Nq, k) int32 and similarity (Nq, k) "
                            f"float32, got {index.shape} {index.dtype} and {similarity.shape} "
                            f"{similarity.dtype}; rerun the kernel stage")
    if not np.isfinite(similarity).all():
        raise ContractError(f"{path}: similarity holds NaN or inf; rerun the kernel stage")
    if num_keys is not None and index.size and (index.min() < 0 or index.max() >= num_keys):
        raise ContractError(f"{path}: neighbour indices outside [0, {num_keys}); the kernel was "
                            "computed on another dataset: rerun the kernel stage")
    return index, similarity
