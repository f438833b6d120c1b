"""Subset training in the workflow (target subsets): masks, config checks, outputs, caching."""


import numpy as np
import pytest
import torch
from conftest import csv_rows, planned_jobs, private_copy, shared_run, snakemake, write_config

from multirun import kernel, streams
from multirun.attribution import memorization, outcomes
from multirun.config import ConfigError, check
from multirun.studies import subsets as subsets_lib


def test_masks_depend_only_on_seed_alpha_and_size():
    a = streams.subset_mask(7, 0.5, 101)
    assert a.dtype == torch.bool and int(a.sum()) == round(0.5 * 101)
    assert torch.equal(a, streams.subset_mask(7, 0.5, 101))
    assert not torch.equal(a, streams.subset_mask(8, 0.5, 101))
    assert int(streams.subset_mask(7, 0.3, 101).sum()) == round(0.3 * 101)


@pytest.mark.parametrize("alpha", [0, 1.0, 1.5, -0.2])
def test_alpha_outside_the_open_unit_interval_is_named(alpha):
    with pytest.raises(ConfigError, match="subsets.alpha"):
        check({"subsets": {"alpha": alpha}})


def test_too_few_models_for_the_held_out_split_is_named():
    cfg = check({"subsets": {"seeds": 600, "heldout": 256, "validation": 256,
                             "model_counts": [128]}})
    with pytest.raises(ConfigError, match=r"subsets\.seeds: 600 seeds leave 88 training"):
        subsets_lib.check(cfg)
    cfg = check({"subsets": {"trak": {"model_counts": [128]}}})
    subsets_lib.check(cfg)  # a run that never builds subsets needs no full-data models
    with pytest.raises(ConfigError, match="subsets.trak.model_counts"):
        subsets_lib.check_full_data(cfg)
    with pytest.raises(ConfigError, match="subsets.heldout"):
        subsets_lib.split(10, 4, 5)


def test_split_is_seed_order_training_validation_heldout():
    s = subsets_lib.split(10, 3, 2)
    assert s["train"].tolist() == list(range(5))
    assert s["validation"].tolist() == [5, 6, 7] and s["heldout"].tolist() == [8, 9]


# ----------------------------------------------------------------------------- workflow


@pytest.fixture(scope="module")
def subsets_run(tmp_path_factory):
    return shared_run(tmp_path_factory, "subsets_run", "subsets")




