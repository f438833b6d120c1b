"""The model zoo: every model has a width knob, ``.features`` and a linear ``.head``.

All models map a float32 batch ``x`` of shape ``(B, *input_shape)`` to logits
``(B, num_classes)`` float32, and satisfy ``model(x) == model.head(model.features(x))``
where ``features(x)`` is the penultimate representation ``(B, D)``.

===========  ==================  ==============================================================
name         input_shape         architecture (width ``w``)
===========  ==================  ==============================================================
``mlp``      any (flattened)     ``depth`` hidden layers of ``w`` units, ReLU (BatchNorm1d
                                 before each ReLU when ``batchnorm``); ``D = w``
                                 (``depth = 0``: a linear model, ``D`` = input size)
``cnn1d``    ``(L,)``/``(C, L)``  the MNIST-1D paper's ConvBase: three Conv1d layers of ``w``
                                 channels (kernels 5, 3, 3; stride 2; padding 1), ReLU;
                                 ``D = w * L_out`` (the paper: ``w = 25``, ``D = 125``)
``airbench`` ``(C, H, W)``        airbench94-style CIFAR net: a 2x2 conv stem of ``8 C``
                                 channels + GELU, then three blocks
                                 ``conv3x3 -> maxpool2 -> BN -> GELU -> conv3x3 -> BN -> GELU``
                                 of widths ``(w, 4w, 4w)``, global max pool; ``D = 4w``
                                 (airbench94: ``w = 64``)
``resnet18`` ``(C, H, W)``        pre-activation ResNet-18 of Nakkiran et al.'s deep double
                                 descent: stages of widths ``(w, 2w, 4w, 8w)``, two
                                 pre-activation basic blocks each, strides ``(1, 2, 2, 2)``,
                                 global average pool; ``D = 8w`` (standard: ``w = 64``)
===========  ==================  ==============================================================

``batchnorm: false`` replaces every BatchNorm by the identity and gives the
preceding layer a bias; with BatchNorm on, layers feeding a BatchNorm have no bias
(it would be an exactly flat direction of the loss).

Initialisation is PyTorch's default for each layer, drawn from the global torch
RNG, so a model is a deterministic function of ``torch.manual_seed``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from multirun.contracts import ContractError
from multirun.schema import default

MODEL_NAMES = ("mlp", "cnn1d", "airbench", "resnet18")
_SPEC_DEFAULTS: dict[str, Any] = default("train", "model")  # the config schema's


def normalize_spec(spec: Mapping[str, Any], where: str = "train.model") -> dict[str, Any]:
    """Check a model spec and return its canonical form.

    The canonical spec keeps only the keys that change the model: ``name``,
    ``width``, ``batchnorm`` and, for ``mlp`` only, ``depth``. Raises
    :class:`ContractError` naming the config key (``{where}.name`` ...) when a
    value is invalid.
    """
    if not isinstance(spec, Mapping):
        raise ContractError(f"{where}: expected a mapping with name/width/..., got {spec!r}")
    name = spec.get("name")
    if name not in MODEL_NAMES:
        raise ContractError(
            f"{where}.name: unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}"
        )
    width = spec.get("width")
    if isinstance(width, bool) or not isinstance(width, int) or width <= 0:
        raise ContractError(f"{where}.width: must be an integer > 0, got {width!r}")
    batchnorm = spec.get("batchnorm", _SPEC_DEFAULTS["batchnorm"])
    if not isinstance(batchnorm, bool):
        raise ContractError(f"{where}.batchnorm: must be true or false, got {batchnorm!r}")
    out: dict[str, Any] = {"name": name, "width": width, "batchnorm": batchnorm}
    if name == "mlp":
        depth = spec.get("depth", _SPEC_DEFAULTS["depth"])
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
            raise ContractError(f"{where}.depth: must be an integer >= 0, got {depth!r}")
        out["depth"] = depth
    return out


def _norm(kind: str, channels: int, on: bool) -> nn.Module:
    if not on:
        return nn.Identity()
    return {"1d": nn.BatchNorm1d, "2d": nn.BatchNorm2d}[kind](channels)


class Classifier(nn.Module):
    """Base: ``forward(x) = head(features(x))``; subclasses define ``features``."""

    head: nn.Linear

    def features(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: Tensor, return_features: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """``x`` (B, *input_shape) float32 -> logits (B, num_classes) float32.

        With ``return_features`` it returns ``(features (B, D), logits (B, C))`` from
        one pass (used by ``torch.func.functional_call``, which only calls forward).
        """
        feats = self.features(x)
        logits = self.head(feats)
        return (feats, logits) if return_features else logits


class MLP(Classifier):
    """Fully connected ReLU network: ``depth`` hidden layers of ``width`` units."""

    def __init__(self, in_features: int, width: int, depth: int, num_classes: int,
                 batchnorm: bool = False):
        super().__init__()
        layers: list[nn.Module] = []
        d = in_features
        for _ in range(depth):
            layers += [nn.Linear(d, width, bias=not batchnorm), _norm("1d", width, batchnorm),
                       nn.ReLU()]
            d = width
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(d, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """(B, *input_shape) -> (B, width) (the flattened input when depth is 0)."""
        return self.body(x.flatten(1))


class CNN1D(Classifier):
    """The MNIST-1D paper's ConvBase with ``width`` channels (paper: 25)."""

    def __init__(self, in_channels: int, length: int, width: int, num_classes: int,
                 batchnorm: bool = False):
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for kernel in (5, 3, 3):
            layers += [nn.Conv1d(c, width, kernel, stride=2, padding=1, bias=not batchnorm),
                       _norm("1d", width, batchnorm), nn.ReLU()]
            c = width
        self.body = nn.Sequential(*layers)
        self.in_channels = in_channels
        with torch.no_grad():
            out_len = self.body(torch.zeros(2, in_channels, length)).shape[-1]
        self.head = nn.Linear(width * out_len, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """(B, L) or (B, C, L) -> (B, width * L_out)."""
        if x.dim() == 2:
            x = x.unsqueeze(1)
        return self.body(x).flatten(1)


class _ConvGroup(nn.Module):
    """airbench block: conv3x3 -> maxpool2 -> BN -> GELU -> conv3x3 -> BN -> GELU."""

    def __init__(self, c_in: int, c_out: int, batchnorm: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=not batchnorm)
        self.norm1 = _norm("2d", c_out, batchnorm)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=not batchnorm)
        self.norm2 = _norm("2d", c_out, batchnorm)

    def forward(self, x: Tensor) -> Tensor:
        x = F.gelu(self.norm1(F.max_pool2d(self.conv1(x), 2)))
        return F.gelu(self.norm2(self.conv2(x)))


