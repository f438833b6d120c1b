"""Config validation: one message naming the key, for every kind of mistake."""

from __future__ import annotations

import pytest
import yaml
from conftest import ROOT

from multirun.config import ConfigError, check, shards

SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"


@pytest.fixture
def cfg():
    return yaml.safe_load((ROOT / "config.yaml").read_text())


def test_default_config_is_valid(cfg):
    check(cfg, SCHEMA)


def test_every_preset_is_valid():
    presets = sorted((ROOT / "configs").glob("*.yaml"))
    assert presets, "configs/ holds the presets"
    for path in presets:
        check(yaml.safe_load(path.read_text()), SCHEMA)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c["train"].update(seedz=3), "train.seedz: unknown key"),
        (lambda c: c.update(extra=1), "config key extra: unknown key"),
        (lambda c: c["train"].update(seeds="many"), "train.seeds: 'many' is not of type 'integer'"),
        (lambda c: c["train"].update(seeds=1), "config key train.seeds: 1 is less than the minimum of 2"),
        (lambda c: c["train"]["model"].update(name="vgg"), "config key train.model.name"),
        (lambda c: c["train"]["model"].update(width=0), "config key train.model.width"),
        (lambda c: c["train"]["recipe"].update(optimizer="adam"), "train.recipe.optimizer"),
        (lambda c: c["kernel"].update(model_counts=[2, 128]), "kernel.model_counts: sizes [128] exceed"),
        (lambda c: c["knn"].update(k=[1, 50]), "config key knn.k: 50 exceeds kernel.k_max"),
        (lambda c: c["hessian"].update(top_k=200), "config key hessian.top_k: 200 exceeds"),
        (lambda c: c["sweep"].update(default_widths=[7]), "sweep.default_widths: [7] are not in"),
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
