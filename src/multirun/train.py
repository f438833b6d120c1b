"""Vectorised multi-seed training: a shard of S seeds trains as one program.

The parameters and buffers of the S models are stacked along a new leading
axis ``(S, ...)``; one training step evaluates all S models on their own
mini-batches with ``torch.func.vmap`` over ``torch.func.functional_call`` of a
parameter-less (meta) copy of the model, back-propagates the sum of the S mean
losses (so each seed's gradient is exactly its own), and updates the stacked
tensors with ``torch.optim.SGD`` (element-wise, hence the same arithmetic as
S separate optimisers). BatchNorm running statistics are stacked buffers and
are updated in place per seed inside ``vmap``.

Randomness. Every random stream of a seed comes from its own
``torch.Generator`` seeded by ``stream_seed(seed, stream)``:

* ``init``: the model's initialisation (``torch.manual_seed`` before building it);
* ``order``: one ``randperm`` of the training set per epoch;
* ``noise``: the label-noise draw (:func:`training_labels`);
* ``augment``: flips/crops, drawn per step.

:func:`train_one` is the plain one-model loop (``nn.Module`` + ``torch.optim.SGD``)
drawing the same streams in the same order; it is the reference for exactness
and the speed baseline.

Recipe (``train.recipe``): ``epochs``, ``batch_size``, ``optimizer`` (``sgd`` |
``nesterov``), ``lr`` (peak), ``momentum``, ``weight_decay`` (coupled L2 added to
the gradient of every parameter, biases and BatchNorm included, as
``torch.optim.SGD`` does), ``warmup_epochs`` (linear warm-up from ``lr/W`` to
``lr`` over the first ``W`` steps), ``schedule`` after warm-up (``cosine`` to 0,
``linear`` to 0, ``constant``), ``label_smoothing``, ``label_noise`` and the
optional ``augment`` (``none`` | ``flip`` | ``flip_crop``; default ``none``).
Each epoch is a fresh permutation cut into ``N // batch_size`` full batches (the
remainder is skipped that epoch; a different remainder every epoch).
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, vmap
from tqdm import tqdm

from multirun.early_stopping import EarlyStopping
from multirun.io import ContractError, load_torch
from multirun.models import build_model, normalize_spec

CHECKPOINT_FORMAT = 1
STREAMS = {"init": 0, "order": 1, "noise": 2, "augment": 3}
OPTIMIZERS = ("sgd", "nesterov")
SCHEDULES = ("cosine", "linear", "constant")
AUGMENTS = ("none", "flip", "flip_crop")
CROP_PAD = 2  # flip_crop: translate by up to 2 pixels with reflection padding (airbench94)
_RECIPE_DEFAULTS: dict[str, Any] = {
    "optimizer": "sgd", "momentum": 0.9, "weight_decay": 0.0, "warmup_epochs": 0,
    "schedule": "constant", "label_smoothing": 0.0, "label_noise": 0.0, "augment": "none",
    "patience": 0,
}


# ----------------------------------------------------------------------------- randomness


def stream_seed(seed: int, stream: str) -> int:
    """A 63-bit seed for random stream ``stream`` of training seed ``seed``.

    Mixed by ``numpy.random.SeedSequence`` so neighbouring seeds and streams give
    unrelated generators.
    """
    words = np.random.SeedSequence([int(seed), STREAMS[stream]]).generate_state(2, np.uint32)
    return (int(words[0]) << 31) ^ int(words[1])


def generator(seed: int, stream: str) -> torch.Generator:
    """A CPU ``torch.Generator`` for stream ``stream`` of seed ``seed``."""
    return torch.Generator().manual_seed(stream_seed(seed, stream))


def training_labels(y: Tensor, seed: int, label_noise: float, num_classes: int) -> Tensor:
    """The labels seed ``seed`` trains on: ``y`` (N,) int64 -> (N,) int64.

    Exactly ``round(label_noise * N)`` examples, chosen uniformly without
    replacement, get a label drawn uniformly from the *other* ``num_classes - 1``
    classes (the convention of Nakkiran et al.'s deep double descent), so the
    fraction of wrong labels is exactly ``label_noise`` up to rounding. The draw
    comes from the seed's ``noise`` stream: deterministic, different per seed,
    fixed for the whole training run (not redrawn per epoch).
    """
    y = torch.as_tensor(y).to("cpu", torch.int64)
    if not 0.0 <= float(label_noise) <= 1.0:
        raise ContractError(f"train.recipe.label_noise: must be in [0, 1], got {label_noise!r}")
    out = y.clone()
    n_noisy = round(float(label_noise) * len(y))
    if n_noisy == 0:
        return out
    g = generator(seed, "noise")
    chosen = torch.randperm(len(y), generator=g)[:n_noisy]
    offset = torch.randint(1, num_classes, (n_noisy,), generator=g)
    out[chosen] = (y[chosen] + offset) % num_classes
    return out


def epoch_order(n: int, batch_size: int, g: torch.Generator) -> Tensor:
    """One epoch's batches: (steps, B) int64 indices from a fresh permutation of ``n``."""
    b = min(batch_size, n)
    steps = n // b
    return torch.randperm(n, generator=g)[: steps * b].view(steps, b)


def draw_augment(kind: str, batch: int, g: torch.Generator) -> dict[str, Tensor]:
    """Random augmentation parameters for one batch of ``batch`` examples (CPU tensors).

    ``flip``: ``flip`` (B,) bool. ``flip_crop``: also ``shift`` (B, 2) int64 in
    ``[0, 2 * CROP_PAD]`` (crop offsets into the reflection-padded image).
    """
    if kind == "none":
        return {}
    out = {"flip": torch.rand(batch, generator=g) < 0.5}
    if kind == "flip_crop":
        out["shift"] = torch.randint(0, 2 * CROP_PAD + 1, (batch, 2), generator=g)
    return out


def apply_augment(x: Tensor, params: Mapping[str, Tensor]) -> Tensor:
    """Apply drawn augmentation to ``x`` (B, ..., [H,] W): flips the last axis, then crops.

    Pure indexing (no arithmetic), so batched and per-seed application agree exactly.
    """
    if not params:
        return x
    flip = params["flip"].to(x.device)
    x = torch.where(flip.view(-1, *([1] * (x.dim() - 1))), x.flip(-1), x)
    if "shift" in params:
        shift = params["shift"].to(x.device)
        b, h, w = x.shape[0], x.shape[-2], x.shape[-1]
        padded = F.pad(x, (CROP_PAD,) * 4, mode="reflect")
        rows = shift[:, 0, None] + torch.arange(h, device=x.device)  # (B, H)
        cols = shift[:, 1, None] + torch.arange(w, device=x.device)  # (B, W)
        batch = torch.arange(b, device=x.device)[:, None, None, None]
        chan = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
        x = padded[batch, chan, rows[:, None, :, None], cols[:, None, None, :]]
    return x


# ----------------------------------------------------------------------------- recipe


def _number(recipe: Mapping, key: str, where: str, lo: float, hi: float,
            integer: bool = False, lo_open: bool = False, hi_open: bool = False) -> Any:
    value = recipe.get(key, _RECIPE_DEFAULTS.get(key))
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if ok and integer:
        ok = float(value).is_integer()
    if ok:
        ok = (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
    if not ok:
        kind = "an integer" if integer else "a number"
        lb, ub = ("(" if lo_open else "["), (")" if hi_open else "]")
        raise ContractError(f"{where}.{key}: must be {kind} in {lb}{lo}, {hi}{ub}, got {value!r}")
    return int(value) if integer else float(value)


def normalize_recipe(recipe: Mapping[str, Any], where: str = "train.recipe") -> dict[str, Any]:
    """Check a training recipe and return it with defaults filled in.

    Raises :class:`ContractError` naming the key (``train.recipe.optimizer`` ...).
    """
    if not isinstance(recipe, Mapping):
        raise ContractError(f"{where}: expected a mapping, got {recipe!r}")
    for key in ("epochs", "batch_size", "lr"):
        if key not in recipe:
            raise ContractError(f"{where}.{key}: missing")
    out: dict[str, Any] = {
        "epochs": _number(recipe, "epochs", where, 1, math.inf, integer=True),
        "batch_size": _number(recipe, "batch_size", where, 1, math.inf, integer=True),
        "lr": _number(recipe, "lr", where, 0, math.inf, lo_open=True, hi_open=True),
        "momentum": _number(recipe, "momentum", where, 0, 1, hi_open=True),
        "weight_decay": _number(recipe, "weight_decay", where, 0, math.inf, hi_open=True),
        "warmup_epochs": _number(recipe, "warmup_epochs", where, 0, math.inf, hi_open=True),
        "label_smoothing": _number(recipe, "label_smoothing", where, 0, 1, hi_open=True),
        "label_noise": _number(recipe, "label_noise", where, 0, 1),
        "patience": _number(recipe, "patience", where, 0, math.inf, integer=True, hi_open=True),
    }
    for key, choices in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES),
                         ("augment", AUGMENTS)):
        value = recipe.get(key, _RECIPE_DEFAULTS[key])
        if value not in choices:
            raise ContractError(f"{where}.{key}: unknown value {value!r}; "
                                f"choose one of {', '.join(choices)}")
        out[key] = value
    if out["optimizer"] == "nesterov" and out["momentum"] == 0:
        raise ContractError(f"{where}.momentum: nesterov needs momentum > 0")
    return out


