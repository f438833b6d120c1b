"""Vectorised multi-seed training: a shard of S seeds trains as one program.

The parameters and buffers of the S models are stacked along a new leading
axis ``(S, ...)``; one training step evaluates all S models on their own
mini-batches, back-propagates each seed's own mean loss and updates the stacked
tensors with ``torch.optim.SGD``'s arithmetic (element-wise, hence the same as S
separate optimisers). How a step runs is a *program* of :mod:`multirun.programs`:
``vmap`` (``torch.func.vmap`` over ``functional_call``, any model, BatchNorm
statistics per seed) or ``mlp`` (a hand-written batched MLP, the default model).
:func:`train_shard` reads top to bottom: stack the models, draw each seed's
streams, loop over epochs and steps, write the checkpoint.

Randomness. Every random stream of a seed comes from its own
``torch.Generator`` seeded by ``stream_seed(seed, stream)``:

* ``init``: the model's initialisation (``torch.manual_seed`` before building it);
* ``order``: one ``randperm`` of the training set per epoch;
* ``noise``: the label-noise draw (:func:`training_labels`);
* ``augment``: flips/crops, drawn per step.

:func:`train_one` is the plain one-model loop (``nn.Module`` + ``torch.optim.SGD``)
drawing the same streams in the same order; it is the reference for exactness
and the speed baseline.

The recipe (``train.recipe``) is checked by :mod:`multirun.recipe`; checkpoints are
checked, loaded and evaluated by :mod:`multirun.checkpoint` (both re-exported here).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from multirun.checkpoint import (  # noqa: F401 (re-exported)
    CHECKPOINT_FORMAT,
    check_checkpoint,
    evaluate_shard,
    load_checkpoint,
    load_member,
)
from multirun.contracts import ContractError
from multirun.early_stopping import EarlyStopping
from multirun.models import build_model, meta_model, normalize_spec
from multirun.programs import CNN1DProgram, MLPProgram, Program, VmapProgram, pick_program
from multirun.recipe import (  # noqa: F401 (re-exported)
    AUGMENTS,
    OPTIMIZERS,
    SCHEDULES,
    _check_data,
    _check_seeds,
    _schedule,
    lr_at,
    normalize_recipe,
)

STREAMS = {"init": 0, "order": 1, "noise": 2, "augment": 3}
CROP_PAD = 2  # flip_crop: translate by up to 2 pixels with reflection padding (airbench94)


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


def train_shard(x: Tensor, y: Tensor, seeds: list[int], model_spec: dict, recipe: dict,
                device: torch.device | str, progress: bool = True, *,
                num_classes: int | None = None, program: str = "auto",
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
    A tqdm bar over steps goes to stderr when ``progress``. ``program``: how a step
    runs (:mod:`multirun.programs`): ``auto`` takes the hand-written ``mlp`` program
    for plain MLPs without augmentation and ``vmap`` for everything else.
    With ``recipe["patience"] > 0``, ``validation`` = (x_val, y_val) early-stops each
    seed (:class:`multirun.early_stopping.EarlyStopping`): the state is each seed's
    best-validation epoch and ``history`` adds ``val_acc`` (S, epochs run), ``best_epoch`` (S,).
    """
    spec, recipe = normalize_spec(model_spec), normalize_recipe(recipe)
    seeds = _check_seeds(seeds)
    x, y, num_classes = _check_data(x, y, num_classes)
    device = torch.device(device)
    n, input_shape, s = len(x), tuple(int(d) for d in x.shape[1:]), len(seeds)
    batch = min(recipe["batch_size"], n)

    # ------------------------------------------------------------------ models, stacked
    models = [init_model(seed, spec, input_shape, num_classes) for seed in seeds]
    kind = pick_program(program, spec, recipe)
    if kind == "mlp":
        prog: Program = MLPProgram(models, recipe, batch, device, x.dtype)
    elif kind == "cnn1d":
        prog = CNN1DProgram(models, recipe, batch, input_shape, device, x.dtype)
    else:
        probe = (x[:batch].to(device), y[:batch])
        prog = VmapProgram(models, spec, input_shape, num_classes, recipe, probe, device,
                           x.dtype)
    del models
    xd = prog.prepare(x.to(device))
    stopper = None
    if recipe["patience"]:
        if validation is None:
            raise ContractError("train.recipe.patience: early stopping needs a validation "
                                "split (x_val, y_val in the dataset file)")
        stopper = EarlyStopping(meta_model(spec, input_shape, num_classes),
                                validation[0].to(device, x.dtype), validation[1].to(device),
                                recipe["patience"])

    # ------------------------------------------------------------------ per-seed streams
    labels = torch.stack([training_labels(y, seed, recipe["label_noise"], num_classes)
                          for seed in seeds]).to(device)  # (S, N)
    order_gs = [generator(seed, "order") for seed in seeds]
    aug_gs = [generator(seed, "augment") for seed in seeds]

    # ------------------------------------------------------------------ the loop
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
            xb = xd.index_select(0, idx.flatten()).view(*idx.shape, *xd.shape[1:])  # (S, B, ...)
            if recipe["augment"] != "none":
                drawn = [draw_augment(recipe["augment"], idx.shape[1], g) for g in aug_gs]
                stacked = {k: torch.cat([d[k] for d in drawn]) for k in drawn[0]}
                xb = apply_augment(xb.flatten(0, 1), stacked).view_as(xb)
            loss, correct = prog.step(xb, torch.gather(labels, 1, idx), lr)
            loss_hist[:, epoch] += loss
            correct_hist[:, epoch] += correct
            step += 1
            bar.update()
        if progress:
            bar.set_postfix(epoch=epoch + 1, loss=f"{float(loss_hist[:, epoch].mean()) / steps:.4f}")
        if stopper is not None and stopper.update(epoch, prog.state(), {}):
            break
    bar.close()
    run = epoch + 1  # epochs run (fewer than recipe epochs when every seed stopped early)

    # ------------------------------------------------------------------ the checkpoint
    final = stopper.best_state if stopper is not None else prog.state()
    state = {k: v.to("cpu", copy=True).contiguous() for k, v in final.items()}
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
            **(stopper.history() if stopper is not None else {}),
        },
    }
