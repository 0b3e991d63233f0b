"""A trained detector served: evaluate --log-model, register (real SQLite registry), `mlflow models serve`
as a real subprocess on a free 127.0.0.1 port, real HTTP, `asd score`, a fresh process that only calls
mlflow.pyfunc.load_model; every path must reproduce the scores and decisions the evaluate run wrote.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from tests.conftest import REPO, last_run_id, run_cli

pytestmark = pytest.mark.slow
MACHINES = ["fan", "valve"]
SETS = ["train.epochs=1", "data.clip_seconds=1", "train.batch_size=8", f"data.machines={','.join(MACHINES)}",
        "train.num_threads=1"]  # one thread: the CI cores are shared
FAMILIES = ["ae", "raw_spec", "dis_spec_adacos_fixed"]  # autoencoder, training-free, discriminative
_CACHE: dict = {}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One SQLite tracking store and registry for the module (registering is what is under test)."""
    from tests.conftest import module_store

    with module_store(tmp_path_factory.mktemp("registry")) as uri:
        yield uri


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def registered(recipe: str, toy_dir: Path) -> dict:
    """Train ``recipe`` once, evaluate it with --log-model, register it as det-<recipe>@champion."""
    if recipe not in _CACHE:
        from asd.config.recipes import load_recipe
        from asd.pipeline import run_train

        train_run = run_train(load_recipe(recipe, SETS, shared=True), toy_dir)
        out = run_cli(["evaluate", "--run-id", train_run, "--data-dir", str(toy_dir), "--no-umap",
                       "--log-model"]).output
        eval_run = last_run_id(out)
        model_id = re.search(r"model: models:/(m-[0-9a-f]+)\n", out).group(1)  # after MLflow's progress bars
        reg = run_cli(["register", "--run-id", eval_run, "--name", f"det-{recipe}", "--alias", "champion"]).output
        lines = reg.strip().splitlines()
        assert lines[-2:] == ["version: 1", f"model_uri: models:/det-{recipe}@champion"], reg
        _CACHE[recipe] = dict(eval_run=eval_run, model_id=model_id, uri=f"models:/det-{recipe}@champion",
                              expected=expected_scores(eval_run, toy_dir))
    return _CACHE[recipe]


def expected_scores(eval_run: str, toy_dir: Path) -> pd.DataFrame:
    """The evaluate run's scores/<machine>.csv, with each clip's path on disk."""
    from asd.data.index import read_index

    idx = read_index(toy_dir, "toy", MACHINES).set_index(["machine", "file"])
    parts = []
    for m in MACHINES:
        df = pd.read_csv(mlflow.artifacts.download_artifacts(run_id=eval_run, artifact_path=f"scores/{m}.csv"))
        df["machine"] = m
        df["abspath"] = idx.loc[[(m, f) for f in df["file"]], "abspath"].to_numpy()
        parts.append(df)
    return pd.concat(parts, ignore_index=True)


def _b64(path) -> str:
    return base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(uri: str, log: Path):
    """``mlflow models serve -m URI --env-manager local`` on a free port; yields the base URL."""
    port = _free_port()
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", uri, "--env-manager", "local",
           "-h", "127.0.0.1", "-p", str(port)]
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=_env(), start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            assert proc.poll() is None, f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
            with contextlib.suppress(OSError):
                if urllib.request.urlopen(f"{url}/ping", timeout=2).status == 200:
                    break
            assert time.time() < deadline, f"server not up after 120 s:\n{log.read_text()[-3000:]}"
            time.sleep(0.3)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and the workers it started, nothing else
        proc.wait(timeout=30)


def post(url: str, payload: dict) -> list[dict]:
    req = urllib.request.Request(f"{url}/invocations", data=json.dumps(payload).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())["predictions"]