def lr_at(step: int, total_steps: int, warmup_steps: int, recipe: Mapping[str, Any]) -> float:
    """Learning rate of optimisation step ``step`` (0-based) of ``total_steps``.

    Linear warm-up ``lr * (step + 1) / warmup_steps`` for the first ``warmup_steps``
    steps, then ``cosine``: ``lr * (1 + cos(pi p)) / 2``, ``linear``: ``lr * (1 - p)``
    or ``constant``: ``lr``, with ``p = (step - warmup) / (total - warmup)`` in [0, 1).
    """
    lr = recipe["lr"]
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    p = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    if recipe["schedule"] == "cosine":
        return lr * 0.5 * (1.0 + math.cos(math.pi * p))
    if recipe["schedule"] == "linear":
        return lr * (1.0 - p)
    return lr


def _schedule(n: int, recipe: Mapping[str, Any]) -> tuple[int, int, int]:
    """(steps per epoch, total steps, warm-up steps) for ``n`` training examples."""
    steps = n // min(recipe["batch_size"], n)
    total = steps * recipe["epochs"]
    warmup = min(total, round(recipe["warmup_epochs"] * steps))
    return steps, total, warmup


def _check_data(x: Tensor, y: Tensor, num_classes: int | None) -> tuple[Tensor, Tensor, int]:
    x, y = torch.as_tensor(x), torch.as_tensor(y)
    if not x.is_floating_point() or x.dim() < 2 or y.dim() != 1 or len(x) != len(y):
        raise ContractError(f"training data: expected x (N, ...) float and y (N,) int64, got "
                            f"x {tuple(x.shape)} {x.dtype} and y {tuple(y.shape)} {y.dtype}")
    if y.dtype != torch.int64 or (len(y) and int(y.min()) < 0):
        raise ContractError(f"training data: labels must be int64 >= 0, got {y.dtype}")
    c = int(y.max()) + 1 if num_classes is None else int(num_classes)
    if int(y.max()) >= c:
        raise ContractError(f"training data: label {int(y.max())} >= num_classes {c}")
    return (x if x.dtype == torch.float64 else x.to(torch.float32)), y, c


