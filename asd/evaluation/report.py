"""Tables across MLflow runs: official scores of recipes x backends x (dataset, dev/eval), mean ± std
over seeds, per-machine tables and a heat map like ASDKit's results figure.

Reads finished evaluate runs (tag ``asd.stage=evaluate``) with :func:`mlflow.search_runs`, groups
them by the tags ``asd.recipe``, ``asd.backend``, ``asd.dataset`` and ``asd.seed``; where a
(recipe, backend, dataset, seed) was evaluated more than once the latest run counts. Values are
fractions in the CSV files and percentages in the Markdown tables and the heat maps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from asd.errors import RunError

KEYS = ["recipe", "backend", "dataset", "seed"]


@dataclass
class Report:
    runs: pd.DataFrame  # one row per evaluate run used: KEYS + run_id + metrics
    main: pd.DataFrame  # long: recipe, backend, dataset, split, mean, std, n_seeds
    machines: dict[tuple[str, str], pd.DataFrame] = field(default_factory=dict)  # (dataset, split) -> long table


def search_evaluate_runs(experiment: str, filter_string: str | None = None) -> pd.DataFrame:
    """Finished evaluate runs of ``experiment`` as a frame: KEYS, ``run_id``, ``start_time``, then
    one column per metric (MLflow names)."""
    import mlflow

    exp = mlflow.get_experiment_by_name(experiment)
    if exp is None:
        names = ", ".join(e.name for e in mlflow.search_experiments()) or "none"
        raise RunError(f"no MLflow experiment named {experiment!r} in {mlflow.get_tracking_uri()} "
                         f"(experiments: {names}); pass --experiment or set MLFLOW_TRACKING_URI")
    query = "tags.`asd.stage` = 'evaluate' and attributes.status = 'FINISHED'"
    if filter_string:
        query += f" and {filter_string}"
    df = mlflow.search_runs(experiment_ids=[exp.experiment_id], filter_string=query, output_format="pandas")
    if df.empty:
        raise RunError(f"experiment {experiment!r} has no finished evaluate runs"
                         + (f" matching {filter_string!r}" if filter_string else "")
                         + "; run `asd train` and `asd evaluate` (or `asd main`) first")
    out = pd.DataFrame({k: df.get(f"tags.asd.{k}", pd.Series(["?"] * len(df))).fillna("?").astype(str) for k in KEYS})
    out["run_id"], out["start_time"] = df["run_id"], df["start_time"]
    metrics = df[[c for c in df.columns if c.startswith("metrics.")]]
    metrics.columns = [c[len("metrics."):] for c in metrics.columns]
    out = pd.concat([out, metrics], axis=1)
    return out.sort_values("start_time").drop_duplicates(KEYS, keep="last").reset_index(drop=True)


def _mean_std(runs: pd.DataFrame, metric: str, by: list[str]) -> pd.DataFrame:
    if metric not in runs:
        return pd.DataFrame(columns=[*by, "mean", "std", "n_seeds"])
    g = runs.dropna(subset=[metric]).groupby(by)[metric]
    # std over seeds with one degree of freedom; NaN with a single seed (shown without ± then)
    return g.agg(mean="mean", std="std", n_seeds="count").reset_index()


def build_report(runs: pd.DataFrame) -> Report:
    """Aggregate evaluate runs (from :func:`search_evaluate_runs`) over seeds."""
    parts = []
    for split in ("dev", "eval"):
        t = _mean_std(runs, f"{split}/official", ["recipe", "backend", "dataset"])
        if len(t):  # a store of --split dev runs has no eval results: no eval column, not an empty one
            parts.append(t.assign(split=split))
    if not parts:
        raise RunError("no evaluate run has a dev/official or eval/official score (every official number was "
                       "missing: see tables/missing_metrics.csv of the runs)")
    main = pd.concat(parts, ignore_index=True)[["recipe", "backend", "dataset", "split", "mean", "std", "n_seeds"]]
    main = main.astype({"mean": float, "std": float, "n_seeds": int})
    main = main.sort_values(["recipe", "backend", "dataset", "split"], ignore_index=True)
    machines = {}
    for split in ("dev", "eval"):
        suffix = f"/{split}_official"
        names = sorted({c[: -len(suffix)] for c in runs.columns if c.endswith(suffix)}, key=str.lower)
        for dataset, sub in runs.groupby("dataset"):
            frames = [_mean_std(sub, f"{m}{suffix}", ["recipe", "backend"]).assign(machine=m) for m in names]
            frames.append(_mean_std(sub, f"{split}/official", ["recipe", "backend"]).assign(machine="official"))
            t = pd.concat([f for f in frames if len(f)], ignore_index=True) if any(len(f) for f in frames) else None
            if t is not None and (t["machine"] != "official").any():
                machines[(dataset, split)] = t[["recipe", "backend", "machine", "mean", "std", "n_seeds"]]
    return Report(runs, main, machines)


def _cell(mean: float, std: float) -> str:
    if pd.isna(mean):
        return ""
    return f"{100 * mean:.2f}" + ("" if pd.isna(std) else f" ± {100 * std:.2f}")


def wide(long: pd.DataFrame, columns: list[str]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Rows ``recipe / backend``, columns ``columns`` of the long table: (mean, std, text) frames."""
    long = long.assign(row=long["recipe"] + " / " + long["backend"])
    mean = long.pivot_table(index="row", columns=columns, values="mean", aggfunc="first", sort=True)
    std = long.pivot_table(index="row", columns=columns, values="std", aggfunc="first", dropna=False, sort=True)
    std = std.reindex(index=mean.index, columns=mean.columns)
    if isinstance(mean.columns, pd.MultiIndex):
        mean.columns = std.columns = [" ".join(map(str, c)) for c in mean.columns]
    text = pd.DataFrame({c: [_cell(m, s) for m, s in zip(mean[c], std[c])] for c in mean.columns}, index=mean.index)
    return mean, std, text


