"""The ensemble kernel as an attribution, and the agreement between two attributions.

Signed kernel: with ``K[t, i]`` the ensemble-kernel similarity of test example t and
training example i (:mod:`multirun.kernel`), ``y_t`` the test label and ``y_i`` the
training label,

    a[t, i] = K[t, i] * (+1 if y_i == y_t else -1)

A training example similar to t with t's label counts for t's margin (``z_{y_t}`` minus the
other classes), one with another label against it. ``top_k``: only each test example's
k most similar training examples keep their score (the k-NN view), the rest are 0.
"""

from __future__ import annotations

import numpy as np

from multirun.contracts import ContractError


def signed_kernel(similarity: np.ndarray, test_labels: np.ndarray, train_labels: np.ndarray,
                  *, top_k: int | None = None) -> np.ndarray:
    """(T, N) similarity, (T,) test labels, (N,) train labels -> (T, N) float32 attribution."""
    k = np.asarray(similarity, dtype=np.float32)
    yt, yi = np.asarray(test_labels), np.asarray(train_labels)
    if k.shape != (len(yt), len(yi)):
        raise ContractError(f"signed_kernel: similarity {k.shape} must be (test {len(yt)}, "
                            f"train {len(yi)})")
    out = np.where(yt[:, None] == yi[None, :], k, -k)
    if top_k is not None:
        if not 1 <= top_k <= k.shape[1]:
            raise ContractError(f"signed_kernel: top_k={top_k} outside [1, {k.shape[1]}]")
        keep = np.zeros_like(out, dtype=bool)
        idx = np.argpartition(-k, top_k - 1, axis=1)[:, :top_k]
        np.put_along_axis(keep, idx, True, axis=1)
        out = np.where(keep, out, 0.0).astype(np.float32)
    return out


def row_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of row t of (T, N) ``a`` with row t of ``b``: (T,) float64."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ContractError(f"row_correlation: shapes {a.shape} and {b.shape} must be one (T, N)")
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a * b).sum(1) / np.sqrt((a**2).sum(1) * (b**2).sum(1))


def top_k_overlap(a: np.ndarray, b: np.ndarray, k: int) -> np.ndarray:
    """Per row, the fraction of ``a``'s k largest entries among ``b``'s k largest: (T,).

    Ties at the k-th value are broken by column index (lowest first).
    """
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.ndim != 2 or not 1 <= k <= a.shape[1]:
        raise ContractError(f"top_k_overlap: need one (T, N) shape and 1 <= k <= N, got "
                            f"{a.shape}, {b.shape}, k={k}")

    def top(x):
        order = np.argsort(-x, axis=1, kind="stable")[:, :k]
        mark = np.zeros(x.shape, dtype=bool)
        np.put_along_axis(mark, order, True, axis=1)
        return mark

    return (top(a) & top(b)).sum(1) / k
