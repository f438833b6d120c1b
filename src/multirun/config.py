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
from multirun.model_spec import normalize_spec
from multirun.recipe import normalize_recipe
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
    pattern = err.schema.get("pattern") if "propertyNames" in err.schema_path else None
    if pattern:  # a name of a table of named things (sweeps, architectures)
        return ConfigError(
            f"config key {key}.{err.instance}: not a valid name; use a lower-case identifier "
            f"(a-z first, then a-z, 0-9 or _: {pattern}), since it names a folder")
    if "propertyNames" in err.schema_path:  # a model key only user models take
        return ConfigError(
            f"config key {key}.{err.instance}: unknown key; a built-in model takes name, width, "
            "depth and batchnorm (extra keys are for your own models, docs/models.md)")
    if err.validator == "anyOf" and list(err.absolute_path)[-1:] == ["name"]:
        builtins = next(s["enum"] for s in err.schema["anyOf"] if "enum" in s)
        return ConfigError(
            f"config key {key}: unknown model {err.instance!r}; choose one of "
            f"{', '.join(builtins)}, or your own as FILE.py:Name or package.module:Name "
            "(docs/models.md)")
    if err.validator in ("minItems", "maxItems") and \
            err.schema.get("minItems") == err.schema.get("maxItems"):  # betas, pair_ranks
        return ConfigError(f"config key {key}: {err.instance!r} must hold exactly "
                           f"{err.schema['minItems']} values (see docs/config.md)")
    if err.validator == "anyOf":  # e.g. kernel.chunk_models: an integer >= 1 or 'auto'
        choices = " or ".join(_describe(option) for option in err.schema["anyOf"])
        return ConfigError(f"config key {key}: {err.instance!r} is not {choices} "
                           "(see docs/config.md)")
    return ConfigError(f"config key {key}: {err.message} (see docs/config.md)")


def _describe(option: dict) -> str:
    """One alternative of an ``anyOf`` in words: ``'auto'``, ``an integer >= 1``, ..."""
    if "const" in option:
        return repr(option["const"])
    if "enum" in option:
        return "one of " + ", ".join(map(repr, option["enum"]))
    kind = {"integer": "an integer", "number": "a number", "string": "a string"}.get(
        option.get("type"), f"of type {option.get('type')}")
    return kind + (f" >= {option['minimum']}" if "minimum" in option else "")


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


def _types(schema: dict) -> list[str]:
    """A schema node's ``type`` as a list (``[]`` where it gives none)."""
    given = schema.get("type", [])
    return [given] if isinstance(given, str) else list(given)


def coerce(instance: Any, node: dict, root: dict) -> Any:
    """``instance`` with strings parsed where schema ``node`` wants another type (in place).

    Snakemake hands nested ``--config`` values over as strings
    (``--config train='{seeds: 96}'`` gives ``{"seeds": "96"}``); this makes them
    what a YAML config file would have given.
    """
    node = resolve(node, root)
    # an anyOf of an integer and a word ('auto'): the types of its alternatives
    types = _types(node) or [t for option in node.get("anyOf", []) for t in _types(option)]
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
    # errors about which keys a mapping may have come last: with a misspelt user model
    # name, the name is the mistake, not the extra keys only user models take
    errors = sorted(validator.iter_errors(config), key=lambda e: (
        "propertyNames" in e.schema_path, len(e.absolute_path), str(e.path)))
    if errors:
        raise _schema_error(errors[0])

    dataset = config["dataset"]
    if dataset["name"] == "npz" and not dataset["path"]:
        raise ConfigError("config key dataset.path: dataset.name npz needs your file, "
                          "dataset.path: FILE.npz (docs/datasets.md)")
    if dataset["path"] and dataset["name"] != "npz":
        raise ConfigError(f"config key dataset.path: {dataset['path']} is given, but "
                          f"dataset.name {dataset['name']} reads no file; set dataset.name: npz "
                          "for your own file (docs/datasets.md), or drop the path")
    if "published" in config and "local_logits" in config:
        raise ConfigError("config key local_logits: give either published (the hub's logits) "
                          "or local_logits (your own), not both")
    labels = config.get("local_logits", {}).get("labels", "dataset")
    if labels != "dataset" and not labels.endswith(".npz"):
        raise ConfigError(f"config key local_logits.labels: {labels!r} is neither 'dataset' "
                          "(the dataset section's dataset) nor a FILE.npz with y_train/y_test")
    seeds = config["train"]["seeds"]
    too_many = [n for n in config["kernel"]["model_counts"] if n > seeds]
    if too_many and "published" not in config and "local_logits" not in config:
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
    if widths["default_seeds"] > widths["seeds"]:
        raise ConfigError(f"config key width_sweep.default_seeds: {widths['default_seeds']} "
                          f"exceeds width_sweep.seeds={widths['seeds']}; lower it")
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
    if "epochs" in config["studies"]["memorization"]["recipe"]:
        raise ConfigError("config key studies.memorization.recipe.epochs: the study trains for "
                          "each of studies.memorization.epochs; set those instead")
    lo, hi = config["figures"]["pair_ranks"]
    if lo > hi:
        raise ConfigError(f"config key figures.pair_ranks: [{lo}, {hi}] must be increasing")
    check_limits(config)
    check_sizes(config)
    from multirun.sweeps import expand_all  # here: multirun.sweeps imports this module

    try:  # the sweeps' bases: their own errors first (width_sweep's model has no width)
        normalize_spec(config["train"]["model"], "train.model")
        for base in ("train", "width_sweep"):
            normalize_recipe(config[base]["recipe"], f"{base}.recipe")
    except ContractError as err:
        raise ConfigError(f"config key {err}") from err
    expand_all(config)  # every point of every sweep is a valid model and recipe
    return config


