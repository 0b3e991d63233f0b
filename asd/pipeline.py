"""Stages inside MLflow runs: what ``asd <command>`` and the MLproject entry points call.

Each ``run_*`` opens its run (nested under an active parent), logs params once, calls the pure stage
functions (:mod:`asd.data.prepare`, :mod:`asd.training`, :class:`asd.detector.Detector`,
:mod:`asd.evaluation`) and logs metrics and artifacts. Each returns the run id(s) it created.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pandas as pd

from asd import tracking
from asd.config import Config, from_yaml, to_yaml
from asd.config.overrides import apply_overrides, cli_overrides
from asd.config.recipes import load_recipe
from asd.errors import AsdError

log = logging.getLogger(__name__)
SCORE_COLUMNS = ["file", "split", "section", "domain", "label", "attributes", "score", "decision"]


def run_prepare(dataset: str, data_dir: str | Path, split: str = "all", machines: list[str] | None = None,
                mirror: str | None = None, archives: str | None = None, strict: bool = False,
                toy_spec=None, skip_bad: bool = False, wait: bool = True, limits=None) -> str:
    from asd.data.index import read_rows
    from asd.data.prepare import prepare

    mlflow = tracking.setup()
    with tracking.stage_run(f"prepare-{dataset}", "prepare", {"asd.dataset": dataset},
                            note=f"The clip index of {dataset}: counts per machine, split, phase, domain and label") as run:
        tracking.log_params_once({"data.dataset": dataset, "prepare.split": split,
                                  "prepare.machines": ",".join(machines or []) or "all",
                                  **({"prepare.toy": str(toy_spec)} if toy_spec else {})})
        t0 = time.time()
        path = prepare(dataset, data_dir, split=split, machines=machines, mirror=mirror, archives=archives,
                       strict=strict, toy_spec=toy_spec, skip_bad=skip_bad, wait=wait, limits=limits)
        rows = read_rows(path)
        df = rows[rows["bad"] == ""]
        mlflow.log_metrics({"prepare/clips": len(df), "prepare/machines": df["machine"].nunique(),
                            "prepare/bad_clips": len(rows) - len(df), "prepare/seconds": time.time() - t0})
        if len(rows) > len(df):
            mlflow.log_text(rows[rows["bad"] != ""][["path", "machine", "bad"]].to_csv(index=False), "tables/bad_clips.csv")
        counts = df.groupby(["split", "machine", "phase", "domain", "label"]).size().rename("clips").reset_index()
        mlflow.log_text(counts.to_csv(index=False), "tables/clip_counts.csv")
        return run.info.run_id


def _index(cfg: Config, data_dir: str | Path) -> pd.DataFrame:
    from asd.data.index import read_index

    return read_index(data_dir, cfg.data.dataset, cfg.data.machines or None)


def _log_excluded(cfg: Config, data_dir: str | Path) -> None:
    """Count (param ``data.bad_clips``) and list (``tables/bad_clips.csv``) the clips ``prepare --skip-bad`` left out."""
    import mlflow

    from asd.data.index import excluded_clips

    bad = excluded_clips(data_dir, cfg.data.dataset, cfg.data.machines or None)
    tracking.log_params_once({"data.bad_clips": len(bad)})
    if len(bad):
        log.warning("%d clip(s) of %s are left out as bad (first: %s: %s); see tables/bad_clips.csv of this run",
                    len(bad), cfg.data.dataset, bad["path"].iloc[0], bad["bad"].iloc[0])
        mlflow.log_text(bad[["path", "split", "machine", "phase", "label", "bad"]].to_csv(index=False),
                        "tables/bad_clips.csv")


def run_train(cfg: Config | None, data_dir: str | Path, resume_run: str | None = None) -> str:
    """Train ``cfg`` (or continue the run ``resume_run``) and return the train run id."""
    import mlflow

    from asd.training import model_summary, trains

    tracking.setup()
    if resume_run:
        tracking.get_run(resume_run, stage="train")
        cfg = from_yaml(tracking.load_text(resume_run, "config.yaml"), f"config.yaml of run {resume_run}: ")
    index = _index(cfg, data_dir)
    tags = {"asd.recipe": cfg.recipe, "asd.dataset": cfg.data.dataset, "asd.seed": str(cfg.train.seed)}
    # A training-free recipe's run records its config only: no torch to import, no system metrics.
    learns = trains(cfg)
    note = (f"Recipe {cfg.recipe} on {cfg.data.dataset}: per-epoch train/loss, checkpoints/last.pt, config.yaml"
            if learns else f"Recipe {cfg.recipe} (training-free) on {cfg.data.dataset}: config.yaml only")
    with tracking.stage_run(f"train-{cfg.recipe}", "train", tags, run_id=resume_run, system_metrics=learns,
                            note=None if resume_run else note) as run:
        if not resume_run:
            tracking.log_params_once(cfg.flat())
            mlflow.log_text(to_yaml(cfg), "config.yaml")
            _log_excluded(cfg, data_dir)
        t0 = time.time()
        checkpoint = _train(run, cfg, index, resume_run) if learns else None
        seconds = time.time() - t0
        metrics, params = model_summary(cfg, checkpoint)  # parameter counts; a pretrained base's path and hash
        tracking.log_params_once(params)
        mlflow.log_metrics({**metrics, "train/seconds": seconds})
        return run.info.run_id


def _train(run, cfg: Config, index: pd.DataFrame, resume_run: str | None) -> dict:
    """Train (or resume) inside the run; returns the final checkpoint."""
    import mlflow

    from asd.training import train
    from asd.training.runtime import load_checkpoint

    with tracking.artifact_dir(run, "checkpoints") as ckpt_dir:
        resume = None
        if resume_run:
            last = ckpt_dir / "last.pt"
            resume = load_checkpoint(last if last.exists() else tracking.download(resume_run, "checkpoints/last.pt"))
            log.info("resuming %s from epoch %d", resume_run, resume["epoch"])
        result = train(cfg, index, ckpt_dir, on_epoch=lambda epoch, m: mlflow.log_metrics(m, step=epoch),
                       resume=resume)
        # a resumed run that had every epoch done writes nothing new: its checkpoint is the one resumed
        checkpoint = load_checkpoint(result.checkpoint) if result.checkpoint.exists() else resume
    mlflow.log_metric("train/epochs_done", result.epochs)
    return checkpoint


def load_detector(run_id: str | None, checkpoint: str | None):
    """The (unfitted) detector of a train run or a checkpoint file, and the train run id."""
    from asd.detector import Detector
    from asd.training import trains
    from asd.training.runtime import load_checkpoint

    if checkpoint:
        ckpt = load_checkpoint(checkpoint)
        return Detector(Config.from_dict(ckpt["config"], f"config in {checkpoint}: "), ckpt), None
    if not run_id:
        raise AsdError("give --run-id of a train run or --checkpoint PATH")
    tracking.get_run(run_id, stage="train")
    cfg = from_yaml(tracking.load_text(run_id, "config.yaml"), f"config.yaml of run {run_id}: ")
    if not trains(cfg):
        return Detector(cfg), run_id
    return Detector(cfg, load_checkpoint(tracking.download(run_id, "checkpoints/last.pt"))), run_id


def run_evaluate(data_dir: str | Path, run_id: str | None = None, checkpoint: str | None = None,
                 backends: list[str] | None = None, overrides: list[str] | None = None,
                 umap: bool = True, log_model: bool = False) -> list[str]:
    """Evaluate a train run (or checkpoint): one embedding of every clip, then one evaluate run per backend.

    ``log_model``: each evaluate run also logs its fitted detector as the MLflow model ``detector``
    (:func:`asd.serving.publish.log_detector`); nothing else it logs changes.
    """
    tracking.setup()
    det, train_run = load_detector(run_id, checkpoint)
    det.cfg = apply_overrides(det.cfg, overrides)
    t0 = time.time()
    emb = det.embed(_index(det.cfg, data_dir))
    timing = {"evaluate/extract_seconds": time.time() - t0}
    plots: list[Path] = []
    return [_evaluate_backend(det.with_backend(name), emb, train_run, timing, plots, umap, data_dir, log_model)
            for name in backends or [det.cfg.backend.name]]


def _evaluate_backend(det, emb, train_run: str | None, timing: dict, plots: list[Path], umap: bool,
                      data_dir: str | Path, log_model: bool = False) -> str:
    """One evaluate run: fit and score ``det``'s backend on ``emb``, log metrics, scores, tables and plots."""
    import mlflow

    from asd.data.years import get_year
    from asd.evaluation.plots import evaluation_figures, umap_figures
    from asd.evaluation.scoring import evaluate

    cfg, name = det.cfg, det.cfg.backend.name
    tags = {"asd.recipe": cfg.recipe, "asd.dataset": cfg.data.dataset, "asd.backend": name,
            "asd.seed": str(cfg.train.seed), "asd.train_run_id": train_run or ""}
    note = f"{cfg.recipe} scored by {name}: official scores, per-machine AUC/pAUC, scores/, plots/"
    with tracking.stage_run(f"evaluate-{cfg.recipe}-{name}", "evaluate", tags, note=note) as run:
        t1 = time.time()
        result = evaluate(det, emb)
        tracking.log_params_once(cfg.flat())
        mlflow.log_text(to_yaml(cfg), "config.yaml")
        _log_excluded(cfg, data_dir)
        mlflow.log_metrics({**result.metrics, **timing, "evaluate/score_seconds": time.time() - t1,
                            "evaluate/unlabelled_clips": result.unlabelled})
        _log_missing(result.missing)
        with tracking.artifact_dir(run, "scores") as d:
            for machine, g in result.scores.groupby("machine"):
                g[SCORE_COLUMNS].to_csv(d / f"{machine}.csv", index=False)
        with tracking.artifact_dir(run, "tables") as d:
            result.sections.to_csv(d / "sections.csv", index=False)
            pd.Series(result.thresholds, name="threshold").rename_axis("machine").to_csv(d / "thresholds.csv")
        with tracking.artifact_dir(run, "plots") as d:
            if umap and not plots:  # one UMAP per evaluation, copied to every backend's run
                plots += umap_figures(emb, d, title_prefix=f"{cfg.recipe}: ")
            elif umap:
                for p in plots:
                    (d / p.name).write_bytes(p.read_bytes())
            evaluation_figures(result.scores, result.thresholds, get_year(cfg.data.dataset).rule, d,
                               title_prefix=f"{cfg.recipe} / {name}: ")
        m, keys = result.metrics, {"official": "official", "dev": "dev/official", "eval": "eval/official"}
        shown = ", ".join(f"{k} {m[v]:.4f}" for k, v in keys.items() if v in m) or "no official score"
        floored = det.floored
        mlflow.set_tag("asd.floor_machines", ",".join(floored))
        mlflow.log_metric("evaluate/floor_machines", len(floored))
        print(f"{cfg.recipe} / {name}{' + floor' if floored else ''}: {shown}"
              + "".join(f"; {v} not computed: {result.missing[v]}" for v in keys.values() if v in result.missing)
              + (f" (backend.floor={cfg.backend.floor}: fused with the raw_stats floor for "
                 f"{len(floored)}/{len(det.backends_)} machine types)" if floored else ""))
        if log_model:
            from asd.serving.publish import log_detector

            print(f"model: models:/{log_detector(det, emb.rows, run.info.run_id, train_run)}")
        return run.info.run_id


