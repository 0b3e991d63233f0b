"""Checks of the harness's own logic (no ASDKit, no training): run with
``PYTHONPATH=$PWD python -m pytest -q benchmarks/parity/test_parity.py``."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))

import asdkit_data  # noqa: E402
import parity  # noqa: E402
import results  # noqa: E402
from measure import run_measured, thread_env  # noqa: E402
from runs import backends_of, cost  # noqa: E402


def _index(tmp: Path) -> pd.DataFrame:
    rows = [("dev", "fan", "train", "section_00_source_train_normal_0000_spd_1.wav"),
            ("dev", "fan", "test", "section_00_target_test_anomaly_0000_spd_4.wav"),
            ("eval", "pump", "train", "section_00_source_train_normal_0000_flow_10.wav"),
            ("eval", "pump", "test", "section_00_0000.wav")]
    out = []
    for split, m, phase, f in rows:
        rel = f"{split}_data/raw/{m}/{phase}/{f}"
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / rel).write_bytes(b"RIFF")
        out.append(dict(path=rel, split=split, machine=m, phase=phase, file=f))
    return pd.DataFrame(out)


def test_eval_list_and_layout(tmp_path):
    lst = tmp_path / "eval_data_list_toy.csv"
    lst.write_text("pump\nsection_00_0000.wav,section_00_source_test_anomaly_0003_flow_10.wav\n")
    ev = asdkit_data.read_eval_list(lst)
    assert ev == {("pump", "section_00_0000.wav"): "section_00_source_test_anomaly_0003_flow_10.wav"}
    layout = asdkit_data.formatted_layout(_index(tmp_path), tmp_path, ev, tmp_path / "adk")
    keys = dict(zip(layout["file"], layout["asdkit_path"]))
    assert keys["section_00_0000.wav"] == "dcase2023/raw/pump/test/section_00_source_test_anomaly_0003_flow_10.wav"
    link = tmp_path / "adk" / "formatted" / keys["section_00_0000.wav"]
    assert link.is_symlink() and link.resolve() == (tmp_path / "eval_data/raw/pump/test/section_00_0000.wav")
    assert len(list((tmp_path / "adk" / "formatted" / "dcase2023" / "raw").glob("*/*/*.wav"))) == 4


def test_eval_clip_missing_from_list_is_an_error(tmp_path):
    with pytest.raises(asdkit_data.ParityError, match="section_00_0000.wav"):
        asdkit_data.formatted_layout(_index(tmp_path), tmp_path, {}, tmp_path / "adk")


def test_patched_copy_refuses_a_folder_without_asdkit(tmp_path):
    with pytest.raises(asdkit_data.ParityError, match="no asdkit/bin/train.py"):
        asdkit_data.patched_copy(tmp_path, tmp_path / "copy")


def test_clip_lengths():
    parity.check_lengths(["ae"], 4.0)
    parity.check_lengths(["dis_spec_scac_trainable"], 4.376)
    with pytest.raises(asdkit_data.ParityError, match="4.376 s"):
        parity.check_lengths(["dis_spec_scac_trainable"], 4.0)
    with pytest.raises(asdkit_data.ParityError, match="4.480 s"):
        parity.check_lengths(["dis_multispec_scac_trainable"], 4.4)


def test_backends_and_cost():
    assert backends_of("ae", ["knn_smote"]) == ["recon"]
    assert backends_of("dis_spec_scac_trainable", ["knn_smote", "knn_kmeans"]) == ["knn_smote", "knn_kmeans"]

    class M:  # the fields cost() reads
        def __init__(self, wall, cpu, rss):
            self.wall_s, self.cpu_s, self.peak_rss_mb, self.maxrss_mb, self.cmd = wall, cpu, rss, rss, ["x"]

    c = cost([M(10.0, 8.0, 500.0), M(5.0, 4.0, 700.0)])
    assert (c["wall_s"], c["cpu_s"], c["peak_rss_mb"], c["processes"]) == (15.0, 12.0, 700.0, 2)


def test_metrics_and_summary():
    # 2 machines: a perfect detector on fan (dev), an inverted one on pump (eval).
    rows = []
    for m, split, sign in (("fan", "dev", 1.0), ("pump", "eval", -1.0)):
        for d in ("source", "target"):
            for i, lab in enumerate(["normal"] * 4 + ["anomaly"] * 4):
                rows.append(dict(split=split, machine=m, section=0, domain=d, label=lab,
                                 score=sign * ((lab == "anomaly") * 10 + i)))
    m = results.clip_metrics(pd.DataFrame(rows))
    assert m["dev_official"] == 1.0 and m["fan/smix_auc"] == 1.0 and m["fan/mix_pauc"] == 1.0
    assert m["pump/tmix_auc"] == 0.0 and m["eval_official"] < 1e-10  # hmean floored at eps
    runs = [dict(tool=t, recipe="r", seed=s, metrics={"knn": {"dev_official": v, "eval_official": v}},
                 train=dict(wall_s=w, cpu_s=w, peak_rss_mb=100.0), eval=dict(wall_s=1.0))
            for t, s, v, w in (("asd", 0, 0.6, 10.0), ("asd", 1, 0.8, 20.0), ("ASDKit", 0, 0.5, 30.0))]
    s = results.summary(results.long_table(runs))
    assert list(s["tool"]) == ["asd", "ASDKit"]
    a = s.iloc[0]
    assert a["dev_official_mean"] == pytest.approx(0.7) and a["dev_official_std"] == pytest.approx(np.sqrt(0.02))
    assert np.isnan(s.iloc[1]["dev_official_std"])  # one seed: no std
    md = results.summary_markdown(s)
    assert "| r | knn | asd | recipe | 2 | 70.00 ± 14.14 |" in md and "| r | knn | ASDKit | recipe | 1 | 50.00 |" in md


def test_run_measured_sees_memory_of_children(tmp_path):
    code = ("import subprocess, sys; subprocess.run([sys.executable, '-c', "
            "'import time; b = bytearray(300 * 2**20); time.sleep(1.0)'])")
    m = run_measured([sys.executable, "-c", code], tmp_path, thread_env(1), tmp_path / "log.txt", poll=0.05)
    assert m.rc == 0 and m.wall_s >= 1.0
    assert m.peak_rss_mb > 300 and m.maxrss_mb > 300  # the child's 300 MB, counted in the tree