def add_means(mean: pd.DataFrame, std: pd.DataFrame, text: pd.DataFrame) -> None:
    """ASDKit's Hmean/Amean columns over a row's cells (only for rows with every cell present)."""
    from asd.evaluation.metrics import hmean

    cells = mean.to_numpy()
    full = mean.notna().all(axis=1).to_numpy()
    mean["hmean"] = [hmean(r) if ok else np.nan for r, ok in zip(cells, full)]
    mean["amean"] = [float(np.mean(r)) if ok else np.nan for r, ok in zip(cells, full)]
    std["hmean"] = std["amean"] = np.nan
    for c in ("hmean", "amean"):
        text[c] = [_cell(v, np.nan) for v in mean[c]]


def markdown(text: pd.DataFrame, index_name: str = "recipe / backend") -> str:
    cols = list(text.columns)
    lines = ["| " + " | ".join([index_name, *cols]) + " |", "|" + "---|" * (len(cols) + 1)]
    lines += ["| " + " | ".join([str(i), *text.loc[i].tolist()]) + " |" for i in text.index]
    return "\n".join(lines) + "\n"


def write_report(rep: Report, out_dir: str | Path) -> tuple[str, list[Path]]:
    """CSV + Markdown + heat maps into ``out_dir``; returns (main Markdown table, files written)."""
    from asd.evaluation.plots import plot_heatmap

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    rep.main.to_csv(out / "official.csv", index=False)
    rep.runs.drop(columns="start_time").to_csv(out / "runs.csv", index=False)
    mean, std, text = wide(rep.main, ["dataset", "split"])
    add_means(mean, std, text)
    seeds = rep.runs.groupby(["recipe", "backend"])["seed"].nunique()
    n = f"{seeds.min()}" if seeds.min() == seeds.max() else f"{seeds.min()}–{seeds.max()}"
    table = markdown(text) + f"\nOfficial score (%), mean ± std over seeds ({n} per row).\n"
    (out / "official.md").write_text(table)
    files += [out / "official.csv", out / "runs.csv", out / "official.md"]
    files.append(plot_heatmap(mean, std, "official score (%), mean (std) over seeds", out / "heatmap.png"))
    for (dataset, split), t in rep.machines.items():
        stem = f"machines_{dataset}_{split}"
        t.to_csv(out / f"{stem}.csv", index=False)
        m, s, tx = wide(t, ["machine"])
        order = [c for c in m.columns if c != "official"] + ["official"]
        m, s, tx = m[order], s[order], tx[order]
        (out / f"{stem}.md").write_text(markdown(tx))
        files += [out / f"{stem}.csv", out / f"{stem}.md",
                  plot_heatmap(m, s, f"{dataset} {split}: official score per machine (%)", out / f"heatmap_{stem}.png")]
    return table, files


def run_report(experiment: str | None, out_dir: str | Path, filter_string: str | None = None) -> tuple[str, str]:
    """``asd report``: build, write and log the report to a ``report`` run; returns (table, run id)."""
    import os

    import mlflow

    from asd import tracking

    experiment = experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or tracking.DEFAULT_EXPERIMENT
    tracking.init_store()
    rep = build_report(search_evaluate_runs(experiment, filter_string))  # before setup: it would create it
    table, files = write_report(rep, out_dir)
    tracking.setup(experiment)
    note = (f"Results table over {len(rep.runs)} evaluate runs of {experiment}: official scores, mean ± std "
            "over seeds (tables/), heat maps (plots/)")
    with tracking.stage_run("report", "report", {"asd.experiment": experiment}, note=note) as run:
        tracking.log_params_once({"report.experiment": experiment, "report.filter": filter_string or ""})
        for f in files:
            mlflow.log_artifact(str(f), "plots" if f.suffix == ".png" else "tables")
        mlflow.log_metrics({"report/evaluate_runs": len(rep.runs), "report/cells": len(rep.main)})
        return table, run.info.run_id
