"""Each year's official rule on small hand-computed cases, decisions (P/R/F1), the jackknife CI and
the decision thresholds fitted on normal training scores only."""

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from sklearn.metrics import roc_auc_score

from asd.evaluation.scoring import compute_metrics
from asd.evaluation.metrics import EPS, official_ci95, precision_recall_f1

P = 0.1


def mcclish(area: float) -> float:
    """Standardised pAUC from the raw partial area on FPR [0, 0.1]."""
    return 0.5 * (1 + (area - P * P / 2) / (P - P * P / 2))


def clips(split, machine, section, domain, normal, anomaly, decision=None):
    """Rows of a scores table: ``normal``/``anomaly`` are lists of scores."""
    rows = [dict(split=split, machine=machine, section=section, domain=domain, label=lab, score=float(s))
            for lab, ss in (("normal", normal), ("anomaly", anomaly)) for s in ss]
    df = pd.DataFrame(rows)
    if decision is not None:
        df["decision"] = (df["score"] > decision).astype(int)
    return df


def H(*v):
    v = np.maximum(np.asarray(v, dtype=float), EPS)
    return len(v) / np.sum(1 / v)


# Per-ID building blocks without ties (2 normals, 2 anomalies), values worked out by hand:
#   A: anomalies above both normals -> AUC 1, pAUC 1
#   B: normals (0, 2), anomalies (1, 3) -> AUC 3/4; ROC starts at (0, 1/2), flat to FPR 1/2 -> pAUC mcclish(0.05)
#   C: normals (1, 3), anomalies (0, 2) -> AUC 1/4; ROC starts flat at TPR 0 -> pAUC mcclish(0)
CASES = {"A": ([0, 1], [2, 3], 1.0, 1.0), "B": ([0, 2], [1, 3], 0.75, mcclish(0.05)),
         "C": ([1, 3], [0, 2], 0.25, mcclish(0.0))}


def id_clips(split, machine, section, case, domain="source", offset=None):
    n, a, _, _ = CASES[case]
    off = 10.0 * section if offset is None else offset  # IDs on different scales: pooling them would change AUCs
    return clips(split, machine, section, domain, [x + off for x in n], [x + off for x in a])


def test_mcclish_cases_match_sklearn():
    for n, a, auc_, pauc_ in CASES.values():
        y, s = [0] * len(n) + [1] * len(a), n + a
        assert roc_auc_score(y, s) == pytest.approx(auc_)
        assert roc_auc_score(y, s, max_fpr=P) == pytest.approx(pauc_)
    assert mcclish(0.05) == pytest.approx(0.7368421052631579)


