"""Config validation: one message naming the key, for every kind of mistake."""

from __future__ import annotations

import re

import pytest
import yaml
from conftest import ROOT, TINY_CONFIG

from multirun.config import ConfigError, check, shards
from multirun.model_spec import normalize_spec
from multirun.recipe import normalize_recipe
from multirun.schema import default, load_schema

SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"


@pytest.fixture
def cfg():
    return yaml.safe_load((ROOT / "config.yaml").read_text())


def test_default_config_is_valid(cfg):
    check(cfg, SCHEMA)


def test_every_preset_is_valid():
    presets = sorted((ROOT / "configs").glob("*.yaml"))
    assert TINY_CONFIG in presets, "configs/ holds the presets and the tests' tiny config"
    for path in presets:
        check(yaml.safe_load(path.read_text()), SCHEMA)


def test_config_yaml_spells_out_exactly_the_schema_defaults(cfg):
    assert check({}, SCHEMA) == cfg


@pytest.mark.parametrize("preset", sorted((ROOT / "configs").glob("published*.yaml")),
                         ids=lambda p: p.name)
def test_presets_need_no_dummy_sections(preset):
    published = yaml.safe_load(preset.read_text())
    assert not {"train", "hessian", "width_sweep", "figures", "logits"} & set(published)
    full = check(published, SCHEMA)
    assert full["train"] == check({}, SCHEMA)["train"]


def test_absent_keys_take_the_defaults_of_their_place():
    cfg = check({"train": {"recipe": {"epochs": 3}}, "width_sweep": {"recipe": {"lr": 0.1}}}, SCHEMA)
    assert cfg["train"]["recipe"] == {**default("train", "recipe"), "epochs": 3}
    # the sweep's recipe has its own defaults (label noise, constant lr, no weight decay)
    assert cfg["width_sweep"]["recipe"] == {**default("width_sweep", "recipe"), "lr": 0.1}
    assert cfg["width_sweep"]["recipe"]["label_noise"] == 0.2 and cfg["train"]["recipe"]["label_noise"] == 0.0
    assert cfg["hessian"]["slq"]["sigma"] == 0.01 and cfg["kernel"]["device"] == "auto"
    assert cfg["figures"]["pair_ranks"] == [601, 648]


def test_library_defaults_are_the_schemas():
    """A recipe or model spec that leaves keys out means what the config's defaults say."""
    assert normalize_recipe({"epochs": 30, "batch_size": 128, "lr": 0.05}) == normalize_recipe(
        default("train", "recipe"))
    assert normalize_spec({"name": "mlp", "width": 100}) == normalize_spec(default("train", "model"))


@pytest.mark.parametrize(
    "given, key, value",
    [  # what Snakemake hands over for --config train='{seeds: 96}' and the like
        ({"train": {"seeds": "96"}}, ("train", "seeds"), 96),
        ({"train": {"recipe": {"lr": "5e-4"}}}, ("train", "recipe", "lr"), 5e-4),
        ({"train": {"recipe": {"momentum": "0.5"}}}, ("train", "recipe", "momentum"), 0.5),
        ({"knn": {"k": ["1", "3"]}}, ("knn", "k"), [1, 3]),
        ({"kernel": {"chunk_models": "128"}}, ("kernel", "chunk_models"), 128),  # anyOf
        ({"kernel": {"chunk_models": "auto"}}, ("kernel", "chunk_models"), "auto"),
        ({"kernel": {"dense": "true"}}, ("kernel", "dense"), True),
        ({"hessian": {"z": "[0.5, 2]"}}, ("hessian", "z"), [0.5, 2]),
        ({"train": {"model": {"name": "cnn1d", "width": "25"}}}, ("train", "model", "width"), 25),
        ({"dataset": {"root": "123"}}, ("dataset", "root"), "123"),  # a string stays a string
    ],
)
def test_command_line_strings_take_the_schema_types(given, key, value):
    cfg = check(given, SCHEMA)
    for k in key:
        cfg = cfg[k]
    assert cfg == value and type(cfg) is type(value)


