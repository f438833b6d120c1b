"""Vectorised multi-seed training: a shard of S seeds trains as one program.

The parameters and buffers of the S models are stacked along a new leading
axis ``(S, ...)``; one training step evaluates all S models on their own
mini-batches, back-propagates each seed's own mean loss and updates the stacked
tensors with ``torch.optim.SGD``'s (or ``Adam``'s, ``AdamW``'s) arithmetic (element-wise,
hence the same as S separate optimisers). How a step runs is a *program* of
:mod:`multirun.programs`: ``vmap`` (``torch.func.vmap`` over ``functional_call``, any
model, BatchNorm statistics per seed), ``mlp`` (a hand-written batched MLP, the default
model) or ``cnn1d`` (the same for the 1-D CNN).
:func:`train_shard` reads top to bottom: stack the models, draw each seed's
streams, loop over epochs and steps, write the checkpoint.

Randomness. Every random stream of a seed (initialisation, epoch order, label noise,
augmentation, subset rows) comes from its own generator: :mod:`multirun.streams`.

Members. The S members of a shard may differ in the per-member keys of the recipe
(:data:`multirun.recipe.PER_MEMBER_KEYS`: learning rate, momentum, weight decay,
label smoothing, betas, eps) and train on their own subsets of the rows (``masks``);
see ``docs/doors.md``.

:func:`train_one` is the plain one-model loop (``nn.Module`` + ``torch.optim.SGD`` /
``Adam`` / ``AdamW``) drawing the same streams in the same order; it is the
reference for exactness and the speed baseline.

The recipe (``train.recipe``) is checked by :mod:`multirun.recipe`; checkpoints are
checked, loaded and evaluated by :mod:`multirun.checkpoint`.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from multirun.checkpoint import CHECKPOINT_FORMAT, Evaluator
from multirun.contracts import ContractError
from multirun.early_stopping import EarlyStopping
from multirun.model_spec import is_user_model, normalize_spec
from multirun.models import build_model, check_output, meta_model
from multirun.programs import CNN1DProgram, MLPProgram, Program, VmapProgram, pick_program
from multirun.recipe import (
    _check_data,
    _check_seeds,
    _schedule,
    lr_at,
    member_recipes,
    normalize_recipe,
    split_members,
)
from multirun.streams import generator, stream_seed, training_labels
from multirun.timing import timed_phase

DIVERGE_FACTOR = 10.0  # on_diverge="record": a loss above 10x its start diverged (diverging)
CROP_PAD = 2  # flip_crop: translate by up to 2 pixels with reflection padding (airbench94)


def _check_masks(masks: Any, s: int, n: int) -> Tensor | None:
    """``masks`` (S, N) bool, equal row counts -> each member's rows (S, n_sub) int64, sorted."""
    if masks is None:
        return None
    m = torch.as_tensor(masks)
    if m.dtype != torch.bool or tuple(m.shape) != (s, n):
        raise ContractError(f"training masks: expected ({s}, {n}) bool (members x training "
                            f"rows), got {tuple(m.shape)} {m.dtype}")
    counts = m.sum(1)
    if int(counts.min()) < 1 or bool((counts != counts[0]).any()):
        raise ContractError(f"training masks: every member needs the same number (>= 1) "
                            f"of training rows, got counts {sorted(set(counts.tolist()))}")
    return torch.stack([row.nonzero().squeeze(1) for row in m.cpu()])


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
        # the CPU generator alone: torch.manual_seed also queues a lazy CUDA seeding that
        # records a stack trace (0.1 ms a model); initialisation runs on the CPU
        torch.default_generator.manual_seed(stream_seed(seed, "init"))
        return build_model(model_spec, input_shape, num_classes)


# ----------------------------------------------------------------------------- training


