"""``asd register`` and ``asd search --best --register``: a registered model version from an evaluate run.

``asd register --run-id EVAL_RUN`` registers the ``detector`` model the evaluate run logged
(``asd evaluate --log-model``). An evaluate run without one is refitted, once: its config
(``config.yaml``, with the evaluate-time overrides and backend) and its train run's checkpoint
rebuild the frontend, the backends are fitted again on the training clips of the clip index in
``--data-dir``, and the result is checked against the run's logged thresholds
(``tables/thresholds.csv``), so a changed or different data folder is an error instead of a
silently different detector. The refitted model is then logged to that evaluate run, and later
registrations reuse it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from asd import tracking
from asd.errors import RunError
from asd.serving.publish import log_detector, logged_detector, register

THRESHOLD_RTOL = 1e-4  # embeddings of the same clips in other batches differ in the last float digits


def run_register(eval_run_id: str, name: str, alias: str | None, data_dir: str | Path) -> tuple[str, str]:
    """Register the detector of the evaluate run ``eval_run_id``; returns ``(version, model URI)``."""
    tracking.setup()
    run = tracking.get_run(eval_run_id, stage="evaluate")
    model_id = logged_detector(eval_run_id, run.info.experiment_id) or refit(run, data_dir)
    version = register(model_id, name, alias, run)
    return version, f"models:/{name}@{alias}" if alias else f"models:/{name}/{version}"


def refit(run, data_dir: str | Path) -> str:
    """Fit the evaluate run's detector again from its train run and config, check it, log it; the model id."""
    from asd.config import from_yaml
    from asd.data.index import read_index
    from asd.detector import Detector
    from asd.pipeline import load_detector

    rid = run.info.run_id
    train_run = run.data.tags.get("asd.train_run_id")
    if not train_run:
        raise RunError(f"evaluate run {rid} was made from a checkpoint file, not a train run, so it cannot be "
                       "refitted; run `asd evaluate --checkpoint FILE --log-model` and register that run")
    cfg = from_yaml(tracking.load_text(rid, "config.yaml"))
    frontend, _ = load_detector(train_run, None)
    logged = pd.read_csv(tracking.download(rid, "tables/thresholds.csv")).set_index("machine")["threshold"]
    index = read_index(data_dir, cfg.data.dataset, cfg.data.machines or None)
    rows = index[index["machine"].isin(logged.index) & index["phase"].isin(["train", "test"])]
    det = Detector(cfg, frontend.checkpoint).fit(rows[rows["phase"] == "train"])
    _check_thresholds(det.thresholds, logged.to_dict(), rid, data_dir)
    return log_detector(det, rows, rid, train_run)


def _check_thresholds(fitted: dict[str, float], logged: dict[str, float], rid: str, data_dir) -> None:
    if sorted(fitted) != sorted(logged):
        raise RunError(f"refitting evaluate run {rid} from {data_dir} gave machines {', '.join(sorted(fitted))}, "
                       f"the run has {', '.join(sorted(logged))}; point --data-dir at the data the run used")
    for m, t in fitted.items():
        if not np.isclose(t, logged[m], rtol=THRESHOLD_RTOL, atol=0):
            raise RunError(f"refitting evaluate run {rid} from {data_dir}: threshold of {m!r} is {t:.6g}, the "
                           f"run logged {logged[m]:.6g}, so the training clips differ from the run's; point "
                           "--data-dir at the data the run used, or log the model at evaluation "
                           "(`asd evaluate --log-model`)")


def register_best(settings, name: str, alias: str | None) -> tuple[str, str, str, str]:
    """Retrain the best trial's config (its seed), evaluate it with its backend, log and register the detector.

    Returns ``(train run, evaluate run, version, model URI)``. The data folder is the study's.
    """
    from asd.config.recipes import load_recipe
    from asd.pipeline import run_evaluate, run_train
    from asd.search.driver import best_trial

    study, best, _, _, recipe, overrides = best_trial(settings)
    a = study.user_attrs
    cfg = load_recipe(recipe, {**overrides, "data.dataset": a["asd.dataset"]})
    train_run = run_train(cfg, a["asd.data_dir"])
    eval_run = run_evaluate(a["asd.data_dir"], run_id=train_run, umap=False, log_model=True)[0]
    tracking.client().set_tag(eval_run, "asd.search_trial", f"{settings.name}/{best.number}")
    version, uri = run_register(eval_run, name, alias, a["asd.data_dir"])
    return train_run, eval_run, version, uri
