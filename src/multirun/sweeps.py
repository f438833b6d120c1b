"""Sweeps: any model/recipe key over a grid of values x seeds (``sweeps:`` in the config).

A sweep ``NAME`` starts from a base section's model and recipe (``train`` or
``width_sweep``), writes its own ``model``/``recipe`` keys over them, and trains every
**point** of its grid (one value per dotted key, the cartesian product) under seeds
``0..seeds-1``, cut into shards of ``shard_size`` seeds as the main run is
(:func:`multirun.config.shards`). A point is named by its values,
``batchnorm=true,lr=0.01`` (:func:`point_name`): keys sorted, so the name does not
depend on the order the grid lists them in, and only characters that are safe in file
names. The unit of caching is a (point, shard): adding a value adds points, adding a
shard of seeds adds shards, and nothing else changes.

With ``pack: true`` the points that differ only in per-member keys
(:data:`multirun.recipe.PER_MEMBER_KEYS`, e.g. the learning rate) train as one program
(a **pack**, :func:`packs`); a pack's job then depends on every value of those keys, so
adding or removing one retrains its pack (docs/sweeps.md).

The tables (:func:`seed_rows`, :func:`ensemble_rows`) and the figure
(:mod:`multirun.plots.sweeps`) read the points' logits and checkpoints.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from multirun.config import ConfigError, shards
from multirun.contracts import ContractError, metrics_rows
from multirun.model_spec import normalize_spec
from multirun.recipe import PER_MEMBER_KEYS, normalize_recipe

SAFE = re.compile(r"^[A-Za-z0-9_.+-]+$")
ROW_FIELDS = ("point", "seed", "epochs", "train_loss", "train_acc", "test_loss", "test_acc",
              "diverged")
ENSEMBLE_FIELDS = ("point", "seeds", "diverged", "mean_test_acc", "ensemble_members",
                   "ensemble_test_acc")


@dataclass(frozen=True)
class Point:
    """One grid point of a sweep: its folder name, grid values, model spec and recipe."""

    name: str                      # "batchnorm=true,lr=0.01"
    values: dict[str, Any]         # dotted grid key -> value, in the grid's order
    model: dict[str, Any]          # canonical model spec (multirun.model_spec.normalize_spec)
    recipe: dict[str, Any]         # canonical recipe (multirun.recipe.normalize_recipe)
    pack: str = field(default="")  # the pack it trains in with pack: true


def format_value(value: Any) -> str:
    """A grid value as it appears in a point's name: ``true``, ``8``, ``0.001``, ``1e-5``,
    ``1``, ``sgd``, ``0.9_0.999`` (a list). Equal values give equal text (``1.0e-1`` and
    ``0.1`` in YAML are the same float, hence the same name)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        text = repr(value)
        if "e" in text:
            mantissa, exp = text.split("e")
            text = f"{mantissa.removesuffix('.0')}e{int(exp)}"
        return text.removesuffix(".0")
    if isinstance(value, list | tuple):
        return "_".join(format_value(v) for v in value)
    text = str(value)
    if not SAFE.match(text):
        raise ConfigError(f"grid value {value!r}: only letters, digits and _.+- can name a "
                          "point's folder")
    return text


def short_keys(keys: Sequence[str]) -> dict[str, str]:
    """Dotted key -> the name it has in point names and table columns: the key without its
    ``model.``/``recipe.`` prefix (``lr``), the dotted key where two would collide."""
    tails = [k.split(".", 1)[1] for k in keys]
    return {k: (t if tails.count(t) == 1 else k) for k, t in zip(keys, tails, strict=True)}


def point_name(values: Mapping[str, Any]) -> str:
    """``key=value`` of every grid key, sorted by dotted key, joined by commas."""
    short = short_keys(list(values))
    return ",".join(f"{short[k]}={format_value(values[k])}" for k in sorted(values))