def _check_seeds(seeds: Sequence[int]) -> list[int]:
    seeds = list(seeds)
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int | np.integer) or s < 0
                        for s in seeds) or len(set(seeds)) != len(seeds):
        raise ContractError(f"train.seeds: need distinct integers >= 0, got {seeds!r}")
    return [int(s) for s in seeds]


def init_model(seed: int, model_spec: Mapping[str, Any], input_shape: tuple[int, ...],
               num_classes: int) -> nn.Module:
    """Seed ``seed``'s freshly initialised model (CPU float32); the global RNG is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(stream_seed(seed, "init"))
        return build_model(model_spec, input_shape, num_classes)


# ----------------------------------------------------------------------------- training


def train_one(x: Tensor, y: Tensor, seed: int, model_spec: Mapping[str, Any],
              recipe: Mapping[str, Any], device: torch.device | str = "cpu", *,
              num_classes: int | None = None) -> dict[str, Tensor]:
    """Train one seed with a plain ``nn.Module`` loop; return its ``state_dict`` (CPU).

    The reference of :func:`train_shard` (same random streams, same order) and the
    baseline of ``benchmarks/bench_train.py``. ``x`` (N, ...) float32, ``y`` (N,) int64.
    """
    spec, recipe = normalize_spec(model_spec), normalize_recipe(recipe)
    x, y, num_classes = _check_data(x, y, num_classes)
    device = torch.device(device)
    model = init_model(seed, spec, tuple(x.shape[1:]), num_classes).to(device, x.dtype).train()
    opt = torch.optim.SGD(model.parameters(), lr=recipe["lr"], momentum=recipe["momentum"],
                          weight_decay=recipe["weight_decay"],
                          nesterov=recipe["optimizer"] == "nesterov")
    labels = training_labels(y, seed, recipe["label_noise"], num_classes).to(device)
    xd = x.to(device)
    order_g, aug_g = generator(seed, "order"), generator(seed, "augment")
    steps, total, warmup = _schedule(len(x), recipe)
    step = 0
    for _ in range(recipe["epochs"]):
        for idx in epoch_order(len(x), recipe["batch_size"], order_g).to(device):
            for group in opt.param_groups:
                group["lr"] = lr_at(step, total, warmup, recipe)
            xb = apply_augment(xd[idx], draw_augment(recipe["augment"], len(idx), aug_g))
            loss = F.cross_entropy(model(xb), labels[idx],
                                   label_smoothing=recipe["label_smoothing"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _cast(t: Tensor, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Move ``t`` to ``device``; floating tensors also to ``dtype`` (integer counters stay)."""
    return t.to(device, dtype) if t.is_floating_point() else t.to(device)


