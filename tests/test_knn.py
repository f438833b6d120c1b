"""k-NN votes against naive per-example loops; baselines against plain numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from multirun.contracts import ContractError
from multirun.kernel import ShardedLogits
from multirun.knn import (
    ensemble_predict,
    knn_predict,
    model_subsets,
    probability_correct,
    score_model_subsets,
    single_model_accuracies,
)


def naive_majority(labels_row):
    """Most frequent label; among tied modes the smallest one."""
    counts = {}
    for y in labels_row:
        counts[int(y)] = counts.get(int(y), 0) + 1
    best = max(counts.values())
    return min(y for y, n in counts.items() if n == best)


def naive_weighted(labels_row, sims_row, power, num_classes):
    scores = [0.0] * num_classes
    for y, s in zip(labels_row, sims_row, strict=True):
        scores[int(y)] += float(s) ** power / len(labels_row)
    best = max(scores)
    return min(c for c in range(num_classes) if scores[c] == best)


@pytest.fixture
def votes_data():
    rng = np.random.default_rng(0)
    nq, nt, kmax, c = 200, 50, 9, 4
    index = np.stack([rng.choice(nt, kmax, replace=False) for _ in range(nq)]).astype(np.int32)
    # few distinct similarity values so that weighted ties happen too
    sim = -np.sort(-rng.choice([0.25, 0.5, 0.75, 1.0], size=(nq, kmax)), axis=1).astype(np.float32)
    train_labels = rng.integers(0, c, nt)
    return index, sim, train_labels, c


@pytest.mark.parametrize("k", [1, 2, 3, 4, 6, 9])
def test_majority_equals_naive_loop(votes_data, k):
    index, sim, labels, c = votes_data
    got = knn_predict(index, sim, labels, k=k, vote="majority", num_classes=c)
    want = [naive_majority(labels[index[i, :k]]) for i in range(len(index))]
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, want)


def test_majority_tie_rule_is_torch_mode_on_cpu(votes_data):
    """The reference predicts ``labels_train[nbrs].mode(1).values``: smallest tied mode."""
    index, sim, labels, c = votes_data
    ties = 0
    for k in (2, 3, 4, 6):
        nbr = labels[index[:, :k]]
        want = torch.from_numpy(nbr).mode(1).values.numpy()
        got = knn_predict(index, sim, labels, k=k, vote="majority", num_classes=c)
        np.testing.assert_array_equal(got, want)
        counts = np.stack([(nbr == y).sum(1) for y in range(c)], 1)
        ties += int(((counts == counts.max(1, keepdims=True)).sum(1) > 1).sum())
    assert ties > 50  # the comparison really exercised ties


@pytest.mark.parametrize("k,power", [(1, 4.0), (3, 4.0), (5, 1.0), (9, 4.0), (9, 0.0)])
def test_weighted_equals_naive_loop(votes_data, k, power):
    index, sim, labels, c = votes_data
    got = knn_predict(index, sim, labels, k=k, vote="weighted", power=power, num_classes=c)
    want = [naive_weighted(labels[index[i, :k]], sim[i, :k], power, c) for i in range(len(index))]
    np.testing.assert_array_equal(got, want)


def test_weighted_power_changes_the_vote():
    index = np.array([[0, 1, 2]], dtype=np.int32)
    sim = np.array([[0.9, 0.5, 0.5]], dtype=np.float32)
    labels = np.array([1, 0, 0])
    assert knn_predict(index, sim, labels, k=3, vote="majority", num_classes=2)[0] == 0
    assert knn_predict(index, sim, labels, k=3, vote="weighted", power=4, num_classes=2)[0] == 1
    assert knn_predict(index, sim, labels, k=3, vote="weighted", power=1, num_classes=2)[0] == 0


def test_knn_bad_input(votes_data):
    index, sim, labels, c = votes_data
    with pytest.raises(ContractError, match="k="):
        knn_predict(index, sim, labels, k=10, num_classes=c)
    with pytest.raises(ContractError, match="vote"):
        knn_predict(index, sim, labels, k=3, vote="median", num_classes=c)
    with pytest.raises(ContractError, match="labels"):
        knn_predict(index, sim, labels, k=3, num_classes=2)
    with pytest.raises(ContractError, match="power"):
        knn_predict(index, -sim, labels, k=3, vote="weighted", power=0.5, num_classes=c)


def test_baselines_equal_plain_numpy(tmp_path):
    rng = np.random.default_rng(1)
    logits = (rng.standard_normal((11, 30, 5)) * 2).astype(np.float16)
    labels = rng.integers(0, 5, 30)
    right = logits.astype(np.float32).argmax(-1) == labels  # (M, N)
    want_ens = logits.astype(np.float64).mean(0).argmax(1)
    np.testing.assert_array_equal(ensemble_predict(logits), want_ens)
    np.testing.assert_allclose(single_model_accuracies(logits, labels), right.mean(1))
    np.testing.assert_allclose(probability_correct(logits, labels), right.mean(0))
    assert single_model_accuracies(logits, labels).dtype == np.float64
    # the same through shards (streamed in chunks)
    np.save(tmp_path / "a.npy", logits[:4])
    np.save(tmp_path / "b.npy", logits[4:])
    shards = ShardedLogits([tmp_path / "a.npy", tmp_path / "b.npy"])
    np.testing.assert_array_equal(ensemble_predict(shards), want_ens)
    np.testing.assert_allclose(probability_correct(shards, labels), right.mean(0))


def test_model_subsets():
    subsets = model_subsets(10, [2, 5, 10], repeats=3, seed=7)
    assert [s for s, _ in subsets] == [2, 2, 2, 5, 5, 5, 10]
    for size, sel in subsets:
        assert len(sel) == size == len(np.unique(sel)) and (np.diff(sel) > 0).all()
        assert sel.min() >= 0 and sel.max() < 10
    np.testing.assert_array_equal(subsets[-1][1], np.arange(10))
    assert len({tuple(s) for _, s in subsets[3:6]}) > 1  # repeats differ
    again = model_subsets(10, [5], repeats=3, seed=7)  # independent of the other sizes
    for (_, a), (_, b) in zip(again, subsets[3:6], strict=True):
        np.testing.assert_array_equal(a, b)
    for sizes in ([11], [1], [2, 12]):
        with pytest.raises(ContractError, match="kernel.model_counts"):
            model_subsets(10, sizes, repeats=2, seed=0)


def test_score_model_subsets_rows(tmp_path):
    rng = np.random.default_rng(2)
    c, nt, nq = 3, 40, 12
    y_train, y_test = rng.integers(0, c, nt), rng.integers(0, c, nq)
    # models that mostly agree with the labels, so the kernel has structure
    train = (np.eye(c)[y_train] * 3 + rng.standard_normal((6, nt, c))).astype(np.float16)
    test = (np.eye(c)[y_test] * 3 + rng.standard_normal((6, nq, c))).astype(np.float16)
    np.save(tmp_path / "train.npy", train)
    np.save(tmp_path / "test.npy", test)
    rows = score_model_subsets(ShardedLogits([tmp_path / "test.npy"]),
                               ShardedLogits([tmp_path / "train.npy"]), y_train, y_test,
                               sizes=[3, 6], repeats=2, seed=0, ks=[1, 3], progress=False)
    knn_rows = [r for r in rows if r["method"] == "kernel"]
    assert len(knn_rows) == 3 * 2 * 2  # 3 subsets x 2 votes x 2 k
    assert {r["method"] for r in rows} == {"kernel", "ensemble", "single"}
    full = [r for r in rows if r["method"] == "ensemble" and r["n_models"] == 6]
    assert full[0]["accuracy"] == np.mean(ensemble_predict(test) == y_test)
    assert all(0 <= r["accuracy"] <= 1 for r in rows)
