"""Training recipe validation: the ``train.recipe`` keys, the LR schedule, the data checks.

Recipe (``train.recipe``): ``epochs``, ``batch_size``, ``optimizer`` (``sgd`` |
``nesterov`` | ``adam`` | ``adamw``), ``lr`` (peak), ``momentum`` (sgd, nesterov),
``betas`` and ``eps`` (adam, adamw), ``weight_decay`` (coupled L2 added to the
gradient of every parameter, biases and BatchNorm included, as ``torch.optim.SGD``
and ``torch.optim.Adam`` do; decoupled for ``adamw``, as ``torch.optim.AdamW``),
``warmup_epochs`` (linear warm-up from ``lr/W`` to
``lr`` over the first ``W`` steps), ``schedule`` after warm-up (``cosine`` to 0,
``linear`` to 0, ``constant``), ``label_smoothing``, ``label_noise`` and the
optional ``augment`` (``none`` | ``flip`` | ``flip_crop``; default ``none``).
Each epoch is a fresh permutation cut into ``N // batch_size`` full batches (the
remainder is skipped that epoch; a different remainder every epoch).

A normalised recipe holds only its optimiser's keys: ``momentum`` for ``sgd`` and
``nesterov``, ``betas`` and ``eps`` for ``adam`` and ``adamw`` (the others are
dropped), so a default written out, or a key the optimiser ignores, changes nothing.

Members. One training program may train S members whose recipes differ only in
:data:`PER_MEMBER_KEYS`; :func:`split_members` checks that and returns the shared
recipe and the per-member values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # torch is imported where used: the Snakefile parses recipes without it
    from torch import Tensor

from multirun.contracts import ContractError
from multirun.schema import default

OPTIMIZERS = ("sgd", "nesterov", "adam", "adamw")
ADAMS = ("adam", "adamw")
PER_MEMBER_KEYS = ("lr", "momentum", "weight_decay", "label_smoothing", "betas", "eps",
                   "warmup_epochs")
"""Recipe keys that may differ between the members of one training program (they set
optimiser numbers and the learning rate of each step, never a shape or the step count)."""
SCHEDULES = ("cosine", "linear", "constant")
AUGMENTS = ("none", "flip", "flip_crop")
_RECIPE_DEFAULTS: dict[str, Any] = default("train", "recipe")  # the config schema's


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
    if out["optimizer"] in ADAMS:  # betas and eps in momentum's place (same key order)
        betas = recipe.get("betas", _RECIPE_DEFAULTS.get("betas"))
        if (not isinstance(betas, Sequence) or isinstance(betas, str) or len(betas) != 2
                or not all(isinstance(b, int | float) and not isinstance(b, bool)
                           and 0 <= b < 1 for b in betas)):
            raise ContractError(f"{where}.betas: must be two numbers [beta1, beta2] in "
                                f"[0, 1), got {betas!r}")
        eps = _number(recipe, "eps", where, 0, math.inf, lo_open=True, hi_open=True)
        out = {k: v for k, v in out.items() if k != "momentum"}
        keys = list(out)
        at = keys.index("lr") + 1
        out = {**{k: out[k] for k in keys[:at]}, "betas": [float(b) for b in betas],
               "eps": eps, **{k: out[k] for k in keys[at:]}}
    return out


def split_members(recipes: Sequence[Mapping[str, Any]], where: str = "train.recipe"
                  ) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """Check that S member recipes can train as one program; return (shared, per_member).

    Every recipe is normalised (:func:`normalize_recipe`). ``shared`` is member 0's
    recipe; ``per_member`` maps each key of :data:`PER_MEMBER_KEYS` the recipes hold
    to the list of its S values (``betas``: S pairs). Members that differ in any other
    key (``epochs``, ``optimizer``, ``schedule``, ...) cannot share a program: raises
    :class:`ContractError` naming the key and the two values.
    """
    if isinstance(recipes, Mapping) or not isinstance(recipes, Sequence) or not recipes:
        raise ContractError(f"{where}: expected a non-empty list of member recipes, "
                            f"got {recipes!r}")
    normal = [normalize_recipe(r, where) for r in recipes]
    shared = normal[0]
    for i, r in enumerate(normal[1:], 1):
        for key in sorted(set(shared) | set(r)):
            if key in PER_MEMBER_KEYS or shared.get(key) == r.get(key):
                continue
            raise ContractError(
                f"{where}.{key}: members 0 and {i} differ ({shared.get(key)!r} vs "
                f"{r.get(key)!r}); members of one training program may differ only in "
                f"{', '.join(PER_MEMBER_KEYS)}")
    per_member = {k: [r[k] for r in normal] for k in PER_MEMBER_KEYS if k in shared}
    return shared, per_member


def member_recipes(shared: Mapping[str, Any], per_member: Mapping[str, Sequence[Any]]
                   ) -> list[dict[str, Any]]:
    """The S full recipes of :func:`split_members`' output (its inverse)."""
    s = len(next(iter(per_member.values())))
    return [{**shared, **{k: v[i] for k, v in per_member.items()}} for i in range(s)]


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
    import torch

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


def _check_seeds(seeds: Sequence[int], distinct: bool = True,
                 where: str = "train.seeds") -> list[int]:
    """Seeds as ints >= 0 (distinct unless ``distinct`` is False: members of a sweep
    share seeds across points); errors name the config key ``where``."""
    seeds = list(seeds)
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int | np.integer) or s < 0
                        for s in seeds) or (distinct and len(set(seeds)) != len(seeds)):
        what = "distinct integers" if distinct else "integers"
        raise ContractError(f"{where}: need {what} >= 0, got {seeds!r}")
    return [int(s) for s in seeds]
