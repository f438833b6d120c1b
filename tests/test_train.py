"""Vectorised multi-seed training against the plain one-model loop, checkpoints, bad input."""

import math

import pytest
import torch
import torch.nn.functional as F

from multirun.checkpoint import evaluate_shard, load_checkpoint, load_member
from multirun.contracts import ContractError, save_torch
from multirun.recipe import lr_at, normalize_recipe
from multirun.streams import training_labels
from multirun.train import (
    CROP_PAD,
    apply_augment,
    draw_augment,
    train_one,
    train_shard,
)

RECIPE = {"epochs": 2, "batch_size": 16, "optimizer": "nesterov", "lr": 0.1, "momentum": 0.9,
          "weight_decay": 5e-4, "warmup_epochs": 1, "schedule": "cosine",
          "label_smoothing": 0.1, "label_noise": 0.25}
MLP = {"name": "mlp", "width": 16, "depth": 2, "batchnorm": False}


@pytest.fixture(scope="module")
def vectors():
    g = torch.Generator().manual_seed(0)
    return torch.randn(64, 40, generator=g), torch.randint(0, 4, (64,), generator=g)


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(1)
    return torch.randn(24, 3, 12, 12, generator=g), torch.randint(0, 3, (24,), generator=g)


def assert_matches_plain_loop(ckpt, x, y, spec, recipe, atol, device="cpu"):
    for i, seed in enumerate(ckpt["seeds"]):
        ref = train_one(x, y, seed, spec, recipe, device)
        assert set(ref) == set(ckpt["state"])
        for k, v in ref.items():
            got = ckpt["state"][k][i]
            assert got.dtype == v.dtype, k
            torch.testing.assert_close(got, v, rtol=0, atol=atol, msg=f"seed {seed} {k}")
        member = load_member(ckpt, i)
        assert not member.training


# ----------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("spec", [
    MLP,
    {"name": "mlp", "width": 16, "depth": 2, "batchnorm": True},
    {"name": "cnn1d", "width": 6, "batchnorm": True},
])
@pytest.mark.parametrize("optimizer", ["sgd", "nesterov"])
def test_shard_equals_plain_loop_fp32(vectors, spec, optimizer, device):
    x, y = vectors
    recipe = {**RECIPE, "optimizer": optimizer}
    ckpt = train_shard(x, y, [0, 3, 7], spec, recipe, device, progress=False)
    assert_matches_plain_loop(ckpt, x, y, spec, recipe, atol=1e-5, device=device)
    # the logits of the shard's models agree too
    logits, _ = evaluate_shard(ckpt, x, batch_size=64, device=device)
    ref = train_one(x, y, 7, spec, recipe, device)
    model = load_member(ckpt, 2)
    model.load_state_dict(ref)
    with torch.no_grad():
        torch.testing.assert_close(logits[2], model(x), rtol=0, atol=1e-5)


@pytest.mark.parametrize("depth", [0, 2])
@pytest.mark.parametrize("optimizer, momentum, fused", [
    ("sgd", 0.9, True), ("nesterov", 0.9, True), ("sgd", 0.0, True), ("nesterov", 0.9, False),
], ids=["sgd", "nesterov", "no-momentum", "nesterov-unfused"])
def test_mlp_program_equals_plain_loop_fp64(vectors, depth, optimizer, momentum, fused,
                                            monkeypatch, device):
    # The hand-written batched MLP (multirun.programs.MLPProgram) computes what autograd
    # and torch.optim.SGD compute: in float64 the two agree to rounding.
    if not fused:
        monkeypatch.delattr(torch, "_fused_sgd_", raising=False)
    x, y = vectors
    x = x.double()
    spec = {**MLP, "depth": depth}
    recipe = {**RECIPE, "optimizer": optimizer, "momentum": momentum}
    ckpt = train_shard(x, y, [0, 3], spec, recipe, device, progress=False, program="mlp")
    assert_matches_plain_loop(ckpt, x, y, spec, recipe, atol=1e-12, device=device)
    vmapped = train_shard(x, y, [0, 3], spec, recipe, device, progress=False, program="vmap")
    for k in ("train_loss", "train_acc", "lr"):
        torch.testing.assert_close(ckpt["history"][k], vmapped["history"][k], rtol=0, atol=1e-6)


