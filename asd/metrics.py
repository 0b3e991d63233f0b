"""Metrics as the official DCASE Task 2 evaluators compute them (SPEC.md §2).

Conventions: ``y`` is 1 for anomalous clips, ``domain`` is ``'source'``/``'target'``, scores are
higher = more anomalous. pAUC is scikit-learn's ``roc_auc_score(max_fpr=0.1)`` (McClish-standardised),
which every official evaluator calls.

Subsets per section (SPEC.md §2.1):
- ``s_auc``/``s_pauc``: source normals + source anomalies;  ``t_*`` likewise for target
- ``smix_auc``: source normals + all anomalies;  ``tmix_auc``: target normals + all anomalies
- ``mix_auc``/``mix_pauc``: every clip of the section
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np

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


def section_metrics(y: np.ndarray, domain: np.ndarray, score: np.ndarray) -> dict[str, float]:
    """Every AUC/pAUC variant of one section; domain metrics only where that domain has both labels."""
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
    if anom.any() and (~anom).any():
        out["mix_auc"] = auc(y, score)
        out["mix_pauc"] = pauc(y, score)
    return out


@dataclass(frozen=True)
class Rule:
    """How a year turns per-section metrics into its official score."""

    metrics: tuple[str, ...]
    mean: str  # 'hmean' | 'amean'

    def aggregate(self, values) -> float:
        return hmean(values) if self.mean == "hmean" else amean(values)


# 2020: arithmetic mean of AUC and pAUC (ASDKit after PR #18; the 2020 evaluator prints no single score).
# 2021: harmonic mean of AUC and pAUC of each domain on its own test clips (EV21).
# 2022-2026: harmonic mean over the pooled [AUC(source), AUC(target), pAUC] of every section (EV22-EV25).
RULES: dict[str, Rule] = {
    "amean2020": Rule(("s_auc", "s_pauc"), "amean"),
    "hmean2021": Rule(("s_auc", "t_auc", "s_pauc", "t_pauc"), "hmean"),
    "hmean2022": Rule(("smix_auc", "tmix_auc", "mix_pauc"), "hmean"),
}


def official_score(rule: str, sections: list[dict[str, float]]) -> float:
    """Official score over the pooled (section x rule metric) values of ``sections``.

    Raises:
        ValueError: a section lacks one of the rule's metrics (e.g. no target clips for 2022+).
    """
    r = RULES[rule]
    values = []
    for s in sections:
        missing = [m for m in r.metrics if m not in s]
        if missing:
            raise ValueError(f"official score ({rule}) needs {missing} but a section lacks them "
                             "(are both domains and both labels present in its test clips?)")
        values.extend(s[m] for m in r.metrics)
    return r.aggregate(values)
