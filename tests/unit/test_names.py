"""File-name parsing for every DCASE Task 2 naming scheme (docs/data.md, file names)."""

import pytest

from asd.data.names import NameError_, parse_clip, parse_name, parse_truth, split_attributes


@pytest.mark.parametrize("name,year,folder,expect", [
    # 2020: machine ID as section, one domain, 8-digit index
    ("normal_id_02_00000123.wav", 2020, "train", (2, "source", "train", "normal", 123, [])),
    ("anomaly_id_04_00000007.wav", 2020, "test", (4, "source", "test", "anomaly", 7, [])),
    ("id_05_00000042.wav", 2020, "test", (5, "source", "test", None, 42, [])),
    # 2021: attributes on train names only; test in source_test/ and target_test/
    ("section_01_target_train_normal_0002_strength_2.wav", 2021, "train",
     (1, "target", "train", "normal", 2, [("strength", "2")])),
    ("section_02_source_test_anomaly_0099.wav", 2021, "source_test", (2, "source", "test", "anomaly", 99, [])),
    ("section_04_target_test_0013.wav", 2021, "target_test", (4, "target", "test", None, 13, [])),
    # 2022+: attributes everywhere, eval test anonymised
    ("section_00_source_train_normal_0000_car_A1_spd_28V_mic_2.wav", 2023, "train",
     (0, "source", "train", "normal", 0, [("car", "A1"), ("spd", "28V"), ("mic", "2")])),
    ("section_03_0017.wav", 2022, "test", (3, None, "test", None, 17, [])),
    # 2024: 1-based indices and hidden attributes
    ("section_00_target_test_anomaly_0050_noAttribute.wav", 2024, "test", (0, "target", "test", "anomaly", 50, [])),
    # 2025: empty trailing attribute and supplemental/
    ("section_00_source_train_normal_0000_.wav", 2025, "train", (0, "source", "train", "normal", 0, [])),
    ("section_00_machine_0001_.wav", 2025, "supplemental",
     (0, "source", "supplemental", "normal", 1, [("kind", "machine")])),
])
def test_parse_clip(name, year, folder, expect):
    c = parse_clip(name, year, folder)
    assert (c.section, c.domain, c.phase, c.label, c.index, c.attributes) == expect


def test_hidden_flag():
    assert parse_clip("section_00_source_train_normal_0001_noAttribute.wav", 2024, "train").hidden
    assert not parse_clip("section_00_source_train_normal_0001_fl_0.wav", 2024, "train").hidden


@pytest.mark.parametrize("name,year,folder", [
    ("section_00_source_train_normal_0000_a_1.wav", 2023, "test"),  # phase disagrees with folder
    ("normal_00000000.wav", 2020, "train"),
    ("section_00_0001.wav", 2023, "train"),  # anonymised outside test
    ("readme.wav", 2023, "test"),
    ("section_00_0001.wav", 2023, "bonus"),  # unknown folder
])
def test_unknown_names_raise(name, year, folder):
    with pytest.raises(NameError_):
        parse_clip(name, year, folder)


def test_parse_truth_schemes():
    assert parse_truth("anomaly_id_01_00000064.wav", 2020).label == "anomaly"
    t = parse_truth("section_03_source_test_anomaly_0000.wav", 2021)
    assert (t.section, t.domain, t.label, t.attributes) == (3, "source", "anomaly", [])
    # the 2024 list names RoboticArm clips without the 'test' token
    t = parse_truth("section_00_source_normal_0035_weight15_BckgF.wav", 2024)
    assert (t.phase, t.domain, t.label, t.attributes) == ("test", "source", "normal", [("weight15", "BckgF")])
    with pytest.raises(NameError_):
        parse_truth("section_00_0001.wav", 2023)


def test_split_attributes_odd_tokens_and_compat():
    assert split_attributes("pro_A_wt_200_damage1") == [("pro", "A"), ("wt", "200"), ("attr", "damage1")]
    assert split_attributes("noAttribute") == []
    assert parse_name("section_00_1234.wav").label is None  # the 2022+ parser used by the toy set
