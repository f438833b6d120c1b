"""Your own model (docs/models.md): examples/resmlp.py end to end (on your own dataset, the
other door, in the same run), the bad-input messages, and the rerun promises of its code hash."""

from __future__ import annotations

import shutil
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT, planned_jobs, snakemake, tiny_config, write_config

from multirun import contracts, model_spec, models
from multirun.checkpoint import evaluate_shard, load_member
from multirun.codehash import file_hash
from multirun.config import ConfigError, check
from multirun.contracts import ContractError
from multirun.data import make_digits
from multirun.hessian import HessianOperator
from multirun.schema import default
from multirun.train import train_one, train_shard

EXAMPLE = ROOT / "examples" / "resmlp.py"
RESMLP = {"name": f"{EXAMPLE}:ResMLP", "width": 6, "depth": 2, "batchnorm": False,
          "expansion": 2}
RECIPE = default("train", "recipe") | {"epochs": 2, "batch_size": 8, "lr": 0.1,
                                       "label_smoothing": 0.1, "label_noise": 0.25}


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(40, 12, generator=g, dtype=torch.float64), torch.randint(0, 3, (40,), generator=g)


def test_resmlp_shard_is_exact_against_the_one_model_loop(data):
    x, y = data
    ckpt = train_shard(x, y, [3, 5], RESMLP, RECIPE, "cpu", progress=False)
    assert ckpt["model_spec"] == model_spec.normalize_spec(RESMLP)
    for i, seed in enumerate(ckpt["seeds"]):
        ref = train_one(x, y, seed, RESMLP, RECIPE)
        assert set(ref) == set(ckpt["state"]) and any("norm" in k for k in ref)  # LayerNorm
        for k, v in ref.items():
            torch.testing.assert_close(ckpt["state"][k][i], v, rtol=0, atol=1e-12, msg=k)
    # logits and features of the vectorised evaluation are those of each member alone
    logits, feats = evaluate_shard(ckpt, x, batch_size=7, device="cpu", features=True)
    assert logits.shape == (2, 40, 3) and feats.shape == (2, 40, 6)
    for i in range(2):
        member = load_member(ckpt, i).double()
        torch.testing.assert_close(logits[i].double(), member(x), rtol=0, atol=1e-5)
        torch.testing.assert_close(feats[i].double(), member.features(x), rtol=0, atol=1e-5)


def dense_hessian_revrev(model, x, y) -> torch.Tensor:
    """Reverse-over-reverse dense Hessian of the mean loss (torch.autograd.functional.hessian).

    Not torch.func.hessian (forward over reverse): in torch 2.14 it returns a non-symmetric,
    wrong block for a LayerNorm weight whose input depends on the parameters (a 24-parameter
    ``layer_norm(x @ A, w, b)`` shows it), which this model has.
    """
    named = {n: p.detach() for n, p in model.named_parameters()}
    sizes = [p.numel() for p in named.values()]

    def loss(flat):
        parts = torch.split(flat, sizes)
        p = {n: t.view(q.shape) for (n, q), t in zip(named.items(), parts, strict=True)}
        return F.cross_entropy(torch.func.functional_call(model, p, (x,)), y)

    flat = torch.cat([p.reshape(-1) for p in named.values()])
    return torch.autograd.functional.hessian(loss, flat, vectorize=True)