def test_2023_unbalanced_grinder_and_pooled_eval_score():
    # 2023 eval grinder: source 107 normal / 27 anomaly, target 36 normal / 30 anomaly (docs/data.md, official counts).
    # Scores: source normals 0, source anomalies 1, target normals 2, target anomalies 3.
    g = pd.concat([clips("eval", "grinder", 0, "source", [0] * 107, [1] * 27, decision=1.5),
                   clips("eval", "grinder", 0, "target", [2] * 36, [3] * 30, decision=1.5)])
    # A balanced second eval machine: B in source, C in target.
    b = pd.concat([clips("eval", "bandsaw", 0, "source", [0, 2], [1, 3], decision=1.5),
                   clips("eval", "bandsaw", 0, "target", [1, 3], [0, 2], decision=1.5)])
    m, sections = compute_metrics(pd.concat([g, b], ignore_index=True), "dcase2023")

    smix, tmix = 1.0, 30 / 57  # source normals below every anomaly; target normals beat the 27 source anomalies
    # whole section: 143 normals; the first ROC point is (0, 30/57), the next at FPR 36/143 > 0.1
    mix_pauc = mcclish(0.1 * 30 / 57)
    mix_auc = (27 * 107 + 30 * 143) / (57 * 143)
    assert m["grinder/smix_auc"] == pytest.approx(smix, abs=1e-12)
    assert m["grinder/tmix_auc"] == pytest.approx(tmix, abs=1e-12)
    assert m["grinder/mix_pauc"] == pytest.approx(mix_pauc, abs=1e-12)
    assert m["grinder/mix_auc"] == pytest.approx(mix_auc, abs=1e-12)
    assert m["grinder/s_auc"] == m["grinder/t_auc"] == 1.0
    assert m["grinder/official"] == pytest.approx(H(smix, tmix, mix_pauc), abs=1e-12)
    assert m["grinder/eval_official"] == m["grinder/official"]

    # bandsaw: smix = source normals (0, 2) vs anomalies (1, 3, 0, 2): wins 1>0, 3>0, 3>2, 2>0 + tie 2=2, 0=0
    b_smix = (4 + 0.5 * 2) / 8
    b_tmix = (1 + 0.5 * 2 + 1) / 8  # target normals (1, 3) vs (1, 3, 0, 2): 3>1, 2>1, ties 1=1 and 3=3
    b_pauc = roc_auc_score([0, 0, 1, 1, 0, 0, 1, 1], [0, 2, 1, 3, 1, 3, 0, 2], max_fpr=P)
    assert m["bandsaw/smix_auc"] == pytest.approx(b_smix) and m["bandsaw/tmix_auc"] == pytest.approx(b_tmix)
    # The 2023 score pools the 3 values of every machine in one harmonic mean.
    pooled = H(smix, tmix, mix_pauc, b_smix, b_tmix, b_pauc)
    assert m["eval/official"] == pytest.approx(pooled, abs=1e-12) and m["official"] == m["eval/official"]
    assert "dev/official" not in m

    # Decisions (score > 1.5): source flags nothing -> P = R = F1 = 0 through the eps guards;
    # target flags every clip -> precision 30/66, recall 1.
    assert m["grinder/source_precision"] == 0 and m["grinder/source_f1"] == 0
    prec = 30 / 66
    assert m["grinder/target_precision"] == pytest.approx(prec)
    assert m["grinder/target_recall"] == 1.0
    assert m["grinder/target_f1"] == pytest.approx(2 * prec / (prec + 1))
    assert set(sections["machine"]) == {"grinder", "bandsaw"}


def test_2020_per_id_sections_arithmetic_mean_of_machine_means():
    # fan: dev IDs 00 (A), 02 (B); eval ID 01 (B).  ToyConveyor: dev IDs 01 (A), 02 (C), 03 (C).
    df = pd.concat([id_clips("dev", "fan", 0, "A"), id_clips("dev", "fan", 2, "B"), id_clips("eval", "fan", 1, "B"),
                    id_clips("dev", "ToyConveyor", 1, "A"), id_clips("dev", "ToyConveyor", 2, "C"),
                    id_clips("dev", "ToyConveyor", 3, "C")], ignore_index=True)
    m, _ = compute_metrics(df, "dcase2020")
    a, b, c = ((CASES[k][2], CASES[k][3]) for k in "ABC")
    # every ID is its own section: AUC per ID, never over the pooled IDs
    assert m["fan/section_02/s_auc"] == pytest.approx(0.75)
    assert m["ToyConveyor/section_02/s_pauc"] == pytest.approx(mcclish(0.0))
    fan_dev = np.mean([*a, *b])
    conv_dev = np.mean([*a, *c, *c])
    assert m["fan/dev_official"] == pytest.approx(fan_dev)
    assert m["ToyConveyor/dev_official"] == pytest.approx(conv_dev)
    # ToyConveyor has 3 dev IDs, fan 2: the machine means weigh equally (ASDKit), not the 5 IDs pooled.
    assert m["dev/official"] == pytest.approx((fan_dev + conv_dev) / 2)
    assert m["dev/official"] != pytest.approx(np.mean([*a, *b, *a, *c, *c]))
    assert m["eval/official"] == pytest.approx(np.mean(b))
    assert m["fan/official"] == pytest.approx(np.mean([*a, *b, *b]))
    assert m["official"] == pytest.approx((np.mean([*a, *b, *b]) + conv_dev) / 2)
    # per-machine AUC is the arithmetic mean over its IDs in 2020
    assert m["fan/s_auc"] == pytest.approx(np.mean([1.0, 0.75, 0.75]))


