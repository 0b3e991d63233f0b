"""Logging a fitted detector as an MLflow model of an evaluate run, and registering it.

The model is an MLflow 3 LoggedModel named ``detector`` whose source run is the evaluate run: the
bundle (:mod:`asd.serving.bundle`) as its artifact, the pyfunc code of :mod:`asd.serving.pyfunc`
(logged from code, nothing pickled), a signature, an input example (one second of a training clip,
base64) and pip requirements that name ``asd`` itself at this version.
"""

from __future__ import annotations

import base64
import io
import tempfile
from pathlib import Path

import pandas as pd

from asd import __version__, tracking
from asd.detector import Detector
from asd.serving.bundle import ServingInfo, serving_info, write_bundle

MODEL_NAME = "detector"
ENTRY = Path(__file__).with_name("entry.py")
# Installed packages the model needs at load time, pinned to this environment's versions.
REQUIREMENTS = ("torch", "numpy", "pandas", "scikit-learn", "scipy", "soundfile", "pyyaml")


def pip_requirements() -> list[str]:
    """``asd==<this version>`` and its runtime dependencies at the installed versions.

    ``asd`` is not on PyPI (an unrelated package has that name there): serve with
    ``--env-manager local`` in an environment where this ``asd`` is installed.
    """
    from importlib.metadata import PackageNotFoundError, version

    out = [f"asd=={__version__}"]
    for name in REQUIREMENTS:
        try:
            out.append(f"{name}=={version(name).split('+')[0]}")  # torch 2.13.0+cpu -> 2.13.0: any build
        except PackageNotFoundError:
            out.append(name)
    return out


def input_example(info: ServingInfo, rows: pd.DataFrame) -> pd.DataFrame:
    """One request row: the first second of the first training clip of the first machine, base64."""
    import soundfile as sf

    from asd.data.audio import read_wav

    machine = info.machines[0]
    row = rows[(rows["machine"] == machine) & (rows["phase"] == "train")].iloc[0]
    wave = read_wav(row["abspath"], info.sample_rate, info.channel)[: info.sample_rate]
    buf = io.BytesIO()
    sf.write(buf, wave, info.sample_rate, format="WAV", subtype="PCM_16")
    example = {"machine": [machine], "audio": [base64.b64encode(buf.getvalue()).decode("ascii")]}
    if len(info.sections[machine]) > 1:
        example = {"machine": [machine], "section": [info.sections[machine][0]], "audio": example["audio"]}
    return pd.DataFrame(example)


def log_detector(det: Detector, rows: pd.DataFrame, run_id: str, train_run_id: str | None = None) -> str:
    """Log the fitted ``det`` as the model ``detector`` of the evaluate run ``run_id``; returns its model id.

    ``rows``: the index rows the detector was fitted and evaluated on (sections, the input example).
    Inside the evaluate run (``asd evaluate --log-model``) MLflow links the model to the active run;
    for a finished run (``asd register`` refitting) the LoggedModel is created with that run as its
    source and added to the run's outputs, without reopening the run.
    """
    import mlflow
    from mlflow.entities import LoggedModelOutput

    from asd.serving.pyfunc import ARTIFACT, signature

    runs = {"evaluate_run_id": run_id, **({"train_run_id": train_run_id} if train_run_id else {})}
    info = serving_info(det, rows, runs)
    tags = {"asd.recipe": info.recipe, "asd.backend": info.backend, "asd.dataset": info.dataset,
            "asd.machines": ",".join(info.machines), "asd.evaluate_run_id": run_id,
            "asd.train_run_id": train_run_id or "", "asd.version": __version__}
    with tempfile.TemporaryDirectory(prefix="asd-model-") as tmp:
        folder = write_bundle(det, info, Path(tmp) / ARTIFACT)
        kwargs = dict(name=MODEL_NAME, python_model=str(ENTRY), artifacts={ARTIFACT: str(folder)},
                      signature=signature(), input_example=input_example(info, rows),
                      pip_requirements=pip_requirements(), tags=tags)
        active = mlflow.active_run()
        if active is not None and active.info.run_id == run_id:
            return mlflow.pyfunc.log_model(**kwargs).model_id
        run = tracking.get_run(run_id)
        model = mlflow.initialize_logged_model(name=MODEL_NAME, source_run_id=run_id, tags=tags,
                                               params=run.data.params, experiment_id=run.info.experiment_id)
        mlflow.pyfunc.log_model(model_id=model.model_id, **kwargs)
    tracking.client().log_outputs(run_id, [LoggedModelOutput(model.model_id, step=0)])
    return model.model_id


def logged_detector(run_id: str, experiment_id: str) -> str | None:
    """The id of the newest ready ``detector`` model logged from the run ``run_id``, if any."""
    import mlflow

    models = mlflow.search_logged_models(experiment_ids=[experiment_id], output_format="list",
                                         filter_string=f"source_run_id = '{run_id}' AND name = '{MODEL_NAME}'")
    ready = [m for m in models if str(m.status).endswith("READY")]
    return max(ready, key=lambda m: m.creation_timestamp).model_id if ready else None


def register(model_id: str, name: str, alias: str | None, run) -> str:
    """Register the logged model ``model_id`` as a version of ``name`` (created if new); returns the version.

    A model already registered under ``name`` is not registered twice: its version is reused.
    ``alias`` (e.g. ``champion``) is then pointed at that version.
    """
    from mlflow.exceptions import MlflowException

    c = tracking.client()
    keep = ("asd.recipe", "asd.backend", "asd.dataset", "asd.seed", "asd.train_run_id", "asd.search_trial")
    tags = {k: run.data.tags[k] for k in keep if run.data.tags.get(k)} | {"asd.evaluate_run_id": run.info.run_id}
    try:
        c.get_registered_model(name)
    except MlflowException:
        c.create_registered_model(name, description="An asd anomalous-sound detector: send clips, get "
                                  "score, decision and threshold (see the version's description).")
    same = [v for v in c.search_model_versions(f"name = '{name}'") if v.source == f"models:/{model_id}"]
    if same:
        version = min(same, key=lambda v: int(v.version)).version
    else:
        version = c.create_model_version(name, f"models:/{model_id}", run_id=run.info.run_id, tags=tags,
                                          description=_describe(run), model_id=model_id).version
    if alias:
        c.set_registered_model_alias(name, alias, version)
    return str(version)


def _describe(run) -> str:
    t, m = run.data.tags, run.data.metrics
    score = "".join(f", {k} {m[k]:.4f}" for k in ("official", "dev/official", "eval/official") if k in m)
    return (f"{t.get('asd.recipe', '?')} scored by {t.get('asd.backend', '?')} on {t.get('asd.dataset', '?')}"
            f"{score} (evaluate run {run.info.run_id})")
