"""The config schema, the one place every default lives.

``workflow/schemas/config.schema.yaml`` holds each key's type, range and
``default:``. The workflow fills the config from it (:func:`multirun.config.check`);
library functions that take a part of the config (a model spec, a recipe) read
their defaults from it with :func:`default`, so no default is written twice.
"""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path
from typing import Any

import yaml

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"


@cache
def _load(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: the config schema is missing; multirun reads it from the checkout it is "
            "installed from (pip install -e .)"
        )
    # libyaml's loader (PyYAML's wheels carry it): the schema is read by every snakemake
    # start, and the pure-Python loader took 0.3 s of it
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return _expand_grids(yaml.load(path.read_text(), Loader=loader))  # a safe loader


def _expand_grids(root: dict) -> dict:
    """Write out each ``x-grid-of: {prefix: "#/$defs/NAME"}`` node of ``root`` (in place).

    It becomes an object whose keys are ``prefix.KEY`` for every property ``KEY`` of the
    referenced schema, each a non-empty list of distinct values valid for that property
    (``sweeps.NAME.grid.recipe.lr: [0.01, 0.1]``), and no other key: so a sweep's grid
    is checked against the model and recipe schemas themselves, never a copy of them.
    """

    def walk(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item)
        if not isinstance(node, dict):
            return
        for value in node.values():
            walk(value)
        if "x-grid-of" in node:
            node["additionalProperties"] = False
            node["properties"] = {
                f"{prefix}.{key}": {"type": "array", "minItems": 1, "uniqueItems": True,
                                    "items": {"$ref": f"{ref}/properties/{key}"}}
                for prefix, ref in node["x-grid-of"].items()
                for key in resolve({"$ref": ref}, root)["properties"]
            }

    walk(root)
    return root


def load_schema(path: str | Path = SCHEMA_PATH) -> dict:
    """The parsed schema (a fresh copy: callers may modify it)."""
    return copy.deepcopy(_load(Path(path).resolve()))


def resolve(node: dict, root: dict) -> dict:
    """``node`` with a local ``$ref`` (``#/$defs/NAME``) replaced by its target, siblings kept."""
    while "$ref" in node:
        target = root
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def default(*keys: str, path: str | Path = SCHEMA_PATH) -> Any:
    """The default of config key ``keys``, e.g. ``default("train", "recipe")`` -> a full recipe.

    Exactly what :func:`multirun.config.check` puts into a config that leaves the key out.
    """
    root = load_schema(path)
    value = fill({}, root, root)
    for key in keys:
        value = value[key]
    return value


def fill(instance: Any, node: dict, root: dict) -> Any:
    """Fill ``instance`` in place with the defaults of schema ``node`` (recursively); return it.

    An absent key takes its ``default:``; an object that is present keeps its keys
    and gets the default's other keys beneath them (as Snakemake merges a
    ``--configfile`` over ``config.yaml``), unless its schema says
    ``x-merge-default: false`` (a table of named things given whole, e.g. architectures).
    Each entry of a table of named things (``additionalProperties`` a schema) is filled
    from that schema; a node marked ``x-fill: false`` (a part of a recipe written over
    another section's) gets nothing filled in.
    """
    node = resolve(node, root)
    if not isinstance(instance, dict) or node.get("x-fill") is False:
        return instance
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):  # a table of named things (sweeps.NAME): fill each entry
        for key in set(instance) - set(node.get("properties", {})):
            fill(instance[key], extra, root)
    for key, sub in node.get("properties", {}).items():
        sub = resolve(sub, root)
        if "default" in sub:
            if key not in instance:
                instance[key] = copy.deepcopy(sub["default"])
            elif isinstance(instance[key], dict) and isinstance(sub["default"], dict) \
                    and sub.get("x-merge-default", True):
                _merge_under(instance[key], sub["default"])
        if key in instance:
            fill(instance[key], sub, root)
    return instance


def _merge_under(target: dict, defaults: dict) -> None:
    for key, value in defaults.items():
        if key not in target:
            target[key] = copy.deepcopy(value)
        elif isinstance(target[key], dict) and isinstance(value, dict):
            _merge_under(target[key], value)
