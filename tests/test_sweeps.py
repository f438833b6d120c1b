"""Sweeps: the config section, points and their names, the tables and the figure."""

from __future__ import annotations

import copy
import math
import subprocess

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT, planned_jobs, snakemake, tiny_config, write_config
from scipy import stats

from multirun import contracts, knn, sweeps
from multirun.config import ConfigError, check
from multirun.model_spec import normalize_spec
from multirun.plots.sweeps import plot_sweep
from multirun.recipe import normalize_recipe

SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"


K = "config key sweeps.lr_bn."  # every message starts by naming the key


def with_sweep(**entry) -> dict:
    return {"sweeps": {"lr_bn": entry}}


# ----------------------------------------------------------------------------- the schema


@pytest.mark.parametrize("entry, message", [
    ({"grid": {"recipe.lrr": [0.1]}}, K + "grid.recipe.lrr: unknown key"),
    ({"grid": {"model.widht": [4]}}, K + "grid.model.widht: unknown key"),
    ({"grid": {"lr": [0.1]}}, K + "grid.lr: unknown key"),
    ({"grid": {"recipe.lr": ["fast"]}}, K + "grid.recipe.lr[0]: 'fast' is not of type 'number'"),
    ({"grid": {"recipe.lr": [0.1, -1.0]}}, K + "grid.recipe.lr[1]: -1.0 is less than or equal to"),
    ({"grid": {"model.batchnorm": [1]}}, K + "grid.model.batchnorm[0]: 1 is not of type 'boolean'"),
    ({"grid": {"recipe.optimizer": ["sgd", "lion"]}}, K + "grid.recipe.optimizer[1]: 'lion' is not one of"),
    ({"grid": {"recipe.lr": []}}, K + "grid.recipe.lr: [] should be non-empty"),
    ({"grid": {"recipe.lr": [0.1, 0.1]}}, K + "grid.recipe.lr: [0.1, 0.1] has non-unique elements"),
    ({"grid": {"recipe.lr": 0.1}}, K + "grid.recipe.lr: 0.1 is not of type 'array'"),
    ({"grid": {}}, K + "grid: {} should be non-empty"),
    ({}, K[:-1] + ": 'grid' is a required property"),
    ({"grid": {"recipe.lr": [0.1]}, "seeds": 0}, K + "seeds: 0 is less than the minimum of 1"),
    ({"grid": {"recipe.lr": [0.1]}, "base": "studies"}, K + "base: 'studies' is not one of"),
    ({"grid": {"recipe.lr": [0.1]}, "model": {"widht": 3}}, K + "model.widht: unknown key"),
    ({"grid": {"recipe.lr": [0.1]}, "recipe": {"epochs": 0}}, K + "recipe.epochs: 0 is less than"),
    ({"grid": {"recipe.lr": [0.1]}, "packed": True}, K + "packed: unknown key"),
    ({"grid": {"recipe.patience": [0, 3]}},
     K + "grid.recipe.patience[1]: 3, but early stopping needs a validation split"),
    ({"grid": {"recipe.epochs": [2, 20000]}},
     K + "grid.recipe.epochs[1]: 20000 exceeds limits.epochs=10000"),
])
def test_a_bad_sweep_is_one_message_naming_the_key(entry, message):
    with pytest.raises(ConfigError) as err:
        check(with_sweep(**entry), SCHEMA)
    assert str(err.value).startswith(message), str(err.value)


@pytest.mark.parametrize("name", ["lr/bn", "My-Sweep!", "LrW", "lr.w"])
def test_a_sweep_name_must_be_a_folder_name(name):
    with pytest.raises(ConfigError) as err:
        check({"sweeps": {name: {"grid": {"recipe.lr": [0.1]}}}}, SCHEMA)
    assert str(err.value).startswith(f"config key sweeps.{name}: not a valid name; use a "
                                     "lower-case identifier"), str(err.value)


def test_an_impossible_point_names_the_sweep_and_the_point():
    entry = {"grid": {"recipe.momentum": [0.9, 0.0]}, "recipe": {"optimizer": "nesterov"}}
    with pytest.raises(ConfigError, match=r"sweeps\.lr_bn, point momentum=0: .*nesterov needs"):
        check(with_sweep(**entry), SCHEMA)