def torch_optimizer(params, recipe: Mapping[str, Any]) -> torch.optim.Optimizer:
    """The one-model ``torch.optim`` optimiser of a normalised recipe (SGD, Adam, AdamW)."""
    if recipe["optimizer"] in ("adam", "adamw"):
        cls = torch.optim.Adam if recipe["optimizer"] == "adam" else torch.optim.AdamW
        return cls(params, lr=recipe["lr"], betas=tuple(recipe["betas"]), eps=recipe["eps"],
                   weight_decay=recipe["weight_decay"])
    return torch.optim.SGD(params, lr=recipe["lr"], momentum=recipe["momentum"],
                           weight_decay=recipe["weight_decay"],
                           nesterov=recipe["optimizer"] == "nesterov")


def train_one(x: Tensor, y: Tensor, seed: int, model_spec: Mapping[str, Any],
              recipe: Mapping[str, Any], device: torch.device | str = "cpu", *,
              num_classes: int | None = None, mask: Tensor | None = None
              ) -> dict[str, Tensor]:
    """Train one seed with a plain ``nn.Module`` loop; return its ``state_dict`` (CPU).

    The reference of :func:`train_shard` (same random streams, same order) and the
    baseline of ``benchmarks/bench_train.py``. ``x`` (N, ...) float32, ``y`` (N,) int64.
    ``mask`` (N,) bool: train on those rows only (label noise is drawn over all N rows,
    then the subset taken; each epoch permutes the subset's rows; steps per epoch
    follow the subset's size).
    """
    spec, recipe = normalize_spec(model_spec), normalize_recipe(recipe)
    x, y, num_classes = _check_data(x, y, num_classes)
    device = torch.device(device)
    rows = _check_masks(None if mask is None else torch.as_tensor(mask)[None], 1, len(x))
    rows = torch.arange(len(x)) if rows is None else rows[0]
    model = init_model(seed, spec, tuple(x.shape[1:]), num_classes)
    check_output(model, x[:2].to("cpu", torch.float32), num_classes, spec["name"])
    model = model.to(device, x.dtype).train()
    opt = torch_optimizer(model.parameters(), recipe)
    labels = training_labels(y, seed, recipe["label_noise"], num_classes).to(device)
    xd = x.to(device)
    order_g, aug_g = generator(seed, "order"), generator(seed, "augment")
    steps, total, warmup = _schedule(len(rows), recipe)
    step = 0
    for _ in range(recipe["epochs"]):
        for idx in rows[epoch_order(len(rows), recipe["batch_size"], order_g)].to(device):
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