def test_2021_domain_own_clips_and_split_by_section():
    # section 00 (dev): source B, target B shifted by +10;  section 03 (eval): source C, target A.
    df = pd.concat([id_clips("dev", "gearbox", 0, "B", "source", 0), id_clips("dev", "gearbox", 0, "B", "target", 10),
                    id_clips("eval", "gearbox", 3, "C", "source", 0), id_clips("eval", "gearbox", 3, "A", "target", 0)],
                   ignore_index=True)
    m, _ = compute_metrics(df, "dcase2021")
    b, c, a = CASES["B"], CASES["C"], CASES["A"]
    # AUC and pAUC of each domain on its own clips: the shifted target section still gives B's values
    assert m["gearbox/section_00/t_auc"] == pytest.approx(0.75)
    assert m["gearbox/section_00/s_pauc"] == pytest.approx(b[3])
    # (smix would mix the target anomalies 11, 13 in: a different number)
    assert m["gearbox/section_00/smix_auc"] == pytest.approx((1 + 2 + 2 + 2) / 8)
    dev = H(b[2], b[2], b[3], b[3])
    ev = H(c[2], a[2], c[3], a[3])
    assert m["dev/official"] == pytest.approx(dev)
    assert m["eval/official"] == pytest.approx(ev)
    assert m["official"] == pytest.approx(H(b[2], b[2], b[3], b[3], c[2], a[2], c[3], a[3]))
    assert m["gearbox/dev_official"] == pytest.approx(dev)


def test_2022_dev_eval_sections_and_epsilon_floor():
    # section 00 (dev): ordinary; section 03 (eval): target normals above every anomaly -> tmix_auc = 0.
    df = pd.concat([id_clips("dev", "valve", 0, "A", "source", 0), id_clips("dev", "valve", 0, "B", "target", 0),
                    clips("eval", "valve", 3, "source", [0, 1], [2, 3]),
                    clips("eval", "valve", 3, "target", [8, 9], [4, 5])], ignore_index=True)
    m, _ = compute_metrics(df, "dcase2022")
    assert m["valve/section_03/tmix_auc"] == 0.0
    # smix for section 03: source normals (0, 1) below all anomalies (2, 3, 4, 5)
    assert m["valve/section_03/smix_auc"] == 1.0
    pauc3 = roc_auc_score([0, 0, 1, 1, 0, 0, 1, 1], [0, 1, 2, 3, 8, 9, 4, 5], max_fpr=P)
    # the zero is floored at machine epsilon (the evaluators), so the score is tiny but defined
    assert m["eval/official"] == pytest.approx(3 / (1 / 1.0 + 1 / EPS + 1 / pauc3), rel=1e-12)
    assert 0 < m["eval/official"] < 1e-15
    smix0 = (2 + 2 + 2 + 1 + 0.5) / 8
    assert m["valve/section_00/smix_auc"] == pytest.approx(smix0)
    assert "valve/dev_official" in m and "valve/eval_official" in m


def test_precision_recall_f1_guards():
    assert precision_recall_f1([0, 0, 1, 1], [0, 1, 1, 1]) == pytest.approx((2 / 3, 1.0, 0.8))
    assert precision_recall_f1([0, 1], [0, 0]) == (0.0, 0.0, 0.0)  # never fires: no division by zero


def _direct_ci(y, s, fn):
    """The evaluators' jackknife written out: leave each clip out, call sklearn, t interval."""
    n = len(y)
    loo = np.array([fn(np.delete(y, i), np.delete(s, i)) for i in range(n)])
    sigma = np.sqrt(np.sum((loo - loo.mean()) ** 2) / (n * (n - 1)))
    return abs(scipy.stats.t.ppf(0.025, n - 1)) * sigma