def test_grid_values_are_canonical_and_may_be_lists():
    cfg = check(with_sweep(grid={"recipe.lr": [1, 0.1], "recipe.betas": [[0.9, 0.99], [0.8, 0.9]]},
                           recipe={"optimizer": "adam"}), SCHEMA)
    points = sweeps.expand_all(cfg)["lr_bn"]
    assert sweeps.grid_values(points) == {"recipe.lr": [1.0, 0.1],
                                          "recipe.betas": [[0.9, 0.99], [0.8, 0.9]]}
    assert all(isinstance(p.values["recipe.lr"], float) for p in points)


def test_command_line_strings_take_the_grid_types():
    """--config sweeps='{lr_bn: {grid: {recipe.lr: [0.1, 1]}, seeds: 4}}' hands strings over."""
    cfg = check(with_sweep(grid={"recipe.lr": ["0.1", "1"], "model.batchnorm": "[true]"},
                           seeds="4"), SCHEMA)
    sweep = cfg["sweeps"]["lr_bn"]
    assert sweep["grid"] == {"recipe.lr": [0.1, 1.0], "model.batchnorm": [True]}
    assert sweep["seeds"] == 4


def test_a_sweep_takes_the_defaults_and_leaves_its_parts_unfilled():
    cfg = check(with_sweep(grid={"recipe.lr": [0.1]}, recipe={"epochs": 3}), SCHEMA)
    sweep = cfg["sweeps"]["lr_bn"]
    assert (sweep["base"], sweep["seeds"], sweep["pack"]) == ("train", 3, False)
    assert sweep["recipe"] == {"epochs": 3} and sweep["model"] == {}  # the rest is the base's
    assert "batchnorm" in cfg["sweeps"]  # config.yaml's sweep stays, as Snakemake merges


def test_every_model_and_recipe_key_can_be_swept():
    """The grid's keys are the model and recipe schemas' own keys, not a copy of them."""
    from multirun.schema import load_schema

    schema = load_schema(SCHEMA)
    grid = schema["$defs"]["sweep"]["properties"]["grid"]["properties"]
    want = {f"model.{k}" for k in schema["$defs"]["model"]["properties"]}
    want |= {f"recipe.{k}" for k in schema["$defs"]["recipe"]["properties"]}
    assert set(grid) == want and "recipe.lr" in want and "model.batchnorm" in want


# ----------------------------------------------------------------------------- points


@pytest.fixture
def cfg():
    return check(with_sweep(grid={"recipe.lr": [0.01, 0.1, 1.0], "model.batchnorm": [False, True]},
                            model={"depth": 3}, recipe={"epochs": 4}), SCHEMA)


def test_points_are_the_grid_product_on_the_base(cfg):
    points = sweeps.expand("lr_bn", cfg["sweeps"]["lr_bn"], cfg)
    assert len(points) == 6
    base_model, base_recipe = cfg["train"]["model"], cfg["train"]["recipe"]
    for p, (lr, bn) in zip(points, [(a, b) for a in (0.01, 0.1, 1.0) for b in (False, True)],
                           strict=True):
        assert p.values == {"recipe.lr": lr, "model.batchnorm": bn}
        assert p.model == normalize_spec({**base_model, "depth": 3, "batchnorm": bn})
        assert p.recipe == normalize_recipe({**base_recipe, "epochs": 4, "lr": lr})
    assert points[0].name == "batchnorm=false,lr=0.01"


def test_a_sweep_on_the_width_sweep_base(cfg):
    cfg["sweeps"]["w"] = {"base": "width_sweep", "grid": {"model.width": [4, 16]},
                          "model": {}, "recipe": {}, "seeds": 2, "shard_size": 2, "pack": False}
    points = sweeps.expand("w", cfg["sweeps"]["w"], cfg)
    assert [p.model["width"] for p in points] == [4, 16]
    assert points[0].recipe == normalize_recipe(cfg["width_sweep"]["recipe"])
    del cfg["sweeps"]["w"]["grid"]["model.width"]
    cfg["sweeps"]["w"]["grid"]["recipe.lr"] = [0.1]
    with pytest.raises(ConfigError, match=r"sweeps\.w, point lr=0.1: .*width"):
        sweeps.expand("w", cfg["sweeps"]["w"], cfg)  # the width sweep's model has no width


