"""k-NN votes on kernel neighbours, and the ensemble / single-model baselines.

Votes (``k`` nearest train examples of each query, from :func:`multirun.kernel.neighbours`):

* ``majority``: the most frequent label among the k; ties go to the smallest label.
  That is what the reference's ``labels_train[nbrs].mode(1).values`` does on the CPU
  (checked against ``torch.mode`` in ``tests/test_knn.py``).
* ``weighted``: weights ``similarity ** power``; class score = mean over the k of
  the weighted one-hot labels; argmax, ties to the smallest label (the write-up's
  95.53% setting: k=20, power=4).

Baselines take logits ``(M, N, C)`` as an array (memory-mapped is fine) or a
:class:`multirun.kernel.ShardedLogits`, streamed over models in chunks.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from multirun.contracts import ContractError

VOTES = ("majority", "weighted")
CHUNK = 64  # models per chunk when streaming baselines over (M, N, C) logits


def _check_labels(labels: np.ndarray, num_classes: int, what: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise ContractError(f"{what}: expected (N,) integer labels, got {labels.shape} "
                            f"{labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ContractError(f"{what}: labels outside [0, {num_classes})")
    return labels.astype(np.int64, copy=False)


def knn_predict(index: np.ndarray, similarity: np.ndarray, train_labels: np.ndarray, *, k: int,
                vote: str = "majority", power: float = 4.0, num_classes: int) -> np.ndarray:
    """Predicted labels (Nq,) int64 from the first ``k`` columns of sorted neighbours.

    ``index`` (Nq, K) int, ``similarity`` (Nq, K) float, sorted descending, K >= k;
    ``train_labels`` (Nt,) int in [0, num_classes).
    """
    index, similarity = np.asarray(index), np.asarray(similarity)
    if index.ndim != 2 or index.shape != similarity.shape:
        raise ContractError(f"knn: index {index.shape} and similarity {similarity.shape} must both "
                            "be (Nq, K)")
    if not 1 <= k <= index.shape[1]:
        raise ContractError(f"knn.k: k={k} must lie in [1, {index.shape[1]}] (kernel.k_max "
                            "neighbours were kept)")
    if vote not in VOTES:
        raise ContractError(f"knn vote {vote!r} is not one of {VOTES}")
    labels = _check_labels(train_labels, num_classes, "train labels")
    if index.size and (index.min() < 0 or index.max() >= len(labels)):
        raise ContractError(f"knn: neighbour indices outside [0, {len(labels)}) train examples")
    classes = np.arange(num_classes)
    onehot = labels[index[:, :k]][..., None] == classes  # (Nq, k, C) bool
    if vote == "majority":
        scores = onehot.sum(1)
    else:
        sim = similarity[:, :k].astype(np.float64)
        if float(power) != int(power) and (sim < 0).any():
            raise ContractError(f"knn.power={power}: negative similarities have no real "
                                "non-integer power; use an integer power")
        weights = sim ** float(power)
        scores = (onehot * weights[..., None]).mean(1)
    return scores.argmax(1).astype(np.int64)  # argmax: first maximum = smallest tied label


def _float_chunks(logits, chunk: int = CHUNK) -> Iterator[np.ndarray]:
    """Stream (m, N, C) float32 chunks of models from an array or ShardedLogits."""
    if hasattr(logits, "models") and hasattr(logits, "num_models"):
        for start in range(0, logits.num_models, chunk):
            idx = np.arange(start, min(start + chunk, logits.num_models))
            yield logits.models(idx).astype(np.float32)
        return
    if np.ndim(logits) != 3:
        raise ContractError(f"expected logits (M, N, C), got shape {np.shape(logits)}")
    for start in range(0, len(logits), chunk):
        yield np.asarray(logits[start : start + chunk], dtype=np.float32)


def _shape(logits) -> tuple[int, int, int]:
    if hasattr(logits, "num_models"):
        return logits.num_models, logits.num_examples, logits.num_classes
    return tuple(np.shape(logits))  # type: ignore[return-value]


ENSEMBLE_MEANS = ("fp32", "fp16")
ROW_BLOCK_BYTES = 1 << 25  # fp16 mean: all models of a block of examples at a time (32 MB)


def ensemble_predict(logits, mean: str = "fp32") -> np.ndarray:
    """Logit-averaging ensemble: (M, N, C) -> (N,) int64 argmax of the mean logits.

    ``mean="fp32"``: summed in float32 chunk by chunk (breaks fewer near-ties).
    ``mean="fp16"``: exactly the write-up's ``obj['logits'].mean(0).argmax(1)`` on the fp16
    tensor (torch's mean, rounded to fp16, ties to the smaller class), evaluated on blocks of
    examples with every model (torch reduces each element the same way whatever the block).
    It reproduces the write-up's ensemble numbers; fp32 differs by one example in 10,000 on
    the published 500 runs.
    """
    if mean not in ENSEMBLE_MEANS:
        raise ContractError(f"knn.ensemble_mean: {mean!r} is not one of {ENSEMBLE_MEANS}")
    m, n, c = _shape(logits)
    if mean == "fp16":
        import torch

        rows = max(1, ROW_BLOCK_BYTES // max(1, 2 * m * c))
        out = np.empty(n, dtype=np.int64)
        x = np.empty((m, min(rows, n), c), dtype=np.float16)
        for start in range(0, n, rows):
            block = slice(start, min(start + rows, n))
            width = block.stop - block.start
            for first in range(0, m, CHUNK):  # gathered CHUNK models at a time: the pages of a
                idx = np.arange(first, min(first + CHUNK, m))  # memory map read so far are
                if hasattr(logits, "num_models"):              # released after each gather
                    x[idx, :width] = logits.models(idx, rows=block)
                else:
                    x[idx, :width] = logits[first : idx[-1] + 1, block]
            out[block] = torch.from_numpy(x[:, :width]).mean(0).argmax(1).numpy()
        return out
    total = np.zeros((n, c), dtype=np.float32)
    for x in _float_chunks(logits):
        total += x.sum(0, dtype=np.float32)
    return (total / np.float32(m)).argmax(1).astype(np.int64)


def single_model_accuracies(logits, labels: np.ndarray) -> np.ndarray:
    """Accuracy of each model: (M, N, C), (N,) -> (M,) float64."""
    _, n, c = _shape(logits)
    labels = _check_labels(labels, c, "labels")
    if len(labels) != n:
        raise ContractError(f"labels ({len(labels)}) and logits ({n} examples) disagree")
    return np.concatenate([(x.argmax(-1) == labels).mean(1) for x in _float_chunks(logits)])


def probability_correct(logits, labels: np.ndarray) -> np.ndarray:
    """Per-example fraction of models whose argmax is the label: (M, N, C) -> (N,) float64."""
    m, n, c = _shape(logits)
    labels = _check_labels(labels, c, "labels")
    if len(labels) != n:
        raise ContractError(f"labels ({len(labels)}) and logits ({n} examples) disagree")
    right = np.zeros(n, dtype=np.int64)
    for x in _float_chunks(logits):
        right += (x.argmax(-1) == labels).sum(0)
    return right / m


def model_subsets(num_models: int, sizes: Sequence[int], repeats: int, seed: int
                  ) -> list[tuple[int, np.ndarray]]:
    """Random model subsets for accuracy vs number of models.

    For each size: ``repeats`` subsets drawn without replacement (sorted int64
    indices), or the single full set when ``size == num_models``. Each size's
    draws depend only on (seed, size), so adding a size leaves the others unchanged.
    """
    if repeats < 1:
        raise ContractError(f"kernel.subsets must be >= 1, got {repeats}")
    out = []
    for size in sizes:
        size = int(size)
        if not 2 <= size <= num_models:
            raise ContractError(f"kernel.model_counts: size {size} must lie in [2, {num_models}] "
                                f"({num_models} models are available)")
        if size == num_models:
            out.append((size, np.arange(num_models, dtype=np.int64)))
            continue
        rng = np.random.default_rng([seed, size])
        for _ in range(repeats):
            sel = np.sort(rng.choice(num_models, size, replace=False)).astype(np.int64)
            out.append((size, sel))
    return out


def subset_count(config: Mapping[str, Any]) -> int | None:
    """Model subsets :func:`model_subsets` draws under ``config`` (``kernel.model_counts``,
    ``kernel.subsets``, ``train.seeds``); None with published or local logits (their files
    set the model count)."""
    if "published" in config or "local_logits" in config:
        return None
    kern, models = config["kernel"], config["train"]["seeds"]
    return sum(1 if size == models else kern["subsets"] for size in kern["model_counts"])


def score_rows(config: Mapping[str, Any]) -> int | None:
    """Rows of ``knn/{variant}/scores.csv`` under ``config``: per model subset, one per
    (vote, k) and the two baselines (:func:`score_subset`). None with published logits."""
    subsets = subset_count(config)
    return subsets and subsets * (len(VOTES) * len(config["knn"]["k"]) + 2)


def subset_numbers(sizes: Sequence[int]) -> list[int]:
    """Number of each subset among those of its size, in order: [2, 2, 4, 2] -> [0, 1, 0, 2]."""
    seen: dict[int, int] = {}
    numbers = []
    for size in sizes:
        seen[int(size)] = seen.get(int(size), -1) + 1
        numbers.append(seen[int(size)])
    return numbers


class ModelSubset:
    """Models ``sel`` of a ShardedLogits, streamed like one (nothing is copied until read).

    Pass it to :func:`ensemble_predict`, :func:`single_model_accuracies` or
    :func:`probability_correct` instead of ``logits.models(sel)`` to keep memory bounded.
    """

    def __init__(self, logits, sel: np.ndarray):
        self.logits, self.sel = logits, sel
        self.num_models = len(sel)
        self.num_examples, self.num_classes = logits.num_examples, logits.num_classes

    def models(self, index: np.ndarray, rows: slice | None = None) -> np.ndarray:
        return self.logits.models(self.sel[np.asarray(index)], rows=rows)


def accuracy(pred: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of ``pred == labels``."""
    return float(np.mean(np.asarray(pred) == np.asarray(labels)))


Z95 = 1.959963984540054  # two-sided 95% normal quantile


def wilson(acc: float, n: int, z: float = Z95) -> tuple[float, float]:
    """95% Wilson score interval of an accuracy ``acc`` measured on ``n`` examples."""
    if n <= 0:
        return float("nan"), float("nan")
    centre = (acc + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(acc * (1 - acc) / n + z * z / (4 * n * n))
    return max(0.0, float(centre - half)), min(1.0, float(centre + half))


def interval95(values: Sequence[float]) -> tuple[float, float]:
    """Mean and half-width of the 95% Student-t interval of the mean of ``values`` (0 for one)."""
    from scipy import stats

    v = np.asarray(values, dtype=np.float64)
    if len(v) < 2:
        return float(v.mean()), 0.0
    return float(v.mean()), float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))


