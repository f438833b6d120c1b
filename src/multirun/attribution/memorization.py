"""Feldman & Zhang (2020): memorization and influence estimated from subset models.

With ``masks`` M (models, N_train) bool (model m trained on example i) and correctness
C (models, N) of every model on every example:

* memorization of training example i:
  ``mem_i = P(correct_i | i in) - P(correct_i | i out)``, each probability the mean over
  the models whose mask holds (does not hold) i; standard error
  ``se_i = sqrt(p_in (1 - p_in) / n_in + p_out (1 - p_out) / n_out)`` (two independent
  binomial means);
* influence of training example i on test example t:
  ``infl[i, t] = P(correct_t | i in) - P(correct_t | i out)``, the same estimator with the
  test example's correctness: two matrix products ``M^T C_test`` and ``(~M)^T C_test``
  (N_train x N_test), never a loop over pairs.
"""

from __future__ import annotations

import numpy as np

from multirun.contracts import ContractError


def _check(masks: np.ndarray, correct: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    masks = np.asarray(masks, dtype=bool)
    correct = np.asarray(correct)
    if masks.ndim != 2 or correct.ndim != 2 or correct.shape[0] != masks.shape[0]:
        raise ContractError(f"{where}: masks {masks.shape} and correctness {correct.shape} need "
                            "the same number of models (rows)")
    return masks, correct


def memorization(masks: np.ndarray, correct: np.ndarray) -> dict[str, np.ndarray]:
    """(M, N) masks, (M, N) train correctness -> mem, se, p_in, p_out (N,) float64, n_in, n_out.

    Where n_in or n_out is 0 the estimate is undefined: mem and se are NaN there.
    """
    masks, correct = _check(masks, correct, "memorization")
    if correct.shape != masks.shape:
        raise ContractError(f"memorization: correctness {correct.shape} must match masks "
                            f"{masks.shape}")
    c = correct.astype(bool)
    n_in = masks.sum(0)
    n_out = (~masks).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        p_in = (c & masks).sum(0) / n_in
        p_out = (c & ~masks).sum(0) / n_out
        se = np.sqrt(p_in * (1 - p_in) / n_in + p_out * (1 - p_out) / n_out)
    return {"mem": p_in - p_out, "se": se, "p_in": p_in, "p_out": p_out,
            "n_in": n_in.astype(np.int64), "n_out": n_out.astype(np.int64)}


def influence(masks: np.ndarray, correct_test: np.ndarray, *, dtype=np.float32
              ) -> tuple[np.ndarray, np.ndarray]:
    """(M, N_train) masks, (M, N_test) test correctness -> influence and its SE, (N_train, N_test).

    Two GEMMs in ``dtype`` (counts up to 2^24 are exact in float32). NaN where a train
    example is in every or no model.
    """
    masks, correct_test = _check(masks, correct_test, "influence")
    m = masks.astype(dtype)
    c = correct_test.astype(dtype)
    n_in = m.sum(0)[:, None]  # (N, 1)
    n_out = len(m) - n_in
    hits_in = m.T @ c  # (N, T)
    hits_out = c.sum(0)[None, :] - hits_in
    with np.errstate(invalid="ignore", divide="ignore"):
        p_in = hits_in / n_in
        p_out = hits_out / n_out
        se = np.sqrt(p_in * (1 - p_in) / n_in + p_out * (1 - p_out) / n_out)
    return p_in - p_out, se


def top_pairs(score: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest entries of a (rows, cols) matrix: (k,) row and col indices, descending.

    NaN never ranks; ties break by flat index (row-major), so the choice is deterministic.
    """
    flat = np.where(np.isnan(score), -np.inf, score).ravel()
    k = min(int(k), flat.size)
    part = np.argpartition(-flat, k - 1)[:k] if k < flat.size else np.arange(flat.size)
    order = part[np.lexsort((part, -flat[part]))]
    return np.unravel_index(order, score.shape)


def precision_at(rows: np.ndarray, cols: np.ndarray, relevant: np.ndarray,
                 ks: list[int]) -> dict[int, float]:
    """Fraction of the first k ranked (row, col) pairs with ``relevant[row, col]``, for each k."""
    hit = np.asarray(relevant, dtype=bool)[rows, cols]
    out = {}
    for k in ks:
        if not 1 <= k <= len(hit):
            raise ContractError(f"precision at {k}: only {len(hit)} ranked pairs")
        out[int(k)] = float(hit[:k].mean())
    return out