def test_a_sweep_of_another_model_starts_from_its_own_model_part(cfg):
    """A sweep's model.name other than the base's: the base's keys (another model's) stay out."""
    cfg["train"]["model"] = {"name": "examples/resmlp.py:ResMLP", "width": 8, "depth": 1,
                             "batchnorm": True, "expansion": 3}
    cfg["sweeps"]["lr_bn"]["model"] = {"name": "mlp", "width": 6, "depth": 2}
    points = sweeps.expand("lr_bn", cfg["sweeps"]["lr_bn"], cfg)
    assert points[0].model == normalize_spec({"name": "mlp", "width": 6, "depth": 2,
                                              "batchnorm": False})
    cfg["sweeps"]["lr_bn"]["model"] = {"width": 6}  # the base's model: its keys are inherited
    cfg["train"]["model"] = {"name": "mlp", "width": 8, "depth": 1, "batchnorm": True}
    points = sweeps.expand("lr_bn", cfg["sweeps"]["lr_bn"], cfg)
    assert points[0].model == normalize_spec({"name": "mlp", "width": 6, "depth": 1,
                                              "batchnorm": False})


@pytest.mark.parametrize("value, text", [
    (True, "true"), (False, "false"), (8, "8"), (0.001, "0.001"), (1.0, "1"), (3.0, "3"),
    (1e-5, "1e-5"), (2.5e-7, "2.5e-7"), (1e20, "1e20"), (0.3, "0.3"), ("sgd", "sgd"),
    ([0.9, 0.999], "0.9_0.999"),
])
def test_values_name_points_readably(value, text):
    assert sweeps.format_value(value) == text


def test_point_names_are_stable_and_safe():
    a = sweeps.point_name({"recipe.lr": 0.1, "model.batchnorm": True})
    b = sweeps.point_name({"model.batchnorm": True, "recipe.lr": float("1e-1")})
    assert a == b == "batchnorm=true,lr=0.1"  # the grid's order and YAML spelling do not matter
    assert sweeps.point_name({"recipe.lr": 1e-3, "recipe.optimizer": "nesterov"}) == \
        "lr=0.001,optimizer=nesterov"
    with pytest.raises(ConfigError, match="folder"):
        sweeps.format_value("a/b")


def test_packs_group_points_that_differ_in_per_member_keys_only(cfg):
    points = sweeps.expand("lr_bn", cfg["sweeps"]["lr_bn"], cfg)
    groups = sweeps.packs(points)
    assert list(groups) == ["batchnorm=false", "batchnorm=true"]
    for name, members in groups.items():
        assert [p.values["recipe.lr"] for p in members] == [0.01, 0.1, 1.0]
        assert all(p.name.startswith(name) for p in members)
        shared = [{k: v for k, v in p.recipe.items() if k not in sweeps.PER_MEMBER_KEYS}
                  for p in members]
        assert all(s == shared[0] for s in shared) and all(p.model == members[0].model
                                                           for p in members)
    only_lr = copy.deepcopy(cfg["sweeps"]["lr_bn"])
    only_lr["grid"] = {"recipe.lr": [0.1, 0.2], "recipe.momentum": [0.0, 0.9]}
    assert list(sweeps.packs(sweeps.expand("x", only_lr, cfg))) == ["all"]


def test_seed_shards_grow_by_whole_shards():
    a = sweeps.seed_shards({"seeds": 4, "shard_size": 2})
    b = sweeps.seed_shards({"seeds": 6, "shard_size": 2})
    assert a == {"000": [0, 1], "001": [2, 3]} and b == {**a, "002": [4, 5]}


def test_first_numeric_key_follows_the_grid_order():
    grid = {"model.batchnorm": [False, True], "recipe.lr": [0.1, 1], "model.width": [4]}
    assert sweeps.first_numeric_key(list(grid), grid) == "recipe.lr"
    assert sweeps.first_numeric_key(["model.batchnorm"], grid) is None


# ----------------------------------------------------------------------------- tables