def _log_missing(missing: dict[str, str]) -> None:
    """Official numbers the year's rule cannot compute on these clips: a warning, a table and a tag, not a failure."""
    import mlflow

    if not missing:
        return
    for key, why in missing.items():
        log.warning("%s not computed: %s", key, why)
    mlflow.log_text(pd.DataFrame({"metric": list(missing), "why": list(missing.values())}).to_csv(index=False),
                    "tables/missing_metrics.csv")
    mlflow.set_tag("asd.missing_metrics", ",".join(missing)[:5000])


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
    seeds = list(seeds or [seed])
    configs = {(r, s): load_recipe(r, cli_overrides(dataset, machines, device, s, overrides), shared=True)
               for r in recipes for s in seeds}  # every setting checked before anything runs
    note = f"The whole pipeline on {dataset}: prepare, then train and evaluate {', '.join(recipes)}"
    with tracking.stage_run(f"main-{dataset}", "main", {"asd.dataset": dataset}, note=note) as parent:
        tracking.log_params_once({"main.recipes": ",".join(recipes), "main.seeds": ",".join(map(str, seeds))})
        run_prepare(dataset, data_dir, machines=machines, toy_spec=toy_spec)
        per_seed: dict[str, list[float]] = {}
        for (recipe, _), cfg in configs.items():
            for eval_id in run_evaluate(data_dir, run_id=run_train(cfg, data_dir), umap=umap):
                metrics = mlflow.get_run(eval_id).data.metrics
                for key in ("official", "dev/official", "eval/official"):
                    if key in metrics:
                        per_seed.setdefault(f"{recipe}/{key}", []).append(metrics[key])
        summary = {k: float(sum(v) / len(v)) for k, v in per_seed.items()}
        summary.update({f"{k}_std": float(pd.Series(v).std()) for k, v in per_seed.items() if len(v) > 1})
        mlflow.log_metrics(summary)
        return parent.info.run_id
