"""The linear datamodeling score (LDS; Park et al. 2023, TRAK).

An attribution ``scores`` (T, N) predicts test example t's output on a model trained on
subset S as the sum of its scores over S: ``pred[m, t] = sum_i masks[m, i] scores[t, i]``.
For held-out subset models m = 1..H, ``LDS_t`` is the Spearman rank correlation across the
H models between ``pred[:, t]`` and the actual margin ``margin[:, t]``; the LDS is its mean
over test examples, with standard error ``std(LDS_t, ddof=1) / sqrt(T)``.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

from multirun.contracts import ContractError


def spearman_columns(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman correlation of each column of (H, T) ``a`` with that of ``b``: (T,) float64.

    Average ranks for ties (as ``scipy.stats.spearmanr``); NaN where a column is constant.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2 or len(a) < 2:
        raise ContractError(f"spearman: need two (H >= 2, T) arrays of one shape, got "
                            f"{a.shape} and {b.shape}")
    ra = rankdata(a, axis=0)
    rb = rankdata(b, axis=0)
    ra -= ra.mean(0)
    rb -= rb.mean(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (ra * rb).sum(0) / np.sqrt((ra**2).sum(0) * (rb**2).sum(0))


def lds(scores: np.ndarray, masks: np.ndarray, margins: np.ndarray) -> dict[str, float | np.ndarray]:
    """LDS of ``scores`` (T, N) on held-out ``masks`` (H, N) and actual ``margins`` (H, T).

    A per-test bias (a datamodel's intercept) would change nothing: ranks per column. Returns
    ``per_test`` (T,), ``mean``, ``se`` and ``valid`` (test examples with a defined
    correlation; constant predictions, e.g. an all-zero row, are left out).
    """
    scores = np.asarray(scores, dtype=np.float32)
    masks = np.asarray(masks, dtype=np.float32)
    if scores.ndim != 2 or masks.ndim != 2 or scores.shape[1] != masks.shape[1]:
        raise ContractError(f"lds: scores {scores.shape} and masks {masks.shape} need the same "
                            "training examples")
    if np.shape(margins) != (masks.shape[0], scores.shape[0]):
        raise ContractError(f"lds: margins {np.shape(margins)} must be (held-out models "
                            f"{masks.shape[0]}, test examples {scores.shape[0]})")
    pred = masks @ scores.T
    per_test = spearman_columns(pred, margins)
    ok = np.isfinite(per_test)
    valid = int(ok.sum())
    mean = float(per_test[ok].mean()) if valid else float("nan")
    se = float(per_test[ok].std(ddof=1) / np.sqrt(valid)) if valid > 1 else float("nan")
    return {"per_test": per_test, "mean": mean, "se": se, "valid": valid}