def expand(name: str, sweep: Mapping[str, Any], config: Mapping[str, Any]) -> list[Point]:
    """The points of sweep ``name`` (``config["sweeps"][name]``), in grid order.

    The model is ``config[base]["model"]`` with the sweep's ``model`` and the point's
    ``model.*`` values written over it (only the sweep's own ``model`` where it or the
    grid names another model than the base's), likewise the recipe; both are checked and put
    in canonical form. Raises :class:`ConfigError` naming the sweep and point.
    """
    base = config[sweep["base"]]
    keys = list(sweep["grid"])
    shared = [k for k in keys if k.split(".", 1)[1] not in PER_MEMBER_KEYS or
              k.startswith("model.")]
    points = []
    for combo in itertools.product(*(sweep["grid"][k] for k in keys)):
        values = dict(zip(keys, combo, strict=True))
        # a different model (sweep's model.name, or a grid's): the base's model keys are
        # another model's settings, so the point starts from the sweep's own model part
        mname = values.get("model.name", sweep["model"].get("name", base["model"].get("name")))
        inherited = base["model"] if mname == base["model"].get("name") else {}
        parts = {"model": {**inherited, **sweep["model"]},
                 "recipe": {**base["recipe"], **sweep["recipe"]}}
        for key, value in values.items():
            section, sub = key.split(".", 1)
            parts[section][sub] = value
        pname = point_name(values)
        try:
            model = normalize_spec(parts["model"], f"sweeps.{name}.model")
            recipe = normalize_recipe(parts["recipe"], f"sweeps.{name}.recipe")
        except ContractError as err:
            raise ConfigError(f"config key sweeps.{name}, point {pname}: {err} (the base "
                              f"section {sweep['base']} with the sweep's model/recipe and "
                              "this point's grid values)") from err
        pack = point_name({k: values[k] for k in shared}) if shared else "all"
        # each value as the canonical spec or recipe holds it (1 and 1.0 for lr: 1.0), so a
        # spelling of the same grid changes no rule's params (a key the optimiser does not
        # take, e.g. momentum under adam, keeps the value given)
        canonical = {"model": model, "recipe": recipe}
        values = {k: canonical[k.split(".", 1)[0]].get(k.split(".", 1)[1], v)
                  for k, v in values.items()}
        points.append(Point(pname, values, model, recipe, pack))
    if len({p.name for p in points}) < len(points):
        raise ConfigError(f"config key sweeps.{name}.grid: two points share a name; give "
                          "each key distinct values")
    return points


def expand_all(config: Mapping[str, Any]) -> dict[str, list[Point]]:
    """Every sweep's points: ``{sweep name: [Point, ...]}``."""
    return {name: expand(name, sweep, config) for name, sweep in config["sweeps"].items()}


def grid_values(points: Sequence[Point]) -> dict[str, list[Any]]:
    """Dotted key -> its values in grid order, canonical (as :class:`Point` holds them)."""
    keys = list(points[0].values) if points else []
    out: dict[str, dict[str, Any]] = {k: {} for k in keys}
    for p in points:  # keyed by the name's text: values may be lists (betas)
        for k in keys:
            out[k].setdefault(format_value(p.values[k]), p.values[k])
    return {k: list(v.values()) for k, v in out.items()}


def seed_shards(sweep: Mapping[str, Any]) -> dict[str, list[int]]:
    """The sweep's seeds cut into shards ``{'000': [0, ...], ...}`` (the same for every point)."""
    return shards(sweep["seeds"], sweep["shard_size"])


def packs(points: Sequence[Point]) -> dict[str, list[Point]]:
    """Pack name -> its points: the points that agree on every grid key that is not a
    per-member recipe key (one program trains them all with ``pack: true``)."""
    out: dict[str, list[Point]] = {}
    for p in points:
        out.setdefault(p.pack, []).append(p)
    return out


def first_numeric_key(keys: Sequence[str], values: Mapping[str, Sequence[Any]]) -> str | None:
    """The first grid key (in the grid's order) whose values are all numbers (not booleans)."""
    for key in keys:
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values[key]):
            return key
    return None


