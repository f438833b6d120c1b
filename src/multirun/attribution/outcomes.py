"""Per-model outcomes of many models, streamed from logits (arrays or logit shards).

* correctness ``C[m, i] = argmax_c logits[m, i, c] == y[i]`` (M, N) bool;
* margin ``f[m, i] = z_y - log sum_{c != y} exp(z_c)`` (M, N) float32, ``z`` the logits of
  model m on example i and ``y`` its label: TRAK's model output function for
  classification, ``log(p_y / (1 - p_y))``, computed without forming ``1 - p_y``;
* out-of-sample probabilities: per example the mean softmax over the models whose
  subset mask does not hold it (N, C).

``logits`` is a (M, N, C) array or a :class:`multirun.kernel.ShardedLogits`; both are read
``chunk`` models at a time in float64, so memory stays at ``chunk * N * C`` values.
"""

from __future__ import annotations

import numpy as np

from multirun.contracts import ContractError


def _shape(logits) -> tuple[int, int, int]:
    if hasattr(logits, "num_models"):
        return logits.num_models, logits.num_examples, logits.num_classes
    if np.ndim(logits) != 3:
        raise ContractError(f"logits: expected (models, examples, classes), got {np.shape(logits)}")
    return tuple(int(d) for d in np.shape(logits))


def _chunks(logits, chunk: int):
    """(start, stop, float64 (stop - start, N, C)) over the models of ``logits``."""
    m = _shape(logits)[0]
    for start in range(0, m, chunk):
        stop = min(start + chunk, m)
        if hasattr(logits, "models"):
            x = logits.models(np.arange(start, stop))
        else:
            x = logits[start:stop]
        x = np.asarray(x, dtype=np.float64)
        if not np.isfinite(x).all():
            raise ContractError(f"logits of models {start}..{stop - 1} hold NaN or inf; "
                                "rerun training/logits of that shard")
        yield start, stop, x


def _labels(labels, n: int, c: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.shape != (n,) or labels.min(initial=0) < 0 or labels.max(initial=0) >= c:
        raise ContractError(f"labels: expected ({n},) integers in [0, {c}), got shape "
                            f"{labels.shape}")
    return labels.astype(np.int64)


def log_softmax(x: np.ndarray) -> np.ndarray:
    """log_softmax over the last axis in float64 (any leading shape)."""
    x = np.asarray(x, dtype=np.float64)
    top = x.max(-1, keepdims=True)
    return x - top - np.log(np.exp(x - top).sum(-1, keepdims=True))


def margin_of(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(..., N, C) float64 logits, (N,) labels -> (..., N) ``z_y - logsumexp_{c != y} z_c``."""
    x = np.asarray(x, dtype=np.float64)
    idx = np.broadcast_to(labels[:, None], (*x.shape[:-1], 1))
    given = np.take_along_axis(x, idx, -1)[..., 0]
    other = x.copy()
    np.put_along_axis(other, idx, -np.inf, -1)
    top = other.max(-1, keepdims=True)
    rest = top[..., 0] + np.log(np.exp(other - top).sum(-1))
    return given - rest


def outcomes(logits, labels, *, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Correctness (M, N) bool and margin (M, N) float32 of every model on every example."""
    m, n, c = _shape(logits)
    labels = _labels(labels, n, c)
    correct = np.empty((m, n), dtype=bool)
    margin = np.empty((m, n), dtype=np.float32)
    for start, stop, x in _chunks(logits, chunk):
        correct[start:stop] = x.argmax(-1) == labels
        margin[start:stop] = margin_of(x, labels)
    return correct, margin


def out_of_sample_probabilities(logits, masks: np.ndarray, *, models: np.ndarray | None = None,
                                chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Mean softmax over the models that did not train on each example.

    ``logits`` (M, N, C) of the models on their training examples; ``masks`` (M, N) bool,
    ``masks[m, i]``: model m trained on example i; ``models``: the models used (default
    all). Returns probabilities (N, C) float64 and ``n_out`` (N,) int64, the number of
    models averaged; an example no used model left out gets the uniform distribution.
    """
    m, n, c = _shape(logits)
    masks = np.asarray(masks, dtype=bool)
    if masks.shape != (m, n):
        raise ContractError(f"masks {masks.shape} do not match logits ({m} models, {n} examples)")
    use = np.zeros(m, dtype=bool)
    use[np.arange(m) if models is None else np.asarray(models, dtype=np.int64)] = True
    total = np.zeros((n, c), dtype=np.float64)
    for start, stop, x in _chunks(logits, chunk):
        weight = (~masks[start:stop] & use[start:stop, None]).astype(np.float64)  # (S, N)
        total += np.einsum("sn,snc->nc", weight, np.exp(log_softmax(x)))
    n_out = (~masks & use[:, None]).sum(0).astype(np.int64)
    empty = n_out == 0
    total[empty] = 1.0
    return total / np.where(empty, c, n_out)[:, None], n_out