#: train examples of the datasets whose size the config does not set
TRAIN_EXAMPLES = {"cifar10": 50_000}
MNIST1D_TRAIN_SPLIT = 0.8  # mnist1d.data.get_dataset_args().train_split


def train_examples(config: dict) -> int:
    """Number of train examples of the configured dataset, known before it is made.

    MNIST-1D keeps ``int(0.8 * dataset.num_samples)`` for training (the ``mnist1d``
    generator's split); CIFAR-10 (and its published logits) has 50,000.
    """
    if "published" in config or config["dataset"]["name"] != "mnist1d":
        return TRAIN_EXAMPLES["cifar10"]
    return int(config["dataset"]["num_samples"] * MNIST1D_TRAIN_SPLIT)


def _sections(config: dict, key: str) -> list[tuple[str, dict]]:
    """(dotted name, section) of every section of the config that has ``key``."""
    studies = config["studies"]
    found = [("train", config["train"]), ("width_sweep", config["width_sweep"]),
             ("width_sweep.grid", config["width_sweep"]["grid"])]
    found += [(f"studies.{name}", studies[name]) for name in studies]
    found += [(f"sweeps.{name}", sweep) for name, sweep in config.get("sweeps", {}).items()]
    return [(name, sec) for name, sec in found if key in sec]


def check_limits(config: dict) -> None:
    """Sizes below the stated upper bounds of ``limits`` (raise a limit to go beyond).

    Counts of seeds, ``dataset.num_samples`` and every epoch count; a typo such as
    ``seeds: 1000000000`` would otherwise end in a MemoryError while the DAG is built, or
    a job that runs for days.
    """
    limits = config["limits"]

    def bound(key: str, value: int, limit: str) -> None:
        if value > limits[limit]:
            raise ConfigError(
                f"config key {key}: {value} exceeds limits.{limit}={limits[limit]}; lower it, "
                f"or raise limits.{limit} if you mean it (see docs/config.md)")

    for name, sec in _sections(config, "seeds"):
        bound(f"{name}.seeds", sec["seeds"], "seeds")
    bound("dataset.num_samples", config["dataset"]["num_samples"], "num_samples")
    for name, sec in _sections(config, "recipe"):
        if "epochs" in sec["recipe"]:
            bound(f"{name}.recipe.epochs", sec["recipe"]["epochs"], "epochs")
    bound("width_sweep.grid.epochs", config["width_sweep"]["grid"]["epochs"], "epochs")
    for key, value in _grid_values(config, "recipe.epochs"):
        bound(key, value, "epochs")
    bound("studies.memorization.epochs", max(config["studies"]["memorization"]["epochs"]),
          "epochs")


def check_sizes(config: dict) -> None:
    """Rules that depend on the config and the dataset size only, checked before any job.

    ``kernel.k_max`` at most the train examples (and ``studies.label_errors.k`` below
    them: a train example is not its own neighbour); ``patience`` only where a
    validation split exists (``studies.label_noise``).
    """
    n = train_examples(config)
    if config["kernel"]["k_max"] > n:
        raise ConfigError(
            f"config key kernel.k_max: {config['kernel']['k_max']} exceeds the {n} train "
            "examples of the dataset; lower it (or use more dataset.num_samples)")
    k = config["studies"]["label_errors"]["k"]
    if k >= n:
        raise ConfigError(f"config key studies.label_errors.k: {k} must be below the {n} train "
                          "examples (an example is not its own neighbour); lower it")
    for name, sec in _sections(config, "recipe"):
        if sec["recipe"].get("patience", 0) and name != "studies.label_noise":
            raise ConfigError(
                f"config key {name}.recipe.patience: {sec['recipe']['patience']}, but early "
                "stopping needs a validation split and only studies.label_noise has one; "
                "set it to 0")
    for key, value in _grid_values(config, "recipe.patience"):
        if value:
            raise ConfigError(
                f"config key {key}: {value}, but early stopping needs a validation split and "
                "a sweep has none; drop the nonzero values")


def _grid_values(config: dict, dotted: str) -> list[tuple[str, Any]]:
    """(``sweeps.NAME.grid.KEY[i]``, value) of every value a sweep's grid gives ``dotted``."""
    return [(f"sweeps.{name}.grid.{dotted}[{i}]", value)
            for name, sweep in config.get("sweeps", {}).items()
            for i, value in enumerate(sweep["grid"].get(dotted, []))]


def shards(seeds: int, shard_size: int) -> dict[str, list[int]]:
    """Seeds ``0..seeds-1`` cut into shards named ``'000', '001', ...``.

    A shard's seed list depends only on its index and ``shard_size``, so raising
    ``seeds`` by a whole shard adds a shard and leaves the others untouched.
    """
    return {
        f"{i:03d}": list(range(start, min(start + shard_size, seeds)))
        for i, start in enumerate(range(0, seeds, shard_size))
    }