def _meta_model(spec: Mapping[str, Any], input_shape: tuple[int, ...],
                num_classes: int) -> nn.Module:
    """A parameter-less (meta device) copy of the architecture for ``functional_call``."""
    with torch.device("meta"):
        return build_model(spec, input_shape, num_classes)


def _match_grad_layout(params: dict[str, Tensor], buffers: dict[str, Tensor], batched_loss,
                       xb: Tensor, yb: Tensor) -> dict[str, Tensor]:
    """Re-lay out each stacked parameter in the memory order its batched gradient has.

    Under ``vmap`` the weight gradient of a linear/conv layer comes out of a batched
    matrix product transposed relative to the stacked weight. ``AccumulateGrad``
    would then copy every gradient into the parameter's layout and SGD would add
    tensors of different strides, both slow strided passes (on the CPU they cost
    as much as the matrix products). One probe step on ``xb`` (B, ...) shared by
    all seeds (BatchNorm buffers are copied, not touched) reads the gradient
    strides; each parameter is copied into a tensor with those strides. Values
    are unchanged; only the memory order differs.
    """
    s = next(iter(params.values())).shape[0]
    probe_x = xb.unsqueeze(0).expand(s, *xb.shape)
    probe_y = yb.to(xb.device).unsqueeze(0).expand(s, *yb.shape)
    loss, _ = batched_loss(params, {k: v.clone() for k, v in buffers.items()}, probe_x, probe_y)
    grads = torch.autograd.grad(loss.sum(), list(params.values()), allow_unused=True)
    out = {}
    for (k, p), g in zip(params.items(), grads, strict=True):
        if g is not None and g.stride() != p.stride() and _dense(g):
            q = torch.empty_strided(p.shape, g.stride(), dtype=p.dtype, device=p.device)
            p = q.copy_(p.detach()).requires_grad_(True)
        out[k] = p
    return out


def _dense(t: Tensor) -> bool:
    """``t`` covers its storage exactly once (a permutation of a contiguous tensor)."""
    order = sorted(range(t.dim()), key=lambda d: t.stride(d))
    expected = 1
    for d in order:
        if t.shape[d] != 1 and t.stride(d) != expected:
            return False
        expected *= t.shape[d]
    return True


