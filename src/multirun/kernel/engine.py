"""The streaming engine: the ensemble kernel as one GEMM per chunk of models.

It computes :func:`multirun.kernel.reference.ensemble_kernel` without ever holding all
models or the dense kernel in memory, for one or several model subsets at once:

1. a first streaming pass over chunks of models gives each subset's per-(example, class)
   mean and unbiased std across its models (Chan's pairwise merge in float64, so the
   statistics do not drift with the number of models);
2. for each block of query rows, a second pass over the same chunks normalises each
   subset's models of the chunk and stacks classes into the inner dimension, so one chunk
   is one matrix product ``(Nq_block, m*C) @ (m*C, Nt)`` per subset accumulated in float32;
   the finished block is handed to the caller (top-k or dense copy) and dropped.

Every chunk is read once per pass and serves every subset that holds its models, so
subsets that share models share their reads. The query block is chosen from a memory budget
(:func:`plan`): when every subset's (Nq, Nt) accumulator fits, the data is read twice in all
(statistics, products) however many query rows there are.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from multirun.contracts import ContractError, pick_device, remake_command
from multirun.kernel import build
from multirun.kernel.reference import (
    STD_FLOOR,
    STD_TINY,
    TINY_SCALE,
    TINY_VALUE,
    class_index,
    inverse_std,
    log_probabilities,
)
from multirun.kernel.shards import ShardedLogits
from multirun.timing import timed_phase

PRECISIONS = ("fp32", "tf32", "bf16")


@dataclass(frozen=True)
class KernelOptions:
    """How the engine runs (never what it computes, up to float rounding and precision).

    ``log_softmax``: the variant (False: raw logits). ``chunk_models``: models per GEMM
    chunk, or ``auto``: measured on first use and cached per machine
    (:mod:`multirun.kernel.tune`). ``block``: query rows per pass (None: from
    ``memory_gb``). ``memory_gb``: memory the accumulators and chunk buffers may use
    (None: half the free memory of the device, on a CPU at most 3/4 of ``job_memory_gb``,
    the job's memory request).
    ``precision``: fp32 | tf32 (CUDA only; fp32 elsewhere) | bf16 (GEMM inputs in bfloat16,
    fp32 accumulation). ``device``: auto | cpu | cuda. ``phases``: a dict to which the run
    adds the seconds of each phase (``read``: the chunks from the shards; ``moments``: the
    statistics pass's arithmetic; ``transform``: fp16 -> fp32, log_softmax and z-score into
    the GEMM layout; ``gemm``; ``topk``: the merge of each finished block), for benchmarks.
    """

    log_softmax: bool = True
    chunk_models: int | str = "auto"
    block: int | None = None
    memory_gb: float | None = None
    precision: str = "fp32"
    device: str = "auto"
    progress: bool = True
    job_memory_gb: float | None = None
    phases: dict | None = None

    @classmethod
    def from_params(cls, params, device: str = "auto", job_memory_mb: float | None = None,
                    **overrides) -> KernelOptions:
        """Options from a rule's ``params`` (attributes named like the fields; absent = default)
        and its ``resources.mem_mb`` (``job_memory_mb``)."""
        names = [f for f in cls.__dataclass_fields__ if f not in ("device", "job_memory_gb")]
        given = {f: getattr(params, f) for f in names if hasattr(params, f)}
        job = None if job_memory_mb is None else job_memory_mb / 1024
        return cls(device=device, job_memory_gb=job, **(given | overrides))


@dataclass
class _Side:
    """Queries or keys: their shards and, per subset, the statistics of its models."""

    logits: ShardedLogits
    stats: list[tuple[Tensor, Tensor]] = field(default_factory=list)
    buffers: dict = field(default_factory=dict)


@dataclass
class _Pass:
    """What every chunk of one engine run shares."""

    device: torch.device
    log_softmax: bool
    classes: list[int]
    gemm_dtype: torch.dtype
    fused: object | None
    bar: object
    phases: dict | None = None
    accumulators: list[Tensor] = field(default_factory=list)


# --------------------------------------------------------------------------- planning


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


def _chunk_size(o: KernelOptions, dev: torch.device, models: int, classes: int, used: int,
                nq: int, nt: int) -> int:
    """Models per chunk: ``o.chunk_models``, or for ``auto`` the machine's measured best for
    ``used`` of ``classes`` classes and ``nq`` queries x ``nt`` keys."""
    chunk = o.chunk_models
    if chunk == "auto":
        from multirun.kernel import tune

        if models <= min(tune.CANDIDATES):  # one chunk whichever is chosen
            return models
        return tune.chunk_models(dev, classes, nq, nt, o.precision, o.log_softmax, used)
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ContractError(f"kernel.chunk_models must be an integer >= 1 or 'auto', got {chunk!r}")
    return chunk


def _chunks(sel: np.ndarray, chunk_models: int) -> list[np.ndarray]:
    return [sel[i : i + chunk_models] for i in range(0, len(sel), chunk_models)]


def memory_budget(device: torch.device, memory_gb: float | None,
                  job_memory_gb: float | None = None) -> int:
    """Bytes the engine may use: ``memory_gb``, or half the device's free memory (on a CPU
    at most 3/4 of the job's memory request ``job_memory_gb``, so a cluster job stays
    inside its allocation)."""
    if memory_gb is not None:
        if memory_gb <= 0:
            raise ContractError(f"kernel.memory_gb must be > 0, got {memory_gb}")
        return int(memory_gb * 2**30)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0] // 2
    free = 4 * 2**30
    with contextlib.suppress(OSError, StopIteration, ValueError):
        with open("/proc/meminfo") as f:
            line = next(line for line in f if line.startswith("MemAvailable:"))
        free = int(line.split()[1]) * 1024
    budget = free // 2
    if job_memory_gb:
        budget = min(budget, int(0.75 * job_memory_gb * 2**30))
    return budget


def plan(nq: int, nt: int, subsets: int, chunk_rows: int, budget: int,
         block: int | None = None) -> tuple[int, int]:
    """(subsets per group, query rows per block) so that one group's work fits ``budget``.

    Per subset in a group: a (block, nt) float32 accumulator. Per group: one normalised
    key chunk (chunk_rows, nt) and query chunk (chunk_rows, block) as float32, and the raw
    chunk (read as up to 4 bytes per value). ``chunk_rows`` = models per chunk x classes.
    An explicit ``block`` is kept (one subset per group unless all fit).
    """
    fixed = 3 * chunk_rows * nt * 4

    def fits(groups: int, rows: int) -> bool:
        return fixed + groups * rows * nt * 4 + 2 * chunk_rows * rows * 4 <= budget

    if block is not None:
        if block < 1:
            raise ContractError(f"kernel.block must be >= 1, got {block}")
        block = min(block, nq)
        group = max(g for g in range(1, subsets + 1) if g == 1 or fits(g, block))
        return group, block
    group = max((g for g in range(1, subsets + 1) if fits(g, nq)), default=0)
    if group:
        return group, nq
    per_row = nt * 4 + 2 * chunk_rows * 4
    return 1, int(min(nq, max(1, (budget - fixed) // per_row)))


# --------------------------------------------------------------------------- passes


def _raise_nonfinite(logits: ShardedLogits, idx: np.ndarray) -> None:
    """Find the first model of chunk ``idx`` with NaN/inf and raise naming its shard file."""
    for model in idx:
        if not np.isfinite(logits.models(np.array([model]))).all():
            path, local = logits.shard_of(int(model))
            raise ContractError(f"{path}: model {local} holds NaN or inf logits; the run that "
                                "produced it diverged: drop or retrain that shard, then rerun")
    raise AssertionError("non-finite chunk without a non-finite model")


def _read(p: _Pass, logits: ShardedLogits, idx: np.ndarray, rows: slice | None) -> Tensor:
    """Models ``idx`` (examples ``rows``) as a (m, n, C) tensor in the shards' dtype.

    A chunk of consecutive models of one shard, every example, is the memory-mapped slice
    itself (no copy; the fused loops read the page cache; never written to), valid until
    ``logits.release()``, which the passes call after each chunk."""
    with timed_phase(p.phases, "read", p.device), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The given NumPy array is not writable")
        return torch.from_numpy(logits.models(idx, rows, view=True)).to(p.device)


def _moments(p: _Pass, side: _Side, chunks: list[np.ndarray], selections: list[np.ndarray]
             ) -> None:
    """First pass: per subset, per-(class, example) mean and 1/std (unbiased; 0 where std == 0).

    Chunk statistics merged across chunks in float64 (Chan et al.), so the result does not
    drift with the number of models. Beside the sum of squared deviations ``m2``, ``m2_tiny``
    holds it scaled by ``TINY_SCALE**2`` for the columns whose every value is below
    ``TINY_VALUE`` in magnitude (NaN elsewhere): the top class of models that all lead by more
    than ~69 logits, whose squared deviations underflow float64 beyond a lead of ~355.
    Appends :func:`_finish`'s three (C, N) tensors per subset to ``side.stats``. NaN/inf
    anywhere -> ContractError naming the shard file.
    """
    logits = side.logits
    shape = (logits.num_classes, logits.num_examples)
    mean = [torch.zeros(shape, dtype=torch.float64, device=p.device) for _ in selections]
    m2 = [torch.zeros_like(a) for a in mean]
    m2_tiny = [torch.zeros_like(a) for a in mean]
    count = [0] * len(selections)
    for idx in chunks:
        x_all = _read(p, logits, idx, None)
        for s, sel in enumerate(selections):
            mask = np.isin(idx, sel)
            if not mask.any():
                continue
            x = x_all if mask.all() else x_all[torch.from_numpy(mask).to(p.device)]
            n = int(mask.sum())
            with timed_phase(p.phases, "moments", p.device):
                _merge(p, logits, idx[mask], x, mean, m2, m2_tiny, count, s, n)
            count[s] += n
        logits.release()
        p.bar.update(1)
    for s in range(len(selections)):
        side.stats.append(_finish(mean[s], m2[s], m2_tiny[s], count[s]))


def _merge(p: _Pass, logits: ShardedLogits, idx: np.ndarray, x: Tensor, mean: list[Tensor],
           m2: list[Tensor], m2_tiny: list[Tensor], count: list[int], s: int, n: int) -> None:
    """Merge the n models ``x`` (n, N, C) into subset s's running statistics, in place."""
    if p.fused is not None:  # merges into mean, m2, m2_tiny in place
        if p.fused.moments(x.contiguous(), mean[s], m2[s], m2_tiny[s], count[s],
                           p.log_softmax):
            _raise_nonfinite(logits, idx)
    else:
        x = x.float().double()
        x = (log_probabilities(x) if p.log_softmax else x).permute(0, 2, 1)
        cmean = x.mean(0)
        dev = x - cmean
        cm2 = dev.square().sum(0)
        if not (bool(torch.isfinite(cmean).all()) and bool(torch.isfinite(cm2).all())):
            _raise_nonfinite(logits, idx)
        delta = cmean - mean[s]
        w = count[s] * n / (count[s] + n)
        mean[s] += delta * (n / (count[s] + n))
        m2[s] += cm2 + delta.square() * w
        tiny = (x.abs() < TINY_VALUE).all(0)  # else the scaled squares may overflow
        if bool(tiny.any()):
            cm2_tiny = (dev * TINY_SCALE).square_().sum(0)
            if count[s]:
                cm2_tiny += (delta * TINY_SCALE).square_() * w
            m2_tiny[s] = torch.where(tiny, m2_tiny[s] + cm2_tiny, math.nan)
        else:
            m2_tiny[s].fill_(math.nan)


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _finish(mean: Tensor, m2: Tensor, m2_tiny: Tensor, count: int
            ) -> tuple[Tensor, Tensor, Tensor]:
    """float64 running (mean, m2, m2_tiny) of ``count`` models -> float32 1/std and float64
    (mean, 1/std), each (C, N).

    The std is taken from ``m2_tiny / TINY_SCALE**2`` where that is finite (every value of
    the column tiny), else from ``m2``. The float64 pair serves where the values lie below
    float32's range (the top class of a model that leads by more than ~69 logits: its 1/std
    may exceed float32's range; the float32 1/std is 0 there and no float32 value of that
    column is used)."""
    if mean.device.type == "cpu":  # numpy: no thread-pool wake-ups for these small arrays
        mean_np, m2_np, m2_tiny_np = mean.numpy(), m2.numpy(), m2_tiny.numpy()
        with np.errstate(invalid="ignore"):
            std = np.where(np.isfinite(m2_tiny_np),
                           np.sqrt(np.maximum(m2_tiny_np, 0) / (count - 1)) / TINY_SCALE,
                           np.sqrt(np.maximum(m2_np, 0) / (count - 1)))
        with np.errstate(divide="ignore"):
            inv = np.where((std > STD_FLOOR * np.abs(mean_np)) & (std >= STD_TINY), 1.0 / std, 0.0)
        inv32 = np.where(inv <= _FLOAT32_MAX, inv, 0.0).astype(np.float32)
        return torch.from_numpy(inv32), mean, torch.from_numpy(inv)
    std = torch.where(torch.isfinite(m2_tiny), m2_tiny.clamp_min(0).div(count - 1).sqrt()
                      / TINY_SCALE, m2.clamp_min(0).div(count - 1).sqrt())
    inv = inverse_std(std, mean)
    inv32 = torch.where(inv <= _FLOAT32_MAX, inv, torch.zeros_like(inv)).float()
    return inv32, mean, inv


