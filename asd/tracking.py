"""MLflow conventions: store, experiments, nested runs, params logged once, artifact helpers."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlparse

DEFAULT_URI = "sqlite:///mlflow.db"
DEFAULT_EXPERIMENT = "asd"


def setup(experiment: str | None = None):
    """Use ``$MLFLOW_TRACKING_URI`` or the local SQLite store; select the experiment; return mlflow.

    Inside ``mlflow run`` the experiment comes from ``$MLFLOW_EXPERIMENT_ID``; otherwise from
    ``experiment``, ``$MLFLOW_EXPERIMENT_NAME`` or ``asd``.
    """
    import mlflow

    if not os.environ.get("MLFLOW_TRACKING_URI"):
        mlflow.set_tracking_uri(DEFAULT_URI)
    if experiment:
        mlflow.set_experiment(experiment)
    elif not os.environ.get("MLFLOW_EXPERIMENT_ID") and not os.environ.get("MLFLOW_RUN_ID"):
        mlflow.set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME", DEFAULT_EXPERIMENT))
    return mlflow


@contextlib.contextmanager
def stage_run(name: str, stage: str, tags: dict | None = None, run_id: str | None = None, system_metrics=False):
    """Start (or resume ``run_id``) a run for one stage; nested when a run is already active.

    Under ``mlflow run`` the launcher's run (``$MLFLOW_RUN_ID``) is picked up as the run itself when no
    run is active, so an entry point never creates a stray second top-level run.
    """
    import mlflow

    active = mlflow.active_run()
    kwargs = dict(log_system_metrics=system_metrics)
    if run_id:
        run = mlflow.start_run(run_id=run_id, nested=active is not None, **kwargs)
    elif active is None and os.environ.get("MLFLOW_RUN_ID"):
        run = mlflow.start_run(**kwargs)  # the run `mlflow run` created for this entry point
        os.environ.pop("MLFLOW_RUN_ID", None)  # used once: a second stage must not reopen it
    else:
        run = mlflow.start_run(run_name=name, nested=active is not None, **kwargs)
    try:
        mlflow.set_tags({"asd.stage": stage, **(tags or {})})
        yield run
    except KeyboardInterrupt:
        mlflow.end_run("KILLED")
        raise
    except Exception:
        mlflow.end_run("FAILED")
        raise
    else:
        mlflow.end_run()


def log_params_once(params: dict[str, str]) -> None:
    """Log params that the run does not have yet (MLflow params are write-once)."""
    import mlflow

    run = mlflow.active_run()
    existing = mlflow.get_run(run.info.run_id).data.params
    new = {k: str(v)[:6000] for k, v in params.items() if k not in existing}
    clash = {k: (existing[k], str(v)) for k, v in params.items() if k in existing and existing[k] != str(v)}
    if clash:
        k, (old, val) = next(iter(clash.items()))
        raise ValueError(f"param {k!r} is already {old!r} in run {run.info.run_id}; cannot change it to {val!r}")
    items = list(new.items())
    for i in range(0, len(items), 100):  # log_params takes at most 100 per call
        mlflow.log_params(dict(items[i : i + 100]))


def local_artifact_dir(run) -> Path | None:
    """The run's artifact folder when the artifact store is a local path, else None."""
    uri = run.info.artifact_uri
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return Path(unquote(parsed.path))
    return None


@contextlib.contextmanager
def artifact_dir(run, sub: str):
    """A folder whose files end up under the run's artifact path ``sub``.

    Local stores get the real folder (files are visible at once, e.g. checkpoints for ``--resume``);
    remote stores get a temporary folder uploaded on exit.
    """
    import mlflow

    local = local_artifact_dir(run)
    if local is not None:
        path = local / sub
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory() as tmp:
        yield Path(tmp)
        mlflow.log_artifacts(tmp, sub)


def download(run_id: str, path: str, dst: str | None = None) -> Path:
    import mlflow

    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=dst))
