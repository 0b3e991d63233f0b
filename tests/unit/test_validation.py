"""Issue 12, case 6: impossible settings are refused when the config is built, naming the key, the value
and what is allowed: on the command line, in a run's config.yaml (resume, evaluate) and in a search space."""

from __future__ import annotations

import dataclasses
import typing

import pytest
import yaml

from asd.config import Config, ConfigError, check_value, from_yaml, rule, to_yaml
from asd.config.recipes import load_recipe


@pytest.mark.parametrize("recipe, setting, message", [
    ("ae", "train.batch_size=-5", r"train\.batch_size=-5 is out of range: allowed \[2, 1000000\] \(BatchNorm"),
    ("dis_spec_adacos_fixed", "train.batch_size=1", r"train\.batch_size=1 is out of range: allowed \[2, "),
    ("ae", "train.val_fraction=1.5", r"train\.val_fraction=1\.5 is out of range: allowed \[0, 1\)"),
    ("ae", "train.epochs=0", r"train\.epochs=0 trains nothing: recipe 'ae' .* needs train\.epochs >= 1"),
    ("raw_spec", "backend.k=-1", r"backend\.k=-1 is out of range: allowed \[1, 100000\]"),
    ("raw_spec", "features.n_mels=0", r"features\.n_mels=0 is out of range: allowed \[1, 1024\]"),
    ("raw_spec", "data.clip_seconds=inf", r"data\.clip_seconds=inf is out of range: allowed \[0, 600\]"),
    ("raw_spec", "data.clip_seconds=nan", r"data\.clip_seconds=nan is out of range"),
    ("ae", "data.clip_seconds=0.05", r"gives 800 samples per clip, fewer than the 2048"),
    ("ae", "train.epochs=inf", r"train\.epochs=inf: expected a int"),
    ("ae", "train.device=gpu", r"train\.device='gpu' is not allowed; use auto \| cpu \| cuda \| cuda:N"),
    ("ae", "features.kind=spec", r"features\.kind='spec' is not allowed; choose one of logmel, mel"),
    ("ae", "features.f_max=9000", r"features\.f_max=9000 is above half the sample rate"),
    ("ae", "backend.name=knnn", r"unknown backend 'knnn' \(did you mean 'knn'\?\); available: fusion, knn, "),
    ("ae", "train.seed=-1", r"train\.seed=-1 is out of range: allowed \[0, 4294967295\]"),
])
def test_impossible_settings_are_refused(recipe, setting, message):
    with pytest.raises(Exception, match=message) as e:
        load_recipe(recipe, [setting])
    assert isinstance(e.value, ConfigError) or type(e.value).__name__ == "UnknownComponentError"


def test_every_field_has_a_rule():
    """A new numeric or text field cannot be added without its range, choices or registry."""
    def walk(obj, prefix=""):
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                yield from walk(value, f"{prefix}{f.name}.")
            else:
                yield f"{prefix}{f.name}", value

    for key, value in walk(Config()):
        r = rule(key)
        kind = type(value[0]) if isinstance(value, list) and value else type(value)
        if kind is bool or key in ("recipe", "data.machines"):  # booleans; names checked by the recipe / index
            continue
        if kind in (int, float):
            assert "range" in r, f"{key} has no range"
        else:
            assert {"choices", "registry"} & set(r), f"{key} has no choices, pattern or registry"
        check_value(key, value)  # the default itself is allowed


def test_a_runs_config_yaml_is_validated(tmp_path):
    doc = yaml.safe_load(to_yaml(load_recipe("ae")))
    doc["backend"]["k"] = 0
    with pytest.raises(ConfigError, match=r"^config\.yaml of run R: backend\.k=0 is out of range"):
        from_yaml(yaml.safe_dump(doc), "config.yaml of run R: ")
    assert from_yaml(to_yaml(load_recipe("ae"))) == load_recipe("ae")


def test_search_space_bounds_are_checked(tmp_path):
    from asd.search.space import load_space

    p = tmp_path / "s.yaml"
    p.write_text("recipe: raw_spec\nparams:\n  backend.k: {int: [0, 8]}\n")
    with pytest.raises(ConfigError, match=r"s\.yaml: parameter backend\.k int \[0, 8\] can take backend\.k=0 is out of range"):
        load_space(p)
    p.write_text("recipe: raw_spec\nparams:\n  train.val_fraction: {choice: [0.1, 1.0]}\n")
    with pytest.raises(ConfigError, match=r"train\.val_fraction=1\.0 is out of range: allowed \[0, 1\)"):
        load_space(p)


def test_unknown_key_suggests_the_closest():
    with pytest.raises(ConfigError, match=r"unknown config key 'backend\.kk' \(did you mean backend\.k\?\)"):
        load_recipe("raw_spec", ["backend.kk=2"])


def test_rules_are_readable_metadata():
    assert rule("train.batch_size") == {"range": "[2, 1000000]", "why": "BatchNorm needs two clips per batch"}
    assert rule("backend.threshold")["choices"] == ("gamma", "quantile")
    assert rule("model.name") == {"registry": "model"}
    assert typing.get_type_hints(Config)["train"].__name__ == "TrainConfig"
