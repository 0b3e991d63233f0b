"""Metrics as the official DCASE Task 2 evaluators compute them (docs/metrics.md).

Conventions: ``y`` is 1 for anomalous clips, ``domain`` is ``'source'``/``'target'``, scores are
higher = more anomalous, decisions are 1 = anomalous. pAUC is scikit-learn's
``roc_auc_score(max_fpr=0.1)`` (McClish-standardised), which every official evaluator calls.

Subsets per section (docs/metrics.md):
- ``s_auc``/``s_pauc``: source normals + source anomalies;  ``t_*`` likewise for target
- ``smix_auc``: source normals + all anomalies;  ``tmix_auc``: target normals + all anomalies
- ``mix_auc``/``mix_pauc``: every clip of the section
- ``source_precision|recall|f1`` (and ``target_*``): the decisions on that domain's clips

Plus the evaluators' jackknife 95% confidence interval of the official score (:func:`official_ci95`).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np

from asd.errors import AsdError


class MetricError(AsdError, ValueError):
    """An official score that cannot be computed on the clips given."""


MAX_FPR = 0.1
EPS = sys.float_info.epsilon  # the evaluators floor values at machine epsilon before the harmonic mean


def auc(y: np.ndarray, score: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, score))


def pauc(y: np.ndarray, score: np.ndarray, max_fpr: float = MAX_FPR) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, score, max_fpr=max_fpr))


def hmean(values) -> float:
    """Harmonic mean with every value floored at machine epsilon, as the official evaluators."""
    v = np.maximum(np.asarray(values, dtype=float), EPS)
    return float(len(v) / np.sum(1.0 / v))


def amean(values) -> float:
    return float(np.mean(np.asarray(values, dtype=float)))


def precision_recall_f1(y: np.ndarray, decision: np.ndarray) -> tuple[float, float, float]:
    """Precision, recall and F1 of 0/1 ``decision`` against ``y``, with the evaluators' guards.

    Each denominator is floored at machine epsilon, so a detector that never fires gets 0, not NaN.
    """
    y, d = np.asarray(y).astype(int), np.asarray(decision).astype(int)
    tp = float(np.sum((y == 1) & (d == 1)))
    fp = float(np.sum((y == 0) & (d == 1)))
    fn = float(np.sum((y == 1) & (d == 0)))
    prec = tp / max(tp + fp, EPS)
    rec = tp / max(tp + fn, EPS)
    return prec, rec, 2.0 * prec * rec / max(prec + rec, EPS)


def section_metrics(y: np.ndarray, domain: np.ndarray, score: np.ndarray,
                    decision: np.ndarray | None = None) -> dict[str, float]:
    """Every AUC/pAUC variant of one section; domain metrics only where that domain has both labels.

    With ``decision`` (0/1 per clip) also precision, recall and F1 per domain, computed on that
    domain's normal and anomalous clips as EV21-EV24 do.
    """
    y, domain, score = np.asarray(y).astype(int), np.asarray(domain), np.asarray(score, dtype=float)
    out: dict[str, float] = {}
    anom = y == 1
    for d, p in (("source", "s"), ("target", "t")):
        own = domain == d
        if (own & anom).any() and (own & ~anom).any():
            out[f"{p}_auc"] = auc(y[own], score[own])
            out[f"{p}_pauc"] = pauc(y[own], score[own])
        mix = (own & ~anom) | anom
        if (own & ~anom).any() and anom.any():
            out[f"{p}mix_auc"] = auc(y[mix], score[mix])
        if decision is not None and own.any():
            prf = precision_recall_f1(y[own], np.asarray(decision)[own])
            out.update({f"{d}_precision": prf[0], f"{d}_recall": prf[1], f"{d}_f1": prf[2]})
    if anom.any() and (~anom).any():
        out["mix_auc"] = auc(y, score)
        out["mix_pauc"] = pauc(y, score)
    return out


@dataclass(frozen=True)
class Rule:
    """How a year turns per-section metrics into its official score.

    ``machines_first``: average each machine's values first, then average the machine means (2020,
    ASDKit's table: machine types with fewer IDs weigh as much as the others). Otherwise one mean
    over the pooled (machine x section x metric) values, as EV21-EV25 print it.
    """

    metrics: tuple[str, ...]
    mean: str  # 'hmean' | 'amean'
    machines_first: bool = False

    def aggregate(self, values) -> float:
        return hmean(values) if self.mean == "hmean" else amean(values)


# 2020: arithmetic mean of AUC and pAUC per ID (EV20 prints one "Average" per machine type and no
#       overall score; overall = mean of the machine averages, ASDKit after PR #18).
# 2021: harmonic mean of AUC and pAUC of each domain on its own test clips (EV21).
# 2022-2026: harmonic mean over the pooled [AUC(source), AUC(target), pAUC] of every section (EV22-EV25).
RULES: dict[str, Rule] = {
    "amean2020": Rule(("s_auc", "s_pauc"), "amean", machines_first=True),
    "hmean2021": Rule(("s_auc", "t_auc", "s_pauc", "t_pauc"), "hmean"),
    "hmean2022": Rule(("smix_auc", "tmix_auc", "mix_pauc"), "hmean"),
}


def _rule_values(rule: str, sections: list[dict]) -> list[float]:
    r = RULES[rule]
    values = []
    for s in sections:
        missing = [m for m in r.metrics if m not in s or s[m] is None or np.isnan(s[m])]
        if missing:
            where = f" ({s['machine']} section {s.get('section', '?')})" if "machine" in s else ""
            raise MetricError(f"official score ({rule}) needs {missing} but a section{where} lacks them "
                             "(are both domains and both labels present in its test clips?)")
        values.extend(float(s[m]) for m in r.metrics)
    return values


def official_score(rule: str, sections: list[dict[str, float]]) -> float:
    """Official score of ``sections`` (dicts of per-section metrics, e.g. :func:`section_metrics`).

    For a ``machines_first`` rule the dicts need a ``machine`` key (dicts without one count as one
    machine); otherwise the rule's mean runs over every (section x rule metric) value pooled.

    Raises:
        ValueError: a section lacks one of the rule's metrics (e.g. no target clips for 2022+).
    """
    r = RULES[rule]
    if not r.machines_first:
        return r.aggregate(_rule_values(rule, sections))
    groups: dict[str, list[dict]] = {}
    for s in sections:
        groups.setdefault(str(s.get("machine", "")), []).append(s)
    return r.aggregate([r.aggregate(_rule_values(rule, g)) for g in groups.values()])


def decision_summary(sections: list[dict[str, float]]) -> dict[str, float]:
    """Precision, recall and F1 pooled over every (section x domain), harmonic mean floored at eps.

    This is the evaluators' "harmonic mean over all machine types, sections, and domains" line.
    """
    out = {}
    for m in ("precision", "recall", "f1"):
        vals = [s[f"{d}_{m}"] for s in sections for d in ("source", "target")
                if f"{d}_{m}" in s and not np.isnan(s[f"{d}_{m}"])]
        if vals:
            out[m] = hmean(vals)
    return out


# --- jackknife confidence interval (EV23-EV25, docs/metrics.md) ------------------------------------

def _pauc_sorted(s: np.ndarray, y: np.ndarray, n1: int, n0: int, max_fpr: float) -> float:
    """pAUC from scores sorted high to low (a prefix reaching past FPR ``max_fpr`` suffices)."""
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]  # end of each run of equal scores: one ROC point
    tps = np.cumsum(y)[last]
    fpr, tpr = np.r_[0.0, (last + 1 - tps) / n0], np.r_[0.0, tps / n1]
    stop = np.searchsorted(fpr, max_fpr, "right")
    x = np.r_[fpr[:stop], max_fpr]
    t = np.r_[tpr[:stop], np.interp(max_fpr, fpr[stop - 1 : stop + 1], tpr[stop - 1 : stop + 1])]
    area = float(np.sum(np.diff(x) * (t[1:] + t[:-1]) / 2.0))
    lo, hi = max_fpr**2 / 2.0, max_fpr
    return 0.5 * (1.0 + (area - lo) / (hi - lo))


def _loo_auc(y: np.ndarray, score: np.ndarray) -> np.ndarray:
    """AUC with clip i left out, for every i, in closed form (ties count one half)."""
    pos, neg = score[y == 1], score[y == 0]
    neg_sorted, pos_sorted = np.sort(neg), np.sort(pos)
    below = np.searchsorted(neg_sorted, pos, "left")  # negatives strictly below each positive
    tied = np.searchsorted(neg_sorted, pos, "right") - below
    wins_pos = below + 0.5 * tied  # pairs each positive wins
    above = len(pos) - np.searchsorted(pos_sorted, neg, "right")
    tied_n = np.searchsorted(pos_sorted, neg, "right") - np.searchsorted(pos_sorted, neg, "left")
    wins_neg = above + 0.5 * tied_n  # pairs each negative loses
    u, n1, n0 = wins_pos.sum(), len(pos), len(neg)
    out = np.empty(len(y))
    out[y == 1] = (u - wins_pos) / ((n1 - 1) * n0)
    out[y == 0] = (u - wins_neg) / (n1 * (n0 - 1))
    return out


def _loo_pauc(y: np.ndarray, score: np.ndarray, max_fpr: float) -> np.ndarray:
    """pAUC with clip i left out, for every i.

    Only the top of the ranking matters (up to the first point past FPR ``max_fpr``), so each
    leave-one-out value is computed on that prefix of the sorted clips with the reduced totals.
    """
    order = np.argsort(-score, kind="mergesort")
    s, ys = score[order], y[order]
    n1, n0 = int(y.sum()), int((y == 0).sum())
    # Prefix holding max_fpr * n0 + 2 negatives, extended to the end of its run of tied scores.
    need = int(np.floor(max_fpr * n0)) + 2
    negs = np.cumsum(ys == 0)
    cut = int(np.searchsorted(negs, need)) + 1
    cut = len(s) if cut >= len(s) else int(np.searchsorted(-s, -s[cut - 1], "right"))
    out = np.empty(len(y))
    for k in range(cut):
        out[order[k]] = _pauc_sorted(np.delete(s[:cut], k), np.delete(ys[:cut], k), n1 - ys[k], n0 - 1 + ys[k],
                                     max_fpr)
    # A clip below the prefix changes only the totals: one value for a positive, one for a negative.
    for label in (0, 1):
        rest = order[cut:][ys[cut:] == label]
        if len(rest):
            out[rest] = _pauc_sorted(s[:cut], ys[:cut], n1 - label, n0 - 1 + label, max_fpr)
    return out


def jackknife_ci95(loo: np.ndarray) -> float:
    """95% half-width from leave-one-out estimates, exactly as EV23-EV25 compute it.

    The evaluators take sigma = sqrt(sum((theta_i - mean theta_i)^2) / (N (N - 1))) over the
    leave-one-out values theta_i (not over pseudo-values, so it is N - 1 times narrower than the
    textbook jackknife error) and a Student t critical value with N - 1 degrees of freedom.
    """
    import scipy.stats

    n = len(loo)
    sigma = np.sqrt(np.sum((loo - loo.mean()) ** 2) / (n * (n - 1)))
    return float(abs(scipy.stats.t.ppf(0.025, n - 1)) * sigma)


def official_ci95(y: np.ndarray, score: np.ndarray, max_fpr: float = MAX_FPR) -> dict[str, float]:
    """The evaluators' "official score ci95": the mean of the jackknife 95% half-widths of the AUC
    and of the pAUC over all clips pooled (every machine and section, raw scores).

    Returns ``{"auc_ci95", "pauc_ci95", "official_ci95", "official_ci95_textbook"}``; the last is the
    same interval with the textbook jackknife error (N - 1 times the evaluators' value, see
    :func:`jackknife_ci95`). Empty when a class has fewer than two clips (leaving one out would leave
    a single class).
    """
    y, score = np.asarray(y).astype(int), np.asarray(score, dtype=float)
    if min((y == 1).sum(), (y == 0).sum()) < 2:
        return {}
    a, p = jackknife_ci95(_loo_auc(y, score)), jackknife_ci95(_loo_pauc(y, score, max_fpr))
    return {"auc_ci95": a, "pauc_ci95": p, "official_ci95": (a + p) / 2.0,
            "official_ci95_textbook": (len(y) - 1) * (a + p) / 2.0}