def _normalised(p: _Pass, side: _Side, x: Tensor, rows: slice, subset: int) -> Tensor:
    """Chunk ``x`` (m, n, C) normalised with a subset's statistics, in the GEMM layout:
    (m * len(classes), n) in the GEMM dtype.

    Row ``model * len(classes) + k`` holds class ``classes[k]`` of that model, so a query
    block times a key chunk is ``Zq.T @ Zk`` over the stacked (model, class) dimension.
    """
    with timed_phase(p.phases, "transform", p.device):
        return _transform(p, side, x, rows, subset)


def _transform(p: _Pass, side: _Side, x: Tensor, rows: slice, subset: int) -> Tensor:
    inv, mean64, inv64 = (t[:, rows].contiguous() for t in side.stats[subset])
    m, n, c = x.shape
    if p.fused is not None:
        z = side.buffers.get((m, c, n))
        if z is None:
            z = side.buffers[(m, c, n)] = torch.empty(m, c, n)
        p.fused.transform(x.contiguous(), inv, mean64, inv64, z, p.log_softmax)
    else:  # in float64, then rounded: exact for a top class far below float32's range
        x = x.float().double()
        z = (log_probabilities(x) if p.log_softmax else x).permute(0, 2, 1)
        z = ((z - mean64) * inv64).float()
    if len(p.classes) != c:
        z = z[:, p.classes]
    return z.reshape(m * len(p.classes), n).to(p.gemm_dtype)


