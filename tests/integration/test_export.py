"""`asd export`: the submission files, re-scored by an independent implementation written here."""

import csv
import re

import mlflow
import numpy as np
import pandas as pd
import pytest

from tests.conftest import last_run_id as _last_run_id
from tests.conftest import run_cli as _run


# --- an implementation of the scoring that shares nothing with asd.metrics or scikit-learn ---------

def roc(y, s):
    """ROC points (fpr, tpr) from (0, 0), one per distinct score, ties as one diagonal step."""
    y, s = np.asarray(y, float), np.asarray(s, float)
    thresholds = np.unique(s)[::-1]
    tpr = [0.0] + [np.sum((s >= t) & (y == 1)) / np.sum(y == 1) for t in thresholds]
    fpr = [0.0] + [np.sum((s >= t) & (y == 0)) / np.sum(y == 0) for t in thresholds]
    return np.array(fpr), np.array(tpr)


def trapezoid(x, y):
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2))


def auc_trapz(y, s):
    return trapezoid(*roc(y, s))


def pauc_mcclish(y, s, p=0.1):
    fpr, tpr = roc(y, s)
    keep = fpr <= p
    x, t = fpr[keep], tpr[keep]
    j = np.argmax(fpr > p)  # first point past p: interpolate the curve at FPR = p
    t_p = tpr[j - 1] + (tpr[j] - tpr[j - 1]) * (p - fpr[j - 1]) / (fpr[j] - fpr[j - 1])
    area = trapezoid(np.r_[x, p], np.r_[t, t_p])
    return 0.5 * (1 + (area - p * p / 2) / (p - p * p / 2))


def harmonic(v):
    v = np.maximum(np.asarray(v, float), np.finfo(float).eps)
    return len(v) / np.sum(1 / v)


def read_pairs(path):
    with open(path, newline="") as f:
        return [(row[0], row[1]) for row in csv.reader(f)]


