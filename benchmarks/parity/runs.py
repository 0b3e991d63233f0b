"""One (tool, recipe, seed) run end to end: train, score every test clip, compute the metrics.

Both tools' per-clip scores are turned into metrics by the same code (:func:`results.clip_metrics`,
i.e. asd's ``compute_metrics``), on the same test clips, with the ground truth of asd's index.
Each run also records a cross-check against the tool's own numbers (asd's logged MLflow metrics,
ASDKit's ``test_evaluate.csv``), which must agree up to float rounding.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

import asd_runner
from asdkit_data import ParityError
from asdkit_runner import BACKEND_COLUMNS, Asdkit
from measure import Measured
from results import clip_metrics


@dataclass
class Job:
    """What every run needs; ``index`` is asd's clip index (test clips' ground truth)."""

    out: Path
    data_dir: Path
    clip_seconds: float
    epochs: int | None
    threads: int
    device: str
    env: dict
    tracking_uri: str
    index: pd.DataFrame
    machines: list[str]
    asd_set: tuple[str, ...] = ()  # extra ``--set key=value`` for asd's training only (switch A/Bs)


def backends_of(recipe: str, backends: list[str]) -> list[str]:
    """The AE recipes of both tools score by reconstruction error; the others use ``backends``."""
    return ["recon"] if recipe == "ae" else list(backends)


def cost(ms: list[Measured]) -> dict:
    """Wall and CPU seconds summed over a stage's processes; peak memory: the largest process tree."""
    return dict(wall_s=sum(m.wall_s for m in ms), cpu_s=sum(m.cpu_s for m in ms),
                peak_rss_mb=max(m.peak_rss_mb for m in ms), maxrss_mb=max(m.maxrss_mb for m in ms),
                processes=len(ms), commands=[" ".join(m.cmd) for m in ms])


def _truth(job: Job) -> pd.DataFrame:
    test = job.index[job.index["phase"] == "test"]
    return test[["split", "machine", "file", "section", "domain", "label"]]


def run_asd(job: Job, recipe: str, seed: int, backends: list[str]) -> dict:
    """``asd train`` + ``asd evaluate``; metrics of each backend's scores."""
    import mlflow

    logs = job.out / "logs" / f"asd__{recipe}__seed{seed}"
    cwd = job.out / "asd"
    cwd.mkdir(parents=True, exist_ok=True)
    m_train, train_id = asd_runner.train(recipe, seed, job.data_dir, job.clip_seconds, job.epochs, job.threads,
                                         job.device, job.env, cwd, logs / "train.log", job.asd_set)
    m_eval, ids = asd_runner.evaluate(train_id, backends, job.data_dir, job.env, cwd, logs / "evaluate.log")
    metrics, check, clips = {}, {}, None
    mlflow.set_tracking_uri(job.tracking_uri)
    for b, rid in ids.items():
        sc = asd_runner.scores(rid, job.tracking_uri)
        metrics[b] = clip_metrics(sc)
        logged = mlflow.get_run(rid).data.metrics
        check[b] = max(abs(logged[f"{s}/official"] - metrics[b][f"{s}_official"]) for s in ("dev", "eval"))
        part = sc[["split", "machine", "file", "score"]].rename(columns={"score": b})
        clips = part if clips is None else clips.merge(part, on=["split", "machine", "file"], validate="one_to_one")
    return dict(tool="asd", recipe=recipe, seed=seed, metrics=metrics, train=cost([m_train]), eval=cost([m_eval]),
                run_ids=dict(train=train_id, evaluate=ids), check_max_abs_diff=check, clips=clips,
                asd_commit=asd_runner.commit())


def _check_layout(sc: pd.DataFrame) -> None:
    """ASDKit parses section, domain and label from its file names: they must match asd's index."""
    bad = (sc["section"] != sc["asdkit_section"]) | ((sc["label"] == "normal") != (sc["is_normal"] == 1)) | \
          ((sc["domain"] == "target") != (sc["is_target"] == 1))
    if bad.any():
        r = sc[bad].iloc[0]
        raise ParityError(f"{int(bad.sum())} clips differ between asd's index and ASDKit's names "
                          f"(first: {r['machine']}/{r['file']} -> {r['asdkit_path']})")


def run_asdkit(job: Job, adk: Asdkit, layout: pd.DataFrame, recipe: str, seed: int, backends: list[str]) -> dict:
    """ASDKit train + per-machine extract/score/evaluate; metrics of each mapped score column."""
    logs = job.out / "logs" / f"asdkit__{recipe}__seed{seed}"
    m_train = adk.train(recipe, seed, job.machines, job.clip_seconds, job.epochs, logs)
    m_eval = adk.score_machines(recipe, seed, job.machines, job.clip_seconds, logs)
    sc = adk.scores(recipe, seed, job.machines, layout).rename(columns={"section": "asdkit_section"})
    sc = sc.merge(_truth(job), on=["split", "machine", "file"], how="left", validate="one_to_one")
    _check_layout(sc)
    own = adk.own_metrics(recipe, seed, job.machines)
    metrics, check = {}, {}
    for b in backends:
        col = BACKEND_COLUMNS[b]
        metrics[b] = clip_metrics(sc.assign(score=sc[col]))
        diffs = [abs(own[m][col][k if k != "official" else "official23"] - metrics[b][f"{m}/{k}"])
                 for m in job.machines for k in ("smix_auc", "tmix_auc", "mix_pauc", "official")]
        check[b] = float(np.max(diffs))
    clips = sc[["split", "machine", "file"]].assign(**{b: sc[BACKEND_COLUMNS[b]] for b in backends})
    return dict(tool="ASDKit", recipe=recipe, seed=seed, metrics=metrics, train=cost(m_train), eval=cost(m_eval),
                check_max_abs_diff=check, clips=clips)