# ----------------------------------------------------------------------------- tables


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def loss_and_accuracy(logits: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean cross-entropy and accuracy of each model: logits (S, N, C), y (N,) -> two (S,)
    float64 arrays (computed in float64 from the stored, possibly fp16, logits)."""
    lp = _log_softmax(np.asarray(logits, dtype=np.float64))
    picked = np.take_along_axis(lp, y[None, :, None], axis=-1)[..., 0]  # (S, N)
    return -picked.mean(1), (lp.argmax(-1) == y[None]).mean(1)


def seed_rows(point: str, history: Mapping[str, Any], seeds: Sequence[int],
              train_logits: np.ndarray, test_logits: np.ndarray, y_train: np.ndarray,
              y_test: np.ndarray) -> list[dict[str, Any]]:
    """One row per seed of one shard of a point (fields :data:`ROW_FIELDS`).

    ``train_loss``/``train_acc``/``test_loss``/``test_acc``: the stored models evaluated
    on the whole clean split in eval mode (from the logits (S, N, C)); ``epochs``: epochs
    trained (up to divergence or early stopping); ``diverged``: the training's record
    (``history["diverged"]``, NaN/inf or above 10x the lower of the first step's and first epoch's loss).
    """
    train_loss, train_acc = loss_and_accuracy(train_logits, y_train)
    test_loss, test_acc = loss_and_accuracy(test_logits, y_test)
    loss = np.asarray(history["train_loss"], dtype=np.float64)  # (S, epochs)
    diverged = np.asarray(history.get("diverged", ~np.isfinite(loss).all(1)), dtype=bool)
    epochs = np.isfinite(loss).sum(1)
    return [{"point": point, "seed": int(seed), "epochs": int(epochs[i]),
             "train_loss": float(train_loss[i]), "train_acc": float(train_acc[i]),
             "test_loss": float(test_loss[i]), "test_acc": float(test_acc[i]),
             "diverged": bool(diverged[i])}
            for i, seed in enumerate(seeds)]


def ensemble_rows(point: str, rows: Sequence[Mapping[str, Any]], test_logits: np.ndarray,
                  y_test: np.ndarray) -> dict[str, Any]:
    """The ensemble row of one point (fields :data:`ENSEMBLE_FIELDS`).

    ``rows``: the point's :func:`seed_rows`, in the order of ``test_logits`` (S, N, C).
    ``ensemble_test_acc``: accuracy of the mean logits of the seeds that did not diverge
    (a diverged model's logits would swamp the mean); empty when all diverged.
    """
    keep = np.array([not r["diverged"] for r in rows], dtype=bool)
    acc: float | str = ""
    if keep.any():
        mean = np.asarray(test_logits, dtype=np.float64)[keep].mean(0)
        acc = float((mean.argmax(-1) == y_test).mean())
    return {"point": point, "seeds": len(rows), "diverged": int((~keep).sum()),
            "mean_test_acc": float(np.mean([r["test_acc"] for r in rows])),
            "ensemble_members": int(keep.sum()), "ensemble_test_acc": acc}


def with_keys(row: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """``row`` with one column per grid key (short names, :func:`short_keys`) after its
    ``point`` column; ``values``: the point's dotted grid key -> value."""
    short = short_keys(list(values))
    keys = {short[k]: values[k] for k in values}
    return {"point": row["point"], **keys, **{k: v for k, v in row.items() if k != "point"}}


def summarize(points: Mapping[str, Mapping[str, Any]], shard_files: Sequence[Sequence[Mapping[str, Any]]],
              y_train: np.ndarray, y_test: np.ndarray
              ) -> tuple[list[dict], list[dict], list[dict]]:
    """The three tables of a sweep: per (point, seed), per point (ensemble), and curves.

    ``points``: point name -> its grid values, in order. ``shard_files[i]`` lists, for
    point ``i``, each shard's loaded ``history``, ``seeds``
    (S,), ``train`` (S, N_train, C) and ``test`` (S, N_test, C) logits. Every table has
    one column per grid key after ``point`` (:func:`with_keys`).
    """
    rows, ensemble, curves = [], [], []
    for (name, values), files in zip(points.items(), shard_files, strict=True):
        mine = []
        for f in files:
            mine += seed_rows(name, f["history"], f["seeds"], f["train"], f["test"],
                              y_train, y_test)
            curves += [with_keys({"point": name, **r}, values)
                       for r in metrics_rows(f["history"], f["seeds"])]
        test = np.concatenate([np.asarray(f["test"]) for f in files])
        ensemble.append(with_keys(ensemble_rows(name, mine, test, y_test), values))
        rows += [with_keys(r, values) for r in mine]
    return rows, ensemble, curves


# ----------------------------------------------------------------------------- packs


def pack_members(points: Sequence[Point], seeds: Sequence[int]
                 ) -> tuple[list[int], list[dict[str, Any]]]:
    """The members of one shard of a pack: (seeds, recipes), point-major (point 0's seeds,
    then point 1's, ...), the form :func:`multirun.train.train_shard` takes."""
    return ([int(s) for _ in points for s in seeds],
            [dict(p.recipe) for p in points for _ in seeds])


def unpack(ckpt: Mapping[str, Any], index: int, size: int) -> dict[str, Any]:
    """Members ``index * size ... (index + 1) * size - 1`` of a pack's checkpoint, as the
    checkpoint of that one point (what training the point alone gives, up to the
    per-member exactness of the programs): state, seeds, member recipes, masks and every
    per-member history entry sliced; ``recipe`` the point's; ``history["lr"]`` the point's
    own schedule (a pack stores its first member's)."""
    from multirun.recipe import _schedule, lr_at

    s = len(ckpt["seeds"])
    if not 0 <= index * size < (index + 1) * size <= s:
        raise ContractError(f"pack checkpoint: members {index * size}..{(index + 1) * size - 1}"
                            f" of {s} requested; delete it and rerun the sweep")
    sel = slice(index * size, (index + 1) * size)
    members = [dict(r) for r in ckpt["member_recipes"][sel]]
    out = {**ckpt, "seeds": list(ckpt["seeds"][sel]), "member_recipes": members,
           "recipe": dict(members[0]),
           "state": {k: v[sel].clone() for k, v in ckpt["state"].items()}}
    if ckpt.get("masks") is not None:
        out["masks"] = ckpt["masks"][sel].clone()
    history = {}
    for key, value in ckpt["history"].items():
        per_member = hasattr(value, "shape") and value.ndim >= 1 and value.shape[0] == s
        history[key] = value[sel].clone() if per_member and key != "lr" else value
    if "lr" in history:
        rows = ckpt["num_train"] if out.get("masks") is None else int(out["masks"][0].sum())
        _, total, warmup = _schedule(rows, members[0])
        lr = [lr_at(t, total, warmup, members[0]) for t in range(len(history["lr"]))]
        history["lr"] = history["lr"].new_tensor(lr)
    out["history"] = history
    return out