class AirbenchCNN(Classifier):
    """CIFAR-10 net in the style of airbench94 (widths ``(w, 4w, 4w)``; airbench: w = 64).

    Differences from airbench94, on purpose: the 2x2 stem is a learnable conv
    (airbench freezes it to a patch-whitening transform computed from the data),
    BatchNorm is PyTorch's default (airbench: frozen scale, momentum 0.6), no
    output temperature, pooling is a global max pool (equal to airbench's
    MaxPool(3) on 32x32 inputs).
    """

    def __init__(self, in_channels: int, width: int, num_classes: int, batchnorm: bool = True):
        super().__init__()
        stem = 2 * in_channels * 2 * 2  # airbench: twice the 2x2 patch dimension (24 for RGB)
        self.stem = nn.Conv2d(in_channels, stem, 2, padding=0)
        widths = (width, 4 * width, 4 * width)
        self.groups = nn.Sequential(*[
            _ConvGroup(c_in, c_out, batchnorm)
            for c_in, c_out in zip((stem, *widths[:-1]), widths, strict=True)
        ])
        self.head = nn.Linear(widths[-1], num_classes)

    def features(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, 4 * width)."""
        x = self.groups(F.gelu(self.stem(x)))
        return torch.amax(x, dim=(-2, -1))


class _PreActBlock(nn.Module):
    """Pre-activation basic block (He et al. 2016b) as in Nakkiran et al.'s ResNet18."""

    def __init__(self, c_in: int, c_out: int, stride: int, batchnorm: bool):
        super().__init__()
        self.norm1 = _norm("2d", c_in, batchnorm)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=not batchnorm)
        self.norm2 = _norm("2d", c_out, batchnorm)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=not batchnorm)
        self.shortcut = (nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)
                         if stride != 1 or c_in != c_out else None)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.norm1(x))
        skip = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.norm2(out)))
        return out + skip