def test_rules_and_scripts_repeat_no_default():
    """Rules read config["sec"]["key"]: the schema filled every key, no `.get(key, default)`."""
    files = [*(ROOT / "workflow" / "rules").glob("*.smk"), *(ROOT / "scripts").glob("*.py"),
             ROOT / "src" / "multirun" / "snake.py", ROOT / "src" / "multirun" / "config.py"]
    pattern = re.compile(r"config\[[^\]]+\](\[[^\]]+\])*\.get\(")
    offenders = [f"{f.name}: {line.strip()}" for f in files for line in f.read_text().splitlines()
                 if pattern.search(line)]
    assert not offenders


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c["train"].update(seedz=3), "train.seedz: unknown key"),
        (lambda c: c.update(extra=1), "config key extra: unknown key"),
        (lambda c: c["train"].update(seeds="many"), "train.seeds: 'many' is not of type 'integer'"),
        (lambda c: c["train"].update(seeds=1), "config key train.seeds: 1 is less than the minimum of 2"),
        (lambda c: c["kernel"].update(chunk_models="big"),
         "config key kernel.chunk_models: 'big' is not an integer >= 1 or 'auto'"),
        (lambda c: c["train"]["model"].update(name="vgg"), "config key train.model.name"),
        (lambda c: c["train"]["model"].update(width=0), "config key train.model.width"),
        (lambda c: c["train"]["model"].update(name="net.py", bottleneck=4),
         "config key train.model.name: unknown model 'net.py'"),
        (lambda c: c["train"]["recipe"].update(optimizer="lamb"), "train.recipe.optimizer"),
        (lambda c: c["train"]["recipe"].update(optimizer="nesterov", momentum=0.0),
         "config key train.recipe.momentum: nesterov needs momentum > 0"),
        (lambda c: c["train"]["recipe"].update(betas=[0.9]),
         "config key train.recipe.betas: [0.9] must hold exactly 2 values"),
        (lambda c: c["figures"].update(pair_ranks=[1, 2, 3]),
         "config key figures.pair_ranks: [1, 2, 3] must hold exactly 2 values"),
        (lambda c: c["kernel"].update(model_counts=[2, 128]), "kernel.model_counts: sizes [128] exceed"),
        (lambda c: c["knn"].update(k=[1, 50]), "config key knn.k: 50 exceeds kernel.k_max"),
        (lambda c: c["knn"].update(k=[1, 3, 3]), "config key knn.k: [1, 3, 3] has non-unique"),
        (lambda c: c["kernel"].update(model_counts=[4, 4]),
         "config key kernel.model_counts: [4, 4] has non-unique"),
        (lambda c: c["width_sweep"].update(default_seeds=99),
         "config key width_sweep.default_seeds: 99 exceeds width_sweep.seeds"),
        (lambda c: c["hessian"].update(top_k=200), "config key hessian.top_k: 200 exceeds"),
        (lambda c: c["hessian"].update(z=[]), "config key hessian.z: [] should be non-empty"),
        (lambda c: c["studies"]["memorization"]["recipe"].update(epochs=5),
         "config key studies.memorization.recipe.epochs: the study trains for each of"),
        (lambda c: c["width_sweep"].update(widths=[4, 8, 4]),
         "config key width_sweep.widths: [4, 8, 4] has non-unique"),
        (lambda c: c["width_sweep"].update(default_widths=[7]), "width_sweep.default_widths: [7] are not in"),
        (lambda c: c["figures"].update(neighbour_k=7), "figures.neighbour_k: 7 is not one of knn.k"),
    ],
)
def test_bad_config_names_the_key(cfg, edit, message):
    edit(cfg)
    with pytest.raises(ConfigError) as err:
        check(cfg, SCHEMA)
    assert message in str(err.value)


def test_shards_are_stable_when_seeds_grow():
    small, large = shards(64, 32), shards(96, 32)
    assert list(small) == ["000", "001"] and small["001"] == list(range(32, 64))
    assert {k: large[k] for k in small} == small
    assert large["002"] == list(range(64, 96))
    assert shards(5, 2) == {"000": [0, 1], "001": [2, 3], "002": [4]}


def test_docs_state_the_schema_defaults():
    """Every row of docs/config.md names a real key; a default written as code is the schema's."""
    defaults = check({}, SCHEMA)
    rows = re.findall(r"^\| `([\w.]+)` \| ([^|]*) \|", (ROOT / "docs" / "config.md").read_text(), re.M)
    assert len(rows) > 50
    # sweeps.NAME.KEY: the defaults of a sweep that names only its grid
    a_sweep = check({"sweeps": {"name": {"grid": {"recipe.lr": [0.1]}}}}, SCHEMA)["sweeps"]
    a_sweep["NAME"] = a_sweep["name"]
    for key, cell in rows:
        node = defaults if not key.startswith(("published.", "local_logits.")) else \
            {"published": {"revision": None, "test_logits": "logits"}, "local_logits": {}}
        if key.startswith("sweeps.NAME."):
            node = {"sweeps": a_sweep}
        for part in key.split("."):
            if part not in node:  # required keys without a default
                section, name = key.split(".", 1)
                assert section in ("published", "local_logits"), f"{key}: no such key"
                assert name in load_schema(SCHEMA)["properties"][section]["required"], key
                break
            node = node[part]
        else:
            code = re.match(r"`([^`]*)`", cell.strip())
            if code:
                assert yaml.safe_load(code.group(1)) == node, f"docs/config.md, {key}: {cell}"