@pytest.mark.parametrize("decimals", [1, 4])
def test_jackknife_ci_equals_direct_leave_one_out(decimals):
    rng = np.random.default_rng(decimals)
    y = (rng.random(120) < 0.35).astype(int)
    s = np.round(rng.normal(size=120) + 1.2 * y, decimals)  # decimals=1: many ties
    got = official_ci95(y, s)
    a = _direct_ci(y, s, roc_auc_score)
    p = _direct_ci(y, s, lambda yy, ss: roc_auc_score(yy, ss, max_fpr=P))
    assert got["auc_ci95"] == pytest.approx(a, rel=1e-9)
    assert got["pauc_ci95"] == pytest.approx(p, rel=1e-9)
    assert got["official_ci95"] == pytest.approx((a + p) / 2, rel=1e-9)
    # textbook jackknife: standard error from the pseudo-values N*theta - (N-1)*theta_i
    n = len(y)
    for fn, ours in ((roc_auc_score, a), (lambda yy, ss: roc_auc_score(yy, ss, max_fpr=P), p)):
        theta = fn(y, s)
        pseudo = np.array([n * theta - (n - 1) * fn(np.delete(y, i), np.delete(s, i)) for i in range(n)])
        se = pseudo.std(ddof=1) / np.sqrt(n)
        assert abs(scipy.stats.t.ppf(0.025, n - 1)) * se == pytest.approx((n - 1) * ours, rel=1e-9)
    assert got["official_ci95_textbook"] == pytest.approx((n - 1) * (a + p) / 2, rel=1e-9)
    assert official_ci95([0, 1, 1], [0.1, 0.2, 0.3]) == {}  # one normal: leave-one-out is undefined


def test_metrics_log_ci_and_decision_summary():
    rng = np.random.default_rng(0)
    df = pd.concat([clips("dev", m, 0, d, rng.normal(size=20), rng.normal(size=20) + 1, decision=0.5)
                    for m in ("fan", "valve") for d in ("source", "target")], ignore_index=True)
    m, _ = compute_metrics(df, "toy")
    y = (df["label"] == "anomaly").to_numpy()
    assert m["official_ci95"] == pytest.approx(official_ci95(y, df["score"].to_numpy())["official_ci95"])
    assert m["dev/official_ci95"] == m["official_ci95"]
    f1s = [m[f"{mach}/{d}_f1"] for mach in ("fan", "valve") for d in ("source", "target")]
    assert m["dev/f1"] == pytest.approx(H(*f1s))


# --- thresholds fitted on normal training scores only ---------------------------------------------

def test_gamma_threshold_recovers_the_distribution_quantile():
    from asd.backends.base import fit_threshold

    shape, scale = 3.0, 0.5
    s = scipy.stats.gamma.rvs(shape, scale=scale, size=5000, random_state=0)
    true90 = scipy.stats.gamma.ppf(0.9, shape, scale=scale)
    assert fit_threshold(s, "gamma", 0.9) == pytest.approx(true90, rel=0.05)
    # the official baseline's recipe (scipy's maximum-likelihood gamma fit, then its quantile), with the
    # loc=0 fit as a second candidate: the higher likelihood wins (both regular here: shape >= 1)
    fits = [scipy.stats.gamma.fit(s), scipy.stats.gamma.fit(s, floc=0)]
    assert min(f[0] for f in fits) >= 1
    best = max(fits, key=lambda p: scipy.stats.gamma.logpdf(s, *p).sum())
    assert fit_threshold(s, "gamma", 0.8) == pytest.approx(scipy.stats.gamma.ppf(0.8, *best))
    assert fit_threshold(s, "quantile", 0.9) == pytest.approx(np.quantile(s, 0.9))
    assert fit_threshold(s, "gamma", 0.5) < fit_threshold(s, "gamma", 0.9) < fit_threshold(s, "gamma", 0.99)
    with pytest.raises(ValueError, match="unknown backend.threshold"):
        fit_threshold(s, "median")


