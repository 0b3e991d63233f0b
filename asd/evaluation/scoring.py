"""A detector's scores -> metrics per machine, section and domain -> official scores of the year.

The detector's backends are fitted per machine type on that machine's training clips (sections
pooled, as ASDKit) and score its test clips. Test clips without ground truth (``label == 'unknown'``)
are scored and exported but left out of every metric, and counted in the result.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from asd.data.years import get_year
from asd.detector import Detector
from asd.evaluation.metrics import RULES, MetricError, decision_summary, official_ci95, official_score, section_metrics
from asd.training import Embeddings


@dataclass
class EvalResult:
    scores: pd.DataFrame  # one row per test clip: index columns + score, decision
    metrics: dict[str, float]  # flat MLflow metric names
    sections: pd.DataFrame  # one row per (split, machine, section) with every metric
    thresholds: dict[str, float] = field(default_factory=dict)
    unlabelled: int = 0
    missing: dict[str, str] = field(default_factory=dict)  # official numbers that cannot be computed -> why


def compute_metrics(scores: pd.DataFrame, dataset: str, missing: dict[str, str] | None = None
                    ) -> tuple[dict[str, float], pd.DataFrame]:
    """Per-section metrics, per-machine aggregates and the official scores of the year's rule.

    An official score the year's rule cannot compute on the clips given (e.g. the 2021 rule on test
    clips of one domain) is left out and its reason put in ``missing`` (``{metric name: why}``);
    without ``missing`` it raises :class:`MetricError`.

    ``scores``: one row per test clip with ``split, machine, section, domain, label, score`` and
    optionally ``decision`` (0/1). Clips labelled ``unknown`` are ignored.

    Metric names: ``<machine>/<metric>`` (the rule's mean over the machine's sections: every AUC/pAUC
    variant and ``source_f1``-style decision metrics), for machines with several sections also
    ``<machine>/section_<SS>/<metric>``; ``<machine>/official`` and ``<machine>/<split>_official``;
    per split ``<split>/official``, ``<split>/official_ci95`` (+ ``auc_ci95``, ``pauc_ci95``) and
    ``<split>/precision|recall|f1``; the same without prefix over every labelled section pooled.
    """
    year = get_year(dataset)
    rule = RULES[year.rule]
    lab = scores[scores["label"] != "unknown"]
    recs = []
    for (split, machine, section), g in lab.groupby(["split", "machine", "section"], sort=True):
        dec = g["decision"].to_numpy() if "decision" in g else None
        m = section_metrics((g["label"] == "anomaly").to_numpy(), g["domain"].to_numpy(), g["score"].to_numpy(), dec)
        recs.append(dict(split=split, machine=machine, section=int(section), n_clips=len(g), **m))
    sections = pd.DataFrame(recs)
    metrics: dict[str, float] = {}
    if sections.empty:
        return metrics, sections
    metric_cols = [c for c in sections.columns if c.endswith(("auc", "precision", "recall", "f1"))]
    for machine, g in sections.groupby("machine"):
        records = g.to_dict("records")
        for col in metric_cols:
            vals = g[col].dropna()
            if len(vals):  # one section: its own value (the eps floor only matters when combining)
                metrics[f"{machine}/{col}"] = rule.aggregate(vals) if len(vals) > 1 else float(vals.iloc[0])
            if len(records) > 1:
                for r in records:
                    if pd.notna(r[col]):
                        metrics[f"{machine}/section_{r['section']:02d}/{col}"] = float(r[col])
        _official(year.rule, records, f"{machine}/official", metrics, missing)
        for split, gs in g.groupby("split"):
            _official(year.rule, gs.to_dict("records"), f"{machine}/{split}_official", metrics, missing)
    # per split ("dev/official", ...), then every labelled section pooled ("official", ...)
    scopes = [(f"{s}/", sections["split"] == s, lab["split"] == s) for s in sorted(lab["split"].unique())]
    for prefix, sec_sel, clip_sel in [*scopes, ("", slice(None), slice(None))]:
        secs, clips = sections[sec_sel], lab[clip_sel]
        _official(year.rule, secs.to_dict("records"), f"{prefix}official", metrics, missing)
        ci = official_ci95((clips["label"] == "anomaly").to_numpy(), clips["score"].to_numpy())
        metrics.update({f"{prefix}{k}": v for k, v in ci.items()})
        metrics.update({f"{prefix}{k}": v for k, v in decision_summary(secs.to_dict("records")).items()})
    return metrics, sections


def _official(rule: str, records: list[dict], key: str, metrics: dict, missing: dict | None) -> None:
    try:
        metrics[key] = official_score(rule, records)
    except MetricError as e:
        if missing is None:
            raise
        missing[key] = str(e)


def evaluate(detector: Detector, emb: Embeddings) -> EvalResult:
    """Fit ``detector``'s backends on the training clips of ``emb``, score its test clips, compute metrics.

    Raises:
        MetricError: no test clip has a label (nothing can be measured).
    """
    scores = detector.fit(emb).score(emb)
    unlabelled = int((scores["label"] == "unknown").sum())
    if unlabelled == len(scores):
        raise MetricError(f"none of the {len(scores)} test clips scored has a label (ground truth not published or "
                          "not prepared); evaluate machines whose test clips are labelled (--machines), or export "
                          "the scores for the organisers")
    missing: dict[str, str] = {}
    metrics, sections = compute_metrics(scores, detector.cfg.data.dataset, missing)
    return EvalResult(scores, metrics, sections, detector.thresholds, unlabelled, missing)