class ResNet18(Classifier):
    """Pre-activation ResNet-18 with base width ``k``: stage widths ``(k, 2k, 4k, 8k)``."""

    def __init__(self, in_channels: int, width: int, num_classes: int, batchnorm: bool = True):
        super().__init__()
        widths = (width, 2 * width, 4 * width, 8 * width)
        self.stem = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        blocks: list[nn.Module] = []
        c = width
        for i, w in enumerate(widths):
            for j in range(2):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(_PreActBlock(c, w, stride, batchnorm))
                c = w
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(widths[-1], num_classes)

    def features(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, 8 * width)."""
        return self.blocks(self.stem(x)).mean(dim=(-2, -1))


def build_model(spec: Mapping[str, Any], input_shape: tuple[int, ...], num_classes: int,
                where: str = "train.model") -> Classifier:
    """Build the model named by ``spec`` for inputs of ``input_shape`` (no batch dim).

    ``spec``: ``{"name": "mlp"|"cnn1d"|"airbench"|"resnet18", "width": int > 0,
    "depth": int >= 0 (mlp only), "batchnorm": bool}``. The parameters are drawn
    from the current global torch RNG (seed it for a deterministic model).
    Raises :class:`ContractError` naming ``{where}.<key>`` for a bad spec or an
    input shape the model cannot take.
    """
    spec = normalize_spec(spec, where)
    input_shape = tuple(int(s) for s in input_shape)
    if not input_shape or any(s <= 0 for s in input_shape):
        raise ContractError(f"{where}: input shape {input_shape} is empty")
    if isinstance(num_classes, bool) or int(num_classes) < 2:
        raise ContractError(f"{where}: need at least 2 classes, got {num_classes}")
    name, width, bn = spec["name"], spec["width"], spec["batchnorm"]
    if name == "mlp":
        in_features = 1
        for s in input_shape:
            in_features *= s
        return MLP(in_features, width, spec["depth"], num_classes, bn)
    if name == "cnn1d":
        if len(input_shape) not in (1, 2):
            raise ContractError(f"{where}.name: cnn1d takes inputs (L,) or (C, L), "
                                f"the data has {input_shape}")
        channels, length = (1, input_shape[0]) if len(input_shape) == 1 else input_shape
        if length < 8:
            raise ContractError(f"{where}.name: cnn1d needs sequences of length >= 8, "
                                f"the data has {length}")
        return CNN1D(channels, length, width, num_classes, bn)
    if len(input_shape) != 3:
        raise ContractError(f"{where}.name: {name} takes images (C, H, W), "
                            f"the data has {input_shape}")
    if name == "airbench":
        side = min(input_shape[1:]) - 1  # after the 2x2 stem; three 2x2 max pools follow
        for _ in range(3):
            side //= 2
        if side < 1:
            raise ContractError(f"{where}.name: airbench needs images of at least 9x9, "
                                f"the data has {input_shape}")
        return AirbenchCNN(input_shape[0], width, num_classes, bn)
    return ResNet18(input_shape[0], width, num_classes, bn)


def meta_model(spec: Mapping[str, Any], input_shape: tuple[int, ...],
               num_classes: int) -> nn.Module:
    """A parameter-less (meta device) copy of the architecture for ``functional_call``."""
    with torch.device("meta"):
        return build_model(spec, input_shape, num_classes)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable scalars of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
