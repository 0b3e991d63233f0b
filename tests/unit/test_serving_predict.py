"""Serving without MLflow: request rows -> evaluation's scores, one error row per bad clip, the bundle's checks.

A raw_spec detector (no training) fitted on the tiny toy set through the Detector, saved as a
bundle and loaded back, scores request rows through :func:`asd.serving.predict.score_frame`.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

MACHINES = ["fan", "valve"]


@pytest.fixture(scope="module")
def served(toy_dir, tmp_path_factory):
    """(loaded detector, its ServingInfo, evaluation's scores of every test clip, the index rows)."""
    from asd.config.recipes import load_recipe
    from asd.data.index import read_index
    from asd.detector import Detector
    from asd.serving.bundle import read_bundle, serving_info, write_bundle

    rows = read_index(toy_dir, "toy", MACHINES)
    det = Detector(load_recipe("raw_spec", [f"data.machines={','.join(MACHINES)}"]))
    expected = det.fit(rows).score(rows)
    folder = write_bundle(det, serving_info(det, rows), tmp_path_factory.mktemp("bundle") / "detector")
    back, info = read_bundle(folder)
    return back, info, expected, rows


def _b64(path) -> str:
    return base64.b64encode(open(path, "rb").read()).decode("ascii")


def test_rows_score_as_evaluation_and_each_bad_row_gets_its_error(served, tmp_path):
    from asd.serving.predict import score_frame

    det, info, expected, _ = served
    good = expected.groupby("machine").head(3)  # 3 test clips per machine
    slow = tmp_path / "8k.wav"
    sf.write(slow, np.zeros(8000, np.float32), 8000, subtype="PCM_16")
    stereo = tmp_path / "stereo.wav"
    sf.write(stereo, np.zeros((16000, 2), np.float32), 16000, subtype="PCM_16")
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF this is not audio")
    first = good["abspath"].iloc[0]
    req = [{"machine": m, "path": p} for m, p in zip(good["machine"], good["abspath"])]
    req[1] = {"machine": req[1]["machine"], "audio": _b64(req[1]["path"])}  # base64 text, as JSON sends it
    req[2] = {"machine": req[2]["machine"], "audio": open(req[2]["path"], "rb").read()}  # raw bytes from Python
    bad = [({"machine": "pump", "path": first}, "machine 'pump' is not one this detector was fitted for (fan, valve)"),
           ({"machine": "fan"}, "neither `path` nor `audio`"),
           ({"machine": "fan", "path": first, "audio": _b64(first)}, "both `path` and `audio`"),
           ({"machine": "fan", "audio": "not base64!"}, "`audio` is not valid base64"),
           ({"machine": "fan", "audio": _b64(slow)}, "audio: sample rate 8000 Hz, expected 16000 Hz"),
           ({"machine": "fan", "path": str(stereo)}, f"{stereo}: 2 channels, expected mono"),
           ({"machine": "fan", "path": str(junk)}, "not a readable WAV file"),
           ({"machine": "fan", "path": str(tmp_path / "gone.wav")}, "is not a file on the server's disk"),
           ({"machine": None, "path": first}, "no `machine`"),
           ({"machine": "fan", "section": 3, "path": first}, "section 03 of 'fan' is not among the sections")]
    rows = req[:3] + [b for b, _ in bad] + req[3:]
    out = score_frame(det, info, pd.DataFrame(rows))
    assert list(out.columns) == ["score", "decision", "threshold", "error"] and len(out) == len(rows)
    for k, (_, msg) in enumerate(bad):
        i = 3 + k
        assert out["error"][i].startswith(f"row {i}: ") and msg in out["error"][i], out["error"][i]
        assert out["score"][i] is None and out["decision"][i] is None
    ok = out.drop(index=range(3, 3 + len(bad))).reset_index(drop=True)
    assert ok["error"].isna().all()
    np.testing.assert_allclose(ok["score"].astype(float), good["score"], rtol=0, atol=1e-9)
    assert ok["decision"].tolist() == good["decision"].tolist()
    assert ok["threshold"].tolist() == [info.thresholds[m] for m in good["machine"]]


def test_clips_are_tiled_and_cropped_as_in_evaluation(served, tmp_path):
    """A 0.3-s clip is tiled and a 7-s clip cropped from sample 0 to the bundle's length, as in evaluation."""
    from asd.data.waves import load_waves
    from asd.serving.predict import score_frame

    det, info, _, _ = served
    rng = np.random.default_rng(0)
    paths = []
    for seconds in (0.3, 7.0):
        p = tmp_path / f"clip_{seconds}.wav"
        sf.write(p, (0.1 * rng.standard_normal(int(16000 * seconds))).astype(np.float32), 16000, subtype="PCM_16")
        paths.append(str(p))
    rows = pd.DataFrame({"abspath": paths, "path": [Path(p).name for p in paths], "machine": "valve",
                         "split": "dev", "phase": "test"})  # the waveform cache goes to tmp_path/cache
    waves = load_waves(rows, det.cfg)  # evaluation's path: waveform store, fix_length from 0
    assert waves.shape == (2, info.clip_samples) and info.clip_samples not in (4800, 112000)
    expected, _ = det.score_waves("valve", waves)
    out = score_frame(det, info, pd.DataFrame({"machine": "valve", "path": paths}))
    np.testing.assert_allclose(out["score"].astype(float), expected, rtol=0, atol=1e-12)


def test_section_is_required_and_checked_where_a_machine_has_several(served):
    from dataclasses import replace

    from asd.serving.predict import score_frame

    det, info, expected, _ = served
    info = replace(info, sections={**info.sections, "fan": [0, 1, 2]})
    path = expected[expected["machine"] == "fan"]["abspath"].iloc[0]
    sections = [None, "01", 2, 2.0, "x", 5, "section_00"]
    out = score_frame(det, info, pd.DataFrame({"machine": "fan", "path": path, "section": sections}))
    err = out["error"].tolist()
    assert "machine 'fan' has sections 00, 01, 02 in this detector; add a `section` column" in err[0]
    assert err[1] is None and err[2] is None and err[3] is None and err[6] is None
    assert "section 'x' is not a section number" in err[4]
    assert "section 05 of 'fan' is not among the sections this detector was fitted on (00, 01, 02)" in err[5]
    assert len(set(out["score"].dropna())) == 1  # the section does not change the score: backends pool sections


def test_bundle_holds_arrays_and_config_and_refuses_another_asd_version(served, tmp_path):
    from asd.errors import CheckpointError
    from asd.serving.bundle import read_bundle, write_bundle

    det, info, _, _ = served
    folder = write_bundle(det, info, tmp_path / "b")
    assert sorted(p.name for p in folder.rglob("*") if p.is_file()) == \
        ["config.yaml", "detector.json", "fan.npz", "serving.json", "valve.npz"]  # raw_spec: no frontend weights
    saved = json.loads((folder / "serving.json").read_text())
    assert saved["sections"] == {"fan": [0], "valve": [0]} and saved["channel"] is None
    assert saved["thresholds"] == info.thresholds and saved["clip_samples"] == info.clip_samples
    meta = json.loads((folder / "detector.json").read_text())
    (folder / "detector.json").write_text(json.dumps({**meta, "asd_version": "0.0.9"}))
    with pytest.raises(CheckpointError, match=r"saved by asd 0\.0\.9, this is asd .*install asd 0\.0\.9"):
        read_bundle(folder)