def train_shard(x: Tensor, y: Tensor, seeds: list[int], model_spec: dict, recipe: dict,
                device: torch.device | str, progress: bool = True, *,
                num_classes: int | None = None,
                validation: tuple[Tensor, Tensor] | None = None) -> dict:
    """Train every seed of ``seeds`` as one vectorised program; return the checkpoint.

    ``x`` (N, ...) float32 (float64 trains in float64, for exactness checks) and
    ``y`` (N,) int64 clean labels (label noise is drawn per seed). Returns
    ``{"format": 1, "model_spec", "recipe", "seeds", "input_shape", "num_classes",
    "num_train", "state": {name: (S, ...) CPU tensor}, "history": {"train_loss":
    (S, epochs) float32, "train_acc": (S, epochs) float32, "lr": (total_steps,)
    float32}}``. ``train_loss``/``train_acc`` are
    means over the epoch's steps, measured on the (augmented, noisy) batches as
    trained, in train mode. ``num_classes`` defaults to ``max(y) + 1``.
    A tqdm bar over steps goes to stderr when ``progress``.
    With ``recipe["patience"] > 0``, ``validation`` = (x_val, y_val) early-stops each
    seed (:class:`multirun.early_stopping.EarlyStopping`): the state is each seed's
    best-validation epoch and ``history`` adds ``val_acc`` (S, epochs run), ``best_epoch`` (S,).
    """
    spec, recipe = normalize_spec(model_spec), normalize_recipe(recipe)
    seeds = _check_seeds(seeds)
    x, y, num_classes = _check_data(x, y, num_classes)
    device = torch.device(device)
    n, input_shape, s = len(x), tuple(int(d) for d in x.shape[1:]), len(seeds)

    models = [init_model(seed, spec, input_shape, num_classes) for seed in seeds]
    base = _meta_model(spec, input_shape, num_classes).train()
    param_names = [k for k, _ in models[0].named_parameters()]
    buffer_names = [k for k, _ in models[0].named_buffers()]
    params = {k: torch.stack([m.get_parameter(k).detach() for m in models]).to(device, x.dtype)
              for k in param_names}
    buffers = {k: _cast(torch.stack([m.get_buffer(k) for m in models]), device, x.dtype)
               for k in buffer_names}
    del models
    xd = x.to(device)
    for p in params.values():
        p.requires_grad_(True)
    smoothing = recipe["label_smoothing"]
    stopper = None
    if recipe["patience"]:
        if validation is None:
            raise ContractError("train.recipe.patience: early stopping needs a validation "
                                "split (x_val, y_val in the dataset file)")
        stopper = EarlyStopping(_meta_model(spec, input_shape, num_classes),
                                validation[0].to(device, x.dtype), validation[1].to(device),
                                recipe["patience"])

    def loss_one(p: dict[str, Tensor], b: dict[str, Tensor], xb: Tensor,
                 yb: Tensor) -> tuple[Tensor, Tensor]:
        logits = functional_call(base, (p, b), (xb,))
        loss = F.cross_entropy(logits, yb, label_smoothing=smoothing)
        return loss, (logits.argmax(-1) == yb).sum()

    batched_loss = vmap(loss_one, randomness="error")
    batch = min(recipe["batch_size"], n)
    params = _match_grad_layout(params, buffers, batched_loss, xd[:batch], y[:batch])
    opt = torch.optim.SGD(list(params.values()), lr=recipe["lr"], momentum=recipe["momentum"],
                          weight_decay=recipe["weight_decay"],
                          nesterov=recipe["optimizer"] == "nesterov")

    labels = torch.stack([training_labels(y, seed, recipe["label_noise"], num_classes)
                          for seed in seeds]).to(device)  # (S, N)
    order_gs = [generator(seed, "order") for seed in seeds]
    aug_gs = [generator(seed, "augment") for seed in seeds]
    steps, total, warmup = _schedule(n, recipe)
    epochs = recipe["epochs"]
    loss_hist = torch.zeros(s, epochs, dtype=torch.float64, device=device)
    correct_hist = torch.zeros(s, epochs, dtype=torch.float64, device=device)
    lr_hist = torch.zeros(total, dtype=torch.float32)
    bar = tqdm(total=total, desc=f"train {s} seeds ({spec['name']})", unit="step",
               file=sys.stderr, disable=not progress, dynamic_ncols=True)
    step = 0
    for epoch in range(epochs):
        order = torch.stack([epoch_order(n, recipe["batch_size"], g) for g in order_gs], 1)
        order = order.to(device)  # (steps, S, B)
        for idx in order:
            lr = lr_at(step, total, warmup, recipe)
            lr_hist[step] = lr
            for group in opt.param_groups:
                group["lr"] = lr
            xb = xd[idx]  # (S, B, ...)
            if recipe["augment"] != "none":
                drawn = [draw_augment(recipe["augment"], idx.shape[1], g) for g in aug_gs]
                stacked = {k: torch.cat([d[k] for d in drawn]) for k in drawn[0]}
                xb = apply_augment(xb.flatten(0, 1), stacked).view_as(xb)
            loss, correct = batched_loss(params, buffers, xb, torch.gather(labels, 1, idx))
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()
            opt.step()
            loss_hist[:, epoch] += loss.detach()
            correct_hist[:, epoch] += correct
            step += 1
            bar.update()
        if progress:
            bar.set_postfix(epoch=epoch + 1, loss=f"{float(loss_hist[:, epoch].mean()) / steps:.4f}")
        if stopper is not None and stopper.update(epoch, params, buffers):
            break
    bar.close()
    run = epoch + 1  # epochs run (fewer than recipe epochs when every seed stopped early)
    state = {k: v.detach().to("cpu", copy=True).contiguous()
             for k, v in (stopper.best_state if stopper else {**params, **buffers}).items()}
    finite = torch.stack([torch.isfinite(v.flatten(1)).all(1) for v in state.values()
                          if v.is_floating_point()]).all(0)
    if not finite.all():
        bad = [seed for seed, ok in zip(seeds, finite.tolist(), strict=True) if not ok]
        raise ContractError(f"train.recipe.lr: seeds {bad} diverged (NaN/inf weights) with "
                            f"lr {recipe['lr']}; lower train.recipe.lr (or add warm-up)")
    return {
        "format": CHECKPOINT_FORMAT,
        "model_spec": spec,
        "recipe": recipe,
        "seeds": seeds,
        "input_shape": input_shape,
        "num_classes": num_classes,
        "num_train": n,
        "state": state,
        "history": {
            "train_loss": (loss_hist[:, :run] / steps).float().cpu(),
            "train_acc": (correct_hist[:, :run] / (steps * batch)).float().cpu(),
            "lr": lr_hist[:step],
            **(stopper.history() if stopper else {}),
        },
    }