def train_shard(x: Tensor, y: Tensor, seeds: list[int], model_spec: dict,
                recipe: Mapping[str, Any] | Sequence[Mapping[str, Any]],
                device: torch.device | str, progress: bool = True, *,
                num_classes: int | None = None, program: str = "auto",
                validation: tuple[Tensor, Tensor] | None = None,
                masks: Tensor | None = None,
                evaluation: tuple[Tensor, Tensor] | None = None,
                on_diverge: str = "raise", phases: dict | None = None,
                where: str = "train", model_key: str | None = None) -> dict:
    """Train the S members ``seeds`` as one vectorised program; return the checkpoint.

    ``x`` (N, ...) float32 (float64 trains in float64, for exactness checks) and
    ``y`` (N,) int64 clean labels (label noise is drawn per seed). ``recipe``: one
    mapping for every member, or a list of S mappings that differ only in
    :data:`~multirun.recipe.PER_MEMBER_KEYS` (:func:`~multirun.recipe.split_members`;
    anything else raises :class:`ContractError` naming the key). ``masks`` (S, N) bool,
    every row the same count: member ``s`` trains on its rows only (steps per epoch
    from that count); ``None``: all rows.

    Returns the checkpoint (format 2, ``docs/training.md``): ``model_spec``,
    ``recipe`` (the shared recipe: member 0's values for per-member keys),
    ``member_recipes`` (S full recipes), ``masks`` ((S, N) bool, only with masks),
    ``seeds``, ``input_shape``, ``num_classes``, ``num_train`` (N), ``state``
    ({name: (S, ...) CPU tensor}) and ``history``: ``train_loss``, ``train_acc``
    (S, epochs) float32, means over the epoch's steps measured on the (augmented,
    noisy) batches as trained, in train mode; ``lr`` (total_steps,) float32 (member
    0's schedule); with ``evaluation`` = (x_test, y_test), ``test_loss`` (mean
    cross-entropy, no smoothing) and ``test_acc`` (S, epochs) float32 of each
    epoch-end model in eval mode without augmentation.

    ``on_diverge``: ``"raise"`` raises :class:`ContractError` when a member ends
    with NaN/inf weights; ``"record"`` flags a member whose epoch loss is NaN/inf or
    above ``DIVERGE_FACTOR`` times the lower of its first step's and first epoch's (or
    whose weights are not finite) in ``history["diverged"]`` (S,) bool, with
    ``history["diverged_epoch"]`` (S,) int64 (0-based, -1: never); it keeps its last
    finite epoch-end state (the initial one when it diverged in epoch 0) and
    stops training (learning rate 0, optimiser state cleared), its history is NaN
    after that epoch, and the other members train exactly as without it; when every
    member has diverged the program stops (the history keeps every epoch, NaN after
    each divergence, as if it had run on).

    ``phases`` (benchmarks): a dict to which the run adds the seconds of ``data gather``
    (the batch's rows and labels), of ``evaluation`` (with ``evaluation``) and, in the
    ``mlp`` program, of each part of a step (:meth:`multirun.programs.MLPProgram.step`).

    ``where``: the config section whose recipe trains them (``train``,
    ``studies.memorization``, ``sweeps.NAME``, ...): errors name its keys; ``model_key``:
    the model's key where it is not ``WHERE.model`` (``studies.label_noise.architectures.A``).

    ``num_classes`` defaults to ``max(y) + 1``. A tqdm bar over steps goes to stderr
    when ``progress``. ``program``: how a step runs (:mod:`multirun.programs`):
    ``auto`` takes the hand-written ``mlp``/``cnn1d`` program for plain models without
    augmentation and ``vmap`` for everything else. With ``recipe["patience"] > 0``,
    ``validation`` = (x_val, y_val) early-stops each seed
    (:class:`multirun.early_stopping.EarlyStopping`): the state is each seed's
    best-validation epoch and ``history`` adds ``val_acc`` (S, epochs run),
    ``best_epoch`` (S,).
    """
    spec = normalize_spec(model_spec)
    seeds = _check_seeds(seeds, distinct=False, where=f"{where}.seeds")
    s = len(seeds)
    recipes = [recipe] * s if isinstance(recipe, Mapping) else list(recipe)
    if len(recipes) != s:
        raise ContractError(f"{where}.recipe: {len(recipes)} member recipes for {s} seeds")
    recipe, per_member = split_members(recipes, f"{where}.recipe")
    members = member_recipes(recipe, per_member)
    _check_distinct_members(seeds, members, masks, where)
    if on_diverge not in ("raise", "record"):
        raise ValueError(f"on_diverge: {on_diverge!r}; choose raise or record")
    x, y, num_classes = _check_data(x, y, num_classes)
    device = torch.device(device)
    n, input_shape = len(x), tuple(int(d) for d in x.shape[1:])
    rows = _check_masks(masks, s, n)  # (S, n_sub) or None
    n_sub = n if rows is None else rows.shape[1]
    batch = min(recipe["batch_size"], n_sub)

    # ------------------------------------------------------------------ models, stacked
    models = [init_model(seed, spec, input_shape, num_classes) for seed in seeds]
    check_output(models[0], x[:2].to("cpu", torch.float32), num_classes, spec["name"])
    kind = pick_program(program, spec, recipe)
    if kind == "mlp":
        prog: Program = MLPProgram(models, recipe, batch, device, x.dtype, per_member)
    elif kind == "cnn1d":
        prog = CNN1DProgram(models, recipe, batch, input_shape, device, x.dtype, per_member)
    else:
        probe = (x[:batch].to(device), y[:batch])
        try:  # its first vmap call: a plain forward worked (check_output)
            prog = VmapProgram(models, spec, input_shape, num_classes, recipe, probe, device,
                               x.dtype, per_member)
        except torch.OutOfMemoryError:
            raise  # the probe step over all members: a smaller shard_size, not the model
        except (RuntimeError, ValueError, TypeError) as err:
            if not is_user_model(spec["name"]):
                raise
            key = model_key or f"{where}.model"
            raise ContractError(f"{key}.name: {spec['name']}: a training step vectorised over "
                                f"members with torch.func.vmap failed ({type(err).__name__}: "
                                f"{err}); see docs/models.md for what a model must allow"
                                ) from err
    del models
    if phases is not None:  # benchmarks: seconds per phase (multirun.timing)
        prog.phases = phases
    xd = prog.prepare(x.to(device))
    stopper = None
    if recipe["patience"]:
        if validation is None:
            raise ContractError(f"{where}.recipe.patience: early stopping needs a validation "
                                "split (x_val, y_val in the dataset file)")
        stopper = EarlyStopping(meta_model(spec, input_shape, num_classes),
                                validation[0].to(device, x.dtype), validation[1].to(device),
                                recipe["patience"])
    evaluator = None
    if evaluation is not None:
        x_test, y_test = evaluation[0].to(device, x.dtype), evaluation[1].to(device)
        if hasattr(prog, "evaluate"):  # the program's own forward pass (mlp)
            x_test = prog.prepare(x_test)

            def evaluator(_state, prog=prog, x_test=x_test, y_test=y_test):
                return prog.evaluate(x_test, y_test)
        else:
            evaluator = Evaluator(meta_model(spec, input_shape, num_classes), x_test, y_test)

    # ------------------------------------------------------------------ per-seed streams
    labels = torch.stack([training_labels(y, seed, recipe["label_noise"], num_classes)
                          for seed in seeds]).to(device)  # (S, N)
    order_gs = [generator(seed, "order") for seed in seeds]
    aug_gs = [generator(seed, "augment") for seed in seeds]

    # ------------------------------------------------------------------ the loop
    steps, total, warmup = _schedule(n_sub, recipe)
    epochs = recipe["epochs"]
    # learning rate of every step and member (members share the schedule's shape)
    warmups = [_schedule(n_sub, r)[2] for r in members]  # warm-up may differ per member
    lrs = [[lr_at(t, total, w, r) for r, w in zip(members, warmups, strict=True)]
           for t in range(total)]
    lr_hist = torch.tensor([row[0] for row in lrs], dtype=torch.float32)
    loss_hist = torch.zeros(s, epochs, dtype=torch.float64, device=device)
    correct_hist = torch.zeros(s, epochs, dtype=torch.float64, device=device)
    test_hist = torch.full((2, s, epochs), math.nan, dtype=torch.float64)
    watch = _Divergence(prog.state()) if on_diverge == "record" else None
    # (S,) bool, updated in place by the watch
    diverged = watch.diverged if watch is not None else torch.zeros(s, dtype=torch.bool)
    bar = tqdm(total=total, desc=f"train {s} seeds ({spec['name']})", unit="step",
               file=sys.stderr, disable=not progress, dynamic_ncols=True)
    step = 0
    for epoch in range(epochs):
        order = torch.stack([epoch_order(n_sub, recipe["batch_size"], g) for g in order_gs], 1)
        if rows is not None:  # positions in each member's subset -> row indices
            order = torch.gather(rows[None].expand(steps, -1, -1), 2, order)
        order = order.to(device)  # (steps, S, B)
        for idx in order:
            row = lrs[step]
            lr = row[0] if all(v == row[0] for v in row) else row
            with timed_phase(phases, "data gather", device):
                xb = xd.index_select(0, idx.flatten()).view(*idx.shape, *xd.shape[1:])  # (S, B, ...)
                if recipe["augment"] != "none":
                    drawn = [draw_augment(recipe["augment"], idx.shape[1], g) for g in aug_gs]
                    stacked = {k: torch.cat([d[k] for d in drawn]) for k in drawn[0]}
                    xb = apply_augment(xb.flatten(0, 1), stacked).view_as(xb)
                yb = torch.gather(labels, 1, idx)
            loss, correct = prog.step(xb, yb, lr)
            if watch is not None and step == 0:
                watch.first_step_loss = loss.detach().double().cpu()
            loss_hist[:, epoch] += loss
            correct_hist[:, epoch] += correct
            step += 1
            bar.update()
        if evaluator is not None:
            with timed_phase(phases, "evaluation", device):
                test_hist[:, :, epoch] = torch.stack(evaluator(prog.state())).cpu()
        if watch is not None:
            new = watch.end_epoch(epoch, prog, (loss_hist[:, :epoch + 1] / steps).cpu())
            if new.any():  # no more updates: learning rate 0 from here
                lrs[step:] = [[0.0 if f else v for v, f in zip(r, new.tolist(), strict=True)]
                              for r in lrs[step:]]
        if progress:  # the mean over the members still training
            live = (~diverged).to(loss_hist.device)
            mean = float(loss_hist[live, epoch].mean()) / steps if live.any() else math.nan
            bar.set_postfix(epoch=epoch + 1, loss=f"{mean:.4f}",
                            **({"diverged": int(diverged.sum())} if diverged.any() else {}))
        if bool(diverged.all()):
            break  # nothing left to train (the history stays full length: NaN from here)
        if stopper is not None and stopper.update(epoch, prog.state(), {}):
            break
    bar.close()
    # epochs in the history: fewer than the recipe's only when every seed stopped early;
    # a program whose members all diverged keeps every epoch (NaN after each divergence),
    # as each of them would have trained alone or packed with others
    all_diverged = bool(diverged.all())
    run = epochs if all_diverged else epoch + 1

    # ------------------------------------------------------------------ the checkpoint
    final = stopper.best_state if stopper is not None else prog.state()
    if watch is not None:
        final = watch.restored(final)
    state = {k: v.to("cpu", copy=True).contiguous() for k, v in final.items()}
    finite = _finite_members(state)
    if not finite.all():
        bad = [seed for seed, ok in zip(seeds, finite.tolist(), strict=True) if not ok]
        raise ContractError(f"{where}.recipe.lr: seeds {bad} diverged (NaN/inf weights) with "
                            f"lr {recipe['lr']}; lower {where}.recipe.lr (or add warm-up)")
    history = {
        "train_loss": (loss_hist[:, :run] / steps).float().cpu(),
        "train_acc": (correct_hist[:, :run] / (steps * batch)).float().cpu(),
        "lr": lr_hist if all_diverged else lr_hist[:step],
    }
    if evaluator is not None:
        history["test_loss"] = test_hist[0, :, :run].float()
        history["test_acc"] = test_hist[1, :, :run].float()
    if watch is not None:
        watch.mark(history, run)
    if stopper is not None:
        history.update(stopper.history())
    ckpt = {
        "format": CHECKPOINT_FORMAT,
        "model_spec": spec,
        "recipe": recipe,
        "member_recipes": members,
        "seeds": seeds,
        "input_shape": input_shape,
        "num_classes": num_classes,
        "num_train": n,
        "state": state,
        "history": history,
    }
    if masks is not None:
        ckpt["masks"] = torch.as_tensor(masks).to("cpu", torch.bool).clone()
    return ckpt