def _accumulate(p: _Pass, acc: Tensor, zq: Tensor, zk: Tensor, alpha: float, first: bool
                ) -> None:
    """acc (=|+=) alpha * zq.T @ zk in float32 (the first product overwrites)."""
    with timed_phase(p.phases, "gemm", p.device):
        _product(p, acc, zq, zk, alpha, first)


def _product(p: _Pass, acc: Tensor, zq: Tensor, zk: Tensor, alpha: float, first: bool) -> None:
    if p.gemm_dtype == torch.float32:
        acc.addmm_(zq.T, zk, beta=0.0 if first else 1.0, alpha=alpha)
        return
    if p.device.type == "cuda":  # bf16 inputs, fp32 accumulation and output
        prod = torch.mm(zq.T, zk, out_dtype=torch.float32)
    else:  # CPU bf16 GEMM accumulates in fp32 but rounds its output to bf16
        prod = torch.mm(zq.T, zk).float()
    if first:
        torch.mul(prod, alpha, out=acc)
    else:
        acc.add_(prod, alpha=alpha)


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


def _not_the_same_models(queries: ShardedLogits, keys: ShardedLogits) -> str:
    """The message for query and key logits of other models: the first pair of shard files
    that differ in models or classes, named, with the command that remakes both."""
    qc, kc = queries.num_classes, keys.num_classes  # the same in every shard of a stack
    pairs = zip(queries.paths, keys.paths, np.diff(queries.offsets), np.diff(keys.offsets),
                strict=False)  # shorter side: the message after the loop
    for qp, kp, qm, km in pairs:
        if qm != km or qc != kc:
            return (f"{qp} holds {qm} models of {qc} classes, {kp} {km} of {kc}: the query and "
                    "key logits of a shard must come from the same models; remake both with: "
                    f"{remake_command([qp, kp])}")
    return (f"queries {queries!r} and keys {keys!r} must come from the same models (same "
            "model count and classes): one side has more shard files")