# Leave-one-out kNN training scores of the toy fan (raw_spec), rounded: scipy's 3-parameter gamma fit
# puts loc at the minimum with shape 0.26, and its 0.9 quantile (0.945) lies far above every score.
FAN_SCORES = [0.0305, 0.0305, 0.0312, 0.0312, 0.0337, 0.0337, 0.0347, 0.0352, 0.0352, 0.0356, 0.0356, 0.0371,
              0.0371, 0.0371, 0.0371, 0.0381, 0.0381, 0.0384, 0.0392, 0.0394, 0.0394, 0.0398, 0.0398, 0.0403,
              0.0403, 0.0404, 0.0404, 0.0405, 0.0405, 0.0406, 0.0406, 0.0406, 0.0407, 0.0407, 0.0414, 0.0417,
              0.0417, 0.042, 0.0422, 0.0422, 0.0423, 0.0425, 0.0428, 0.0429, 0.043, 0.0432, 0.0432, 0.0432,
              0.0433, 0.0433, 0.0434, 0.0434, 0.0435, 0.0438, 0.0439, 0.0439, 0.044, 0.0441, 0.0443, 0.0443,
              0.0445, 0.0445, 0.0446, 0.0446, 0.0447, 0.0451, 0.0453, 0.0453, 0.0453, 0.0456, 0.0456, 0.0461,
              0.0461, 0.0461, 0.0465, 0.0469, 0.0469, 0.0476, 0.0476, 0.0491, 0.0492, 0.0493, 0.0499, 0.0509,
              0.0523, 0.0524, 0.0524, 0.0525, 0.0529, 0.0534, 0.0535, 0.0545, 0.0545, 0.0553, 0.0553, 0.0556,
              0.0558, 0.0577, 0.0585, 0.0611, 0.0625, 0.065, 0.065, 0.0653, 0.0684, 0.0694, 0.0708, 0.0717,
              0.087, 0.087]


def test_gamma_threshold_survives_a_degenerate_free_loc_fit():
    from asd.backends.base import fit_threshold

    s = np.array(FAN_SCORES)
    assert scipy.stats.gamma.ppf(0.9, *scipy.stats.gamma.fit(s)) > 0.5  # the failure this guards against
    thr = fit_threshold(s, "gamma", 0.9)
    assert np.quantile(s, 0.8) < thr < s.max()
    assert thr == pytest.approx(np.quantile(s, 0.9), rel=0.1)


def test_gamma_threshold_refuses_a_spike_at_the_minimum():
    """Leave-one-out 1-NN scores (mutual neighbours repeat): scipy's free-loc fit has shape 0.27 and
    loc at the minimum, a higher likelihood than the loc=0 fit, and a 0.9 quantile below the median."""
    from asd.backends.base import fit_threshold

    s = np.array([0.02850946, 0.00981644, 0.00947942, 0.01370275, 0.00848679, 0.01370275, 0.02434804, 0.00981644,
                  0.01144354, 0.01465514, 0.01448213, 0.02434804, 0.01450144, 0.00848679, 0.01618404])
    free = scipy.stats.gamma.fit(s)
    assert free[0] < 1 and scipy.stats.gamma.ppf(0.9, *free) < np.median(s)  # the failure this guards against
    thr = fit_threshold(s, "gamma", 0.9)
    assert np.quantile(s, 0.75) < thr < 1.5 * s.max()
    assert (s <= thr).mean() >= 0.8


def test_backend_decisions_use_the_training_threshold():
    from asd.backends import build_backend

    rng = np.random.default_rng(0)
    train = rng.normal(size=(60, 8)) + 5
    doms = np.array(["source"] * 50 + ["target"] * 10)
    be = build_backend("knn", k=1, threshold="quantile", threshold_quantile=0.9).fit(train, doms)
    # the threshold comes from leave-one-out training scores only: about 10% of them lie above it
    assert np.mean(be.decision_scores_ > be.threshold_) == pytest.approx(0.1, abs=0.03)
    test = np.vstack([rng.normal(size=(20, 8)) + 5, -rng.normal(size=(20, 8)) - 5])
    assert np.array_equal(be.predict(test), (be.decision_function(test) > be.threshold_).astype(int))
    assert be.predict(test)[20:].all()  # far-away clips are anomalous
