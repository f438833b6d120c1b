"""Finding wrong training labels with many models (known ground truth injected).

Three rankings of the N training examples, each a suspicion score (higher = more
likely mislabelled):

* ``kernel``: disagreement of an example's ensemble-kernel neighbours among the
  *training* examples (self excluded) with its given label: ``1 - sum_j w_j
  [y_j == y_i] / sum_j w_j`` over its top-k neighbours, ``w_j = max(s_j, 0) ** power``;
* ``margin``: minus the ensemble's margin, ``-(p[y] - max_{c != y} p[c])`` with
  ``p`` the mean softmax of the models;
* ``loss``: one model's cross-entropy at the given label (the single-model baseline).

Precision-recall against the injected ``corrupted`` mask, and average precision
(the area under the step curve, as ``sklearn.metrics.average_precision_score``).
"""

from __future__ import annotations

import numpy as np

from multirun.contracts import ContractError


def kernel_disagreement(index: np.ndarray, similarity: np.ndarray, labels: np.ndarray, *,
                        k: int, power: float = 1.0) -> np.ndarray:
    """(N, k_max) neighbour indices/similarities, (N,) given labels -> (N,) score in [0, 1].

    Examples whose top-k weights are all 0 get the unweighted disagreement.
    """
    if index.shape != similarity.shape or index.ndim != 2 or k > index.shape[1]:
        raise ContractError(f"neighbours {index.shape} / {similarity.shape}: need (N, k_max) "
                            f"with k_max >= k={k}")
    labels = np.asarray(labels)
    same = labels[index[:, :k]] == labels[:, None]  # (N, k)
    w = np.clip(similarity[:, :k].astype(np.float64), 0, None) ** float(power)
    total = w.sum(1)
    flat = total <= 0
    w[flat] = 1.0
    return 1.0 - (w * same).sum(1) / w.sum(1)


def _softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(-1, keepdims=True)


def ensemble_margin_score(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(M, N, C) logits, (N,) labels -> (N,) minus the margin of the mean softmax."""
    p = np.zeros(logits.shape[1:], dtype=np.float64)
    for m in range(len(logits)):
        p += _softmax(np.asarray(logits[m], dtype=np.float64))
    p /= len(logits)
    rows = np.arange(len(labels))
    given = p[rows, labels]
    p[rows, labels] = -np.inf
    return -(given - p.max(1))


def loss_score(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(N, C) one model's logits, (N,) labels -> (N,) cross-entropy at the given label."""
    x = np.asarray(logits, dtype=np.float64)
    x = x - x.max(1, keepdims=True)
    logp = x - np.log(np.exp(x).sum(1, keepdims=True))
    return -logp[np.arange(len(labels)), labels]


def precision_recall(score: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall after each of the N examples in descending score order: (N,), (N,).

    Ties are broken by example index (stable), so the curve is deterministic.
    """
    truth = np.asarray(truth, dtype=bool)
    if not truth.any():
        raise ContractError("precision_recall: no corrupted example to find (noise 0?)")
    order = np.argsort(-np.asarray(score, dtype=np.float64), kind="stable")
    hits = np.cumsum(truth[order])
    return hits / np.arange(1, len(order) + 1), hits / truth.sum()


def average_precision(score: np.ndarray, truth: np.ndarray) -> float:
    """Mean of the precision at each corrupted example's rank (area under the PR step curve)."""
    precision, _ = precision_recall(score, truth)
    truth = np.asarray(truth, dtype=bool)
    order = np.argsort(-np.asarray(score, dtype=np.float64), kind="stable")
    return float(precision[truth[order]].mean())


def ranking_quality(score: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """How well ``score`` (N,) ranks the corrupted examples ``truth`` (N,) bool first:
    ``average_precision`` and ``precision_at_noise`` (the precision among the top
    ``truth.sum()``, the number of corrupted labels)."""
    precision, _ = precision_recall(score, truth)
    return {"average_precision": average_precision(score, truth),
            "precision_at_noise": float(precision[int(np.sum(truth)) - 1])}
