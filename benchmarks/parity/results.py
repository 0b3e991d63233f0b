"""Metrics of per-clip scores (asd's metric code for both tools) and the mean ± std tables over seeds."""

from __future__ import annotations

import numpy as np
import pandas as pd

# The metric code `asd evaluate` uses, imported read-only: both tools' scores go through it.
from asd.evaluation.scoring import compute_metrics

DATASET = "toy"  # the rule of the toy set: DCASE 2023's hmean of smix_auc, tmix_auc, mix_pauc
MACHINE_METRICS = ("smix_auc", "tmix_auc", "mix_pauc", "official")
TOOLS = ("asd", "ASDKit")


def clip_metrics(scores: pd.DataFrame) -> dict[str, float]:
    """Official dev/eval scores and per-machine metrics of one set of per-clip scores.

    ``scores``: one row per test clip with ``split, machine, section, domain, label, score``.
    Returns ``dev_official``, ``eval_official`` and ``<machine>/<metric>`` for MACHINE_METRICS.
    """
    metrics, _ = compute_metrics(scores[["split", "machine", "section", "domain", "label", "score"]], DATASET)
    out = {"dev_official": metrics["dev/official"], "eval_official": metrics["eval/official"]}
    for key, value in metrics.items():
        parts = key.split("/")
        if len(parts) == 2 and parts[0] not in ("dev", "eval") and parts[1] in MACHINE_METRICS:
            out[key] = float(value)
    return out


def long_table(runs: list[dict]) -> pd.DataFrame:
    """One row per (tool, recipe, backend, seed) with its metrics and its run's costs."""
    rows = []
    for r in runs:
        for backend, metrics in r["metrics"].items():
            epochs = r.get("settings", {}).get("epochs")
            rows.append(dict(tool=r["tool"], recipe=r["recipe"], backend=backend, seed=r["seed"],
                             epochs="recipe" if epochs is None else str(epochs), **metrics,
                             train_wall_s=r["train"]["wall_s"], train_cpu_s=r["train"]["cpu_s"],
                             train_peak_rss_mb=r["train"]["peak_rss_mb"], eval_wall_s=r["eval"]["wall_s"]))
    return pd.DataFrame(rows)


def _mean_std(g: pd.DataFrame, cols: list[str]) -> dict:
    out = {"seeds": len(g)}
    for c in cols:
        v = g[c].dropna().to_numpy(dtype=float)
        out[f"{c}_mean"] = float(v.mean()) if len(v) else np.nan
        out[f"{c}_std"] = float(v.std(ddof=1)) if len(v) > 1 else np.nan
    return out


def summary(long: pd.DataFrame) -> pd.DataFrame:
    """Per (recipe, backend, tool): official scores and costs, mean and std (ddof 1) over seeds."""
    cols = ["dev_official", "eval_official", "train_wall_s", "train_cpu_s", "train_peak_rss_mb", "eval_wall_s"]
    rows = [dict(recipe=k[0], backend=k[1], tool=k[2], epochs=",".join(sorted(g["epochs"].unique())),
                 **_mean_std(g, cols)) for k, g in long.groupby(["recipe", "backend", "tool"], sort=True)]
    out = pd.DataFrame(rows)
    order = {t: i for i, t in enumerate(TOOLS)}  # asd first, then ASDKit, in each (recipe, backend)
    return out.sort_values(["recipe", "backend", "tool"], key=lambda c: c.map(order) if c.name == "tool" else c,
                           ignore_index=True)


def machines(long: pd.DataFrame, split_of: dict[str, str]) -> pd.DataFrame:
    """Per (recipe, backend, machine): each tool's smix/tmix AUC and pAUC, mean and std over seeds."""
    keys = sorted({c.split("/")[0] for c in long.columns if "/" in c})
    rows = []
    for (recipe, backend), g in long.groupby(["recipe", "backend"], sort=True):
        for m in sorted(keys, key=lambda m: (split_of.get(m, ""), m)):
            row = dict(recipe=recipe, backend=backend, split=split_of.get(m, ""), machine=m)
            for tool in TOOLS:
                t = g[g["tool"] == tool]
                stats = _mean_std(t, [f"{m}/{x}" for x in MACHINE_METRICS]) if len(t) else {}
                row.update({f"{tool}:{k.split('/')[1]}": v for k, v in stats.items() if "/" in k})
            rows.append(row)
    return pd.DataFrame(rows)


def _pct(mean: float, std: float) -> str:
    if pd.isna(mean):
        return "–"
    return f"{100 * mean:.2f}" + ("" if pd.isna(std) else f" ± {100 * std:.2f}")


def _num(mean: float, std: float, digits: int = 0) -> str:
    if pd.isna(mean):
        return "–"
    return f"{mean:.{digits}f}" + ("" if pd.isna(std) else f" ± {std:.{digits}f}")


def summary_markdown(s: pd.DataFrame) -> str:
    head = ("| recipe | backend | tool | epochs | seeds | dev official (%) | eval official (%) | train wall (s) "
            "| train CPU (s) | train peak RSS (MB) | eval wall (s) |\n|---|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in s.to_dict("records"):
        lines.append(f"| {r['recipe']} | {r['backend']} | {r['tool']} | {r['epochs']} | {r['seeds']} "
                     f"| {_pct(r['dev_official_mean'], r['dev_official_std'])} "
                     f"| {_pct(r['eval_official_mean'], r['eval_official_std'])} "
                     f"| {_num(r['train_wall_s_mean'], r['train_wall_s_std'])} "
                     f"| {_num(r['train_cpu_s_mean'], r['train_cpu_s_std'])} "
                     f"| {_num(r['train_peak_rss_mb_mean'], r['train_peak_rss_mb_std'])} "
                     f"| {_num(r['eval_wall_s_mean'], r['eval_wall_s_std'])} |")
    return "\n".join(lines)


def machines_markdown(m: pd.DataFrame) -> str:
    metrics = MACHINE_METRICS[:3]
    cols = [f"{t} {x}" for t in TOOLS for x in metrics]
    lines = ["| recipe | backend | split | machine | " + " | ".join(cols) + " |",
             "|" + "---|" * (4 + len(cols))]
    for r in m.to_dict("records"):
        cells = [_pct(r.get(f"{t}:{x}_mean", np.nan), r.get(f"{t}:{x}_std", np.nan)) for t in TOOLS for x in metrics]
        lines.append(f"| {r['recipe']} | {r['backend']} | {r['split']} | {r['machine']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