@pytest.mark.parametrize("length, channels", [(40, None), (19, 2)])
def test_cnn1d_program_equals_plain_loop_fp64(vectors, length, channels, device):
    # The hand-written batched 1-D CNN (im2col + bmm) computes what autograd computes.
    x, y = vectors
    x = x[:, :length].double() if channels is None else x[:, :channels * length].double()
    if channels:
        x = x.view(len(x), channels, length)
    spec = {"name": "cnn1d", "width": 6, "batchnorm": False}
    ckpt = train_shard(x, y, [0, 3], spec, RECIPE, device, progress=False, program="cnn1d")
    assert_matches_plain_loop(ckpt, x, y, spec, RECIPE, atol=1e-12, device=device)
    vmapped = train_shard(x, y, [0, 3], spec, RECIPE, device, progress=False, program="vmap")
    for k in ("train_loss", "train_acc"):
        torch.testing.assert_close(ckpt["history"][k], vmapped["history"][k], rtol=0, atol=1e-6)


def test_mlp_program_only_for_plain_mlps(vectors):
    x, y = vectors
    with pytest.raises(ValueError, match="program mlp"):
        train_shard(x, y, [0], {**MLP, "batchnorm": True}, RECIPE, "cpu", progress=False,
                    program="mlp")
    with pytest.raises(ValueError, match="program"):
        train_shard(x, y, [0], MLP, RECIPE, "cpu", progress=False, program="jit")


def test_batchnorm_running_stats_are_per_seed(vectors):
    x, y = vectors
    spec = {"name": "mlp", "width": 16, "depth": 1, "batchnorm": True}
    ckpt = train_shard(x, y, [0, 1], spec, RECIPE, "cpu", progress=False)
    mean = ckpt["state"]["body.1.running_mean"]
    assert mean.shape == (2, 16) and not torch.allclose(mean[0], mean[1])
    steps = RECIPE["epochs"] * (len(x) // RECIPE["batch_size"])
    assert ckpt["state"]["body.1.num_batches_tracked"].tolist() == [steps, steps]
    assert_matches_plain_loop(ckpt, x, y, spec, RECIPE, atol=1e-5)


@pytest.mark.parametrize("spec, augment, seeds, dtype, atol", [
    ({"name": "resnet18", "width": 2, "batchnorm": True}, "flip_crop", [2, 5], torch.float32, 1e-5),
    ({"name": "airbench", "width": 4, "batchnorm": False}, "flip", [0, 1], torch.float32, 1e-5),
    # In fp32 airbench's BatchNorm on 1x1 maps amplifies rounding (the plain loop in fp32
    # differs from fp64 by as much); fp64 shows the two programs compute the same.
    ({"name": "airbench", "width": 4, "batchnorm": True}, "flip_crop", [0, 1], torch.float64, 1e-10),
], ids=["resnet18-bn-flipcrop", "airbench-fp32", "airbench-bn-fp64"])
def test_image_models_equal_plain_loop(images, spec, augment, seeds, dtype, atol, device):
    x, y = images
    x = x.to(dtype)
    recipe = {**RECIPE, "batch_size": 8, "epochs": 1, "augment": augment}
    ckpt = train_shard(x, y, seeds, spec, recipe, device, progress=False)
    assert_matches_plain_loop(ckpt, x, y, spec, recipe, atol=atol, device=device)


def test_a_seed_does_not_depend_on_its_shard(vectors):
    x, y = vectors
    a = train_shard(x, y, [5], MLP, RECIPE, "cpu", progress=False)
    b = train_shard(x, y, [1, 5, 9], MLP, RECIPE, "cpu", progress=False)
    for k in a["state"]:
        torch.testing.assert_close(a["state"][k][0], b["state"][k][1], rtol=0, atol=1e-6)
    assert not torch.allclose(b["state"]["head.weight"][0], b["state"]["head.weight"][1])


def test_same_seed_twice_gives_identical_logits(vectors):
    x, y = vectors
    runs = [train_shard(x, y, [3, 4], MLP, RECIPE, "cpu", progress=False) for _ in range(2)]
    logits = [evaluate_shard(r, x, batch_size=32, device="cpu")[0] for r in runs]
    assert torch.equal(logits[0], logits[1])  # bit for bit on the CPU


# ----------------------------------------------------------------------------- recipe pieces


def test_training_labels():
    y = torch.arange(200) % 10
    assert torch.equal(training_labels(y, 0, 0.0, 10), y)
    noisy = training_labels(y, 3, 0.3, 10)
    changed = noisy != y
    assert noisy.dtype == torch.int64 and int(changed.sum()) == 60  # exactly 30%, all wrong
    assert int(noisy.min()) >= 0 and int(noisy.max()) < 10
    assert torch.equal(noisy, training_labels(y, 3, 0.3, 10))
    assert not torch.equal(noisy, training_labels(y, 4, 0.3, 10))


def test_lr_schedule():
    recipe = normalize_recipe({**RECIPE, "lr": 0.4})
    total, warm = 100, 10
    assert [lr_at(s, total, warm, recipe) for s in (0, 4, 9)] == pytest.approx(
        [0.04, 0.2, 0.4])
    for step in (10, 37, 99):
        p = (step - warm) / (total - warm)
        assert lr_at(step, total, warm, recipe) == pytest.approx(0.2 * (1 + math.cos(math.pi * p)))
    lin = {**recipe, "schedule": "linear"}
    assert lr_at(55, total, warm, lin) == pytest.approx(0.4 * (1 - 45 / 90))
    assert lr_at(99, total, 0, {**recipe, "schedule": "constant"}) == 0.4


def test_flip_crop_matches_a_per_example_reference():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 2, 6, 7, generator=g)
    drawn = draw_augment("flip_crop", 5, torch.Generator().manual_seed(1))
    out = apply_augment(x, drawn)
    for i in range(5):
        img = x[i].flip(-1) if drawn["flip"][i] else x[i]
        padded = F.pad(img[None], (CROP_PAD,) * 4, mode="reflect")[0]
        dy, dx = drawn["shift"][i].tolist()
        torch.testing.assert_close(out[i], padded[:, dy:dy + 6, dx:dx + 7], rtol=0, atol=0)


