"""Configuration checks: the JSON schema, then the rules a schema cannot say.

:func:`check` coerces command-line strings to the schema's types, fills in every
default the schema holds (``multirun.schema``), and raises :class:`ConfigError`
with one message that names the offending key (``train.seeds``) and what to do,
before any job is scheduled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import yaml

from multirun.contracts import ContractError
from multirun.schema import SCHEMA_PATH, fill, load_schema, resolve


class ConfigError(ContractError):
    """The configuration is invalid; the message names the key."""


def _key(path) -> str:
    """``sweeps.NAME.grid.recipe.lr[0]``: names joined by dots, list positions in brackets."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f"{'.' if out else ''}{part}"
    return out or "<top level>"


def _schema_error(err: jsonschema.ValidationError) -> ConfigError:
    key = _key(err.absolute_path)
    if err.validator == "additionalProperties":
        allowed = sorted(err.schema.get("properties", {}))
        unknown = sorted(set(err.instance) - set(allowed))
        where = f"{key}." if err.absolute_path else ""
        return ConfigError(
            f"config key {', '.join(where + u for u in unknown)}: unknown key; "
            f"valid keys here are {allowed} (see docs/config.md)"
        )
    return ConfigError(f"config key {key}: {err.message} (see docs/config.md)")


def _parse(text: str, types: list[str]) -> Any:
    """A command-line string as the schema's ``types`` want it ("96" -> 96, "5e-4" -> 0.0005)."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str) and "number" in types:
        try:
            return float(value)
        except ValueError:
            return text
    return value


def coerce(instance: Any, node: dict, root: dict) -> Any:
    """``instance`` with strings parsed where schema ``node`` wants another type (in place).

    Snakemake hands nested ``--config`` values over as strings
    (``--config train='{seeds: 96}'`` gives ``{"seeds": "96"}``); this makes them
    what a YAML config file would have given.
    """
    node = resolve(node, root)
    types = node.get("type", [])
    types = [types] if isinstance(types, str) else types
    if isinstance(instance, str) and types and "string" not in types:
        instance = _parse(instance, types)
    if isinstance(instance, dict):
        props, extra = node.get("properties", {}), node.get("additionalProperties")
        for key in instance:
            if key in props:
                instance[key] = coerce(instance[key], props[key], root)
            elif isinstance(extra, dict):  # an entry of a table of named things
                instance[key] = coerce(instance[key], extra, root)
    elif isinstance(instance, list) and isinstance(node.get("items"), dict):
        instance[:] = [coerce(v, node["items"], root) for v in instance]
    return instance


def check(config: dict, schema_path: str | Path = SCHEMA_PATH) -> dict:
    """Complete ``config`` in place and validate it; return it.

    Strings from the command line become the schema's types, absent keys take the
    schema's defaults, then the schema and the cross-key rules are checked. Raises
    :class:`ConfigError` naming the first offending key.
    """
    schema = load_schema(schema_path)
    fill(coerce(config, schema, schema), schema, schema)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(e.absolute_path), str(e.path)))
    if errors:
        raise _schema_error(errors[0])

    seeds = config["train"]["seeds"]
    too_many = [n for n in config["kernel"]["model_counts"] if n > seeds]
    if too_many and "published" not in config:
        raise ConfigError(
            f"config key kernel.model_counts: sizes {too_many} exceed train.seeds={seeds}; "
            "lower them or train more seeds"
        )
    k_max = config["kernel"]["k_max"]
    if max(config["knn"]["k"]) > k_max:
        raise ConfigError(
            f"config key knn.k: {max(config['knn']['k'])} exceeds kernel.k_max={k_max}; "
            "raise kernel.k_max or drop that k"
        )
    hess = config["hessian"]
    if hess["top_k"] > hess["steps"]:
        raise ConfigError(
            f"config key hessian.top_k: {hess['top_k']} exceeds hessian.steps={hess['steps']}; "
            "Lanczos finds at most `steps` eigenvalues"
        )
    if hess["models"] > min(seeds, config["train"]["shard_size"]):
        raise ConfigError(
            f"config key hessian.models: {hess['models']} exceeds the models of shard 0 "
            f"(min of train.seeds and train.shard_size)"
        )
    widths = config["width_sweep"]
    missing = sorted(set(widths["default_widths"]) - set(widths["widths"]))
    if missing:
        raise ConfigError(
            f"config key width_sweep.default_widths: {missing} are not in width_sweep.widths"
        )
    if config["figures"]["neighbour_k"] not in config["knn"]["k"]:
        raise ConfigError(
            f"config key figures.neighbour_k: {config['figures']['neighbour_k']} is not "
            f"one of knn.k={config['knn']['k']}; the figures plot scored k only"
        )
    lo, hi = config["figures"]["pair_ranks"]
    if lo > hi:
        raise ConfigError(f"config key figures.pair_ranks: [{lo}, {hi}] must be increasing")
    from multirun.sweeps import expand_all  # here: multirun.sweeps imports this module

    expand_all(config)  # every point of every sweep is a valid model and recipe
    return config


def shards(seeds: int, shard_size: int) -> dict[str, list[int]]:
    """Seeds ``0..seeds-1`` cut into shards named ``'000', '001', ...``.

    A shard's seed list depends only on its index and ``shard_size``, so raising
    ``seeds`` by a whole shard adds a shard and leaves the others untouched.
    """
    return {
        f"{i:03d}": list(range(start, min(start + shard_size, seeds)))
        for i, start in enumerate(range(0, seeds, shard_size))
    }
