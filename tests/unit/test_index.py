import pandas as pd
import pytest

from asd.data.index import COLUMNS, ClipIndexError, format_attributes, parse_attributes, read_index, write_index


def _row(**kw):
    base = dict(path="dev_data/raw/fan/train/a.wav", dataset="toy", year=2023, split="dev", machine="fan", section=0,
                domain="source", phase="train", label="normal", attributes="spd=1", file="a.wav")
    base.update(kw)
    return base


def test_round_trip(tmp_path):
    df = pd.DataFrame([_row(), _row(path="dev_data/raw/fan/test/b.wav", phase="test", label="anomaly", file="b.wav")])
    path = write_index(df, tmp_path, "toy")
    assert path == tmp_path / "toy" / "index.csv"
    back = read_index(tmp_path, "toy")
    assert list(back.columns[: len(COLUMNS)]) == COLUMNS
    assert back["abspath"].iloc[0].startswith(str(tmp_path / "toy"))
    assert set(back["label"]) == {"normal", "anomaly"}


def test_missing_data_dir_names_the_fix(tmp_path):
    with pytest.raises(ClipIndexError, match=r"does not exist.*asd prepare --dataset toy"):
        read_index(tmp_path / "nowhere", "toy")


def test_bad_values_are_named(tmp_path):
    df = pd.DataFrame([_row(label="broken")])
    with pytest.raises(ClipIndexError, match=r"label.*'a.wav'"):
        write_index(df, tmp_path, "toy")


def test_unknown_machine(tmp_path):
    write_index(pd.DataFrame([_row()]), tmp_path, "toy")
    with pytest.raises(ClipIndexError, match="pump.*available: fan"):
        read_index(tmp_path, "toy", machines=["pump"])


def test_attributes():
    assert parse_attributes("spd=28V;mic=2") == {"spd": "28V", "mic": "2"}
    assert format_attributes([("a", "1"), ("b", "x")]) == "a=1;b=x"
    assert parse_attributes("") == {}