# ----------------------------------------------------------------------------- checkpoints


def _expected_shapes(ckpt: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    base = _meta_model(ckpt["model_spec"], tuple(ckpt["input_shape"]), int(ckpt["num_classes"]))
    return {k: tuple(v.shape) for k, v in base.state_dict().items()}


def check_checkpoint(ckpt: Mapping[str, Any], where: str = "checkpoint") -> None:
    """Check a checkpoint dict's structure: format, spec, state names/shapes/finiteness.

    Raises :class:`ContractError` starting with ``where`` (the file name).
    """
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ContractError(f"{where}: checkpoint format {ckpt.get('format')!r}, expected "
                            f"{CHECKPOINT_FORMAT}; delete it and rerun training")
    for key in ("model_spec", "recipe", "seeds", "input_shape", "num_classes", "state",
                "history"):
        if key not in ckpt:
            raise ContractError(f"{where}: lacks key {key!r}; delete it and rerun training")
    try:
        normalize_spec(ckpt["model_spec"])
        seeds = _check_seeds(ckpt["seeds"])
        expected = _expected_shapes(ckpt)
    except ContractError as err:
        raise ContractError(f"{where}: invalid contents ({err}); delete it and rerun "
                            "training") from err
    state = ckpt["state"]
    if set(state) != set(expected):
        missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        raise ContractError(f"{where}: state does not match model {ckpt['model_spec']} "
                            f"(missing {missing}, unexpected {extra}); delete it and rerun "
                            "training")
    for k, shape in expected.items():
        v = state[k]
        if not isinstance(v, Tensor) or tuple(v.shape) != (len(seeds), *shape):
            got = tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__
            raise ContractError(f"{where}: state[{k!r}] has shape {got}, expected "
                                f"{(len(seeds), *shape)}; delete it and rerun training")
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise ContractError(f"{where}: state[{k!r}] holds NaN or inf; training diverged "
                                "(lower train.recipe.lr?), then rerun training")


def load_checkpoint(path: str | os.PathLike, *, model_spec: dict | None = None,
                    seeds: list[int] | None = None) -> dict:
    """Load a shard checkpoint (``multirun.io.load_torch``) and check it.

    With ``model_spec``/``seeds``, also check that the checkpoint was trained with
    that model and those seeds. Raises :class:`ContractError` naming ``path`` and
    the mismatching config key (e.g. ``train.model.width``).
    """
    ckpt = load_torch(path, ("format", "model_spec", "seeds", "state"))
    check_checkpoint(ckpt, str(path))
    if model_spec is not None:
        want, have = normalize_spec(model_spec), normalize_spec(ckpt["model_spec"])
        for key in sorted(set(want) | set(have)):
            if want.get(key) != have.get(key):
                raise ContractError(
                    f"{path}: trained with train.model.{key} = {have.get(key)!r}, the config "
                    f"asks for {want.get(key)!r}; delete it and rerun training")
    if seeds is not None and [int(s) for s in seeds] != list(ckpt["seeds"]):
        raise ContractError(f"{path}: holds seeds {list(ckpt['seeds'])}, expected "
                            f"{list(seeds)} (train.seeds / train.shard_size); delete it and "
                            "rerun training")
    return ckpt


def load_member(ckpt: Mapping[str, Any], index: int) -> nn.Module:
    """Seed ``ckpt["seeds"][index]``'s model: CPU float32, weights and buffers loaded, eval mode."""
    s = len(ckpt["seeds"])
    if not -s <= index < s:
        raise IndexError(f"member index {index} out of range for {s} seeds")
    with torch.random.fork_rng(devices=[]):
        model = build_model(ckpt["model_spec"], tuple(ckpt["input_shape"]),
                            int(ckpt["num_classes"]))
    model.load_state_dict({k: v[index] for k, v in ckpt["state"].items()})
    return model.float().eval()


@torch.no_grad()
def evaluate_shard(ckpt: Mapping[str, Any], x: Tensor, *, batch_size: int,
                   device: torch.device | str, features: bool = False
                   ) -> tuple[Tensor, Tensor | None]:
    """Evaluate every model of a shard on ``x`` (N, ...) float32, vectorised over seeds.

    Returns logits (S, N, C) float32 on the CPU and, if ``features``, the
    penultimate features (S, N, D) float32 (else ``None``). BatchNorm uses its
    running statistics (eval mode). ``batch_size`` examples go through all S
    models at once.
    """
    x = torch.as_tensor(x)
    if tuple(x.shape[1:]) != tuple(ckpt["input_shape"]):
        raise ContractError(f"evaluation data: examples of shape {tuple(x.shape[1:])}, the "
                            f"checkpoint's models take {tuple(ckpt['input_shape'])}")
    if isinstance(batch_size, bool) or int(batch_size) < 1:
        raise ContractError(f"logits.batch_size: must be an integer >= 1, got {batch_size!r}")
    device = torch.device(device)
    base = _meta_model(ckpt["model_spec"], tuple(ckpt["input_shape"]),
                       int(ckpt["num_classes"])).eval()
    dtype = next((v.dtype for v in ckpt["state"].values() if v.dtype == torch.float64),
                 torch.float32)  # float64 only for exactness checks
    state = {k: v.to(device) for k, v in ckpt["state"].items()}

    def run(st: dict[str, Tensor], xb: Tensor) -> tuple[Tensor, Tensor]:
        return functional_call(base, st, (xb,), {"return_features": True})

    batched = vmap(run, in_dims=(0, None))
    s, n = len(ckpt["seeds"]), len(x)
    logits_out: Tensor | None = None
    feats_out: Tensor | None = None
    for start in range(0, n, int(batch_size)):
        xb = x[start:start + int(batch_size)].to(device, dtype)
        f, lg = batched(state, xb)
        if logits_out is None:
            logits_out = torch.empty(s, n, lg.shape[-1], dtype=torch.float32)
            if features:
                feats_out = torch.empty(s, n, f.shape[-1], dtype=torch.float32)
        logits_out[:, start:start + len(xb)] = lg.float().cpu()
        if features:
            feats_out[:, start:start + len(xb)] = f.float().cpu()
    if logits_out is None:  # no examples
        c = int(ckpt["num_classes"])
        logits_out = torch.empty(s, 0, c)
        if features:
            d = _meta_model(ckpt["model_spec"], tuple(ckpt["input_shape"]), c).head.in_features
            feats_out = torch.empty(s, 0, d)
    return logits_out, feats_out
