"""The one MLflow layer: store, experiments, nested stage runs, params logged once, metrics, artifacts.

Fluent calls (the active run) serve the stages of one process; calls that name their run id serve the
search, whose workers write to runs other processes created. Both log params through
:func:`log_params_once` (write-once, at most 100 per call) and metrics in batches.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

from asd.errors import AsdError, RunError

DEFAULT_URI = "sqlite:///mlflow.db"
DEFAULT_EXPERIMENT = "asd"
# MLflow 3.17 opens an experiment in its GenAI view unless it has this tag; asd's runs are models.
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
_launcher: dict[str, str | None] = {}


def take_launcher_run() -> str | None:
    """The run ``mlflow run`` opened for this entry point (``$MLFLOW_RUN_ID``), handed out once.

    The first stage (or search parent) of the process becomes that run; every later one is a new
    run, so an entry point never reopens it or leaves a stray second top-level run.
    """
    if "id" not in _launcher:
        _launcher["id"] = os.environ.pop("MLFLOW_RUN_ID", None)
        return _launcher["id"]
    return None


@contextlib.contextmanager
def _first_use():
    """Serialise the first use of the store: creating a fresh SQLite store's schema (and the default
    experiment) from two processes at once fails in MLflow's migrations. A local SQLite file is
    guarded by a lock next to it; any store also gets a few retries (a database server's race)."""
    import mlflow

    from asd.files import locked

    uri = mlflow.get_tracking_uri()
    db = uri[len("sqlite:///"):] if uri.startswith("sqlite:///") else None
    guard = locked(f"{db}.lock", f"MLflow store {db}") if db and db != ":memory:" else contextlib.nullcontext()
    with guard:
        yield


def _retry(fn, attempts: int = 5):
    """``fn()``, retried after a short pause when a concurrent first use of the store made it fail."""
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - sqlalchemy, alembic and MLflow errors of the schema race alike
            if attempt == attempts - 1 or not _is_race(e):
                raise
            time.sleep(0.5 * (attempt + 1))


def _is_race(e: Exception) -> bool:
    text = f"{type(e).__module__}.{type(e).__name__}: {e}".lower()
    return any(w in text for w in ("already exists", "locked", "unique constraint", "integrityerror",
                                   "alembic", "migration", "duplicate"))


def init_store() -> None:
    """Open ``$MLFLOW_TRACKING_URI`` (or the local SQLite store), creating its schema safely if it is new."""
    import mlflow

    if not os.environ.get("MLFLOW_TRACKING_URI"):
        mlflow.set_tracking_uri(DEFAULT_URI)
    with _first_use():
        _retry(lambda: client().search_experiments(max_results=1))


def setup(experiment: str | None = None):
    """Use ``$MLFLOW_TRACKING_URI`` or the local SQLite store; select the experiment; return mlflow.

    Inside ``mlflow run`` the experiment comes from ``$MLFLOW_EXPERIMENT_ID``; otherwise from
    ``experiment``, ``$MLFLOW_EXPERIMENT_NAME`` or ``asd``. The experiment is tagged as a model
    experiment so that the MLflow UI opens on its runs. Several commands may start at once on a
    fresh store (:func:`init_store`).
    """
    import mlflow

    init_store()
    with _first_use():
        if experiment:
            exp_id = _retry(lambda: mlflow.set_experiment(experiment).experiment_id)
        elif not os.environ.get("MLFLOW_EXPERIMENT_ID") and not os.environ.get("MLFLOW_RUN_ID"):
            name = os.environ.get("MLFLOW_EXPERIMENT_NAME", DEFAULT_EXPERIMENT)
            exp_id = _retry(lambda: mlflow.set_experiment(name).experiment_id)
        else:
            exp_id = os.environ.get("MLFLOW_EXPERIMENT_ID")
        if exp_id:
            _retry(lambda: mark_experiment(exp_id))
    return mlflow


def mark_experiment(exp_id: str) -> None:
    c = client()
    if c.get_experiment(exp_id).tags.get(EXPERIMENT_KIND[0]) != EXPERIMENT_KIND[1]:
        c.set_experiment_tag(exp_id, *EXPERIMENT_KIND)


def client():
    from mlflow.tracking import MlflowClient

    return MlflowClient()


def experiment_id(name: str | None = None) -> str:
    """``$MLFLOW_EXPERIMENT_ID`` (inside ``mlflow run``), else the experiment ``name`` (created if new)."""
    import mlflow

    if os.environ.get("MLFLOW_EXPERIMENT_ID") and not name:
        return os.environ["MLFLOW_EXPERIMENT_ID"]
    name = name or os.environ.get("MLFLOW_EXPERIMENT_NAME", DEFAULT_EXPERIMENT)
    exp = mlflow.get_experiment_by_name(name)
    if exp is None:
        try:
            exp_id = mlflow.create_experiment(name)
        except Exception:  # noqa: BLE001 - another worker created it first
            exp_id = mlflow.get_experiment_by_name(name).experiment_id
    else:
        exp_id = exp.experiment_id
    mark_experiment(exp_id)
    return exp_id


@contextlib.contextmanager
def stage_run(name: str, stage: str, tags: dict | None = None, run_id: str | None = None, system_metrics=False,
              note: str | None = None):
    """Start (or resume ``run_id``) a run for one stage; nested when a run is already active.

    ``note`` becomes the run's description in the UI (``mlflow.note.content``).
    """
    import mlflow

    active = mlflow.active_run()
    kwargs = dict(log_system_metrics=system_metrics)
    launcher = take_launcher_run() if active is None and not run_id else None
    if run_id:
        run = mlflow.start_run(run_id=run_id, nested=active is not None, **kwargs)
    elif launcher:
        run = mlflow.start_run(run_id=launcher, **kwargs)
        mlflow.set_tag("mlflow.runName", name)
    else:
        run = mlflow.start_run(run_name=name, nested=active is not None, **kwargs)
    try:
        mlflow.set_tags({"asd.stage": stage, **(tags or {}), **({"mlflow.note.content": note} if note else {})})
        yield run
    except KeyboardInterrupt:
        mlflow.end_run("KILLED")
        raise
    except Exception:
        mlflow.end_run("FAILED")
        raise
    else:
        mlflow.end_run()


def log_params_once(params: dict, run_id: str | None = None) -> None:
    """Log the params that the run (``run_id``, else the active one) does not have yet.

    MLflow params are write-once: a key already logged with another value is an error.
    """
    import mlflow
    from mlflow.entities import Param

    rid = run_id or mlflow.active_run().info.run_id
    existing = client().get_run(rid).data.params
    clash = {k: (existing[k], str(v)) for k, v in params.items() if k in existing and existing[k] != str(v)[:6000]}
    if clash:
        k, (old, val) = next(iter(clash.items()))
        raise AsdError(f"param {k!r} is already {old!r} in run {rid}; cannot change it to {val!r}")
    items = [Param(k, str(v)[:6000]) for k, v in params.items() if k not in existing]
    for i in range(0, len(items), 100):  # log_batch takes at most 100 params per call
        client().log_batch(rid, params=items[i:i + 100])


def log_metrics(run_id: str, metrics: dict[str, float], step: int = 0) -> None:
    """Metrics of the run ``run_id`` in batches (``None`` values are skipped)."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    items = [Metric(k, float(v), now, step) for k, v in metrics.items() if v is not None]
    for i in range(0, len(items), 1000):
        client().log_batch(run_id, metrics=items[i:i + 1000])


def get_run(run_id: str, stage: str | None = None):
    """The run ``run_id``; an unknown id (or, with ``stage``, a run of another stage) is a :class:`RunError`."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        run = client().get_run(run_id)
    except MlflowException:
        raise RunError(f"no MLflow run {run_id!r} in {mlflow.get_tracking_uri()}; copy the `run_id: ...` line a "
                       "command printed, or set MLFLOW_TRACKING_URI to the store that has it") from None
    if stage and run.data.tags.get("asd.stage") != stage:
        kind = run.data.tags.get("asd.stage") or "non-asd"
        article = "an" if stage[0] in "aeiou" else "a"
        raise RunError(f"run {run_id} is a {kind} run; give the id of {article} {stage} run "
                       f"(the last line `run_id: ...` of `asd {stage}`)")
    return run


def load_text(run_id: str, path: str) -> str:
    """The text artifact ``path`` of run ``run_id`` (a missing one is a :class:`RunError`)."""
    import mlflow

    get_run(run_id)
    try:
        return mlflow.artifacts.load_text(f"runs:/{run_id}/{path}")
    except Exception:  # noqa: BLE001 - MlflowException or OSError, depending on the artifact store
        raise RunError(f"run {run_id} has no artifact {path!r}; was it made by `asd train`?") from None


def download(run_id: str, path: str, dst: str | None = None) -> Path:
    """Artifact ``path`` of run ``run_id`` as a local path (a missing one is a :class:`RunError`)."""
    import mlflow

    try:
        return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=dst))
    except Exception:  # noqa: BLE001
        raise RunError(f"run {run_id} has no artifact {path!r} (was the run interrupted before its first "
                       "epoch ended?)") from None


def local_artifact_dir(run) -> Path | None:
    """The run's artifact folder when the artifact store is a local path, else None."""
    parsed = urlparse(run.info.artifact_uri)
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