def series_rows(rows: Sequence[dict], *, method: str, vote: str = "", k: int = 0) -> list[dict]:
    """The scores.csv rows of one (method, vote, k) series (k 0 / vote "" for the baselines)."""
    def key_k(r: dict) -> int:
        return int(r["k"]) if str(r.get("k", "")).strip() not in ("", "None") else 0

    sel = [r for r in rows if r["method"] == method and (r.get("vote") or "") == vote
           and key_k(r) == k]
    if not sel:
        raise ContractError(f"no accuracy rows for method={method!r} vote={vote!r} k={k}")
    return sel


def curve_ci(rows: Sequence[dict], *, method: str, vote: str = "", k: int = 0
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(n_models, mean, ci_low, ci_high) of one (method, vote, k) series of scores.csv rows.

    The mean is over the random subsets of each size; the 95% interval is Student's t
    interval of that mean over the subsets when there are several, and the Wilson
    interval of the test-set accuracy (columns ``ci_low``/``ci_high``) when there is one
    (the full set of models).
    """
    sel = series_rows(rows, method=method, vote=vote, k=k)
    sizes = np.array(sorted({int(r["n_models"]) for r in sel}))
    mean, lo, hi = [], [], []
    for size in sizes:
        group = [r for r in sel if int(r["n_models"]) == size]
        acc = np.array([float(r["accuracy"]) for r in group])
        mid, half = interval95(acc)
        mean.append(mid)
        if len(acc) > 1:
            lo.append(max(0.0, mid - half))  # an accuracy lies in [0, 1]
            hi.append(min(1.0, mid + half))
        else:
            lo.append(float(group[0].get("ci_low") or acc[0]))
            hi.append(float(group[0].get("ci_high") or acc[0]))
    return sizes, np.array(mean), np.array(lo), np.array(hi)


def baseline_rows(logits, test_labels: np.ndarray, *, ensemble_mean: str = "fp32") -> list[dict]:
    """The ``ensemble`` and ``single`` (mean single-model) rows of one model subset.

    The single row's interval is the write-up author's: mean +- 1.96 sd / sqrt(M) over the
    M models' accuracies (which models were trained); the ensemble's is Wilson's over the
    test examples.
    """
    ensemble = _with_ci({"method": "ensemble", "k": "", "vote": "", "accuracy": accuracy(
        ensemble_predict(logits, ensemble_mean), test_labels)}, len(test_labels))
    each = single_model_accuracies(logits, test_labels)
    half = Z95 * each.std(ddof=1) / np.sqrt(len(each)) if len(each) > 1 else 0.0
    single = {"method": "single", "k": "", "vote": "", "accuracy": float(each.mean()),
              "ci_low": max(0.0, float(each.mean() - half)),
              "ci_high": min(1.0, float(each.mean() + half))}
    return [ensemble, single]


def _with_ci(row: dict, n: int) -> dict:
    lo, hi = wilson(row["accuracy"], n)
    return {**row, "ci_low": lo, "ci_high": hi}


def score_subset(index: np.ndarray, similarity: np.ndarray, logits, train_labels: np.ndarray,
                 test_labels: np.ndarray, *, ks: Sequence[int], power: float = 4.0,
                 votes: Sequence[str] = VOTES, ensemble_mean: str = "fp32") -> list[dict]:
    """Rows of accuracy for one model subset: kernel k-NN per (vote, k), ensemble, single.

    ``index``/``similarity`` (Nq, k_max) are that subset's kernel neighbours; ``logits`` its
    (M, Nq, C) test logits (array, :class:`ModelSubset` or ShardedLogits, streamed). Each row
    has ``method`` (kernel | ensemble | single), ``k`` and ``vote`` ("" for the baselines),
    ``accuracy`` in [0, 1] and its 95% interval ``ci_low``, ``ci_high`` (Wilson's over the
    test examples; for ``single`` see :func:`baseline_rows`): the columns of the workflow's
    ``knn/{variant}/scores.csv``.
    """
    c = _shape(logits)[2]
    rows = []
    for vote in votes:
        for k in ks:
            pred = knn_predict(index, similarity, train_labels, k=k, vote=vote, power=power,
                               num_classes=c)
            rows.append(_with_ci({"method": "kernel", "k": k, "vote": vote,
                                  "accuracy": accuracy(pred, test_labels)}, len(test_labels)))
    return rows + baseline_rows(logits, test_labels, ensemble_mean=ensemble_mean)


def ensemble_scores(logits, labels: np.ndarray, *, sizes: Sequence[int], repeats: int, seed: int,
                    ensemble_mean: str = "fp32") -> list[dict]:
    """Ensemble and single-model accuracy vs number of models, streamed (no kernel).

    ``logits`` (M, N, C) ShardedLogits (e.g. the 60k set's memory map), ``labels`` (N,).
    Rows as :func:`score_subset`'s baselines, with ``n_models`` and ``subset``.
    """
    rows: list[dict] = []
    subsets = model_subsets(logits.num_models, sizes, repeats, seed)
    for (size, sel), number in zip(subsets, subset_numbers([s for s, _ in subsets]), strict=True):
        scored = baseline_rows(ModelSubset(logits, sel), labels, ensemble_mean=ensemble_mean)
        rows += [{"n_models": size, "subset": number, **r} for r in scored]
        print(f"{size} models, subset {number}: ensemble {rows[-2]['accuracy']:.4f}, "
              f"single {rows[-1]['accuracy']:.4f}", flush=True)
    return rows


def score_model_subsets(test, train, train_labels: np.ndarray, test_labels: np.ndarray, *,
                        sizes: Sequence[int], repeats: int, seed: int, ks: Sequence[int],
                        power: float = 4.0, votes: Sequence[str] = VOTES,
                        ensemble_mean: str = "fp32", **engine) -> list[dict]:
    """Accuracy vs number of models in memory: neighbours then :func:`score_subset` per subset.

    ``test``/``train``: :class:`multirun.kernel.ShardedLogits`; ``engine``: keyword
    arguments of :func:`multirun.kernel.subset_neighbours` (options, log_softmax, ...).
    Rows of :func:`score_subset` with ``n_models`` and ``subset`` (index among its size).
    """
    from multirun.kernel import subset_neighbours

    subsets = model_subsets(test.num_models, sizes, repeats, seed)
    index, sim = subset_neighbours(test, train, [sel for _, sel in subsets], k=max(ks), **engine)
    rows: list[dict] = []
    for r, ((size, sel), number) in enumerate(zip(subsets, subset_numbers([s for s, _ in subsets]),
                                                  strict=True)):
        scored = score_subset(index[r], sim[r], ModelSubset(test, sel), train_labels, test_labels,
                              ks=ks, power=power, votes=votes,
                              ensemble_mean=ensemble_mean)
        rows += [{"n_models": size, "subset": number, **row} for row in scored]
    return rows


def cosine_neighbours(query_features: np.ndarray, key_features: np.ndarray, *, k: int,
                      block: int = 4096, device: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Top-k keys by cosine similarity of features (the penultimate-feature baseline).

    (Nq, D), (Nt, D) any float dtype -> index (Nq, k) int32, similarity (Nq, k) float32,
    sorted descending. All-zero feature rows have similarity 0 to everything.
    """
    import torch

    from multirun.contracts import pick_device

    if query_features.ndim != 2 or key_features.ndim != 2 \
            or query_features.shape[1] != key_features.shape[1]:
        raise ContractError(f"cosine_neighbours: features {query_features.shape} and "
                            f"{key_features.shape} must be (N, D) with the same D")
    if not 1 <= k <= len(key_features):
        raise ContractError(f"k={k} must lie in [1, {len(key_features)}]")
    dev = pick_device(device)

    def unit(x: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.array(x, dtype=np.float32)).to(dev)
        if not bool(torch.isfinite(t).all()):
            raise ContractError("cosine_neighbours: features hold NaN or inf")
        return t / t.norm(dim=1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)

    keys = unit(key_features)
    nq = len(query_features)
    index = np.empty((nq, k), dtype=np.int32)
    similarity = np.empty((nq, k), dtype=np.float32)
    with torch.no_grad():
        for start in range(0, nq, block):
            stop = min(start + block, nq)
            top = torch.topk(unit(query_features[start:stop]) @ keys.T, k, dim=1)
            index[start:stop] = top.indices.cpu().numpy()
            similarity[start:stop] = top.values.cpu().numpy()
    return index, similarity