def test_loss_and_accuracy_match_torch_in_float64():
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(3, 50, 10, generator=g, dtype=torch.float64) * 5).to(torch.float16)
    y = torch.randint(0, 10, (50,), generator=g)
    loss, acc = sweeps.loss_and_accuracy(logits.numpy(), y.numpy())
    for s in range(3):
        ref = F.cross_entropy(logits[s].double(), y)
        assert abs(loss[s] - float(ref)) < 1e-12
        assert acc[s] == sum(int(logits[s, i].double().argmax()) == int(y[i])
                             for i in range(50)) / 50


def test_seed_and_ensemble_rows_against_naive_loops():
    rng = np.random.default_rng(1)
    s, n, c = 4, 30, 5
    test = rng.normal(size=(s, n, c)).astype(np.float16)
    train = rng.normal(size=(s, 2 * n, c)).astype(np.float16)
    y_test, y_train = rng.integers(0, c, n), rng.integers(0, c, 2 * n)
    loss = np.full((s, 3), 1.0)
    loss[2, 1:] = np.nan  # seed 12 diverged after its first epoch
    history = {"train_loss": loss, "diverged": np.array([False, False, True, False])}
    rows = sweeps.seed_rows("lr=1", history, [10, 11, 12, 13], train, test, y_train, y_test)
    assert [r["seed"] for r in rows] == [10, 11, 12, 13]
    assert [r["diverged"] for r in rows] == [False, False, True, False]
    assert [r["epochs"] for r in rows] == [3, 3, 1, 3]
    for i, r in enumerate(rows):
        acc = np.mean([np.argmax(test[i, j]) == y_test[j] for j in range(n)])
        assert r["test_acc"] == pytest.approx(acc, abs=1e-12)
        ce = np.mean([math.log(np.exp(train[i, j].astype(np.float64)).sum())
                      - float(train[i, j, y_train[j]]) for j in range(2 * n)])
        assert r["train_loss"] == pytest.approx(ce, rel=1e-9)
    ens = sweeps.ensemble_rows("lr=1", rows, test, y_test)
    kept = [0, 1, 3]  # the diverged seed is left out of the mean logits
    mean = sum(test[i].astype(np.float64) for i in kept) / 3
    assert ens["ensemble_members"] == 3 and ens["diverged"] == 1 and ens["seeds"] == 4
    assert ens["ensemble_test_acc"] == pytest.approx(np.mean(mean.argmax(-1) == y_test))
    assert ens["mean_test_acc"] == pytest.approx(np.mean([r["test_acc"] for r in rows]))
    all_bad = [{**r, "diverged": True} for r in rows]
    assert sweeps.ensemble_rows("lr=1", all_bad, test, y_test)["ensemble_test_acc"] == ""


def test_without_a_record_nan_losses_mark_divergence():
    loss = np.array([[2.0, 1.0], [2.0, np.inf]])
    rows = sweeps.seed_rows("p", {"train_loss": loss}, [0, 1], np.zeros((2, 4, 3)),
                            np.zeros((2, 4, 3)), np.zeros(4, int), np.zeros(4, int))
    assert [r["diverged"] for r in rows] == [False, True]


def test_interval95_is_students_t():
    values = [0.61, 0.65, 0.58, 0.70]
    mean, half = knn.interval95(values)
    lo, hi = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    assert mean == pytest.approx(np.mean(values)) and half == pytest.approx((hi - lo) / 2)
    assert knn.interval95([0.5]) == (0.5, 0.0)