def _check_distinct_members(seeds: list[int], members: list[dict], masks: Any,
                            where: str) -> None:
    """A seed may appear more than once (a sweep's points), with different recipes or masks."""
    if len(set(seeds)) == len(seeds):
        return
    rows = [None] * len(seeds) if masks is None else torch.as_tensor(masks).tolist()
    seen = set()
    for seed, r, m in zip(seeds, members, rows, strict=True):
        key = (seed, repr(sorted(r.items())), None if m is None else tuple(m))
        if key in seen:
            raise ContractError(f"{where}.seeds: seed {seed} appears twice with the same "
                                "recipe and rows; members must differ")
        seen.add(key)


class _Divergence:
    """``on_diverge="record"``: which members diverged, in which epoch, and each member's
    last finite epoch-end state, which a diverged member keeps."""

    def __init__(self, state: Mapping[str, Tensor]):
        s = len(next(iter(state.values())))
        self.diverged = torch.zeros(s, dtype=torch.bool)
        self.epoch = torch.full((s,), -1, dtype=torch.int64)  # 0-based, -1: never
        self.kept = _snapshot(state)
        self.first_step_loss: Tensor | None = None  # (S,) each member's loss at its start

    def end_epoch(self, epoch: int, prog: Program, epoch_losses: Tensor) -> Tensor:
        """After epoch ``epoch`` (``epoch_losses`` (S, epoch + 1) mean losses so far): freeze
        the members that diverged in it (their last finite state back in ``prog``, their
        optimiser state cleared) and keep every other member's state; (S,) bool, the new ones."""
        bad = diverging(epoch_losses[:, -1], self.first_step_loss, epoch_losses[:, 0])
        new = (bad | ~_finite_members(prog.state()).cpu()) & ~self.diverged
        if new.any():
            _restore(prog.state(), self.kept, new)
            prog.opt.reset(new)
            self.diverged |= new
            self.epoch[new] = epoch
        current = _snapshot(prog.state())
        for k, v in current.items():
            v[self.diverged.to(v.device)] = self.kept[k][self.diverged.to(v.device)]
        self.kept = current
        return new

    def restored(self, state: Mapping[str, Tensor]) -> Mapping[str, Tensor]:
        """``state`` with each diverged member's last finite state (a copy where any is)."""
        if not self.diverged.any():
            return state
        state = {k: v.clone() for k, v in state.items()}
        _restore(state, self.kept, self.diverged)
        return state

    def mark(self, history: dict[str, Tensor], run: int) -> None:
        """NaN in ``history``'s curves after each member's divergence, and its
        ``diverged`` (S,) bool and ``diverged_epoch`` (S,) int64."""
        after = (torch.arange(run)[None] > self.epoch[:, None]) & self.diverged[:, None]
        for k in ("train_loss", "train_acc", "test_loss", "test_acc"):
            if k in history:
                history[k][after] = math.nan
        history["diverged"] = self.diverged
        history["diverged_epoch"] = self.epoch


