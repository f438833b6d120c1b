"""The model zoo: shapes, features/head contract, width knobs, determinism, bad specs."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from multirun.contracts import ContractError
from multirun.model_spec import normalize_spec
from multirun.models import build_model, count_parameters, meta_model

CASES = [
    ({"name": "mlp", "width": 8, "depth": 2, "batchnorm": False}, (40,), 8),
    ({"name": "mlp", "width": 8, "depth": 3, "batchnorm": True}, (3, 4, 4), 8),
    ({"name": "mlp", "width": 8, "depth": 0, "batchnorm": False}, (40,), 40),
    ({"name": "cnn1d", "width": 25, "batchnorm": False}, (40,), 125),
    ({"name": "cnn1d", "width": 4, "batchnorm": True}, (2, 40), 20),
    ({"name": "airbench", "width": 4, "batchnorm": True}, (3, 32, 32), 16),
    ({"name": "airbench", "width": 2, "batchnorm": False}, (3, 16, 16), 8),
    ({"name": "resnet18", "width": 2, "batchnorm": True}, (3, 16, 16), 16),
    ({"name": "resnet18", "width": 3, "batchnorm": False}, (1, 8, 8), 24),
]


@pytest.mark.parametrize(("spec", "shape", "dim"), CASES)
def test_shapes_and_features_head_contract(spec, shape, dim):
    torch.manual_seed(0)
    model = build_model(spec, shape, 5).eval()
    x = torch.randn(6, *shape)
    logits = model(x)
    feats = model.features(x)
    assert logits.shape == (6, 5) and logits.dtype == torch.float32
    assert feats.shape == (6, dim)
    assert isinstance(model.head, nn.Linear) and model.head.in_features == dim
    torch.testing.assert_close(model.head(feats), logits, rtol=0, atol=0)
    both = model(x, return_features=True)
    torch.testing.assert_close(both[0], feats, rtol=0, atol=0)
    torch.testing.assert_close(both[1], logits, rtol=0, atol=0)


@pytest.mark.parametrize(("spec", "shape", "dim"), CASES[:1] + CASES[3:4] + CASES[5:6])
def test_built_from_the_global_rng(spec, shape, dim):
    torch.manual_seed(3)
    a = build_model(spec, shape, 4).state_dict()
    torch.manual_seed(3)
    b = build_model(spec, shape, 4).state_dict()
    torch.manual_seed(4)
    c = build_model(spec, shape, 4).state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())


def test_mlp_matches_plain_matrix_products():
    torch.manual_seed(0)
    model = build_model({"name": "mlp", "width": 7, "depth": 2}, (5,), 3)
    x = torch.randn(4, 5)
    w1, b1 = model.body[0].weight, model.body[0].bias
    w2, b2 = model.body[3].weight, model.body[3].bias
    h = torch.clamp(x @ w1.T + b1, min=0)
    h = torch.clamp(h @ w2.T + b2, min=0)
    expected = h @ model.head.weight.T + model.head.bias
    torch.testing.assert_close(model(x), expected)


def test_cnn1d_is_the_mnist1d_convbase():
    torch.manual_seed(0)
    model = build_model({"name": "cnn1d", "width": 25}, (40,), 10)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv1d)]
    assert [(c.kernel_size[0], c.stride[0], c.padding[0]) for c in convs] == [
        (5, 2, 1), (3, 2, 1), (3, 2, 1)]
    x = torch.randn(3, 40)
    h = x[:, None]
    for c in convs:
        h = F.relu(F.conv1d(h, c.weight, c.bias, stride=2, padding=1))
    torch.testing.assert_close(model.features(x), h.flatten(1))


def test_width_knobs():
    spec = {"name": "resnet18", "width": 4, "batchnorm": True}
    model = build_model(spec, (3, 8, 8), 10)
    convs = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert sorted(set(convs)) == [4, 8, 16, 32]  # widths k, 2k, 4k, 8k
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 16  # two per pre-activation block, 8 blocks
    assert not any(isinstance(m, nn.BatchNorm2d)
                   for m in build_model({**spec, "batchnorm": False}, (3, 8, 8), 10).modules())
    air = build_model({"name": "airbench", "width": 8, "batchnorm": True}, (3, 32, 32), 10)
    assert sorted({m.out_channels for m in air.groups.modules() if isinstance(m, nn.Conv2d)}) \
        == [8, 32]
    sizes = [count_parameters(build_model({"name": "mlp", "width": w, "depth": 1}, (40,), 10))
             for w in (4, 8)]
    assert sizes == [40 * 4 + 4 + 4 * 10 + 10, 40 * 8 + 8 + 8 * 10 + 10]


def test_batchnorm_layers_drop_the_redundant_bias():
    model = build_model({"name": "mlp", "width": 6, "depth": 2, "batchnorm": True}, (4,), 3)
    assert model.body[0].bias is None and isinstance(model.body[1], nn.BatchNorm1d)


@pytest.mark.parametrize(("spec", "shape", "key"), [
    ({"name": "vgg", "width": 4}, (40,), "train.model.name"),
    ({"name": "mlp", "width": 0}, (40,), "train.model.width"),
    ({"name": "mlp", "width": 2.5}, (40,), "train.model.width"),
    ({"name": "mlp", "width": 4, "depth": -1}, (40,), "train.model.depth"),
    ({"name": "mlp", "width": 4, "batchnorm": "yes"}, (40,), "train.model.batchnorm"),
    ({"name": "resnet18", "width": 4}, (40,), "train.model.name"),
    ({"name": "airbench", "width": 4}, (3, 8, 8), "train.model.name"),
    ({"name": "cnn1d", "width": 4}, (3, 8, 8), "train.model.name"),
])
def test_bad_specs_name_the_config_key(spec, shape, key):
    with pytest.raises(ContractError, match=key.replace(".", r"\.")):
        build_model(spec, shape, 10)


def test_normalize_spec_keeps_only_what_changes_the_model():
    assert normalize_spec({"name": "cnn1d", "width": 3, "depth": 9}) == {
        "name": "cnn1d", "width": 3, "batchnorm": False}
    assert normalize_spec({"name": "mlp", "width": 3})["depth"] == 2


def test_meta_model_has_the_shapes_and_no_storage():
    spec = {"name": "airbench", "width": 4, "batchnorm": True}
    real, meta = build_model(spec, (3, 12, 12), 10), meta_model(spec, (3, 12, 12), 10)
    shapes = {k: v.shape for k, v in real.state_dict().items()}
    assert {k: v.shape for k, v in meta.state_dict().items()} == shapes
    assert all(v.is_meta for v in meta.state_dict().values())
