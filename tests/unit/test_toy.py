import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from asd.data.index import read_index
from asd.data.names import parse_name
from asd.data.toy import ANOMALIES, DEV_MACHINES, EVAL_MACHINES, MACHINES, ToySpec, clip_plan, parse_spec, synthesize
from tests.conftest import TINY


def test_layout_names_and_counts(toy_dir):
    df = read_index(toy_dir, "toy")
    assert set(df["machine"]) == set(DEV_MACHINES) | set(EVAL_MACHINES)
    assert len(MACHINES) >= 4
    for machine, g in df.groupby("machine"):
        train = g[g["phase"] == "train"]
        assert (train["label"] == "normal").all()
        assert (train["domain"] == "source").sum() == TINY.n_source_train
        assert (train["domain"] == "target").sum() == TINY.n_target_train
        test = g[g["phase"] == "test"]
        counts = test.groupby(["domain", "label"]).size()
        assert (counts == TINY.n_test).all() and len(counts) == 4
    dev_test = df[(df["split"] == "dev") & (df["phase"] == "test")]
    for _, r in dev_test.iterrows():  # dev names carry the truth, exactly the DCASE 2023 scheme
        n = parse_name(r["file"])
        assert (n.domain, n.label, n.section) == (r["domain"], r["label"], 0)
        assert r["file"].startswith(f"section_00_{r['domain']}_test_{r['label']}_")
    eval_test = df[(df["split"] == "eval") & (df["phase"] == "test")]
    assert eval_test["file"].str.fullmatch(r"section_00_\d{4}\.wav").all()  # anonymised
    assert set(eval_test["label"]) == {"normal", "anomaly"}  # ground truth attached from the list


def test_wav_format(toy_dir):
    df = read_index(toy_dir, "toy")
    info = sf.info(df["abspath"].iloc[0])
    assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
    assert info.frames == int(TINY.seconds * 16000)


def test_deterministic_by_seed():
    a = synthesize("fan", {"spd": "1", "blade": "4"}, "source", None, np.random.default_rng(3), 0.5)
    b = synthesize("fan", {"spd": "1", "blade": "4"}, "source", None, np.random.default_rng(3), 0.5)
    np.testing.assert_array_equal(a, b)
    p1 = clip_plan(ToySpec(seed=1, n_source_train=5, n_target_train=2, n_test=2), "pump", "eval")
    p2 = clip_plan(ToySpec(seed=1, n_source_train=5, n_target_train=2, n_test=2), "pump", "eval")
    assert p1 == p2


def test_target_attributes_are_unseen_in_source():
    plan = clip_plan(ToySpec(n_source_train=30, n_target_train=10, n_test=10), "gearbox", "dev")
    src = {tuple(c["attrs"]) for c in plan if c["domain"] == "source"}
    tgt = {tuple(c["attrs"]) for c in plan if c["domain"] == "target"}
    assert not src & tgt


@pytest.mark.parametrize("kind", ANOMALIES)
def test_each_anomaly_changes_the_sound(kind):
    attrs = {"volt": "1.5", "wt": "100"}
    normal = synthesize("gearbox", attrs, "source", None, np.random.default_rng(0), 1.0)
    anom = synthesize("gearbox", attrs, "source", kind, np.random.default_rng(0), 1.0)
    assert not np.allclose(normal, anom)
    assert np.abs(anom).max() <= 1.0


def test_parse_spec():
    s = parse_spec("seconds=2,n_test=7")
    assert (s.seconds, s.n_test, s.n_source_train) == (2.0, 7, ToySpec().n_source_train)
    with pytest.raises(ValueError, match="n_tests"):
        parse_spec("n_tests=3")


def test_spectral_knn_is_far_from_perfect_and_target_is_harder(toy_dir):
    """On the tiny set raw_spec must neither fail nor solve the task."""
    from asd.config.recipes import load_recipe
    from asd.detector import Detector
    from asd.evaluation.scoring import evaluate

    det = Detector(load_recipe("raw_spec", ["data.clip_seconds=1.0"]))
    res = evaluate(det, det.embed(read_index(toy_dir, "toy")))
    assert 0.5 < res.metrics["official"] < 0.95


def test_variants_extend_the_machine_list(tmp_path):
    from asd.data.prepare import prepare_toy
    from asd.data.toy import machine_names

    spec = ToySpec(seconds=0.5, n_source_train=2, n_target_train=1, n_test=1, n_dev_machines=5, n_eval_machines=3)
    dev, evl = machine_names(spec)
    assert dev == ["fan", "gearbox", "bearing", "valve", "fan2"] and evl == ["pump", "slider", "pump2"]
    df = read_index(prepare_toy(tmp_path, spec=spec, progress=False).parent.parent, "toy")
    assert sorted(df["machine"].unique()) == sorted(dev + evl)
    fan2 = synthesize("fan2", {"spd": "1", "blade": "4"}, "source", None, np.random.default_rng(0), 0.5)
    fan = synthesize("fan", {"spd": "1", "blade": "4"}, "source", None, np.random.default_rng(0), 0.5)
    assert not np.allclose(fan, fan2)  # a variant sounds different
