"""Studies (issue 13): data variants, early stopping, scores, and the three workflow targets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import csv_rows, planned_jobs, private_copy, shared_run, write_config

from multirun import train
from multirun.contracts import ContractError
from multirun.studies import label_errors as le
from multirun.studies import memorization, timing, variants


def fake_dataset(n=200, nt=50, c=10, seed=0):
    rng = np.random.default_rng(seed)
    return {"x_train": rng.standard_normal((n, 8)).astype(np.float32),
            "y_train": rng.integers(0, c, n).astype(np.int64),
            "x_test": rng.standard_normal((nt, 8)).astype(np.float32),
            "y_test": rng.integers(0, c, nt).astype(np.int64),
            "classes": np.array([str(i) for i in range(c)])}


# ----------------------------------------------------------------------------- variants


def test_real_variant_is_the_data_unchanged():
    ds = fake_dataset()
    out = variants.memorization_variant(ds, "real", fraction=1.0, seed=0)
    for k in ("x_train", "y_train", "x_test", "y_test"):
        assert np.array_equal(out[k], ds[k])
    assert not out["corrupted"].any()


@pytest.mark.parametrize("kind", ["randx", "randy"])
def test_rand_variants_corrupt_exactly_the_fraction_once(kind):
    ds = fake_dataset()
    out = variants.memorization_variant(ds, kind, fraction=0.3, seed=5)
    mask = out["corrupted"]
    assert mask.sum() == 60
    x_changed = (out["x_train"] != ds["x_train"]).any(1)
    if kind == "randx":
        assert np.array_equal(x_changed, mask)
        assert np.array_equal(out["y_train"], ds["y_train"])
        noise = out["x_train"][mask]
        assert abs(noise.mean()) < 0.15 and 0.85 < noise.std() < 1.15  # N(0, 1)
    else:
        assert not x_changed.any()
        assert np.array_equal(out["y_train"][~mask], ds["y_train"][~mask])
        assert (out["y_train"][mask] != ds["y_train"][mask]).mean() > 0.7  # ~90% by chance
    assert np.array_equal(out["x_test"], ds["x_test"]) and np.array_equal(out["y_test"], ds["y_test"])
    again = variants.memorization_variant(ds, kind, fraction=0.3, seed=5)  # drawn once: same draw
    assert np.array_equal(again["x_train"], out["x_train"])
    assert np.array_equal(again["y_train"], out["y_train"])
    other = variants.memorization_variant(ds, kind, fraction=0.3, seed=6)
    assert not np.array_equal(other["corrupted"], mask)


def test_noisy_copies_keep_clean_examples_and_split_test():
    ds = fake_dataset()
    out = variants.noisy_copies(ds, 3, clean_examples=40, validation=10, seed=1)
    assert out["x_train"].shape == (160, 8) and out["clean"].sum() == 40
    groups = out["x_train"].reshape(40, 4, 8)
    assert np.array_equal(groups, np.repeat(groups[:, :1], 4, axis=1))  # copies of the same input
    clean_x = out["x_train"][out["clean"]]
    rows = [int(np.flatnonzero((ds["x_train"] == x).all(1))[0]) for x in clean_x]
    assert np.array_equal(out["y_train"][out["clean"]], ds["y_train"][rows])
    assert len(out["y_val"]) == 10 and len(out["y_test"]) == 40
    val_test = np.concatenate([out["x_val"], out["x_test"]])
    assert sorted(map(tuple, val_test.tolist())) == sorted(map(tuple, ds["x_test"].tolist()))
    zero = variants.noisy_copies(ds, 0, clean_examples=40, validation=10, seed=1)
    assert np.array_equal(zero["x_train"], clean_x)  # the same clean examples at every alpha
    assert np.array_equal(zero["x_val"], out["x_val"])
    with pytest.raises(ContractError, match="clean_examples"):
        variants.noisy_copies(ds, 1, clean_examples=500, validation=10, seed=1)


def test_label_errors_move_exactly_the_fraction_to_another_class():
    ds = fake_dataset()
    out = variants.label_errors(ds, noise=0.25, seed=0)
    mask = out["corrupted"]
    assert mask.sum() == 50
    assert (out["y_train"][mask] != ds["y_train"][mask]).all()
    assert np.array_equal(out["y_train"][~mask], ds["y_train"][~mask])
    assert np.array_equal(out["y_clean"], ds["y_train"])


# ----------------------------------------------------------------------------- early stopping


def test_early_stopping_keeps_each_seeds_best_epoch_exactly():
    ds = fake_dataset(n=300, nt=60, c=3, seed=2)
    x, y = torch.from_numpy(ds["x_train"]).double(), torch.from_numpy(ds["y_train"])
    xv, yv = torch.from_numpy(ds["x_test"]).double(), torch.from_numpy(ds["y_test"])
    spec = {"name": "mlp", "width": 8, "depth": 1}
    recipe = {"epochs": 12, "batch_size": 32, "lr": 0.05, "momentum": 0.9, "patience": 2,
              "schedule": "constant", "warmup_epochs": 0}
    ckpt = train.train_shard(x, y, [0, 1, 2], spec, recipe, "cpu", progress=False,
                             validation=(xv, yv))
    hist = ckpt["history"]
    run = hist["val_acc"].shape[1]
    assert hist["train_loss"].shape == (3, run)
    for i in range(3):
        best = int(hist["best_epoch"][i])
        acc = hist["val_acc"][i]
        assert acc[best] == acc[: best + 1].max() and (acc[best + 1: best + 3] <= acc[best]).all()
        # the kept state is the state after epoch best + 1 of a plain run (constant lr) of
        # the same shard (a shard of one seed may round differently in the last bit)
        ref = train.train_shard(x, y, [0, 1, 2], spec, {**recipe, "epochs": best + 1,
                                                        "patience": 0}, "cpu", progress=False)
        for k, v in ref["state"].items():
            torch.testing.assert_close(ckpt["state"][k][i], v[i], rtol=0, atol=0)
    with pytest.raises(ContractError, match="patience"):
        train.train_shard(x, y, [0], spec, recipe, "cpu", progress=False)


# ----------------------------------------------------------------------------- scores


def test_kernel_disagreement_matches_a_plain_loop():
    rng = np.random.default_rng(0)
    n, kmax, k, power = 30, 6, 4, 2.0
    index = rng.integers(0, n, (n, kmax))
    sim = rng.uniform(-0.2, 1.0, (n, kmax)).astype(np.float32)
    labels = rng.integers(0, 3, n)
    got = le.kernel_disagreement(index, sim, labels, k=k, power=power)
    for i in range(n):
        num = den = 0.0
        for j in range(k):
            w = max(float(sim[i, j]), 0.0) ** power
            den += w
            num += w * (labels[index[i, j]] != labels[i])
        assert got[i] == pytest.approx(num / den, abs=1e-12)


def test_average_precision_matches_its_definition():
    score = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    truth = np.array([True, False, True, False, False, True])
    # relevant at ranks 1, 3, 6: precisions 1/1, 2/3, 3/6
    assert le.average_precision(score, truth) == pytest.approx((1 + 2 / 3 + 3 / 6) / 3)
    assert le.average_precision(truth.astype(float), truth) == 1.0
    precision, recall = le.precision_recall(score, truth)
    assert recall[-1] == 1.0 and precision[-1] == pytest.approx(0.5)


def test_margin_and_loss_scores_match_plain_formulas():
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((3, 5, 4))
    labels = rng.integers(0, 4, 5)
    got = le.ensemble_margin_score(logits.astype(np.float32), labels)
    p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    p = p.mean(0)
    for i in range(5):
        others = [p[i, c] for c in range(4) if c != labels[i]]
        assert got[i] == pytest.approx(-(p[i, labels[i]] - max(others)), abs=1e-6)
    loss = le.loss_score(logits[0], labels)
    ref = -np.log(np.exp(logits[0][np.arange(5), labels]) / np.exp(logits[0]).sum(1))
    np.testing.assert_allclose(loss, ref, rtol=1e-12)


def test_pcorrect_summary_and_extremes():
    logits = np.zeros((4, 3, 2), dtype=np.float32)
    logits[:, 0, 1] = 1        # example 0: every model says 1
    logits[:2, 1, 1] = 1       # example 1: half the models say 1
    labels = np.array([1, 1, 1])
    p = memorization.pcorrect(logits, labels)
    assert p.tolist() == [1.0, 0.5, 0.0]
    row = memorization.summary_row(p, variant="real", epochs=1, models=4, chance=0.5)
    assert row["easy"] == pytest.approx(1 / 3) and row["hard"] == pytest.approx(1 / 3)
    hard, easy = memorization.extremes(p, 1)
    assert hard.tolist() == [2] and easy.tolist() == [0]


def test_seeds_per_second_reads_benchmark_files(tmp_path):
    for i, s in enumerate((2.0, 6.0)):
        (tmp_path / f"{i}.tsv").write_text(f"s\th:m:s\tmax_rss\n{s}\t0:00:0{int(s)}\t100\n")
    assert timing.seeds_per_second([tmp_path / "0.tsv", tmp_path / "1.tsv"], 16) == (8.0, 2.0)
    (tmp_path / "bad.tsv").write_text("nothing\n")
    with pytest.raises(ContractError, match="bad.tsv"):
        timing.benchmark_seconds(tmp_path / "bad.tsv")


# ----------------------------------------------------------------------------- workflow

TARGETS = ("memorization", "label_noise", "label_errors")


@pytest.fixture(scope="module")
def studies_run(tmp_path_factory):
    return shared_run(tmp_path_factory, "studies_run", *TARGETS)


@pytest.fixture
def studies_copy(studies_run, tmp_path):
    return private_copy(studies_run, tmp_path)


@pytest.mark.workflow
def test_study_targets_produce_their_figures_and_tables(studies_run):
    workdir, cfg = studies_run
    res = workdir / "results"
    for name in ("memorization_pcorrect", "memorization_extremes", "label_noise_accuracy",
                 "label_errors_pr"):
        assert (res / "figures" / f"{name}.png").stat().st_size > 10_000
    p = np.load(res / "studies" / "memorization" / "pcorrect.npz")
    assert p["p_real_e1"].shape == (240,) and set(p["epochs"].tolist()) == {1, 2}
    mem = csv_rows(res / "studies" / "memorization" / "summary.csv")
    assert {(r["variant"], r["epochs"]) for r in mem} == {
        (v, e) for v in ("real", "randx", "randy") for e in ("1", "2")}
    assert all(float(r["seeds_per_second"]) > 0 and r["models"] == "2" for r in mem)
    noise = csv_rows(res / "studies" / "label_noise" / "accuracy.csv")
    assert len(noise) == 2 * 2 * 2  # architectures x alphas x seeds
    assert all(1 <= int(r["best_epoch"]) <= int(r["epochs_run"]) <= 4 for r in noise)
    err = csv_rows(res / "studies" / "label_errors" / "scores.csv")
    assert {r["method"] for r in err} == {"kernel", "margin", "loss"}
    assert all(0 <= float(r["average_precision"]) <= 1 for r in err)
    nb = np.load(res / "studies" / "label_errors" / "kernel" / "neighbours.npz")
    assert nb["index"].shape == (3, 240, 3)  # 2 subsets of 2, the full 4; train-to-train
    assert not (nb["index"] == np.arange(240)[None, :, None]).any()  # self excluded


@pytest.mark.workflow
def test_studies_are_not_in_the_default_run(studies_run):
    workdir, _ = studies_run
    assert planned_jobs(workdir, *TARGETS) == {}
    jobs = planned_jobs(workdir)  # the default target: the main run only
    assert jobs and not any(r.startswith(("memorization", "label_", "study_", "figure_label",
                                          "figure_memorization")) for r in jobs)


@pytest.mark.workflow
@pytest.mark.parametrize("edit, expected", [
    (lambda c: c["studies"]["memorization"]["recipe"].update(lr=0.02),
     {"memorization_train": 6, "memorization_logits": 6, "memorization_summary": 1,
      "figure_memorization": 1, "memorization": 1}),
    (lambda c: c["studies"]["memorization"].update(randx_fraction=0.5),
     {"study_data": 1, "memorization_train": 2, "memorization_logits": 2,
      "memorization_summary": 1, "figure_memorization": 1, "memorization": 1}),
    (lambda c: c["studies"]["label_noise"]["architectures"]["conv"].update(width=6),
     {"label_noise_train": 2, "label_noise_logits": 2, "label_noise_summary": 1,
      "figure_label_noise": 1, "label_noise": 1}),
    # one batch size for all alphas: alpha 0's batch is unchanged, only alpha 2 retrains
    (lambda c: c["studies"]["label_noise"].update(batch_per_clean=False),
     {"label_noise_train": 2, "label_noise_logits": 2, "label_noise_summary": 1,
      "figure_label_noise": 1, "label_noise": 1}),
    # k=4: Snakemake compares a rule's params as a set of values without their names,
    # so a new value equal to another parameter's (subsets=2, chunk_models=3) goes unseen
    (lambda c: c["studies"]["label_errors"].update(k=4),
     {"label_errors_kernel": 1, "label_errors_scores": 1, "figure_label_errors": 1,
      "label_errors": 1}),
])
def test_one_study_setting_reruns_that_study_only(studies_copy, edit, expected):
    workdir, cfg = studies_copy
    edit(cfg)
    write_config(workdir, cfg)
    assert planned_jobs(workdir, *TARGETS) == expected
