"""The asd side: its command line only (``asd prepare``, ``asd train``, ``asd evaluate``).

Every command runs as ``<this python> -m asd.cli`` (the ``asd`` entry point), so the asd on this
interpreter's path is the one measured (``PYTHONPATH=$PWD`` in a worktree). Runs go to the MLflow
store named by ``MLFLOW_TRACKING_URI`` in ``env`` (the harness gives each output folder its own).
Per-clip scores are read back from the evaluate runs' ``scores/<machine>.csv`` artifacts.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

from asdkit_data import ParityError
from measure import Measured, run_measured, tail

ASD = [sys.executable, "-m", "asd.cli"]


def _run_ids(m: Measured) -> list[str]:
    """The ``run_id: <ID>`` lines a command printed (asd prints one per run it created)."""
    ids = [ln.split()[-1] for ln in Path(m.log).read_text().splitlines() if ln.startswith("run_id: ")]
    if m.rc != 0 or not ids:
        raise ParityError(f"`{' '.join(m.cmd)}` failed (exit {m.rc}); end of {m.log}:\n{tail(m.log)}")
    return ids


def prepare(data_dir: Path, toy: str, env: dict, cwd: Path, log: Path) -> dict:
    """``asd prepare --dataset toy``; returns the toy spec it wrote (``toy_spec.json``)."""
    cmd = [*ASD, "prepare", "--dataset", "toy", "--data-dir", str(data_dir)] + (["--toy", toy] if toy else [])
    _run_ids(run_measured(cmd, cwd, env, log))
    return json.loads((data_dir / "toy" / "toy_spec.json").read_text())


def commit() -> str:
    """The commit of the asd being measured (``+dirty`` with uncommitted changes), for the run's record."""
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def train(recipe: str, seed: int, data_dir: Path, clip_seconds: float, epochs: int | None, threads: int,
          device: str, env: dict, cwd: Path, log: Path, extra: tuple[str, ...] = ()) -> tuple[Measured, str]:
    """One ``asd train`` (all machines; the AE trains one model per machine inside it)."""
    cmd = [*ASD, "train", "--dataset", "toy", "--recipe", recipe, "--seed", str(seed), "--device", device,
           "--data-dir", str(data_dir), "--set", f"data.clip_seconds={clip_seconds}",
           "--set", f"train.num_threads={threads}"]
    if epochs is not None:
        cmd += ["--set", f"train.epochs={epochs}"]
    for kv in extra:
        cmd += ["--set", kv]
    m = run_measured(cmd, cwd, env, log)
    return m, _run_ids(m)[-1]


def evaluate(train_run: str, backends: list[str], data_dir: Path, env: dict, cwd: Path,
             log: Path) -> tuple[Measured, dict[str, str]]:
    """One ``asd evaluate`` (one extraction, one evaluate run per backend); {backend: run id}."""
    cmd = [*ASD, "evaluate", "--run-id", train_run, "--no-umap", "--data-dir", str(data_dir)]
    for b in backends:
        cmd += ["--backend", b]
    m = run_measured(cmd, cwd, env, log)
    ids = _run_ids(m)
    if len(ids) != len(backends):
        raise ParityError(f"asd evaluate made {len(ids)} runs for {len(backends)} backends; see {m.log}")
    return m, dict(zip(backends, ids))


def scores(eval_run: str, tracking_uri: str) -> pd.DataFrame:
    """Per-clip scores of an evaluate run: ``split, machine, section, domain, label, file, score``."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(mlflow.artifacts.download_artifacts(run_id=eval_run, artifact_path="scores", dst_path=tmp))
        frames = []
        for f in sorted(folder.glob("*.csv")):
            df = pd.read_csv(f, dtype={"file": str, "attributes": str}, keep_default_na=False)
            df.insert(0, "machine", f.stem)
            frames.append(df)
    if not frames:
        raise ParityError(f"evaluate run {eval_run} has no scores/*.csv artifacts")
    return pd.concat(frames, ignore_index=True)