def test_tables_have_a_column_per_swept_key_and_a_checked_writer(tmp_path):
    points = {"batchnorm=false,lr=0.1": {"recipe.lr": 0.1, "model.batchnorm": False}}
    rng = np.random.default_rng(0)
    shard = {"history": {"train_loss": np.ones((2, 3)), "train_acc": np.ones((2, 3)),
                         "test_acc": np.full((2, 3), 0.5)},
             "seeds": [0, 1], "train": rng.normal(size=(2, 8, 3)),
             "test": rng.normal(size=(2, 6, 3))}
    rows, ens, curves = sweeps.summarize(points, [[shard]], np.zeros(8, int), np.zeros(6, int))
    assert list(rows[0]) == ["point", "lr", "batchnorm", *sweeps.ROW_FIELDS[1:]]
    assert list(ens[0]) == ["point", "lr", "batchnorm", *sweeps.ENSEMBLE_FIELDS[1:]]
    assert len(curves) == 6 and curves[0]["test_acc"] == 0.5 and curves[0]["test_loss"] == ""
    contracts.save_csv(tmp_path / "summary.csv", rows, list(rows[0]))
    back = contracts.load_csv(tmp_path / "summary.csv")
    assert [r["seed"] for r in back] == ["0", "1"] and back[0]["lr"] == "0.1"
    bad = [rows[0], {k: v for k, v in rows[1].items() if k != "test_acc"}]
    with pytest.raises(contracts.ContractError, match=r"summary2\.csv: row 1 .*missing \['test_acc'\]"):
        contracts.save_csv(tmp_path / "summary2.csv", bad, list(rows[0]))
    assert not (tmp_path / "summary2.csv").exists()


@pytest.mark.parametrize("batchnorm", [False, True], ids=["mlp-program", "vmap-program"])
def test_an_unpacked_point_is_the_point_trained_alone(cfg, batchnorm):
    """pack: true trains 3 learning rates x 2 seeds as one program; each point's slice is
    its own training (1e-5 in float32, the programs' per-member exactness)."""
    from multirun import train

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 12, generator=g), torch.randint(0, 4, (64,), generator=g)
    entry = {**cfg["sweeps"]["lr_bn"], "grid": {"recipe.lr": [0.01, 0.1, 1.0],
                                                "model.batchnorm": [batchnorm]}}
    cfg["train"]["model"] = {"name": "mlp", "width": 8, "depth": 2, "batchnorm": batchnorm}
    cfg["train"]["recipe"].update(epochs=2, batch_size=16, warmup_epochs=1)
    points = sweeps.expand("lr_bn", entry, cfg)
    (members,) = sweeps.packs(points).values()
    seeds, recipes = sweeps.pack_members(members, [3, 4])
    assert seeds == [3, 4, 3, 4, 3, 4] and recipes[2]["lr"] == 0.1
    pack = train.train_shard(x, y, seeds, members[0].model, recipes, "cpu", progress=False,
                             evaluation=(x[:20], y[:20]), on_diverge="record")
    for i, point in enumerate(members):
        alone = train.train_shard(x, y, [3, 4], point.model, point.recipe, "cpu",
                                  progress=False, evaluation=(x[:20], y[:20]),
                                  on_diverge="record")
        mine = sweeps.unpack(pack, i, 2)
        assert mine["seeds"] == [3, 4] and mine["recipe"] == alone["recipe"]
        assert mine["member_recipes"] == alone["member_recipes"]
        assert set(mine["state"]) == set(alone["state"])
        for k, v in alone["state"].items():
            torch.testing.assert_close(mine["state"][k], v, rtol=1e-5, atol=1e-5)
        assert set(mine["history"]) == set(alone["history"])
        for k, v in alone["history"].items():
            torch.testing.assert_close(mine["history"][k], v, rtol=1e-5, atol=1e-5,
                                       equal_nan=True)
    with pytest.raises(contracts.ContractError, match="train.seeds"):  # same seed, same recipe
        train.train_shard(x, y, [3, 3], members[0].model, [recipes[0]] * 2, "cpu",
                          progress=False)


# ----------------------------------------------------------------------------- the figure


def fake_tables(lrs, diverge_above):
    summary, curves = [], []
    for bn in (False, True):
        for lr in lrs:
            for seed in range(3):
                bad = not bn and lr > diverge_above
                acc = 0.1 if bad else 0.5 + 0.1 * bn + 0.01 * seed
                point = f"batchnorm={'true' if bn else 'false'},lr={lr}"
                summary.append({"point": point, "lr": str(lr), "batchnorm": str(bn),
                                "seed": str(seed), "test_acc": str(acc), "diverged": str(bad)})
                curves += [{"point": point, "lr": str(lr), "batchnorm": str(bn),
                            "epoch": str(e), "seed": str(seed), "train_acc": "0.5",
                            "test_acc": str(acc * e / 4)} for e in (1, 2, 3, 4)]
    return summary, curves


