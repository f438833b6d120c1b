"""Datamodels (Ilyas et al. 2022): per test example, a linear model of its margin on the mask.

For test example t, ``margin_t(m) ~ b_t + sum_i w[t, i] masks[m, i]`` over the training
models m, fit by ridge regression (``sklearn.linear_model.Ridge`` with an intercept:
minimise ``||y - X w - b||^2 + lam ||w||^2``). All test examples are fit at once: with the
centred masks ``Xc`` (M, N) and margins ``Yc`` (M, T), each penalty of the grid costs one
Cholesky factorisation of the smaller Gram matrix, ``Xc Xc^T + lam I`` (M x M, the dual
form ``w = Xc^T (Xc Xc^T + lam I)^-1 Yc``) when M <= N, else ``Xc^T Xc + lam I`` (N x N),
and a solve with all T right-hand sides. Each test example takes the penalty with the
lowest mean squared error on a separate validation split of models.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import cho_factor, cho_solve

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
    xc, yc, xv = x - x_mean, y - y_mean, xv - x_mean
    dual = len(x) <= x.shape[1]
    gram = xc @ xc.T if dual else xc.T @ xc
    rhs = yc if dual else xc.T @ yc  # (M, T) or (N, T)
    to_val = xv @ xc.T if dual else xv  # validation predictions = to_val @ solution
    mse = np.empty((len(lambdas), y.shape[1]))
    best = np.zeros(y.shape[1], dtype=np.int64)
    columns = np.arange(y.shape[1])
    solution = np.empty_like(rhs)
    for j, lam in enumerate(lambdas):
        sol = cho_solve(cho_factor(gram + lam * np.eye(len(gram))), rhs)
        mse[j] = ((to_val @ sol + y_mean - yv) ** 2).mean(0)
        better = mse[j] < mse[best, columns] if j else np.ones(y.shape[1], dtype=bool)
        best[better] = j
        solution[:, better] = sol[:, better]
    w = xc.T @ solution if dual else solution  # (N, T)
    bias = y_mean - x_mean @ w
    return Datamodels(weights=np.ascontiguousarray(w.T, dtype=np.float32),
                      bias=bias.astype(np.float32), lam=lambdas[best], lambdas=lambdas,
                      val_mse=mse)