def fresh_process(uri: str, rows: list[dict]) -> subprocess.Popen:
    """A new Python process that only calls mlflow.pyfunc.load_model(uri) and predict (prints JSON)."""
    code = ("import json, sys, mlflow, pandas as pd\n"
            "m = mlflow.pyfunc.load_model(sys.argv[1])\n"
            "print(m.predict(pd.DataFrame(json.loads(sys.argv[2]))).to_json(orient='records'))\n")
    return subprocess.Popen([sys.executable, "-c", code, uri, json.dumps(rows)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env(), cwd="/")


def check(got: list[dict], expected: pd.DataFrame) -> float:
    """Scores within 1e-5 (relative for scores above 1) and equal decisions; returns the largest difference."""
    assert all(g["error"] is None for g in got), [g["error"] for g in got if g["error"]]
    score = np.array([g["score"] for g in got], dtype=float)
    diff = np.abs(score - expected["score"].to_numpy())
    assert (diff <= 1e-5 * np.maximum(1.0, np.abs(score))).all(), diff.max()
    assert [g["decision"] for g in got] == expected["decision"].tolist()
    return float(diff.max())


def bad_clip(folder: Path) -> Path:
    path = folder / "bad_8k.wav"
    sf.write(path, np.zeros(8000, np.float32), 8000, subtype="PCM_16")
    return path


@pytest.mark.parametrize("recipe", FAMILIES)
def test_served_detector_scores_as_the_evaluate_run(recipe, toy_dir, store, tmp_path):
    reg = registered(recipe, toy_dir)
    exp = reg["expected"]
    _check_logged_model(reg)
    loader = fresh_process(reg["uri"], [{"machine": m, "path": p} for m, p in zip(exp["machine"], exp["abspath"])])
    bad = bad_clip(tmp_path)
    rows = [[m, _b64(p)] for m, p in zip(exp["machine"], exp["abspath"])]
    rows.insert(5, ["fan", _b64(bad)])  # one bad clip in the batch
    with serving(reg["uri"], tmp_path / "serve.log") as url:
        got = post(url, {"dataframe_split": {"columns": ["machine", "audio"], "data": rows}})
        records = post(url, {"dataframe_records": [{"machine": exp["machine"][0], "path": exp["abspath"][0]},
                                                   {"machine": "pump", "path": exp["abspath"][0]}]})
    assert len(got) == len(exp) + 1
    assert got[5]["score"] is None and got[5]["decision"] is None
    assert got[5]["error"].startswith("row 5: audio: sample rate 8000 Hz, expected 16000 Hz")
    print(f"{recipe}: HTTP max |diff| {check(got[:5] + got[6:], exp):.3g}")
    check(records[:1], exp.iloc[:1])
    assert records[1]["error"].startswith("row 1: machine 'pump' is not one this detector was fitted for")
    out, err = loader.communicate(timeout=180)
    assert loader.returncode == 0, err[-3000:]
    print(f"{recipe}: fresh process max |diff| {check(json.loads(out), exp):.3g}")
    _check_asd_score(reg, toy_dir, bad, tmp_path)


def _check_logged_model(reg: dict) -> None:
    """The LoggedModel is the evaluate run's output, has a signature, pins asd and holds no pickle."""
    run = mlflow.get_run(reg["eval_run"])
    assert [o.model_id for o in run.outputs.model_outputs] == [reg["model_id"]]
    model = mlflow.get_logged_model(reg["model_id"])
    assert model.source_run_id == reg["eval_run"] and model.name == "detector"
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{reg['model_id']}"))
    from asd import __version__

    assert f"asd=={__version__}" in (local / "requirements.txt").read_text().split()
    assert not list(local.rglob("*.pkl")) and (local / "artifacts" / "detector" / "serving.json").is_file()
    info = mlflow.models.get_model_info(f"models:/{reg['model_id']}")
    assert info.signature.inputs.input_names() == ["machine", "section", "path", "audio"]


def _check_asd_score(reg: dict, toy_dir: Path, bad: Path, tmp_path: Path) -> None:
    exp = reg["expected"][reg["expected"]["machine"] == "fan"]
    folder = toy_dir / "toy" / "dev_data" / "raw" / "fan" / "test"
    csv = tmp_path / "fan.csv"
    res = run_cli(["score", "--model", reg["uri"], "--machine", "fan", "--out", str(csv), str(folder), str(bad)])
    df = pd.read_csv(csv, keep_default_na=False)
    assert list(df.columns) == ["file", "machine", "score", "decision", "error"] and len(df) == len(exp) + 1
    assert df["error"].iloc[-1].startswith(f"{bad}: sample rate 8000 Hz")
    ok = df.iloc[:-1].assign(name=lambda d: d["file"].map(lambda f: Path(f).name)).set_index("name").loc[exp["file"]]
    got = [{"score": float(s), "decision": int(d), "error": None} for s, d in zip(ok["score"], ok["decision"])]
    check(got, exp)
    assert f"{len(exp) + 1} clips of fan scored: {int(exp['decision'].sum())} flagged" in res.output
    assert "1 errors" in res.output and "slowest" in res.output


def test_register_refits_an_evaluate_run_that_logged_no_model(toy_dir, store, tmp_path):
    """Without --log-model, `asd register` refits from the train run + config (checked against the logged
    thresholds), logs the model to that evaluate run and reuses it; other training clips are refused."""
    from asd.config.recipes import load_recipe
    from asd.data.prepare import prepare_toy
    from asd.data.toy import ToySpec
    from asd.pipeline import run_train

    train_run = run_train(load_recipe("raw_spec", SETS, shared=True), toy_dir)
    eval_run = last_run_id(run_cli(["evaluate", "--run-id", train_run, "--data-dir", str(toy_dir), "--no-umap"]).output)
    assert not mlflow.get_run(eval_run).outputs.model_outputs  # evaluate alone logs no model
    other = tmp_path / "other"
    prepare_toy(other, machines=MACHINES, spec=ToySpec(seconds=1.0, n_source_train=12, n_target_train=3, n_test=6,
                                                       seed=1), progress=False)
    res = run_cli(["register", "--run-id", eval_run, "--name", "refit", "--data-dir", str(other)], ok=False)
    assert res.exit_code == 2 and "the training clips differ from the run's" in res.output
    out = run_cli(["register", "--run-id", eval_run, "--name", "refit", "--data-dir", str(toy_dir)]).output
    assert out.strip().splitlines()[-2:] == ["version: 1", "model_uri: models:/refit/1"]
    (model_output,) = mlflow.get_run(eval_run).outputs.model_outputs
    again = run_cli(["register", "--run-id", eval_run, "--name", "refit", "--alias", "champion",
                     "--data-dir", str(tmp_path / "nowhere")]).output  # the logged model is reused: no data needed
    assert again.strip().splitlines()[-2:] == ["version: 1", "model_uri: models:/refit@champion"]
    assert [o.model_id for o in mlflow.get_run(eval_run).outputs.model_outputs] == [model_output.model_id]
    exp = expected_scores(eval_run, toy_dir)
    got = mlflow.pyfunc.load_model("models:/refit@champion").predict(
        pd.DataFrame({"machine": exp["machine"], "path": exp["abspath"]}))
    check(got.to_dict("records"), exp)


def _rows(csv: Path) -> pd.DataFrame:
    return pd.read_csv(csv, keep_default_na=False) if csv.exists() else pd.DataFrame(columns=["file"])


def _wait_rows(csv: Path, n: int, proc, timeout: float = 120) -> pd.DataFrame:
    deadline = time.time() + timeout
    while len(df := _rows(csv)) < n:
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, f"{len(df)} rows after {timeout} s"
        time.sleep(0.2)
    return df


def _watcher(uri: str, csv: Path, folder: Path):
    cmd = [sys.executable, "-m", "asd.cli", "score", "--model", uri, "--machine", "valve", "--out", str(csv),
           "--watch", str(folder), "--interval", "0.2"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())


def test_score_watch_appends_new_clips_and_stops_cleanly_on_ctrl_c(toy_dir, store, tmp_path):
    reg = registered("raw_spec", toy_dir)
    exp = reg["expected"][reg["expected"]["machine"] == "valve"].iloc[:4]
    folder, csv = tmp_path / "incoming", tmp_path / "valve.csv"
    folder.mkdir()
    proc = _watcher(reg["uri"], csv, folder)
    for p in exp["abspath"][:2]:
        shutil.copy(p, folder)
    _wait_rows(csv, 2, proc)
    shutil.copy(exp["abspath"].iloc[2], folder)
    _wait_rows(csv, 3, proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-3000:]
    assert "3 clips of valve scored (stopped by Ctrl-C)" in out and "Traceback" not in err
    proc = _watcher(reg["uri"], csv, folder)  # a restarted monitor skips what the CSV holds
    shutil.copy(exp["abspath"].iloc[3], folder)
    df = _wait_rows(csv, 4, proc)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "1 clips of valve scored" in out
    assert [Path(f).name for f in df["file"]] == exp["file"].tolist()  # each once, in arrival order
    got = [{"score": float(s), "decision": int(d), "error": None} for s, d in zip(df["score"], df["decision"])]
    check(got, exp)


def test_search_best_register_retrains_the_best_trial_and_registers_it(toy_dir, store, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("recipe: raw_spec\nfixed: {data.machines: \"fan,valve\", data.clip_seconds: 1}\n"
                     "params:\n  backend.k: {int: [1, 4]}\n")
    args = ["search", "--dataset", "toy", "--data-dir", str(toy_dir), "--space", str(space), "--seed", "0",
            "--sampler", "random", "--storage", f"sqlite:///{tmp_path / 'optuna.db'}", "--study-name", "srv"]
    run_cli([*args, "--n-trials", "3"])
    out = run_cli([*args, "--best", "--register", "best-det", "--alias", "champion"]).output
    assert out.strip().splitlines()[-1] == "model_uri: models:/best-det@champion"
    import optuna

    best = optuna.load_study(study_name="srv", storage=f"sqlite:///{tmp_path / 'optuna.db'}").best_trial
    version = mlflow.MlflowClient().get_model_version_by_alias("best-det", "champion")
    run = mlflow.get_run(version.run_id)
    assert run.data.params["backend.k"] == str(best.params["backend.k"]) and run.data.params["train.seed"] == "0"
    assert run.data.metrics["dev/official"] == pytest.approx(best.value, abs=1e-12)  # the same detector again
    assert run.data.tags["asd.search_trial"] == f"srv/{best.number}"