def kernel_blocks(queries: ShardedLogits, keys: ShardedLogits, models: Sequence[np.ndarray | None],
                  options: KernelOptions, classes: Sequence[int] | None = None
                  ) -> Iterator[tuple[int, int, int, Tensor]]:
    """Yield (subset, start, stop, K_subset[start:stop]) for every subset of ``models``.

    K_subset is the (Nq, Nt) float32 kernel of the models ``models[subset]`` (None: all);
    each block lives on the compute device and is valid until the next one is yielded.
    Logs the plan, the passes made and the bytes read.
    """
    if queries.num_models != keys.num_models or queries.num_classes != keys.num_classes:
        raise ContractError(_not_the_same_models(queries, keys))
    o = options
    if o.precision not in PRECISIONS:
        raise ContractError(f"kernel.precision: {o.precision!r} is not one of {PRECISIONS}")
    dev = pick_device(o.device)
    if o.precision == "tf32" and dev.type != "cuda":
        warnings.warn("precision 'tf32' is a CUDA tensor-core mode; on CPU the GEMM runs in fp32",
                      stacklevel=3)
    selections = [_model_selection(m, queries.num_models) for m in models]
    cls = class_index(classes, queries.num_classes)
    union = np.unique(np.concatenate(selections))
    nq, nt = queries.num_examples, keys.num_examples
    chunk = _chunk_size(o, dev, len(union), queries.num_classes, len(cls), nq, nt)
    chunks = _chunks(union, chunk)
    same = queries is keys or queries.paths == keys.paths
    budget = memory_budget(dev, o.memory_gb, o.job_memory_gb)
    group, block = plan(nq, nt, len(selections), min(chunk, len(union)) * len(cls),
                        budget, o.block)
    groups = [list(range(g, min(g + group, len(selections))))
              for g in range(0, len(selections), group)]
    passes = len(groups) * ((1 if same else 2) + math.ceil(nq / block))
    p = _Pass(dev, o.log_softmax, cls, torch.bfloat16 if o.precision == "bf16" else torch.float32,
              build.fused() if dev.type == "cpu" else None,
              _progress(len(chunks) * passes, o.progress, "kernel"), o.phases)
    def bytes_read() -> int:
        return keys.bytes_read + (0 if queries is keys else queries.bytes_read)

    read_before = bytes_read()
    with p.bar, torch.no_grad(), _matmul_precision(dev, o.precision):
        for members in groups:
            sels = [selections[s] for s in members]
            k_side = _Side(keys)
            _moments(p, k_side, chunks, sels)
            q_side = k_side if same else _Side(queries)
            if not same:
                _moments(p, q_side, chunks, sels)
            yield from _products(p, q_side, k_side, chunks, sels, members, block, same)
    read = bytes_read() - read_before
    data = len(union) * (nt + (0 if same else nq)) * keys.num_classes * keys.dtype.itemsize
    print(f"kernel: {len(selections)} subset(s) of {len(union)} models in {len(groups)} group(s) "
          f"and chunks of {chunk}, "
          f"query block {block} of {nq} rows (budget {budget / 2**30:.2f} GiB): {passes} "
          f"pass(es) over the data, {read / 2**20:.1f} MiB read = {read / data:.2f} x the "
          "logits used", flush=True)


