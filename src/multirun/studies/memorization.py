"""Memorization across seeds (after Arpit et al. 2017): P(correct) per training example.

For one data variant and training length, ``P(correct)[i]`` is the fraction of the
M seeds whose model classifies training example ``i`` as its *training* label
(the random label for RandY). Real data has easy examples (P near 1 after one
epoch) where random data has none: its sorted curve follows the binomial
spread of M coin flips with the mean accuracy.
"""

from __future__ import annotations

import numpy as np

from multirun.knn import probability_correct


def pcorrect(logits, labels: np.ndarray) -> np.ndarray:
    """(M, N, C) logits (array or ShardedLogits) and (N,) labels -> (N,) float64 in [0, 1]."""
    return probability_correct(logits, labels)


def binomial_reference(mean: float, models: int, n: int, seed: int = 0) -> np.ndarray:
    """Sorted P(correct) of ``n`` examples that are all equally hard: Binomial(models, mean) / models."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.binomial(models, float(mean), n) / models)


def summary_row(p: np.ndarray, *, variant: str, epochs: int, models: int,
                chance: float) -> dict:
    """One row of ``memorization.csv`` for a (variant, epochs) group with P(correct) ``p`` (N,).

    ``mean``: mean P(correct) (= mean single-model training accuracy); ``easy``: fraction
    of examples with P >= 0.9; ``hard``: fraction with P <= 0.1; ``above_chance``:
    fraction with P above ``chance`` + 3 binomial standard deviations, i.e. examples
    learned more often than a model that has learned nothing about them would be.
    """
    p = np.asarray(p, dtype=np.float64)
    sd = np.sqrt(chance * (1 - chance) / models)
    return {
        "variant": variant, "epochs": int(epochs), "models": int(models), "examples": len(p),
        "mean": float(p.mean()), "easy": float((p >= 0.9).mean()),
        "hard": float((p <= 0.1).mean()), "above_chance": float((p > chance + 3 * sd).mean()),
        "spread_vs_binomial": float(p.std() / max(np.sqrt(p.mean() * (1 - p.mean()) / models),
                                                  1e-12)),
    }


def extremes(p: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the ``n`` hardest (lowest P, first) and ``n`` easiest (highest P, last) examples.

    Ties break by example index (stable sort), so the choice is deterministic.
    """
    order = np.argsort(np.asarray(p), kind="stable")
    return order[:n], order[len(order) - n:]