def test_history_and_progress_bar(vectors, capsys):
    x, y = vectors
    ckpt = train_shard(x, y, [0, 1], MLP, {**RECIPE, "epochs": 3, "label_noise": 0.0}, "cpu")
    err = capsys.readouterr().err
    assert "train 2 seeds" in err and "12/12" in err  # 3 epochs x 4 steps
    hist = ckpt["history"]
    assert hist["train_loss"].shape == (2, 3) and hist["train_acc"].shape == (2, 3)
    assert hist["lr"].shape == (12,) and float(hist["lr"].max()) == pytest.approx(0.1)
    assert (hist["train_loss"][:, -1] < hist["train_loss"][:, 0]).all()
    assert ckpt["num_classes"] == 4 and ckpt["input_shape"] == (40,)


# ----------------------------------------------------------------------------- evaluation


def test_evaluate_shard_matches_members(images):
    x, y = images
    spec = {"name": "resnet18", "width": 2, "batchnorm": True}
    ckpt = train_shard(x, y, [0, 1, 2], spec, {**RECIPE, "epochs": 1, "batch_size": 8},
                       "cpu", progress=False)
    logits, feats = evaluate_shard(ckpt, x, batch_size=5, device="cpu", features=True)
    assert logits.shape == (3, 24, 3) and feats.shape == (3, 24, 16)
    assert logits.dtype == feats.dtype == torch.float32
    for i in range(3):
        model = load_member(ckpt, i)
        with torch.no_grad():  # eval mode: running statistics, independent of the batch
            torch.testing.assert_close(logits[i], model(x), rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(feats[i], model.features(x), rtol=1e-5, atol=1e-5)
    assert evaluate_shard(ckpt, x, batch_size=5, device="cpu")[1] is None


# ----------------------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip_and_mismatches(vectors, tmp_path):
    x, y = vectors
    ckpt = train_shard(x, y, [0, 1], MLP, {**RECIPE, "epochs": 1}, "cpu", progress=False)
    path = tmp_path / "shard.pt"
    save_torch(path, ckpt)
    loaded = load_checkpoint(path, model_spec=MLP, seeds=[0, 1])
    for k in ckpt["state"]:
        assert torch.equal(loaded["state"][k], ckpt["state"][k])
    with pytest.raises(ContractError, match=r"shard\.pt.*train\.model\.width"):
        load_checkpoint(path, model_spec={**MLP, "width": 32})
    with pytest.raises(ContractError, match=r"shard\.pt.*seeds"):
        load_checkpoint(path, seeds=[0, 2])
    bad = dict(ckpt, state={**ckpt["state"], "head.weight": ckpt["state"]["head.weight"][:, :2]})
    save_torch(tmp_path / "bad.pt", bad)
    with pytest.raises(ContractError, match=r"bad\.pt.*head\.weight"):
        load_checkpoint(tmp_path / "bad.pt")
    (tmp_path / "trunc.pt").write_bytes(path.read_bytes()[:100])
    with pytest.raises(ContractError, match=r"trunc\.pt"):
        load_checkpoint(tmp_path / "trunc.pt")


def assert_plain(obj, where="checkpoint"):
    """Only tensors and plain types (what torch.load(weights_only=True) reads) anywhere."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            assert isinstance(k, (str, int)), f"{where}: key {k!r}"
            assert_plain(v, f"{where}[{k!r}]")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            assert_plain(v, f"{where}[{i}]")
    else:
        assert obj is None or type(obj) in (str, int, float, bool, torch.Tensor), \
            f"{where}: {type(obj).__name__}"


class RunsCode:
    """What a shared checkpoint could carry: building it runs a shell command (here it only
    writes a marker file)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os
        import shlex

        return (os.system, (f"touch {shlex.quote(self.marker)}",))


def test_checkpoint_holds_plain_types_and_a_pickle_that_runs_code_is_refused(vectors, tmp_path):
    x, y = vectors
    ckpt = train_shard(x, y, [0, 1], MLP, {**RECIPE, "epochs": 2, "patience": 1}, "cpu",
                       progress=False, validation=(x[:20], y[:20]))
    assert "best_epoch" in ckpt["history"]
    assert_plain(ckpt)
    save_torch(tmp_path / "shard.pt", ckpt)
    assert load_checkpoint(tmp_path / "shard.pt")["seeds"] == [0, 1]  # weights_only reads it
    marker = tmp_path / "ran"
    save_torch(tmp_path / "shared.pt", {**ckpt, "extra": RunsCode(marker)})
    with pytest.raises(ContractError, match=r"shared\.pt: holds pickled objects other than "
                       r"tensors.*could run code.*system.*refused, nothing in it ran"):
        load_checkpoint(tmp_path / "shared.pt")
    assert not marker.exists()
    torch.load(tmp_path / "shared.pt", weights_only=False)  # the payload is live: unsafe runs it
    assert marker.exists()


@pytest.mark.parametrize(("change", "key"), [
    ({"optimizer": "lamb"}, "train.recipe.optimizer"),
    ({"schedule": "step"}, "train.recipe.schedule"),
    ({"epochs": 0}, "train.recipe.epochs"),
    ({"label_noise": 1.5}, "train.recipe.label_noise"),
    ({"augment": "mixup"}, "train.recipe.augment"),
])
def test_bad_recipes_name_the_config_key(vectors, change, key):
    x, y = vectors
    with pytest.raises(ContractError, match=key.replace(".", r"\.")):
        train_shard(x, y, [0], MLP, {**RECIPE, **change}, "cpu", progress=False)


def test_bad_model_names_the_config_key(vectors):
    x, y = vectors
    with pytest.raises(ContractError, match=r"train\.model\.name"):
        train_shard(x, y, [0], {"name": "vit", "width": 4}, RECIPE, "cpu", progress=False)
    with pytest.raises(ContractError, match=r"train\.model\.width"):
        train_shard(x, y, [0], {**MLP, "width": 0}, RECIPE, "cpu", progress=False)


def test_divergence_is_reported(vectors):
    x, y = vectors
    with pytest.raises(ContractError, match=r"train\.recipe\.lr.*diverged"):
        train_shard(x * 1e30, y, [0, 1], MLP, {**RECIPE, "lr": 1e30, "warmup_epochs": 0},
                    "cpu", progress=False)
    # a study's seeds are told to lower the study's learning rate, not the main run's
    with pytest.raises(ContractError, match=r"lower studies\.memorization\.recipe\.lr"):
        train_shard(x * 1e30, y, [0, 1], MLP, {**RECIPE, "lr": 1e30, "warmup_epochs": 0},
                    "cpu", progress=False, where="studies.memorization")