@pytest.mark.parametrize("method", ["fwdrev", "revrev"])
def test_resmlp_hessian_matches_dense_float64(data, method):
    x, y = data
    x = x[:, :5]
    torch.manual_seed(0)
    model = models.build_model(RESMLP | {"width": 4, "depth": 1}, (5,), 3).double()
    op = HessianOperator(model, x, y, batch_size=16, method=method)  # batches 16, 16, 8
    H = dense_hessian_revrev(model, x, y)
    torch.testing.assert_close(H, H.T, rtol=0, atol=1e-12)
    assert op.dim == H.shape[0] == models.count_parameters(model)
    v = torch.randn(op.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(op.matvec(v), H @ v, rtol=1e-10, atol=1e-12)


def test_a_model_without_features_gives_empty_features(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "plain.py").write_text(textwrap.dedent("""
        import math
        from torch import nn
        def plain(input_shape, num_classes, width, **_):
            return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), width),
                                 nn.Tanh(), nn.Linear(width, num_classes))
    """))
    spec = {"name": "plain.py:plain", "width": 5, "depth": 9, "batchnorm": False}
    x, y = torch.randn(20, 4), torch.randint(0, 2, (20,))
    ckpt = train_shard(x, y, [0, 1], spec, RECIPE, "cpu", progress=False)
    logits, feats = evaluate_shard(ckpt, x, batch_size=8, device="cpu", features=True)
    assert feats.shape == (2, 20, 0)
    torch.testing.assert_close(logits[1], load_member(ckpt, 1)(x))


def test_package_module_name_and_builtins_share_the_registry():
    built = models.build_model({"name": "torch.nn:Identity"}, (4,), 2)
    assert isinstance(built, torch.nn.Identity)
    assert models.resolve_model("mlp") is models.REGISTRY["mlp"]
    assert set(models.MODEL_NAMES) == {"mlp", "cnn1d", "airbench", "resnet18"}
    assert model_spec.model_files({"name": "mlp"}) == []


BAD = {
    "missing file": ("nope.py:Net", None, r"train\.model\.name: nope\.py:Net: file nope\.py does not exist"),
    "missing name": (
        "net.py:Nett",
        "class Net: pass\n",
        r"net\.py:Nett: file net\.py does not define 'Nett' \(it defines \['Net'\]\)",
    ),
    "import error": (
        "net.py:Net",
        "import no_such_package\n",
        r"net\.py:Net: importing net\.py failed \(ModuleNotFoundError",
    ),
    "build failure": (
        "net.py:Net",
        "def Net(input_shape, num_classes):\n    return None\n",
        r"net\.py:Net: building the model failed \(TypeError: .*width.*"
        r"called as Net\(input_shape, num_classes, width\)",
    ),
    "raises": (
        "net.py:Net",
        "def Net(**kw):\n    raise ValueError('no good')\n",
        r"net\.py:Net: building the model failed \(ValueError: no good\)",
    ),
    "not a module": (
        "net.py:Net",
        "def Net(**kw):\n    return 3\n",
        r"net\.py:Net: returned a int, not a torch\.nn\.Module",
    ),
    "no module": (
        "no_such_pkg.sub:Net",
        None,
        r"no_such_pkg\.sub:Net: importing module no_such_pkg\.sub failed",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_user_models_name_the_file_and_the_name(case, tmp_path, monkeypatch):
    name, source, message = BAD[case]
    monkeypatch.chdir(tmp_path)
    if source is not None:
        (tmp_path / "net.py").write_text(source)
    with pytest.raises(ContractError, match=message):
        models.build_model({"name": name, "width": 3}, (4,), 2)


WRONG_OUTPUT = {
    "five logits on three classes": (
        "class Net(torch.nn.Linear):\n    def __init__(self, input_shape, num_classes, **kw):\n"
        "        super().__init__(input_shape[0], 5)\n",
        r"forward on a batch of shape \(2, 4\) returned a torch\.float32 tensor of shape "
        r"\(2, 5\); expected floating logits "
        r"\(2, 3\), one per class"),
    "no flatten": (
        "class Net(torch.nn.Linear):\n    def __init__(self, input_shape, num_classes, **kw):\n"
        "        super().__init__(7, num_classes)\n",
        r"forward on a batch of shape \(2, 4\) failed \(RuntimeError"),
    "a tuple": (
        "class Net(torch.nn.Linear):\n    def __init__(self, input_shape, num_classes, **kw):\n"
        "        super().__init__(input_shape[0], num_classes)\n"
        "    def forward(self, x):\n        return super().forward(x), x\n",
        r"forward on a batch of shape \(2, 4\) returned a tuple; expected floating logits"),
}


@pytest.mark.parametrize("case", list(WRONG_OUTPUT))
@pytest.mark.parametrize("trainer", ["shard", "one"])
def test_a_model_whose_forward_does_not_give_the_classes_stops_before_training(
        case, trainer, tmp_path, monkeypatch):
    source, message = WRONG_OUTPUT[case]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "net.py").write_text("import torch\n\n" + source)
    x, y = torch.randn(12, 4), torch.arange(12) % 3
    spec, recipe = {"name": "net.py:Net"}, RECIPE
    with pytest.raises(ContractError, match=r"train\.model\.name: net\.py:Net: " + message):
        if trainer == "shard":
            train_shard(x, y, [0, 1], spec, recipe, "cpu", progress=False)
        else:
            train_one(x, y, 0, spec, recipe)


def test_a_model_that_cannot_be_vectorised_is_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # .item() works in the one-model loop, not under vmap
    (tmp_path / "net.py").write_text(
        "import torch\n\nclass Net(torch.nn.Linear):\n"
        "    def __init__(self, input_shape, num_classes, **kw):\n"
        "        super().__init__(input_shape[0], num_classes)\n"
        "    def forward(self, x):\n        return super().forward(x) * float(x.sum().item() > 0)\n")
    x, y = torch.randn(12, 4), torch.arange(12) % 3
    with pytest.raises(ContractError, match=r"train\.model\.name: net\.py:Net: a training step "
                       r"vectorised over members with torch\.func\.vmap failed"):
        train_shard(x, y, [0, 1], {"name": "net.py:Net"}, RECIPE, "cpu", progress=False)
    with pytest.raises(ContractError, match=r"^studies\.label_noise\.architectures\.mine\.name: "
                                            r"net\.py:Net: a training step"):
        train_shard(x, y, [0, 1], {"name": "net.py:Net"}, RECIPE, "cpu", progress=False,
                    where="studies.label_noise", model_key="studies.label_noise.architectures.mine")


def test_schema_allows_extra_keys_only_for_user_models():
    cfg = check({"train": {"model": {"name": "examples/resmlp.py:ResMLP", "expansion": 3}}})
    assert cfg["train"]["model"] == {"name": "examples/resmlp.py:ResMLP", "expansion": 3,
                                     "width": 100, "depth": 2, "batchnorm": False}
    with pytest.raises(ConfigError, match=r"train\.model\.expansion: unknown key; a built-in"):
        check({"train": {"model": {"name": "mlp", "expansion": 3}}})
    with pytest.raises(ConfigError, match=r"train\.model\.name: unknown model 'vit'.*FILE\.py:Name"):
        check({"train": {"model": {"name": "vit"}}})


# ----------------------------------------------------------------------------- the workflow


@pytest.fixture(scope="module")
def resmlp_run(tmp_path_factory):
    """Both doors in one run (one workflow run fewer in the suite): the tiny config with
    train.model = examples/resmlp.py:ResMLP on your own dataset, scikit-learn's digits
    written to ``mine.npz`` (pictures included; docs/datasets.md), run to the end."""
    workdir = tmp_path_factory.mktemp("resmlp_run")
    (workdir / "examples").mkdir()
    shutil.copy(EXAMPLE, workdir / "examples" / "resmlp.py")
    (workdir / "other.py").write_text("x = 1\n")
    np.savez(workdir / "mine.npz", **make_digits(seed=0))
    cfg = tiny_config()
    cfg["dataset"] = {**cfg["dataset"], "name": "npz", "path": "mine.npz"}
    cfg["train"]["model"] = {"name": "examples/resmlp.py:ResMLP", "width": 8, "depth": 1,
                             "batchnorm": False, "expansion": 2}
    cfg["width_sweep"]["default_widths"] = []  # the sweep trains the built-in MLP: not this test's
    write_config(workdir, cfg)
    snakemake(workdir)
    return workdir


@pytest.mark.workflow
def test_own_model_runs_the_workflow_and_its_file_is_in_the_code_hash(resmlp_run):
    workdir = resmlp_run
    assert (workdir / "results/figures/neighbour_random.png").is_file()
    assert (workdir / "results/hessian/shard-000-0.npz").is_file()
    assert planned_jobs(workdir) == {}
    (workdir / "other.py").write_text("x = 2\n")  # a user file no model names: nothing reruns
    assert planned_jobs(workdir) == {}
    source = workdir / "examples" / "resmlp.py"
    original = source.read_text()
    try:
        source.write_text(original + "\n# edited\n")
        proc = snakemake(workdir, "--dry-run")
        out = proc.stdout + proc.stderr  # the reason names the file, before and now
        before, now = file_hash(EXAMPLE), file_hash(source)
        assert f"'examples/resmlp.py': '{before}'" in out and f"'examples/resmlp.py': '{now}'" in out
        jobs = planned_jobs(workdir)
        assert jobs["train_shard"] == 2 and jobs["logits"] == 2 and jobs["hessian"] == 1
        assert jobs["figure_neighbours"] == 1 and "dataset" not in jobs
    finally:
        source.write_text(original)


@pytest.mark.workflow
def test_own_dataset_runs_the_workflow_and_editing_it_reruns_what_follows(resmlp_run):
    """The same run's dataset door: the stored dataset is the file's, and an edit of the
    file reruns the dataset and what follows."""
    workdir = resmlp_run
    arrays = make_digits(seed=0)
    stored = contracts.load_dataset(workdir / "results/data/dataset.npz")
    np.testing.assert_array_equal(stored["images_train"], arrays["images_train"])
    assert (workdir / "results/figures/neighbour_pairs.png").is_file()
    assert planned_jobs(workdir) == {}
    assert planned_jobs(workdir, "--config", "dataset={name: npz, path: ./mine.npz}") == {}
    original = (workdir / "mine.npz").read_bytes()
    try:
        arrays["y_train"][:5] = (arrays["y_train"][:5] + 1) % 10
        np.savez(workdir / "mine.npz", **arrays)
        jobs = planned_jobs(workdir)
        assert jobs["dataset"] == 1 and jobs["train_shard"] == 2 and jobs["kernel"] >= 1
        assert jobs["figure_neighbours"] == 1
    finally:
        (workdir / "mine.npz").write_bytes(original)


def test_the_feature_figure_says_why_it_has_no_feature_neighbours():
    from multirun.plots import neighbours as nplots

    rng = np.random.default_rng(0)
    index = rng.integers(0, 12, (6, 3))
    fig = nplots.random_neighbours(index, None, rng.normal(size=(6, 5)), rng.normal(size=(12, 5)),
                                   examples=3, feature_note="the model defines no features(x)")
    assert "no feature neighbours: the model defines no features(x)" in fig._suptitle.get_text()
    with_features = nplots.random_neighbours(index, index, rng.normal(size=(6, 5)),
                                             rng.normal(size=(12, 5)), examples=3)
    assert "penultimate features" in with_features._suptitle.get_text()
