"""Shard checkpoints: the format, its checks on read, one member as an ``nn.Module``, evaluation.

A checkpoint is the dict :func:`multirun.train.train_shard` returns (format in
``docs/training.md``); :func:`load_checkpoint` reads and checks one file,
:func:`evaluate_shard` computes the logits of all its models at once,
:class:`Evaluator` the test loss and accuracy of stacked models (per epoch, in
training) and :func:`write_metrics` a checkpoint's learning curves as ``metrics.csv``.

Format 2 adds ``member_recipes`` (S recipes), optional ``masks`` (S, N) bool and
the test metrics of ``history``; a format-1 checkpoint (every member on the shared
recipe and all rows) is read as format 2 with ``member_recipes`` filled in.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from multirun.contracts import METRICS, ContractError, load_torch, metrics_rows, remake, save_csv
from multirun.model_spec import normalize_spec
from multirun.models import WithFeatures, build_model, meta_model
from multirun.recipe import _check_seeds

CHECKPOINT_FORMAT = 2
READABLE_FORMATS = (1, 2)


def _expected_shapes(ckpt: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    base = meta_model(ckpt["model_spec"], tuple(ckpt["input_shape"]), int(ckpt["num_classes"]))
    return {k: tuple(v.shape) for k, v in base.state_dict().items()}


def check_checkpoint(ckpt: Mapping[str, Any], where: str = "checkpoint") -> None:
    """Check a checkpoint dict's structure: format, spec, state names/shapes/finiteness.

    Raises :class:`ContractError` starting with ``where`` (the file name).
    """
    if ckpt.get("format") not in READABLE_FORMATS:
        raise ContractError(f"{where}: checkpoint format {ckpt.get('format')!r}, expected "
                            f"one of {READABLE_FORMATS}; {remake(where)}")
    for key in ("model_spec", "recipe", "seeds", "input_shape", "num_classes", "state",
                "history"):
        if key not in ckpt:
            raise ContractError(f"{where}: lacks key {key!r}; {remake(where)}")
    try:
        normalize_spec(ckpt["model_spec"])
        seeds = _check_seeds(ckpt["seeds"], distinct=False)
        expected = _expected_shapes(ckpt)
    except ContractError as err:
        raise ContractError(f"{where}: invalid contents ({err}); {remake(where)}") from err
    state = ckpt["state"]
    if set(state) != set(expected):
        missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        raise ContractError(f"{where}: state does not match model {ckpt['model_spec']} "
                            f"(missing {missing}, unexpected {extra}); {remake(where)}")
    for k, shape in expected.items():
        v = state[k]
        if not isinstance(v, Tensor) or tuple(v.shape) != (len(seeds), *shape):
            got = tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__
            raise ContractError(f"{where}: state[{k!r}] has shape {got}, expected "
                                f"{(len(seeds), *shape)}; {remake(where)}")
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise ContractError(f"{where}: state[{k!r}] holds NaN or inf; training diverged "
                                "(lower the lr of the recipe that trained it?), then rerun training")
    if ckpt["format"] >= 2:
        members = ckpt.get("member_recipes")
        if not isinstance(members, list) or len(members) != len(seeds):
            raise ContractError(f"{where}: member_recipes must list {len(seeds)} recipes; "
                                f"{remake(where)}")
        masks = ckpt.get("masks")
        if masks is not None and (not isinstance(masks, Tensor) or masks.dtype != torch.bool
                                  or tuple(masks.shape) != (len(seeds), ckpt.get("num_train"))):
            got = tuple(masks.shape) if isinstance(masks, Tensor) else type(masks).__name__
            raise ContractError(f"{where}: masks has shape {got}, expected (seeds, "
                                f"num_train) bool; {remake(where)}")


def upgrade(ckpt: Mapping[str, Any]) -> dict:
    """A checkpoint in format 2: format 1 gains ``member_recipes`` (S copies of ``recipe``)."""
    out = dict(ckpt)
    if out.get("format") == 1:
        out["member_recipes"] = [dict(out["recipe"]) for _ in out["seeds"]]
        out["format"] = 2
    return out


def load_checkpoint(path: str | os.PathLike, *, model_spec: dict | None = None,
                    seeds: list[int] | None = None) -> dict:
    """Load a shard checkpoint (``multirun.contracts.load_torch``) and check it.

    With ``model_spec``/``seeds``, also check that the checkpoint was trained with
    that model and those seeds. Raises :class:`ContractError` naming ``path`` and
    the mismatching config key (e.g. ``train.model.width``).
    """
    ckpt = load_torch(path, ("format", "model_spec", "seeds", "state"))
    check_checkpoint(ckpt, str(path))
    ckpt = upgrade(ckpt)
    if model_spec is not None:
        want, have = normalize_spec(model_spec), normalize_spec(ckpt["model_spec"])
        for key in sorted(set(want) | set(have)):
            if want.get(key) != have.get(key):
                raise ContractError(
                    f"{path}: trained with train.model.{key} = {have.get(key)!r}, the config "
                    f"asks for {want.get(key)!r}; {remake(path)}")
    if seeds is not None and [int(s) for s in seeds] != list(ckpt["seeds"]):
        raise ContractError(f"{path}: holds seeds {list(ckpt['seeds'])}, the config gives it "
                            f"{list(seeds)}; {remake(path)}")
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
    penultimate features (S, N, D) float32 (else ``None``; ``D = 0`` for a model without
    ``features(x)``, :class:`multirun.models.WithFeatures`). BatchNorm uses its
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
    base = WithFeatures(meta_model(ckpt["model_spec"], tuple(ckpt["input_shape"]),
                                   int(ckpt["num_classes"]))).eval()
    dtype = next((v.dtype for v in ckpt["state"].values() if v.dtype == torch.float64),
                 torch.float32)  # float64 only for exactness checks
    state = {f"model.{k}": v.to(device) for k, v in ckpt["state"].items()}

    def run(st: dict[str, Tensor], xb: Tensor) -> tuple[Tensor, Tensor]:
        return functional_call(base, st, (xb,))

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
            probe = torch.zeros(2, *ckpt["input_shape"], device="meta")
            d = base(probe)[0].shape[-1]
            feats_out = torch.empty(s, 0, d)
    return logits_out, feats_out


class Evaluator:
    """Test loss and accuracy of S stacked models on ``x`` (M, ...), ``y`` (M,) int64.

    ``base``: a parameter-less (meta) copy of the architecture; ``x`` and ``y`` on the
    models' device. Calling it with ``state`` {name: (S, ...)} returns ``(loss, acc)``,
    each (S,) float64: mean cross-entropy (no label smoothing) and accuracy, in eval
    mode (BatchNorm uses running statistics), ``batch_size`` examples per pass.
    """

    def __init__(self, base: nn.Module, x: Tensor, y: Tensor, batch_size: int = 4096):
        self.base = base.eval()
        self.x, self.y, self.batch_size = x, y, int(batch_size)

        def one(st: dict[str, Tensor], xb: Tensor, yb: Tensor) -> tuple[Tensor, Tensor]:
            logits = functional_call(self.base, st, (xb,))
            loss = torch.nn.functional.cross_entropy(logits, yb, reduction="sum")
            return loss, (logits.argmax(-1) == yb).sum()

        self.batched = vmap(one, in_dims=(0, None, None))

    @torch.no_grad()
    def __call__(self, state: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        loss = correct = 0
        for start in range(0, len(self.x), self.batch_size):
            xb = self.x[start:start + self.batch_size]
            yb = self.y[start:start + self.batch_size]
            lo, co = self.batched(dict(state), xb, yb)
            loss, correct = loss + lo.double(), correct + co.double()
        m = max(1, len(self.x))
        return loss / m, correct / m


def write_metrics(path: str | os.PathLike, ckpt: Mapping[str, Any]) -> None:
    """Write ``metrics.csv`` (columns epoch, seed, train_loss, train_acc, test_loss,
    test_acc; :func:`multirun.contracts.metrics_rows`) atomically."""
    save_csv(path, metrics_rows(ckpt["history"], ckpt["seeds"]), ["epoch", "seed", *METRICS])