@pytest.mark.workflow
def test_subsets_target_writes_masks_logits_tables_and_figures(subsets_run):
    workdir, cfg = subsets_run
    sub = cfg["subsets"]
    root = workdir / "results" / "subsets" / "0.5"
    masks, seeds = np.load(root / "masks.npy"), np.load(root / "seeds.npy")
    data = np.load(workdir / "results" / "data" / "dataset.npz")
    n = len(data["y_train"])
    assert masks.dtype == bool and masks.shape == (sub["seeds"], n)
    assert seeds.tolist() == list(range(sub["seeds"]))
    for s in (0, sub["seeds"] - 1):  # what trained is each seed's own subset_mask
        assert np.array_equal(masks[s], streams.subset_mask(s, sub["alpha"], n).numpy())
    shards = sorted((root / "logits").iterdir())
    assert len(shards) == sub["seeds"] // sub["shard_size"]
    logits = kernel.ShardedLogits([p / "train.npy" for p in shards])
    assert logits.num_models == sub["seeds"] and logits.dtype == np.float16
    # memorization.csv is the estimator on those masks and logits
    correct, _ = outcomes.outcomes(logits, data["y_train"])
    mem = memorization.memorization(masks, correct)
    rows = csv_rows(root / "memorization.csv")
    assert list(rows[0]) == ["index", "label", "mem", "se", "n_in", "n_out"] and len(rows) == n
    got = np.array([float(r["mem"]) for r in rows])
    np.testing.assert_allclose(got, mem["mem"], atol=1e-12, equal_nan=True)
    assert [int(r["n_in"]) for r in rows] == mem["n_in"].tolist()
    pairs = csv_rows(root / "influence_pairs.csv")
    assert len(pairs) == sub["top_pairs"]
    infl = [float(r["influence"]) for r in pairs]
    assert infl == sorted(infl, reverse=True)
    prec = csv_rows(root / "kernel_precision.csv")
    assert {(r["ranking"], int(r["k"])) for r in prec} == {
        (m, k) for m in ("kernel", "random") for k in sub["precision_at"]}
    lds = csv_rows(root / "attribution" / "lds.csv")
    methods = {(r["method"], int(r["n_models"])) for r in lds}
    assert {("datamodels", c) for c in sub["model_counts"]} <= methods
    assert {("trak", c) for c in sub["trak"]["model_counts"]} <= methods
    assert {("traker", c) for c in sub["trak"]["package_counts"]} <= methods
    assert {("kernel", c) for c in sub["kernel_counts"]} <= methods
    assert all(-1 <= float(r["lds"]) <= 1 for r in lds)
    agree = csv_rows(root / "attribution" / "agreement.csv")
    assert {"correlation", f"overlap_top{sub['overlap_k'][0]}"} <= set(agree[0])
    errors = csv_rows(root / "label_errors" / "scores.csv")
    got_methods = {r["method"] for r in errors}
    assert {"cleanlab", "oos_self_confidence", "subset_kernel", "in_sample_kernel",
            "in_sample_margin", "in_sample_loss"} <= got_methods
    keys = [(r["method"], r["n_models"], r["subset"]) for r in errors]
    assert len(keys) == len(set(keys))  # each row says which model subset it is
    assert {r["sample"] for r in errors} == {"out", "in", "mixed"}
    assert {int(r["n_models"]) for r in errors if r["method"] == "cleanlab"} == set(
        sub["label_errors"]["model_counts"])
    timing = csv_rows(root / "timing.csv")
    assert [r["program"] for r in timing] == ["subsets", "full_data"]
    for name in ("subsets_memorization", "subsets_influence", "subsets_label_errors",
                 "subsets_attribution"):
        assert (workdir / "results" / "figures" / f"{name}.png").stat().st_size > 10_000


@pytest.mark.workflow
def test_subsets_are_not_in_the_default_run(subsets_run):
    workdir, _ = subsets_run
    assert not any("subsets" in rule for rule in planned_jobs(workdir, "--forceall"))


@pytest.mark.workflow
@pytest.mark.parametrize("key", ["trak.model_counts", "kernel_counts"])
def test_too_many_full_data_models_are_named_when_outputs_exist(subsets_run, tmp_path, key):
    # Snakemake reads an error in a producing job's input function as "cannot make this
    # file" and keeps an existing one, so the check sits in the target's own input too
    workdir, cfg = private_copy(subsets_run, tmp_path)
    section = cfg["subsets"].setdefault("trak", {}) if "." in key else cfg["subsets"]
    section[key.split(".")[-1]] = [2, 99]
    write_config(workdir, cfg)
    for target in ("subsets", "results/subsets/0.5/attribution/lds.csv"):
        proc = snakemake(workdir, "--dry-run", target, check=False)
        assert proc.returncode != 0
        assert f"subsets.{key}: 99 full-data models exceed train.seeds" in proc.stdout + proc.stderr


@pytest.mark.workflow
def test_more_seeds_train_only_the_new_shard(subsets_run, tmp_path):
    workdir, cfg = private_copy(subsets_run, tmp_path)
    cfg["subsets"]["seeds"] += cfg["subsets"]["shard_size"]
    write_config(workdir, cfg)
    jobs = planned_jobs(workdir, "subsets")
    assert jobs["subsets_train"] == 1 and jobs["subsets_logits"] == 1
    assert "subsets_errors_train" not in jobs and "subsets_trak" not in jobs
    assert "train_shard" not in jobs
