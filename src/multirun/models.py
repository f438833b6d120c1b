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

**Your own model** (docs/models.md): ``name`` may also be ``FILE.py:Name`` (a path
relative to the working directory) or ``package.module:Name``, an ``nn.Module`` class or
factory called as ``Name(input_shape=..., num_classes=..., **other spec keys)``. The
built-ins are entries of the same :data:`REGISTRY`, so :func:`build_model` has one path.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from multirun.contracts import ContractError
from multirun.model_spec import BUILTIN_MODELS, is_user_model, normalize_spec, split_target, user_file

# fp32 means fp32 on a GPU as on the CPU. PyTorch runs fp32 matrix products in full precision
# by default but lets cuDNN's convolutions round their inputs to TF32 (10 mantissa bits), so a
# conv model would train differently from its vectorised program (fp32 bmm) and from the CPU.
# Every model is built through this module, so the switch is set once, here; the project's
# one TF32 mode is the kernel's opt-in ``kernel.precision: tf32``.
torch.backends.cudnn.allow_tf32 = False


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


# ----------------------------------------------------------------------------- the registry
# name -> factory(input_shape, num_classes, **spec keys) -> nn.Module; a factory raises
# ContractError for an input shape it cannot take (build_model prefixes the config key).
REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register(name: str) -> Callable:
    """Decorator: ``@register("mlp")`` makes a factory a built-in model name."""
    def add(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        REGISTRY[name] = factory
        return factory
    return add


@register("mlp")
def _mlp(input_shape, num_classes, width, depth, batchnorm=False) -> MLP:
    in_features = 1
    for s in input_shape:
        in_features *= s
    return MLP(in_features, width, depth, num_classes, batchnorm)


@register("cnn1d")
def _cnn1d(input_shape, num_classes, width, batchnorm=False) -> CNN1D:
    if len(input_shape) not in (1, 2):
        raise ContractError(f"cnn1d takes inputs (L,) or (C, L), the data has {input_shape}")
    channels, length = (1, input_shape[0]) if len(input_shape) == 1 else input_shape
    if length < 8:
        raise ContractError(f"cnn1d needs sequences of length >= 8, the data has {length}")
    return CNN1D(channels, length, width, num_classes, batchnorm)


def _image(name: str, input_shape) -> None:
    if len(input_shape) != 3:
        raise ContractError(f"{name} takes images (C, H, W), the data has {input_shape}")


@register("airbench")
def _airbench(input_shape, num_classes, width, batchnorm=True) -> AirbenchCNN:
    _image("airbench", input_shape)
    side = min(input_shape[1:]) - 1  # after the 2x2 stem; three 2x2 max pools follow
    for _ in range(3):
        side //= 2
    if side < 1:
        raise ContractError(f"airbench needs images of at least 9x9, the data has {input_shape}")
    return AirbenchCNN(input_shape[0], width, num_classes, batchnorm)


@register("resnet18")
def _resnet18(input_shape, num_classes, width, batchnorm=True) -> ResNet18:
    _image("resnet18", input_shape)
    return ResNet18(input_shape[0], width, num_classes, batchnorm)


MODEL_NAMES = tuple(REGISTRY)
assert MODEL_NAMES == BUILTIN_MODELS, "multirun.model_spec.BUILTIN_MODELS lists the built-ins"

_LOADED: dict[tuple[str, str], Any] = {}  # (resolved file, content hash) -> module


def _load_file(path: Path, name: str, where: str):
    """Import ``path`` as a fresh module (again whenever its contents change)."""
    resolved = path.resolve()
    digest = hashlib.sha256(resolved.read_bytes()).hexdigest()[:16]
    key = (str(resolved), digest)
    if key not in _LOADED:
        module_name = f"multirun_user_{resolved.stem}_{digest}"
        spec = importlib.util.spec_from_file_location(module_name, resolved)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module  # dataclasses, pickling and vmap look modules up
        try:
            spec.loader.exec_module(module)
        except Exception as err:
            del sys.modules[module_name]
            raise ContractError(f"{where}.name: {name}: importing {path} failed "
                                f"({type(err).__name__}: {err}); fix the file") from err
        _LOADED[key] = module
    return _LOADED[key]


def resolve_model(name: str, where: str = "train.model") -> Callable[..., nn.Module]:
    """The factory (or class) named ``name``: a registry entry or a user model, imported.

    Raises :class:`ContractError` naming ``{where}.name``, the file and the name when the
    file or module is missing or fails to import, or does not define ``Name``.
    """
    if not is_user_model(name):
        if name not in REGISTRY:
            normalize_spec({"name": name, "width": 1}, where)  # raises: unknown model
        return REGISTRY[name]
    target, attr = split_target(name, where)
    if target.endswith(".py"):
        module = _load_file(user_file(target, name, where), name, where)
        source = f"file {target}"
    else:
        try:
            module = importlib.import_module(target)
        except Exception as err:  # ModuleNotFoundError, or the module's own error
            raise ContractError(f"{where}.name: {name}: importing module {target} failed "
                                f"({type(err).__name__}: {err}); is it installed or on "
                                "PYTHONPATH?") from err
        source = f"module {target}"
    factory = getattr(module, attr, None)
    if factory is None or not callable(factory):
        found = sorted(k for k, v in vars(module).items()
                       if not k.startswith("_") and callable(v)
                       and getattr(v, "__module__", None) == module.__name__)
        what = "does not define" if factory is None else "defines a non-callable"
        raise ContractError(f"{where}.name: {name}: {source} {what} {attr!r} (it defines "
                            f"{found or 'nothing callable'}); see docs/models.md")
    return factory


def build_model(spec: Mapping[str, Any], input_shape: tuple[int, ...], num_classes: int,
                where: str = "train.model") -> nn.Module:
    """Build the model named by ``spec`` for inputs of ``input_shape`` (no batch dim).

    ``spec``: a built-in ``{"name": "mlp"|"cnn1d"|"airbench"|"resnet18", "width": int > 0,
    "depth": int >= 0 (mlp only), "batchnorm": bool}`` or a user model
    ``{"name": "FILE.py:Name" | "package.module:Name", ...any keys}``; either way the
    factory is called as ``factory(input_shape=..., num_classes=..., **other keys)``.
    The parameters are drawn from the current global torch RNG (seed it for a
    deterministic model). Raises :class:`ContractError` naming ``{where}.<key>`` (and a
    user model's file and name) for a bad spec, an input shape the model cannot take,
    a build that fails or a result that is not an ``nn.Module``.
    """
    spec = normalize_spec(spec, where)
    input_shape = tuple(int(s) for s in input_shape)
    if not input_shape or any(s <= 0 for s in input_shape):
        raise ContractError(f"{where}: input shape {input_shape} is empty")
    if isinstance(num_classes, bool) or int(num_classes) < 2:
        raise ContractError(f"{where}: need at least 2 classes, got {num_classes}")
    name = spec["name"]
    factory = resolve_model(name, where)
    keys = {k: v for k, v in spec.items() if k != "name"}
    try:
        model = factory(input_shape=input_shape, num_classes=int(num_classes), **keys)
    except ContractError as err:
        if is_user_model(name):
            raise ContractError(f"{where}.name: {name}: {err}") from err
        raise ContractError(f"{where}.name: {err}") from err
    except Exception as err:
        call = ", ".join(["input_shape", "num_classes", *keys])
        raise ContractError(f"{where}.name: {name}: building the model failed "
                            f"({type(err).__name__}: {err}); it is called as "
                            f"{name.rpartition(':')[2]}({call}), see docs/models.md") from err
    if not isinstance(model, nn.Module):
        raise ContractError(f"{where}.name: {name}: returned a {type(model).__name__}, not a "
                            "torch.nn.Module; see docs/models.md")
    return model


def check_output(model: nn.Module, x: Tensor, num_classes: int, name: str,
                 where: str = "train.model") -> None:
    """One plain forward of ``x`` (B, ...) as training calls it, on a copy of ``model`` in
    train mode, without gradients and with the global RNG restored afterwards (so the model,
    its BatchNorm statistics and every random stream are untouched): the result must be
    floating logits (B, num_classes). Raises :class:`ContractError` naming ``{where}.name``
    when the forward fails or gives another shape, before any training (a model with 5
    outputs on 3 classes would otherwise train and score wrongly)."""
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            out = copy.deepcopy(model).train()(x)
    except Exception as err:
        raise ContractError(f"{where}.name: {name}: forward on a batch of shape "
                            f"{tuple(x.shape)} failed ({type(err).__name__}: {err}); "
                            "see docs/models.md") from err
    want = (len(x), int(num_classes))
    if not (isinstance(out, Tensor) and out.is_floating_point() and tuple(out.shape) == want):
        got = (f"a {out.dtype} tensor of shape {tuple(out.shape)}" if isinstance(out, Tensor)
               else f"a {type(out).__name__}")
        raise ContractError(f"{where}.name: {name}: forward on a batch of shape "
                            f"{tuple(x.shape)} returned {got}; expected floating logits "
                            f"{want}, one per class of the dataset (docs/models.md)")


class WithFeatures(nn.Module):
    """``forward(x) -> (features (B, D), logits (B, C))`` of any model, in one call.

    Built-ins (:class:`Classifier`) give both from one pass; a user model's
    ``features(x)`` is called beside ``model(x)``; a model without ``features`` gives
    ``(B, 0)`` features (the figures say that the model defines none). For
    ``torch.func.functional_call``, the wrapped model's state keys take the prefix
    ``model.``.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if isinstance(self.model, Classifier):
            return self.model(x, return_features=True)
        logits = self.model(x)
        if has_features(self.model):
            return self.model.features(x).flatten(1), logits
        return logits.new_zeros(len(x), 0), logits


def has_features(model: nn.Module) -> bool:
    """Whether ``model`` defines ``features(x)`` (the penultimate representation)."""
    return callable(getattr(model, "features", None))


def meta_model(spec: Mapping[str, Any], input_shape: tuple[int, ...],
               num_classes: int, where: str = "train.model") -> nn.Module:
    """A parameter-less (meta device) copy of the architecture for ``functional_call``."""
    with torch.device("meta"):
        return build_model(spec, input_shape, num_classes, where)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable scalars of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
