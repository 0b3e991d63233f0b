import numpy as np
import pytest

from asd.evaluation.metrics import EPS, RULES, auc, hmean, official_score, pauc, section_metrics


def test_auc_hand_computed():
    # 2 normals (0.1, 0.4), 2 anomalies (0.35, 0.8): pairs (a > n): 0.35>0.1, 0.8>0.1, 0.8>0.4 -> 3/4
    y = np.array([0, 0, 1, 1])
    s = np.array([0.1, 0.4, 0.35, 0.8])
    assert auc(y, s) == pytest.approx(0.75)


def test_pauc_is_mcclish_standardised():
    # 10 normals, 2 anomalies; one anomaly above every normal, one below every normal.
    y = np.array([0] * 10 + [1, 1])
    s = np.array(list(range(10)) + [100, -1], dtype=float)
    # ROC: TPR 0.5 from FPR 0 to 1, then 1.0 at FPR 1. Partial area on [0, 0.1] = 0.05.
    a, p = 0.05, 0.1
    expected = 0.5 * (1 + (a - p * p / 2) / (p - p * p / 2))
    assert pauc(y, s) == pytest.approx(expected)
    assert expected == pytest.approx(0.7368421052631579)


def test_hmean_and_floor():
    assert hmean([0.5, 1.0]) == pytest.approx(2 / (2 + 1))
    # a zero is floored at machine epsilon, as the official evaluators do, instead of raising
    assert hmean([0.0, 1.0]) == pytest.approx(2 / (1 / EPS + 1))


def test_section_metrics_subsets():
    # source: normals 0.1, 0.2; anomaly 0.9 | target: normals 0.5, 0.95; anomaly 0.3
    y = np.array([0, 0, 1, 0, 0, 1])
    d = np.array(["source", "source", "source", "target", "target", "target"])
    s = np.array([0.1, 0.2, 0.9, 0.5, 0.95, 0.3])
    m = section_metrics(y, d, s)
    assert m["s_auc"] == pytest.approx(1.0)
    assert m["t_auc"] == pytest.approx(0.0)
    # smix: source normals vs all anomalies (0.9, 0.3): 0.9 beats both, 0.3 beats both -> 1.0
    assert m["smix_auc"] == pytest.approx(1.0)
    # tmix: target normals (0.5, 0.95) vs anomalies (0.9, 0.3): 0.9>0.5 only -> 1/4
    assert m["tmix_auc"] == pytest.approx(0.25)
    # all: normals 0.1 0.2 0.5 0.95, anomalies 0.9 0.3: 0.9 beats 3, 0.3 beats 2 -> 5/8
    assert m["mix_auc"] == pytest.approx(5 / 8)


def test_official_2023_rule_is_pooled_hmean():
    secs = [dict(smix_auc=0.8, tmix_auc=0.6, mix_pauc=0.55), dict(smix_auc=0.9, tmix_auc=0.7, mix_pauc=0.6)]
    vals = [0.8, 0.6, 0.55, 0.9, 0.7, 0.6]
    assert official_score("hmean2022", secs) == pytest.approx(len(vals) / sum(1 / v for v in vals))


def test_official_2020_rule_is_amean():
    secs = [dict(s_auc=0.8, s_pauc=0.6), dict(s_auc=0.9, s_pauc=0.5)]
    assert official_score("amean2020", secs) == pytest.approx(0.7)
    assert RULES["amean2020"].metrics == ("s_auc", "s_pauc")


def test_official_missing_metric_is_an_error():
    with pytest.raises(ValueError, match="tmix_auc"):
        official_score("hmean2022", [dict(smix_auc=0.8, mix_pauc=0.6)])
