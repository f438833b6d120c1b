"""Members of one training program: per-member hyperparameters, Adam/AdamW, subsets,
per-epoch test metrics, divergence recording, checkpoint format 2 and metrics.csv."""

import csv
import math

import pytest
import torch
import torch.nn.functional as F

from multirun import programs, train
from multirun.checkpoint import evaluate_shard, load_checkpoint, upgrade, write_metrics
from multirun.contracts import ContractError, save_torch
from multirun.recipe import PER_MEMBER_KEYS, normalize_recipe, split_members
from multirun.streams import subset_mask
from multirun.train import train_one, train_shard

BASE = {"epochs": 2, "batch_size": 16, "optimizer": "sgd", "lr": 0.1, "momentum": 0.9,
        "weight_decay": 5e-4, "warmup_epochs": 1, "schedule": "cosine",
        "label_smoothing": 0.1, "label_noise": 0.25}
# three members that differ in every per-member key of their optimiser
SGD_MEMBERS = [
    {"lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "label_smoothing": 0.1},
    {"lr": 0.03, "momentum": 0.0, "weight_decay": 0.0, "label_smoothing": 0.0,
     "warmup_epochs": 0},
    {"lr": 0.2, "momentum": 0.5, "weight_decay": 2e-3, "label_smoothing": 0.2,
     "warmup_epochs": 0.5},
]
ADAM_MEMBERS = [
    {"lr": 1e-2, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 1e-3,
     "label_smoothing": 0.1},
    {"lr": 3e-3, "betas": [0.8, 0.99], "eps": 1e-6, "weight_decay": 0.0,
     "label_smoothing": 0.0},
    {"lr": 2e-2, "betas": [0.95, 0.9], "eps": 1e-4, "weight_decay": 1e-2,
     "label_smoothing": 0.2},
]
SPECS = {  # program -> model spec it trains
    "mlp": {"name": "mlp", "width": 16, "depth": 2, "batchnorm": False},
    "cnn1d": {"name": "cnn1d", "width": 6, "batchnorm": False},
    "vmap": {"name": "mlp", "width": 16, "depth": 1, "batchnorm": True},
}
MLP = SPECS["mlp"]


@pytest.fixture(scope="module")
def vectors():
    g = torch.Generator().manual_seed(0)
    return torch.randn(64, 40, generator=g), torch.randint(0, 4, (64,), generator=g)


def assert_members_match(ckpt, x, y, spec, recipes, atol, masks=None, device="cpu"):
    """Member i of ``ckpt`` equals ``train_one`` with recipe i (and mask i)."""
    for i, seed in enumerate(ckpt["seeds"]):
        mask = None if masks is None else masks[i]
        ref = train_one(x, y, seed, spec, recipes[i], device, mask=mask)
        for k, v in ref.items():
            torch.testing.assert_close(ckpt["state"][k][i], v, rtol=0, atol=atol,
                                       msg=f"member {i} (seed {seed}) {k}")


def members(base, changes):
    return [{**base, **c} for c in changes]


# ----------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("program", ["mlp", "cnn1d", "vmap"])
@pytest.mark.parametrize("optimizer", ["sgd", "nesterov", "adam", "adamw"])
def test_mixed_members_equal_each_alone_fp64(vectors, program, optimizer, device):
    x, y = vectors
    x = x.double()
    changes = ADAM_MEMBERS if optimizer.startswith("adam") else SGD_MEMBERS
    if optimizer == "nesterov":  # nesterov needs momentum > 0
        changes = [{**c, "momentum": c["momentum"] or 0.3} for c in changes]
    recipes = members({**BASE, "optimizer": optimizer}, changes)
    spec = SPECS[program]
    ckpt = train_shard(x, y, [0, 3, 7], spec, recipes, device, progress=False, program=program)
    assert_members_match(ckpt, x, y, spec, recipes, atol=1e-12, device=device)
    assert [r["lr"] for r in ckpt["member_recipes"]] == [c["lr"] for c in changes]
    assert ckpt["recipe"] == normalize_recipe(recipes[0])


@pytest.mark.parametrize("program", ["mlp", "vmap"])
@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_mixed_members_equal_each_alone_fp32(vectors, program, optimizer):
    x, y = vectors
    changes = ADAM_MEMBERS if optimizer.startswith("adam") else SGD_MEMBERS
    recipes = members({**BASE, "optimizer": optimizer}, changes)
    spec = SPECS[program]
    ckpt = train_shard(x, y, [1, 2, 4], spec, recipes, "cpu", progress=False, program=program)
    assert_members_match(ckpt, x, y, spec, recipes, atol=1e-5)


@pytest.mark.parametrize("program", ["mlp", "cnn1d", "vmap"])
@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_uniform_adam_equals_torch_optim_fp64(vectors, program, optimizer, device):
    # every member on one recipe: the program's Adam is torch.optim.Adam/AdamW of the
    # one-model loop, element for element
    x, y = vectors
    x = x.double()
    recipe = {**BASE, "optimizer": optimizer, "lr": 1e-2, "betas": [0.85, 0.99],
              "eps": 1e-7, "weight_decay": 1e-2}
    spec = SPECS[program]
    ckpt = train_shard(x, y, [0, 5], spec, recipe, device, progress=False, program=program)
    assert_members_match(ckpt, x, y, spec, [recipe] * 2, atol=1e-12, device=device)


def test_train_one_adam_is_torch_optim_adam(vectors):
    # the reference itself: train_one's Adam is torch.optim.Adam with the recipe's numbers,
    # checked against a hand-written loop of Adam's published update (Kingma & Ba, alg. 1)
    x, y = vectors
    x = x.double()
    recipe = normalize_recipe({**BASE, "optimizer": "adam", "lr": 1e-2, "betas": [0.9, 0.99],
                               "eps": 1e-8, "weight_decay": 1e-3, "label_noise": 0.0,
                               "label_smoothing": 0.0, "warmup_epochs": 0,
                               "schedule": "constant", "epochs": 1, "batch_size": 64})
    ref = train_one(x, y, 0, MLP, recipe)
    from multirun.train import init_model
    model = init_model(0, MLP, (40,), 4).double()
    params = dict(model.named_parameters())
    m = {k: torch.zeros_like(p) for k, p in params.items()}
    v = {k: torch.zeros_like(p) for k, p in params.items()}
    (b1, b2), eps, lr, wd = recipe["betas"], recipe["eps"], recipe["lr"], recipe["weight_decay"]
    from multirun.streams import generator
    from multirun.train import epoch_order
    idx = epoch_order(64, 64, generator(0, "order"))[0]  # one step: the whole set
    loss = F.cross_entropy(model(x[idx]), y[idx])
    grads = torch.autograd.grad(loss, list(params.values()))
    with torch.no_grad():
        for (k, p), g in zip(params.items(), grads, strict=True):
            g = g + wd * p
            m[k] = b1 * m[k] + (1 - b1) * g
            v[k] = b2 * v[k] + (1 - b2) * g * g
            p -= lr * (m[k] / (1 - b1)) / ((v[k] / (1 - b2)).sqrt() + eps)
    for k, p in params.items():
        torch.testing.assert_close(ref[k], p.detach(), rtol=0, atol=1e-12)


@pytest.mark.parametrize("program", ["mlp", "cnn1d", "vmap"])
def test_masked_members_equal_train_one_on_their_subsets(vectors, program, device):
    x, y = vectors
    x = x.double()
    seeds = [0, 3, 7]
    masks = torch.stack([subset_mask(seed, 0.5, len(x)) for seed in seeds])
    recipes = members(BASE, SGD_MEMBERS)
    spec = SPECS[program]
    ckpt = train_shard(x, y, seeds, spec, recipes, device, progress=False, program=program,
                       masks=masks)
    assert_members_match(ckpt, x, y, spec, recipes, atol=1e-12, masks=masks, device=device)
    assert torch.equal(ckpt["masks"], masks)
    # 32 rows, batch 16: two steps per epoch, 2 epochs
    assert ckpt["history"]["lr"].shape == (4,)
    # a member sees only its rows: training on the subset's rows alone is the same run
    # up to the order stream, so differing masks give differing models
    assert not torch.allclose(ckpt["state"]["head.weight"][0], train_one(
        x, y, 0, spec, recipes[0], device)["head.weight"].to(ckpt["state"]["head.weight"]))


def test_masked_float32_vmap_with_adam(vectors):
    x, y = vectors
    seeds = [2, 9]
    masks = torch.stack([subset_mask(seed, 0.75, len(x)) for seed in seeds])
    recipes = members({**BASE, "optimizer": "adam"}, ADAM_MEMBERS[:2])
    ckpt = train_shard(x, y, seeds, SPECS["vmap"], recipes, "cpu", progress=False,
                       masks=masks)
    assert_members_match(ckpt, x, y, SPECS["vmap"], recipes, atol=1e-5, masks=masks)


def test_members_take_one_fused_pass_per_run_of_equal_numbers(vectors, monkeypatch):
    # members that agree on every number: one fused SGD pass per step; members in runs of
    # equal numbers: one per run (here [a, a, b]: two); beyond FUSED_RUNS runs: none
    calls = []
    fused = torch._fused_sgd_

    def spy(*args, **kwargs):
        calls.append(len(args[0]))  # tensors in the pass
        return fused(*args, **kwargs)

    monkeypatch.setattr(torch, "_fused_sgd_", spy)
    x, y = vectors
    steps = BASE["epochs"] * (len(x) // BASE["batch_size"])
    train_shard(x, y, [0, 1], MLP, BASE, "cpu", progress=False)
    assert calls == [1] * steps  # the flat buffer
    calls.clear()
    recipes = members(BASE, [SGD_MEMBERS[0], SGD_MEMBERS[0], SGD_MEMBERS[2]])
    train_shard(x, y, [0, 1, 2], MLP, recipes, "cpu", progress=False)
    assert calls == [3, 3] * steps  # two runs, each over the rows of the 3 layers
    calls.clear()
    monkeypatch.setattr(programs, "FUSED_RUNS", 1)
    train_shard(x, y, [0, 1, 2], MLP, recipes, "cpu", progress=False)
    assert not calls


@pytest.mark.parametrize("optimizer", ["sgd", "nesterov"])
def test_many_runs_take_the_per_layer_update_fp64(vectors, optimizer, monkeypatch):
    # beyond FUSED_RUNS runs the update is per layer with (S,) numbers: exact too
    monkeypatch.setattr(programs, "FUSED_RUNS", 1)
    x, y = vectors
    changes = SGD_MEMBERS
    if optimizer == "nesterov":  # nesterov needs momentum > 0
        changes = [{**c, "momentum": c["momentum"] or 0.3} for c in changes]
    recipes = members({**BASE, "optimizer": optimizer}, changes)
    ckpt = train_shard(x.double(), y, [0, 3, 7], MLP, recipes, "cpu", progress=False)
    assert_members_match(ckpt, x.double(), y, MLP, recipes, atol=1e-12)


# ----------------------------------------------------------------------------- subsets


def test_subset_mask_is_deterministic_and_exact():
    a = subset_mask(3, 0.5, 101)
    assert a.dtype == torch.bool and a.shape == (101,) and int(a.sum()) == round(0.5 * 101)
    assert torch.equal(a, subset_mask(3, 0.5, 101))
    assert not torch.equal(a, subset_mask(4, 0.5, 101))
    assert int(subset_mask(0, 0.7, 1000).sum()) == 700
    assert int(subset_mask(0, 1.0, 10).sum()) == 10
    # masks of many seeds cover each row about alpha of the time
    freq = torch.stack([subset_mask(s, 0.3, 50) for s in range(400)]).double().mean(0)
    assert (freq - 0.3).abs().max() < 0.12
    for bad in (0.0, 1.5, -0.1, True, 0.001):
        with pytest.raises(ContractError, match=r"subsets\.alpha"):
            subset_mask(0, bad, 100)


def test_bad_masks_are_refused(vectors):
    x, y = vectors
    with pytest.raises(ContractError, match="masks"):
        train_shard(x, y, [0, 1], MLP, BASE, "cpu", progress=False,
                    masks=torch.ones(2, 10, dtype=torch.bool))
    uneven = torch.stack([subset_mask(0, 0.5, 64), subset_mask(1, 0.25, 64)])
    with pytest.raises(ContractError, match="same number"):
        train_shard(x, y, [0, 1], MLP, BASE, "cpu", progress=False, masks=uneven)


# ----------------------------------------------------------------------------- recipes


def test_split_members():
    recipes = members(BASE, SGD_MEMBERS)
    shared, per = split_members(recipes)
    assert shared == normalize_recipe(recipes[0])
    assert per["lr"] == [0.1, 0.03, 0.2] and per["momentum"] == [0.9, 0.0, 0.5]
    assert set(per) == {"lr", "momentum", "weight_decay", "label_smoothing", "warmup_epochs"}
    assert per["warmup_epochs"] == [1.0, 0.0, 0.5]
    assert set(per) <= set(PER_MEMBER_KEYS)
    adam = split_members(members({**BASE, "optimizer": "adam"}, ADAM_MEMBERS))[1]
    assert adam["betas"] == [[0.9, 0.999], [0.8, 0.99], [0.95, 0.9]]
    for key, value in [("epochs", 3), ("optimizer", "nesterov"), ("schedule", "linear"),
                       ("label_noise", 0.0), ("batch_size", 8), ("augment", "flip")]:
        with pytest.raises(ContractError, match=rf"train\.recipe\.{key}: members 0 and 1"):
            split_members([BASE, {**BASE, key: value}])
    with pytest.raises(ContractError, match="list"):
        split_members(BASE)


def test_train_shard_refuses_members_that_cannot_share_a_program(vectors):
    x, y = vectors
    with pytest.raises(ContractError, match=r"train\.recipe\.epochs"):
        train_shard(x, y, [0, 1], MLP, [BASE, {**BASE, "epochs": 3}], "cpu", progress=False)
    with pytest.raises(ContractError, match="3 member recipes for 2 seeds"):
        train_shard(x, y, [0, 1], MLP, [BASE] * 3, "cpu", progress=False)


def test_canonical_recipes_hold_only_their_optimisers_keys():
    sgd = normalize_recipe(BASE)
    assert "betas" not in sgd and "eps" not in sgd and sgd["momentum"] == 0.9
    # a default written out, or an Adam key under SGD, changes nothing
    assert normalize_recipe({**BASE, "betas": [0.9, 0.999], "eps": 1e-8}) == sgd
    assert list(normalize_recipe({**BASE, "betas": [0.5, 0.5]})) == list(sgd)
    adam = normalize_recipe({**BASE, "optimizer": "adamw"})
    assert "momentum" not in adam and adam["betas"] == [0.9, 0.999] and adam["eps"] == 1e-8
    assert normalize_recipe({**BASE, "optimizer": "adamw", "momentum": 0.1}) == adam
    for bad in ([0.9], [0.9, 1.0], "0.9", [0.9, -0.1]):
        with pytest.raises(ContractError, match=r"train\.recipe\.betas"):
            normalize_recipe({**BASE, "optimizer": "adam", "betas": bad})
    with pytest.raises(ContractError, match=r"train\.recipe\.eps"):
        normalize_recipe({**BASE, "optimizer": "adam", "eps": 0})


# ----------------------------------------------------------------------------- evaluation


@pytest.mark.parametrize("program", ["mlp", "vmap"])
def test_history_test_metrics_are_the_final_models(vectors, program):
    x, y = vectors
    xt, yt = x[:40] + 0.1, y[:40]
    spec = SPECS[program]
    ckpt = train_shard(x, y, [0, 1, 2], spec, members(BASE, SGD_MEMBERS), "cpu",
                       progress=False, program=program, evaluation=(xt, yt))
    hist = ckpt["history"]
    assert hist["test_loss"].shape == hist["test_acc"].shape == (3, BASE["epochs"])
    logits, _ = evaluate_shard(ckpt, xt, batch_size=7, device="cpu")
    acc = (logits.argmax(-1) == yt).double().mean(1)
    loss = torch.stack([F.cross_entropy(lg.double(), yt) for lg in logits])
    torch.testing.assert_close(hist["test_acc"][:, -1].double(), acc, rtol=0, atol=1e-6)
    torch.testing.assert_close(hist["test_loss"][:, -1].double(), loss, rtol=1e-5, atol=1e-5)
    assert (hist["test_loss"][:, 0] != hist["test_loss"][:, 1]).all()  # measured per epoch


def test_divergence_is_recorded_without_disturbing_the_others(vectors):
    x, y = vectors
    x = x.double()
    ok = {**BASE, "epochs": 4}
    recipes = [ok, {**ok, "lr": 1e4, "warmup_epochs": 0}, {**ok, "lr": 0.05}]
    ckpt = train_shard(x, y, [0, 1, 2], MLP, recipes, "cpu", progress=False,
                       on_diverge="record", evaluation=(x[:20], y[:20]))
    hist = ckpt["history"]
    assert hist["diverged"].tolist() == [False, True, False]
    e = int(hist["diverged_epoch"][1])
    assert 0 <= e < 4 and hist["diverged_epoch"][[0, 2]].tolist() == [-1, -1]
    assert all(torch.isfinite(v).all() for v in ckpt["state"].values())
    assert torch.isnan(hist["train_loss"][1, e + 1:]).all()
    assert torch.isfinite(hist["train_loss"][[0, 2]]).all()
    assert torch.isfinite(hist["test_acc"][[0, 2]]).all()
    # the others train exactly as without the diverging member
    alone = train_shard(x, y, [0, 2], MLP, [recipes[0], recipes[2]], "cpu", progress=False)
    for k, v in alone["state"].items():
        torch.testing.assert_close(ckpt["state"][k][[0, 2]], v, rtol=0, atol=1e-12)
    torch.testing.assert_close(hist["train_loss"][[0, 2]], alone["history"]["train_loss"],
                               rtol=0, atol=1e-6)
    # raise (the default) still fails loudly
    with pytest.raises(ContractError, match="diverged"):
        train_shard(x * 1e30, y, [0, 1], MLP, {**ok, "lr": 1e30, "warmup_epochs": 0},
                    "cpu", progress=False)


def test_a_loss_that_explodes_within_the_first_epoch_has_diverged(vectors):
    # the first step's loss is the start: an epoch-1 mean 1e5 times it has diverged,
    # though no epoch's loss is 10x the first epoch's (the earlier rule missed it)
    start, first_epoch = torch.tensor([2.3, 2.3, 2.3]), torch.tensor([1.6e5, 1.5, 1.5])
    got = train.diverging(torch.tensor([1.6e5, 12.0, math.nan]), start, first_epoch)
    assert got.tolist() == [True, False, True]
    assert train.diverging(torch.tensor([16.0]), torch.tensor([2.3]), torch.tensor([1.5])).item()
    x, y = vectors  # width 16 at lr 30: seed 0's first epoch averages ~1e5, then NaN
    recipe = {**BASE, "epochs": 3, "lr": 30.0, "warmup_epochs": 0, "schedule": "constant",
              "label_smoothing": 0.0, "label_noise": 0.0, "weight_decay": 0.0}
    ckpt = train_shard(x.double(), y, [0], {"name": "mlp", "width": 16, "depth": 2}, recipe,
                       "cpu", progress=False, on_diverge="record")
    hist = ckpt["history"]
    assert hist["diverged_epoch"].tolist() == [0] and 1e3 < hist["train_loss"][0, 0] < math.inf


def test_diverged_member_keeps_its_epoch_end_state(vectors):
    # a member diverging in epoch e keeps the state it had after epoch e - 1: the state of
    # the same member trained for e epochs on the same per-step schedule (constant lr)
    x, y = vectors
    x = x.double()
    recipe = {**BASE, "epochs": 6, "warmup_epochs": 0, "schedule": "constant",
              "momentum": 0.99, "lr": 3.0, "label_smoothing": 0.0, "weight_decay": 0.0}
    ckpt = train_shard(x, y, [4], MLP, recipe, "cpu", progress=False, on_diverge="record")
    e = int(ckpt["history"]["diverged_epoch"][0])
    assert ckpt["history"]["diverged"].tolist() == [True] and e >= 1, e
    loss = ckpt["history"]["train_loss"]  # none left, training stopped; every epoch kept
    assert loss.shape == (1, 6) and torch.isnan(loss[0, e + 1:]).all()
    assert ckpt["history"]["lr"].shape == (6 * 4,)  # 64 rows in batches of 16
    ref = train_one(x, y, 4, MLP, {**recipe, "epochs": e})
    for k, v in ref.items():  # (lr 3 grows the weights: float64 rounding, relative)
        torch.testing.assert_close(ckpt["state"][k][0], v, rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------- checkpoints


def test_format_2_round_trip_weights_only_and_metrics_csv(vectors, tmp_path):
    x, y = vectors
    masks = torch.stack([subset_mask(s, 0.5, len(x)) for s in (0, 1)])
    ckpt = train_shard(x, y, [0, 1], MLP, members(BASE, SGD_MEMBERS[:2]), "cpu",
                       progress=False, masks=masks, evaluation=(x[:16], y[:16]))
    path = tmp_path / "shard-000.pt"
    save_torch(path, ckpt)
    raw = torch.load(path, weights_only=True)  # tensors and plain types only
    assert raw["format"] == 2 and torch.equal(raw["masks"], masks)
    loaded = load_checkpoint(path, model_spec=MLP, seeds=[0, 1])
    assert loaded["member_recipes"] == ckpt["member_recipes"]
    write_metrics(tmp_path / "shard-000.metrics.csv", loaded)
    with open(tmp_path / "shard-000.metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["epoch", "seed", "train_loss", "train_acc", "test_loss",
                             "test_acc"]
    assert len(rows) == 2 * BASE["epochs"]
    last = [r for r in rows if r["epoch"] == str(BASE["epochs"]) and r["seed"] == "1"][0]
    assert float(last["test_acc"]) == pytest.approx(float(ckpt["history"]["test_acc"][1, -1]))
    assert float(last["train_loss"]) == pytest.approx(
        float(ckpt["history"]["train_loss"][1, -1]))
    bad = dict(ckpt, masks=masks[:, :10])
    save_torch(tmp_path / "bad.pt", bad)
    with pytest.raises(ContractError, match=r"bad\.pt.*masks"):
        load_checkpoint(tmp_path / "bad.pt")


def test_format_1_reads_as_uniform_members(vectors, tmp_path):
    x, y = vectors
    ckpt = train_shard(x, y, [0, 1], MLP, {**BASE, "epochs": 1}, "cpu", progress=False)
    old = {k: v for k, v in ckpt.items() if k != "member_recipes"} | {"format": 1}
    save_torch(tmp_path / "old.pt", old)
    loaded = load_checkpoint(tmp_path / "old.pt")
    assert loaded["format"] == 2 and loaded["member_recipes"] == [ckpt["recipe"]] * 2
    assert upgrade(ckpt) == ckpt
    write_metrics(tmp_path / "m.csv", loaded)  # no test split: empty test columns
    with open(tmp_path / "m.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["test_acc"] == "" and math.isfinite(float(rows[0]["train_loss"]))


def test_a_seed_may_repeat_across_points(vectors):
    # a sweep trains every point with the same seeds: member (seed 0, lr a) and (seed 0, lr b)
    x, y = vectors
    x = x.double()
    recipes = members(BASE, SGD_MEMBERS[:2])
    ckpt = train_shard(x, y, [0, 0], MLP, recipes, "cpu", progress=False)
    assert_members_match(ckpt, x, y, MLP, recipes, atol=1e-12)
    with pytest.raises(ContractError, match="seed 0 appears twice"):
        train_shard(x, y, [0, 0], MLP, BASE, "cpu", progress=False)
