"""Stages inside MLflow runs: what ``asd <command>`` and the MLproject entry points call.

Each ``run_*`` opens its run (nested under an active parent), logs params once, calls the pure stage
functions (asd.data.prepare, asd.train, asd.extract, asd.evaluate) and logs metrics and artifacts.
Each returns the run id(s) it created.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pandas as pd

from asd import tracking
from asd.config import Config, apply_overrides, from_yaml, load_recipe, to_yaml

log = logging.getLogger(__name__)


def run_prepare(dataset: str, data_dir: str | Path, split: str = "all", machines: list[str] | None = None,
                mirror: str | None = None, archives: str | None = None, strict: bool = False,
                toy_spec=None) -> str:
    from asd.data.prepare import prepare

    mlflow = tracking.setup()
    with tracking.stage_run(f"prepare-{dataset}", "prepare", {"asd.dataset": dataset}) as run:
        tracking.log_params_once({"data.dataset": dataset, "prepare.split": split,
                                  "prepare.machines": ",".join(machines or []) or "all",
                                  **({"prepare.toy": str(toy_spec)} if toy_spec else {})})
        t0 = time.time()
        path = prepare(dataset, data_dir, split=split, machines=machines, mirror=mirror, archives=archives,
                       strict=strict, toy_spec=toy_spec)
        df = pd.read_csv(path)
        mlflow.log_metrics({"prepare/clips": len(df), "prepare/machines": df["machine"].nunique(),
                            "prepare/seconds": time.time() - t0})
        counts = df.groupby(["split", "machine", "phase", "domain", "label"]).size().rename("clips").reset_index()
        mlflow.log_text(counts.to_csv(index=False), "tables/clip_counts.csv")
        return run.info.run_id


def _machines_of(cfg: Config) -> list[str] | None:
    return cfg.data.machines or None


def run_train(cfg: Config, data_dir: str | Path, resume_run: str | None = None) -> str:
    """Train ``cfg`` (or continue the run ``resume_run``) and return the train run id."""
    import mlflow

    from asd.data.index import read_index
    from asd.models import family_of

    tracking.setup()
    resume = None
    if resume_run:
        cfg = from_yaml(mlflow.artifacts.load_text(f"runs:/{resume_run}/config.yaml"))
    index = read_index(data_dir, cfg.data.dataset, _machines_of(cfg))
    tags = {"asd.recipe": cfg.recipe, "asd.dataset": cfg.data.dataset, "asd.seed": str(cfg.train.seed)}
    # A training-free recipe's run records its config only: no torch to import, no system metrics.
    learns = family_of(cfg.model.name) != "none"
    with tracking.stage_run(f"train-{cfg.recipe}", "train", tags, run_id=resume_run, system_metrics=learns) as run:
        if not resume_run:
            tracking.log_params_once(cfg.flat())
            mlflow.log_text(to_yaml(cfg), "config.yaml")
        t0 = time.time()

        def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
            mlflow.log_metrics(metrics, step=epoch)

        if learns:
            from asd.train import load_checkpoint, train

            with tracking.artifact_dir(run, "checkpoints") as ckpt_dir:
                if resume_run:
                    last = ckpt_dir / "last.pt"
                    if not last.exists():
                        last = tracking.download(resume_run, "checkpoints/last.pt")
                    resume = load_checkpoint(last)
                    log.info("resuming %s from epoch %d", resume_run, resume["epoch"])
                result = train(cfg, index, ckpt_dir, on_epoch=on_epoch, resume=resume)
            mlflow.log_metric("train/epochs_done", result.epochs)
        mlflow.log_metric("train/seconds", time.time() - t0)
        return run.info.run_id


def load_train_run(run_id: str | None, checkpoint: str | None) -> tuple[Config, dict | None, str | None]:
    """The config and checkpoint of a train run (or of a checkpoint file)."""
    import mlflow

    from asd.models import family_of
    from asd.train import load_checkpoint

    if checkpoint:
        ckpt = load_checkpoint(checkpoint)
        return Config.from_dict(ckpt["config"]), ckpt, None
    cfg = from_yaml(mlflow.artifacts.load_text(f"runs:/{run_id}/config.yaml"))
    if family_of(cfg.model.name) == "none":
        return cfg, None, run_id
    return cfg, load_checkpoint(tracking.download(run_id, "checkpoints/last.pt")), run_id


def run_evaluate(data_dir: str | Path, run_id: str | None = None, checkpoint: str | None = None,
                 backends: list[str] | None = None, overrides: list[str] | None = None,
                 umap: bool = True) -> list[str]:
    """Evaluate a train run (or checkpoint): one extraction, then one evaluate run per backend."""
    import mlflow

    from asd.data.index import read_index
    from asd.data.years import get_year
    from asd.evaluate import evaluate_embeddings
    from asd.extract import extract
    from asd.plots import evaluation_figures

    tracking.setup()
    if not run_id and not checkpoint:
        raise ValueError("give --run-id of a train run or --checkpoint PATH")
    cfg, ckpt, train_run = load_train_run(run_id, checkpoint)
    cfg = apply_overrides(cfg, overrides)
    index = read_index(data_dir, cfg.data.dataset, _machines_of(cfg))
    t0 = time.time()
    emb = extract(cfg, index, ckpt)
    extract_seconds = time.time() - t0
    plots = None
    run_ids = []
    for name in backends or [cfg.backend.name]:
        bcfg = apply_overrides(cfg, {"backend.name": name})
        tags = {"asd.recipe": cfg.recipe, "asd.dataset": cfg.data.dataset, "asd.backend": name,
                "asd.seed": str(cfg.train.seed), "asd.train_run_id": train_run or ""}
        with tracking.stage_run(f"evaluate-{cfg.recipe}-{name}", "evaluate", tags) as run:
            t1 = time.time()
            result = evaluate_embeddings(emb, bcfg.backend, cfg.data.dataset)
            tracking.log_params_once(bcfg.flat())
            mlflow.log_text(to_yaml(bcfg), "config.yaml")
            mlflow.log_metrics({**result.metrics, "evaluate/extract_seconds": extract_seconds,
                                "evaluate/score_seconds": time.time() - t1,
                                "evaluate/unlabelled_clips": result.unlabelled})
            with tracking.artifact_dir(run, "scores") as d:
                for machine, g in result.scores.groupby("machine"):
                    cols = ["file", "split", "section", "domain", "label", "attributes", "score", "decision"]
                    g[cols].to_csv(d / f"{machine}.csv", index=False)
            with tracking.artifact_dir(run, "tables") as d:
                result.sections.to_csv(d / "sections.csv", index=False)
                pd.Series(result.thresholds, name="threshold").rename_axis("machine").to_csv(d / "thresholds.csv")
            with tracking.artifact_dir(run, "plots") as d:
                if umap and plots is None:
                    from asd.plots import umap_figures

                    plots = umap_figures(emb, d, title_prefix=f"{cfg.recipe}: ")
                elif plots:
                    for p in plots:
                        (d / p.name).write_bytes(p.read_bytes())
                evaluation_figures(result.scores, result.thresholds, get_year(cfg.data.dataset).rule, d,
                                   title_prefix=f"{cfg.recipe} / {name}: ")
            if "official" in result.metrics:
                print(f"{cfg.recipe} / {name}: official {result.metrics['official']:.4f}"
                      + "".join(f", {s} {result.metrics[f'{s}/official']:.4f}" for s in ("dev", "eval")
                                if f"{s}/official" in result.metrics))
            run_ids.append(run.info.run_id)
    return run_ids


def run_main(dataset: str = "toy", recipes: list[str] | None = None, machines: list[str] | None = None,
             overrides: list[str] | None = None, data_dir: str | Path = "data", device: str = "auto",
             seed: int = 0, umap: bool = True, toy_spec: str | None = None, seeds: list[int] | None = None) -> str:
    """prepare -> (train -> evaluate) per recipe and seed, as nested runs of one parent; returns the parent id.

    ``seeds`` (default ``[seed]``): one train run per seed, each tagged ``asd.seed``; the parent logs
    ``<recipe>/<score>`` as the mean over seeds and ``<recipe>/<score>_std`` where there are several.
    """
    import mlflow

    tracking.setup()
    recipes = recipes or ["ae", "raw_spec"]
    with tracking.stage_run(f"main-{dataset}", "main", {"asd.dataset": dataset}) as parent:
        seeds = list(seeds or [seed])
        tracking.log_params_once({"main.recipes": ",".join(recipes), "main.seeds": ",".join(map(str, seeds))})
        run_prepare(dataset, data_dir, machines=machines, toy_spec=toy_spec)
        summary = {}
        for recipe in recipes:
            per_seed: dict[str, list[float]] = {}
            for s in seeds:
                sets = [f"data.dataset={dataset}", f"train.device={device}", f"train.seed={s}", *(overrides or [])]
                if machines:
                    sets.append(f"data.machines={','.join(machines)}")
                cfg = load_recipe(recipe, sets)
                train_id = run_train(cfg, data_dir)
                for eval_id in run_evaluate(data_dir, run_id=train_id, umap=umap):
                    metrics = mlflow.get_run(eval_id).data.metrics
                    for key in ("official", "dev/official", "eval/official"):
                        if key in metrics:
                            per_seed.setdefault(key, []).append(metrics[key])
            for key, vals in per_seed.items():
                summary[f"{recipe}/{key}"] = float(sum(vals) / len(vals))
                if len(vals) > 1:
                    summary[f"{recipe}/{key}_std"] = float(pd.Series(vals).std())
        mlflow.log_metrics(summary)
        return parent.info.run_id
