import pytest

from asd.config import Config, ConfigError, from_yaml, to_yaml
from asd.config.overrides import apply_overrides
from asd.config.recipes import load_recipe
from asd.config.recipes import RECIPES

REQUIRED_KEYS = ["data.clip_seconds", "train.epochs", "train.batch_size", "train.lr", "model.name", "loss.name",
                 "loss.margin", "loss.scale", "loss.subclusters", "augment.mixup_prob", "backend.name", "backend.k"]


def test_documented_keys_exist():
    flat = Config().flat()
    for key in REQUIRED_KEYS:
        assert key in flat


def test_overrides_coerce_types():
    cfg = apply_overrides(Config(), ["train.epochs=5", "train.lr=0.01", "train.amp=false", "data.machines=fan,pump",
                                     "model.stft_sizes=256,1024"])
    assert cfg.train.epochs == 5 and cfg.train.lr == 0.01 and cfg.train.amp is False
    assert cfg.data.machines == ["fan", "pump"] and cfg.model.stft_sizes == [256, 1024]


def test_bad_overrides_say_what_is_wrong():
    with pytest.raises(ConfigError, match="unknown config key 'train.epoch'"):
        apply_overrides(Config(), ["train.epoch=5"])
    with pytest.raises(ConfigError, match="expected a int"):
        apply_overrides(Config(), ["train.epochs=five"])
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides(Config(), ["train.epochs"])
    with pytest.raises(ConfigError, match="unknown recipe 'nope'; available"):
        load_recipe("nope")


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipes_round_trip_through_yaml(name, pretrained_bases):
    from tests.conftest import base_sets

    cfg = load_recipe(name, ["train.seed=3", *base_sets(name, pretrained_bases)])
    assert cfg.recipe == name and cfg.train.seed == 3
    back = from_yaml(to_yaml(cfg))
    assert back == cfg
    assert all(isinstance(v, str) for v in cfg.flat().values())