def test_figure_axes_lines_and_diverged_marks():
    lrs = [0.001, 0.01, 0.1, 1.0, 3.0]
    summary, curves = fake_tables(lrs, diverge_above=0.5)
    grid = {"recipe.lr": lrs, "model.batchnorm": [False, True]}
    fig = plot_sweep(summary, curves, grid, title="t")
    ax, bx = fig.axes
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "lr"
    lines = [line for line in ax.get_lines() if line.get_label().startswith("batchnorm")]
    assert [line.get_label() for line in lines] == ["batchnorm=false", "batchnorm=true"]
    np.testing.assert_allclose(lines[1].get_ydata(), [0.61] * 5)  # mean over seeds
    marks = [c for c in ax.collections if c.get_gid() == "diverged"]
    assert sum(len(c.get_offsets()) for c in marks) == 6  # lr 1 and 3 without BN, 3 seeds each
    assert sum(c.get_label() == "diverged run" for c in marks) == 1  # one legend entry
    curves_drawn = bx.get_lines()
    assert len(curves_drawn) == 2 and curves_drawn[1].get_label().endswith("best lr=0.001")
    np.testing.assert_allclose(curves_drawn[1].get_ydata(), [0.61 * e / 4 for e in (1, 2, 3, 4)])
    assert bx.get_ylabel() == "test accuracy"
    narrow = plot_sweep(*fake_tables([0.1, 0.3], 1.0), {"recipe.lr": [0.1, 0.3],
                                                         "model.batchnorm": [False, True]})
    assert narrow.axes[0].get_xscale() == "linear"  # a span of 3x: linear


# ----------------------------------------------------------------------------- the workflow


TARGETS = ("results/sweeps/tiny/summary.csv", "results/figures/sweep_tiny.png",
           "results/sweeps/tinypack/summary.csv")


def tiny_sweep_config(pack=None, **changes) -> dict:
    """The tiny config with sweep `tiny`: 2 learning rates (one so large it diverges),
    2 seeds in one shard, a 1-hidden-layer MLP of width 8, 2 epochs; and `tinypack`, the
    same with pack: true (``pack``: its changes)."""
    cfg = tiny_config()
    entry = {"base": "train", "model": {"width": 8, "depth": 1}, "recipe": {"epochs": 2},
             "grid": {"recipe.lr": [0.05, 1.0e4]}, "seeds": 2, "shard_size": 2, "pack": False}
    cfg["sweeps"]["tiny"] = {**entry, **changes}
    cfg["sweeps"]["tinypack"] = {**entry, "pack": True, **(pack or {})}
    return check(cfg, SCHEMA)


@pytest.fixture(scope="module")
def sweep_run(tmp_path_factory):
    """A finished run of sweep `tiny` (shared, do not modify)."""
    workdir = tmp_path_factory.mktemp("sweep_run")
    write_config(workdir, tiny_sweep_config())
    snakemake(workdir, *TARGETS)
    return workdir


@pytest.fixture
def sweep_copy(sweep_run, tmp_path):
    dst = tmp_path / "run"
    subprocess.run(["cp", "-a", str(sweep_run), str(dst)], check=True)
    return dst


