"""Model specs without torch: check a ``train.model`` mapping, name a user model's files.

The Snakefile checks every spec when it is parsed, so this module imports neither torch
nor the model zoo (:mod:`multirun.models`, which builds the models and holds their
registry, imports it). A spec is ``{"name": ..., "width": ..., ...}``: a built-in of
:data:`BUILTIN_MODELS` or your own ``FILE.py:Name`` / ``package.module:Name``
(docs/models.md).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from multirun.contracts import ContractError
from multirun.schema import default

BUILTIN_MODELS = ("mlp", "cnn1d", "airbench", "resnet18")
"""The names of :data:`multirun.models.REGISTRY` (checked there when it is built)."""

_SPEC_DEFAULTS: dict[str, Any] = default("train", "model")  # the config schema's


def is_user_model(name: Any) -> bool:
    """``FILE.py:Name`` or ``package.module:Name`` (a model from outside the library)."""
    return isinstance(name, str) and ":" in name


def split_target(name: str, where: str) -> tuple[str, str]:
    """``(target, Name)`` of ``target:Name``; raises naming ``{where}.name`` if malformed."""
    target, _, attr = name.rpartition(":")
    if not target or not attr.isidentifier():
        raise ContractError(f"{where}.name: {name!r} is not FILE.py:Name or "
                            "package.module:Name (Name a Python identifier); see docs/models.md")
    return target, attr


def user_file(target: str, name: str, where: str) -> Path:
    """The file of ``FILE.py`` (relative to the working directory), checked to exist."""
    path = Path(target)
    if not path.is_file():
        raise ContractError(f"{where}.name: {name}: file {target} does not exist (paths are "
                            f"relative to the working directory {os.getcwd()}); see docs/models.md")
    return path


def normalize_spec(spec: Mapping[str, Any], where: str = "train.model") -> dict[str, Any]:
    """Check a model spec and return its canonical form.

    A built-in's canonical spec keeps only the keys that change the model: ``name``,
    ``width``, ``batchnorm`` and, for ``mlp`` only, ``depth``. A user model
    (``FILE.py:Name`` / ``package.module:Name``) keeps every key it was given, in
    sorted order (they are all passed to it); its file must exist. Raises
    :class:`ContractError` naming the config key (``{where}.name`` ...) when a value
    is invalid.
    """
    if not isinstance(spec, Mapping):
        raise ContractError(f"{where}: expected a mapping with name/width/..., got {spec!r}")
    name = spec.get("name")
    if is_user_model(name):
        target, _ = split_target(name, where)
        if target.endswith(".py"):
            user_file(target, name, where)
        return {"name": name, **{k: spec[k] for k in sorted(spec) if k != "name"}}
    if name not in BUILTIN_MODELS:
        raise ContractError(
            f"{where}.name: unknown model {name!r}; choose one of {', '.join(BUILTIN_MODELS)}, or "
            "your own as FILE.py:Name or package.module:Name (docs/models.md)"
        )
    width = spec.get("width")
    if isinstance(width, bool) or not isinstance(width, int) or width <= 0:
        raise ContractError(f"{where}.width: must be an integer > 0, got {width!r}")
    extra = sorted(set(spec) - {"name", "width", "depth", "batchnorm"})
    if extra:
        raise ContractError(f"{where}: keys {extra} are not settings of the built-in model "
                            f"{name!r} (extra keys are for your own models, docs/models.md)")
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


def model_files(spec: Mapping[str, Any]) -> list[Path]:
    """The user files a spec builds from (``[FILE.py]``, a module's file, or ``[]``)."""
    name = spec.get("name")
    if not is_user_model(name):
        return []
    target = name.rpartition(":")[0]
    if target.endswith(".py"):
        return [Path(target)]
    try:
        found = importlib.util.find_spec(target)
    except (ImportError, ValueError):
        return []
    return [Path(found.origin)] if found is not None and found.origin else []