def _products(p: _Pass, q_side: _Side, k_side: _Side, chunks: list[np.ndarray],
              sels: list[np.ndarray], members: list[int], block: int, same: bool
              ) -> Iterator[tuple[int, int, int, Tensor]]:
    """Second pass(es) of one group of subsets: the accumulated kernel blocks."""
    nq, nt = q_side.logits.num_examples, k_side.logits.num_examples
    for start in range(0, nq, block):
        stop = min(start + block, nq)
        rows = slice(start, stop)
        acc = _accumulators(p, len(sels), min(block, nq), stop - start, nt)
        started = [False] * len(sels)
        for idx in chunks:
            xk = _read(p, k_side.logits, idx, None)
            xq = None if same else _read(p, q_side.logits, idx, rows)
            for s, sel in enumerate(sels):
                mask = np.isin(idx, sel)
                if not mask.any():
                    continue
                pick = None if mask.all() else torch.from_numpy(mask).to(p.device)
                zk = _normalised(p, k_side, xk if pick is None else xk[pick], slice(None), s)
                if same:
                    zq = zk[:, start:stop]
                else:
                    zq = _normalised(p, q_side, xq if pick is None else xq[pick], rows, s)
                _accumulate(p, acc[s], zq, zk, 1.0 / (len(sel) * len(p.classes)), not started[s])
                started[s] = True
            k_side.logits.release()
            if not same:
                q_side.logits.release()
            p.bar.update(1)
        for s in range(len(sels)):
            yield members[s], start, stop, acc[s]


def _accumulators(p: _Pass, count: int, block: int, rows: int, nt: int) -> list[Tensor]:
    """``count`` (rows, nt) float32 accumulators, views of (block, nt) ones that every query
    block and group of the run reuses (so each is touched fresh once per run, not per block)."""
    while len(p.accumulators) < count:
        p.accumulators.append(torch.empty(block, nt, dtype=torch.float32, device=p.device))
    return [a[:rows] for a in p.accumulators[:count]]