@pytest.mark.workflow
def test_a_diverging_point_is_recorded_and_the_others_complete(sweep_run):
    res = sweep_run / "results" / "sweeps" / "tiny"
    rows = contracts.load_csv(res / "summary.csv")
    assert list(rows[0]) == ["point", "lr", *sweeps.ROW_FIELDS[1:]]
    assert [(r["point"], r["seed"]) for r in rows] == [
        ("lr=0.05", "0"), ("lr=0.05", "1"), ("lr=10000", "0"), ("lr=10000", "1")]
    assert [r["diverged"] for r in rows] == ["False", "False", "True", "True"]
    assert all(r["epochs"] == "2" for r in rows[:2])
    assert all(0 <= float(r["test_acc"]) <= 1 and math.isfinite(float(r["test_loss"]))
               for r in rows)
    ens = contracts.load_csv(res / "ensemble.csv")
    assert [(e["point"], e["ensemble_members"]) for e in ens] == [("lr=0.05", "2"), ("lr=10000", "0")]
    assert ens[1]["ensemble_test_acc"] == ""
    for point in ("lr=0.05", "lr=10000"):  # the existing contracts, in a readable folder
        assert (res / point / "shard-000.pt").is_file()
        test = np.load(res / point / "logits" / "shard-000" / "test.npy")
        assert test.dtype == np.float16 and test.shape == (2, 60, 10)
    curves = contracts.load_csv(res / "curves.csv")
    assert len(curves) == 2 * 2 * 2  # points x epochs x seeds
    assert all(c["test_acc"] != "" for c in curves if c["point"] == "lr=0.05")
    assert (sweep_run / "results" / "figures" / "sweep_tiny.png").stat().st_size > 10_000
    packed = contracts.load_csv(res.parent / "tinypack" / "summary.csv")  # one program
    assert [r["diverged"] for r in packed] == [r["diverged"] for r in rows]
    for a, b in zip(rows[:2], packed[:2], strict=True):  # the same numbers as point by point
        for key in ("train_loss", "test_loss", "test_acc"):
            assert float(a[key]) == pytest.approx(float(b[key]), abs=1e-3)


@pytest.mark.workflow
@pytest.mark.parametrize("change, planned", [
    ({}, {}),  # nothing changed: nothing runs
    ({"grid": {"recipe.lr": [0.05, 1.0e4, 0.2]}},  # one more value: only its point trains
     {"sweep_train": 1, "sweep_logits": 1, "sweep_summary": 1, "figure_sweep": 1}),
    ({"seeds": 4},  # one more shard of seeds: only the new shard of each point trains
     {"sweep_train": 2, "sweep_logits": 2, "sweep_summary": 1, "figure_sweep": 1}),
    ({"grid": {"recipe.lr": [0.05]}},  # one value fewer: the tables and figure only
     {"sweep_summary": 1, "figure_sweep": 1}),
    ({"grid": {"recipe.lr": [1.0e4, 0.05]}},  # the same values reordered: the figure only
     {"sweep_summary": 1, "figure_sweep": 1}),
    ({"grid": {"recipe.lr": [0.05, 10000]}},  # 1.0e4 written as 10000: nothing
     {}),
], ids=["unchanged", "add-value", "add-seeds", "remove-value", "reorder", "respelled"])
def test_caching_trains_exactly_the_new_points_and_shards(sweep_copy, change, planned):
    write_config(sweep_copy, tiny_sweep_config(**change))
    assert planned_jobs(sweep_copy, *TARGETS[:2]) == planned


@pytest.mark.workflow
@pytest.mark.parametrize("change, planned", [
    ({"grid": {"recipe.lr": [0.05, 1.0e4, 0.2]}},  # the pack retrains, with the new point
     {"sweep_pack": 1, "sweep_unpack": 3, "sweep_logits": 3, "sweep_summary": 1}),
    ({"grid": {"recipe.lr": [0.05]}},  # a value fewer: the pack retrains too (the trade-off)
     {"sweep_pack": 1, "sweep_unpack": 1, "sweep_logits": 1, "sweep_summary": 1}),
    ({"seeds": 4},  # a new shard of seeds: a new pack job for it alone
     {"sweep_pack": 1, "sweep_unpack": 2, "sweep_logits": 2, "sweep_summary": 1}),
], ids=["add-value", "remove-value", "add-seeds"])
def test_a_pack_retrains_when_its_values_change(sweep_copy, change, planned):
    write_config(sweep_copy, tiny_sweep_config(pack=change))
    assert planned_jobs(sweep_copy, TARGETS[2]) == planned


@pytest.mark.workflow
def test_the_sweeps_target_shares_the_dataset(sweep_copy):
    # the tiny config's batchnorm sweep is new: 2 packs (BN off, on) of 2 rates x 2 seeds;
    # tiny is done, tinypack lacks only its figure; the dataset is made
    assert planned_jobs(sweep_copy, "sweeps") == {
        "sweep_pack": 2, "sweep_unpack": 4, "sweep_logits": 4, "sweep_summary": 1,
        "figure_sweep": 2, "sweeps": 1}
