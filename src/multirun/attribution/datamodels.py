"""Datamodels (Ilyas et al. 2022): per test example, a linear model of its margin on the mask.

For test example t, ``margin_t(m) ~ b_t + sum_i w[t, i] masks[m, i]`` over the training
models m, fit by ridge regression (``sklearn.linear_model.Ridge`` with an intercept:
minimise ``||y - X w - b||^2 + lam ||w||^2``). All test examples are fit at once from one
thin SVD of the centred mask matrix ``Xc = U diag(s) V^T``:
``w(lam) = V diag(s / (s^2 + lam)) U^T Yc``, so every regularisation value of the grid
costs two small products, and each test example takes the ``lam`` with the lowest mean
squared error on a separate validation split of models.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from multirun.contracts import ContractError


@dataclass
class Datamodels:
    """weights (T, N) float32, bias (T,), lam (T,) chosen per test example, val_mse (L, T)."""

    weights: np.ndarray
    bias: np.ndarray
    lam: np.ndarray
    lambdas: np.ndarray
    val_mse: np.ndarray

    def predict(self, masks: np.ndarray) -> np.ndarray:
        """(M, N) masks -> (M, T) predicted margins."""
        return np.asarray(masks, dtype=np.float32) @ self.weights.T + self.bias


def _xy(masks, margins, where: str) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(masks, dtype=np.float64)
    y = np.asarray(margins, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y):
        raise ContractError(f"datamodels {where}: masks {x.shape} and margins {y.shape} need "
                            "one row per model")
    if len(x) < 2:
        raise ContractError(f"datamodels {where}: need at least 2 models, got {len(x)}")
    return x, y


def fit(train_masks: np.ndarray, train_margins: np.ndarray, val_masks: np.ndarray,
        val_margins: np.ndarray, lambdas) -> Datamodels:
    """Ridge datamodels on (M, N) masks and (M, T) margins; ``lam`` per column on validation.

    ``lambdas``: the grid of penalties (> 0). Ties in validation MSE take the larger
    penalty (the simpler model).
    """
    x, y = _xy(train_masks, train_margins, "training split")
    xv, yv = _xy(val_masks, val_margins, "validation split")
    if xv.shape[1] != x.shape[1] or yv.shape[1] != y.shape[1]:
        raise ContractError(f"datamodels: validation {xv.shape}/{yv.shape} and training "
                            f"{x.shape}/{y.shape} disagree in examples")
    lambdas = np.sort(np.asarray(lambdas, dtype=np.float64))[::-1]  # largest first
    if lambdas.size == 0 or (lambdas <= 0).any():
        raise ContractError(f"datamodels: regularisation grid {lambdas.tolist()} must be "
                            "non-empty and > 0")
    x_mean, y_mean = x.mean(0), y.mean(0)
    u, s, vt = np.linalg.svd(x - x_mean, full_matrices=False)
    uty = u.T @ (y - y_mean)  # (r, T)
    a = (xv - x_mean) @ vt.T  # (Mv, r)
    shrink = s[:, None] / (s[:, None] ** 2 + lambdas[None, :])  # (r, L)
    mse = np.stack([(((a * shrink[:, j]) @ uty + y_mean - yv) ** 2).mean(0)
                    for j in range(len(lambdas))])  # (L, T)
    best = mse.argmin(0)  # first minimum: the largest penalty among ties
    w = vt.T @ (shrink[:, best] * uty)  # (N, T)
    bias = y_mean - x_mean @ w
    return Datamodels(weights=np.ascontiguousarray(w.T, dtype=np.float32),
                      bias=bias.astype(np.float32), lam=lambdas[best], lambdas=lambdas,
                      val_mse=mse)