def test_export_rescored_independently_matches_logged_metrics(toy_dir, mlflow_store, tmp_path):
    sets = ["--set", "train.epochs=2", "--set", "data.clip_seconds=1", "--machines", "fan,pump"]
    train_id = _last_run_id(_run(["train", "--recipe", "ae", "--data-dir", str(toy_dir), *sets]).output)
    eval_id = _last_run_id(_run(["evaluate", "--run-id", train_id, "--data-dir", str(toy_dir), "--no-umap"]).output)
    out = tmp_path / "submission"
    res = _run(["export", "--run-id", eval_id, "--out", str(out)])
    assert "wrote 4 files for 2 machines" in res.output

    names = sorted(p.name for p in out.iterdir())
    assert names == ["anomaly_score_fan_section_00_test.csv", "anomaly_score_pump_section_00_test.csv",
                     "decision_result_fan_section_00_test.csv", "decision_result_pump_section_00_test.csv"]
    index = pd.read_csv(toy_dir / "toy" / "index.csv", dtype={"file": str})
    test = index[index["phase"] == "test"]
    logged = mlflow.get_run(eval_id).data.metrics
    thresholds = pd.read_csv(mlflow.artifacts.download_artifacts(run_id=eval_id, artifact_path="tables/thresholds.csv"))
    thr = dict(zip(thresholds["machine"], thresholds["threshold"]))

    values = {"dev": [], "eval": []}
    for machine, split in (("fan", "dev"), ("pump", "eval")):
        scores = read_pairs(out / f"anomaly_score_{machine}_section_00_test.csv")
        decisions = read_pairs(out / f"decision_result_{machine}_section_00_test.csv")
        gt = test[test["machine"] == machine].set_index("file")
        # file names exactly as distributed, one row per test clip, no header, sorted
        files = [f for f, _ in scores]
        assert files == sorted(gt.index) and [f for f, _ in decisions] == files
        if split == "eval":
            assert all(re.fullmatch(r"section_00_\d{4}\.wav", f) for f in files)  # anonymised
        s = np.array([float(v) for _, v in scores])
        d = np.array([int(v) for _, v in decisions])
        assert set(d) <= {0, 1} and np.array_equal(d, (s > thr[machine]).astype(int))
        y = (gt.loc[files, "label"] == "anomaly").to_numpy().astype(int)
        dom = gt.loc[files, "domain"].to_numpy()
        smix = auc_trapz(y[(dom == "source") | (y == 1)], s[(dom == "source") | (y == 1)])
        tmix = auc_trapz(y[(dom == "target") | (y == 1)], s[(dom == "target") | (y == 1)])
        pa = pauc_mcclish(y, s)
        assert logged[f"{machine}/smix_auc"] == pytest.approx(smix, abs=1e-9)
        assert logged[f"{machine}/tmix_auc"] == pytest.approx(tmix, abs=1e-9)
        assert logged[f"{machine}/mix_pauc"] == pytest.approx(pa, abs=1e-9)
        assert logged[f"{machine}/mix_auc"] == pytest.approx(auc_trapz(y, s), abs=1e-9)
        assert logged[f"{machine}/official"] == pytest.approx(harmonic([smix, tmix, pa]), abs=1e-9)
        values[split] += [smix, tmix, pa]
    assert logged["dev/official"] == pytest.approx(harmonic(values["dev"]), abs=1e-9)
    assert logged["eval/official"] == pytest.approx(harmonic(values["eval"]), abs=1e-9)
    assert logged["official"] == pytest.approx(harmonic(values["dev"] + values["eval"]), abs=1e-9)
    assert 0 < logged["official_ci95"] < 1 and "fan/source_f1" in logged

    # the evaluate run also carries the ROC and histogram figures
    plots = {a.path for a in mlflow.tracking.MlflowClient().list_artifacts(eval_id, "plots")}
    assert {"plots/roc_fan.png", "plots/hist_pump.png"} <= plots

    # a train run is not an evaluate run: a clear error, not a traceback
    bad = _run(["export", "--run-id", train_id, "--out", str(tmp_path / "x")], ok=False)
    assert bad.exit_code == 2 and "give the id of an evaluate run" in bad.output


def test_independent_implementation_is_right_on_a_hand_case():
    # normals (0, 2), anomalies (1, 3): AUC 3/4; ROC (0, 1/2) flat to FPR 1/2 -> pAUC from area 0.05
    assert auc_trapz([0, 0, 1, 1], [0, 2, 1, 3]) == pytest.approx(0.75)
    assert pauc_mcclish([0, 0, 1, 1], [0, 2, 1, 3]) == pytest.approx(0.5 * (1 + 0.045 / 0.095))
    assert auc_trapz([0, 1, 0, 1], [1, 1, 0, 2]) == pytest.approx((2 + 0.5 + 1) / 4)  # a tie counts one half


def test_2021_and_2020_file_names(tmp_path):
    from asd.evaluation.export import write_submission

    rows = pd.DataFrame(dict(machine="fan", section=3, domain=["source", "target", "source"], score=[0.5, 0.25, 1.0],
                             decision=[0, 0, 1], file=["b.wav", "c.wav", "a.wav"]))
    write_submission(rows, "dcase2021", tmp_path / "21")
    assert read_pairs(tmp_path / "21" / "anomaly_score_fan_section_03_source_test.csv") == [("a.wav", "1.0"),
                                                                                           ("b.wav", "0.5")]
    assert read_pairs(tmp_path / "21" / "decision_result_fan_section_03_target_test.csv") == [("c.wav", "0")]
    write_submission(rows.assign(section=5), "dcase2020", tmp_path / "20")
    assert (tmp_path / "20" / "anomaly_score_fan_id_05.csv").exists()
    with pytest.raises(ValueError, match="appears more than once"):
        write_submission(rows.assign(file="a.wav"), "dcase2023", tmp_path / "23")