def diverging(epoch_loss: Tensor, first_step_loss: Tensor, first_epoch_loss: Tensor) -> Tensor:
    """Which members' training has diverged by this epoch: (S,) float each -> (S,) bool.

    The epoch's mean loss is NaN/inf, or above ``DIVERGE_FACTOR`` times the lower of the
    member's first step's and first epoch's loss (the first step's catches a loss that
    explodes within epoch 1; a NaN reference compares false, and isfinite catches it).
    """
    start = torch.minimum(first_step_loss, first_epoch_loss)
    return ~torch.isfinite(epoch_loss) | (epoch_loss > DIVERGE_FACTOR * start)


def _snapshot(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in state.items()}


def _finite_members(state: Mapping[str, Tensor]) -> Tensor:
    """(S,) bool: every floating tensor of member ``s`` is finite."""
    return torch.stack([torch.isfinite(v.flatten(1)).all(1) for v in state.values()
                        if v.is_floating_point()]).all(0)


@torch.no_grad()
def _restore(state: Mapping[str, Tensor], kept: Mapping[str, Tensor], members: Tensor) -> None:
    """Write ``kept``'s rows of ``members`` (S,) bool into ``state`` in place (views allowed)."""
    for k, v in state.items():
        sel = members.to(v.device)
        v[sel] = kept[k][sel].to(v.device, v.dtype)
