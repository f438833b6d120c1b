"""The ensemble kernel's reference semantics, in memory.

The write-up (``seeds/ensemble-kernel-README.md``)::

    z = log_softmax(logits.float(), -1)                       # (M, N, C)
    z = (z - z.mean(0)) / z.std(0)                            # unbiased std across the M models
    K = sum_c  z_test[..., c].T @ z_train[..., c] / M / C     # (N_test, N_train)

i.e. the per-class correlation across models, averaged over the classes.

Two choices make the float32 evaluation agree with the formula evaluated exactly (in
float64) at every logit scale:

* :func:`log_probabilities` (log_softmax) computes the top class's log-probability as
  ``-log1p(s)``, ``s`` the sum of ``exp(x - max)`` over the other classes. ``log(1 + s)``
  in float32 rounds it to a multiple of 6e-8, and where a class is the top one in every
  model those rounded values are all there is to its z-score across models (confident
  logits: errors of 1e-2 to 1e-1 in the kernel).
* the log-probabilities, their mean and std across models and the z-score are formed in
  float64 (the engine's fused loops: in float64 only where ``s`` is too small for float32),
  so a class that leads by more than 87 logits in every model (``s`` below float32's range)
  keeps its z-score. Limit: that of float64 itself, a lead below ~708 logits in some model.
* the std across models of a column whose values are all tiny (below ``TINY_VALUE``: the
  top class of models that all lead by more than ~69 logits) is formed from deviations
  scaled by ``TINY_SCALE`` (a power of two: exact), since their squares underflow float64
  once the lead exceeds ~355 (deviations below ~1e-154).

Deviation from the reference, on degenerate input only: where the std across models is 0
up to float64 rounding (every model gives the same value; std <= ``STD_FLOOR * |mean|``),
the reference divides 0 (or rounding noise) by 0 (or rounding noise) and its kernel row is
NaN (or noise); here the normalised value is 0, so that (example, class) contributes
nothing to the correlation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from multirun.contracts import ContractError

# A std across models below this fraction of |mean| is float64 rounding noise (the
# values are equal up to rounding): the normalised value there is set to 0.
STD_FLOOR = 2.0**-40  # 9.1e-13, ~4,000 float64 ulps
STD_TINY = torch.finfo(torch.float64).tiny  # smallest normal float64 (1 / std stays finite)
# A column whose every value lies below TINY_VALUE in magnitude has deviations below
# 2 * TINY_VALUE; times TINY_SCALE their squares (< 2^826) neither overflow nor, down to
# deviations of 2^-1022, underflow (the fused loops use the same two numbers).
TINY_VALUE = 2.0**-100
TINY_SCALE = 2.0**512


def class_index(classes: Sequence[int] | None, num_classes: int) -> list[int]:
    """Validated list of classes whose correlations are averaged (all when None)."""
    if classes is None:
        return list(range(num_classes))
    cls = [int(c) for c in classes]
    if not cls or len(set(cls)) != len(cls) or min(cls) < 0 or max(cls) >= num_classes:
        raise ContractError(f"classes={list(classes)}: expected distinct class indices in "
                            f"[0, {num_classes})")
    return cls


def log_probabilities(x: Tensor) -> Tensor:
    """log_softmax over the last dimension, the top class exact: (..., C) float -> same dtype.

    ``(x - max) - log1p(s)`` with ``s`` the sum of ``exp(x - max)`` over every class but
    the (first) maximal one, so the top class's ``-log1p(s)`` keeps its relative precision
    where ``log(sum exp(x - max))`` would round ``1 + s`` to 1.
    """
    top, where = x.max(-1, keepdim=True)
    d = x - top
    e = d.exp()
    e.scatter_(-1, where, 0.0)
    return d - torch.log1p(e.sum(-1, keepdim=True))


def inverse_std(std: Tensor, mean: Tensor) -> Tensor:
    """1 / std, and 0 where std is 0 up to float64 rounding (<= STD_FLOOR * |mean|, or
    below the normal range of std's dtype, where 1 / std would overflow)."""
    ok = (std > STD_FLOOR * mean.abs()) & (std >= torch.finfo(std.dtype).tiny)
    return torch.where(ok, 1.0 / std, torch.zeros_like(std))


def std_across_models(x: Tensor) -> tuple[Tensor, Tensor]:
    """(mean, unbiased std) over axis 0 of float64 ``x`` (M, ...), each (1, ...); the
    deviations of all-tiny columns scaled by ``TINY_SCALE`` before squaring."""
    mean = x.mean(0, keepdim=True)
    tiny = (x.abs() < TINY_VALUE).all(0, keepdim=True)
    scale = torch.where(tiny, x.new_tensor(TINY_SCALE), x.new_tensor(1.0))
    std = ((x - mean) * scale).square().sum(0, keepdim=True).div(x.shape[0] - 1).sqrt() / scale
    return mean, std


def normalize(logits: Tensor, log_softmax: bool = True) -> Tensor:
    """Reference normalisation: (M, N, C) any float dtype -> (M, N, C) float32.

    ``log_softmax`` over classes (optional), then z-score across models (axis 0)
    with the unbiased std, all in float64 (the logits rounded to float32 first, as the
    write-up's ``.float()``). Where the std is 0 the result is 0 (the reference: NaN).
    """
    if logits.ndim != 3 or logits.shape[0] < 2:
        raise ContractError(f"normalize: expected logits (M >= 2, N, C), got {tuple(logits.shape)}")
    x64 = logits.float().double()
    if log_softmax:
        x64 = log_probabilities(x64)
    mean, std = std_across_models(x64)
    return ((x64 - mean) * inverse_std(std, mean)).float()


def stack_classes(z: Tensor, cls: list[int]) -> Tensor:
    """(m, n, C) -> (n, m * len(cls)): classes stacked into the inner (GEMM) dimension."""
    if len(cls) != z.shape[-1]:
        z = z[..., cls]
    return z.permute(1, 0, 2).reshape(z.shape[1], -1)


def ensemble_kernel(queries: Tensor, keys: Tensor, *, log_softmax: bool = True,
                    classes: Sequence[int] | None = None) -> Tensor:
    """In-memory exact kernel: (M, Nq, C), (M, Nt, C) tensors or arrays -> (Nq, Nt) float32.

    ``classes``: average the per-class correlations over these classes only
    (a single class gives that class's kernel alone); None = all classes.
    """
    queries, keys = torch.as_tensor(queries), torch.as_tensor(keys)
    if queries.ndim != 3 or keys.ndim != 3 or queries.shape[0] != keys.shape[0] \
            or queries.shape[2] != keys.shape[2]:
        raise ContractError(f"ensemble_kernel: queries {tuple(queries.shape)} and keys "
                            f"{tuple(keys.shape)} must be (M, N, C) with the same M and C")
    cls = class_index(classes, queries.shape[2])
    zq = stack_classes(normalize(queries, log_softmax), cls)
    zk = stack_classes(normalize(keys, log_softmax), cls)
    return (zq @ zk.T) / (queries.shape[0] * len(cls))
