"""asd search on the tiny toy set: space, cache, pruning, MLflow runs, resume, --best, a killed worker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import mlflow
import numpy as np
import optuna
import pytest
from click.testing import CliRunner

from asd.cli import main
from asd.config import ConfigError
from asd.config.recipes import load_recipe
from asd.training import Embeddings
from asd.search.space import load_space, sample
from tests.conftest import REPO

# An AE space where half the trials train 2 epochs: with the threshold pruner below (warm-up 2
# steps, bound 2.0 that no AUC reaches) exactly those trials are pruned, at epoch 2.
AE_SPACE = """
recipe: ae
fixed: {data.clip_seconds: 1, data.machines: "fan,pump"}
params:
  train.epochs: {choice: [1, 2]}
  model.bottleneck: {choice: [4, 8]}
  backend.name: {choice: [recon, knn]}
  backend.k: {int: [1, 3], when: {backend.name: [knn]}}
"""
PRUNE_EPOCH_2 = "threshold:lower=2.0,n_warmup_steps=2"


def _write(tmp_path, text, name="space.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def _cli(args):
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res.output


def _trial_runs(parent: str):
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list",
                              filter_string=f"tags.mlflow.parentRunId = '{parent}'")
    return {int(r.data.tags["asd.trial"]): r for r in runs}


def test_space_conditions_and_otherwise(tmp_path):
    space = load_space(_write(tmp_path, """
recipe: raw_spec
params:
  mixup: {choice: ["off", "on"]}
  augment.mixup_prob: {float: [0.1, 1.0], when: {mixup: ["on"]}, otherwise: 0.0}
  backend.k: {int: [1, 5]}
"""))
    over, sw = sample(optuna.trial.FixedTrial({"mixup": "off", "backend.k": 3}), space)
    assert over == {"augment.mixup_prob": 0.0, "backend.k": 3} and sw == {"mixup": "off"}
    over, _ = sample(optuna.trial.FixedTrial({"mixup": "on", "augment.mixup_prob": 0.5, "backend.k": 1}), space)
    assert over["augment.mixup_prob"] == 0.5
    # A key fixed with --set is no longer searched.
    assert load_space(_write(tmp_path, space.source, "s2.yaml"), {"backend.k"}).names() == ["mixup",
                                                                                          "augment.mixup_prob"]


@pytest.mark.parametrize("text, message", [
    ("recipe: ae\nparams:\n  loss.name: {choice: [arcface, nope]}\n", "loss.name 'nope' not available"),
    ("recipe: ae\nparams:\n  backend.name: {choice: [knn_smote, nope]}\n", "available: fusion, knn, knn_kmeans"),
    ("recipe: ae\nparams:\n  train.nope: {int: [1, 2]}\n", "'train.nope' is not a config key"),
    ("recipe: ae\nparams:\n  backend.k: {int: [1, 2], when: {backend.name: [knn]}}\n", "not an earlier parameter"),
    ("recipe: ae\nparams:\n  train.lr: {float: [0.1, 0.01]}\n", "low < high"),
])
def test_space_errors_name_the_problem(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_space(_write(tmp_path, text))


def test_default_space_validates():
    space = load_space(None)
    assert {"loss.name", "loss.margin", "loss.subclusters", "backend.name", "backend.k", "train.lr"} <= set(space.names())


def test_cache_key_and_atomic_entries(tmp_path, toy_dir):
    from asd.search import embeddings as search_cache
    from asd.data.index import read_index

    idx = read_index(toy_dir, "toy")
    a = load_recipe("ae", {"backend.name": "knn", "backend.k": 1})
    b = load_recipe("ae", {"backend.name": "recon", "train.device": "cpu"})
    assert search_cache.frontend_key(a, idx) == search_cache.frontend_key(b, idx)
    assert search_cache.frontend_key(a, idx) != search_cache.frontend_key(load_recipe("ae", {"train.seed": 1}), idx)
    rows = __import__("pandas").DataFrame({"machine": ["fan", "fan"], "attributes": ["", "a=1"], "file": ["x", "y"]})
    emb = Embeddings(rows, np.arange(6, dtype=np.float32).reshape(2, 3), np.array([0.5, 1.5], np.float32))
    root = tmp_path / "cache"
    assert search_cache.load(root, "k") is None
    first = search_cache.save(root, "k", emb)
    # A second writer of the same key keeps the first entry and leaves no temporary folder behind.
    emb2 = Embeddings(rows, emb.embedding + 1, emb.recon)
    assert search_cache.save(root, "k", emb2) == first and sorted(os.listdir(root)) == ["k"]
    back = search_cache.load(root, "k")
    assert np.array_equal(back.embedding, emb.embedding) and np.array_equal(back.recon, emb.recon)
    assert back.residual is None and list(back.rows["attributes"]) == ["", "a=1"]


def test_search_sqlite_prunes_logs_resumes_and_prints_best(toy_dir, mlflow_store, tmp_path):
    space = _write(tmp_path, AE_SPACE)
    args = ["search", "--dataset", "toy", "--data-dir", str(toy_dir), "--space", space, "--seed", "0",
            "--pruner", PRUNE_EPOCH_2, "--storage", f"sqlite:///{tmp_path / 'optuna.db'}", "--study-name", "t"]
    out = _cli([*args, "--n-trials", "6"])
    parent = out.strip().splitlines()[-1].split()[1]
    study = optuna.load_study(study_name="t", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    states = {t.number: t.state.name for t in study.trials}
    assert len(states) == 6 and set(states.values()) <= {"COMPLETE", "PRUNED"}
    pruned = {n for n, s in states.items() if s == "PRUNED"}
    assert pruned == {t.number for t in study.trials if t.params["train.epochs"] == 2}
    assert pruned and len(pruned) < 6
    runs = _trial_runs(parent)
    assert sorted(runs) == sorted(states)
    for t in study.trials:
        if t.state.name == "PRUNED":  # trained: reported after epochs 1 and 2; from the cache: once, at 2
            trained = runs[t.number].data.tags["asd.cache"] == "miss"
            assert sorted(t.intermediate_values) == ([1, 2] if trained else [2])
    for t in study.trials:
        r = runs[t.number]
        assert r.info.status == "FINISHED" and r.data.tags["asd.state"] == t.state.name
        assert r.data.tags["asd.study"] == "t" and t.user_attrs["mlflow_run_id"] == r.info.run_id
        for k, v in t.params.items():
            assert r.data.params[k] == str(v)
        if t.state.name == "COMPLETE":
            m = r.data.metrics
            assert m["dev/official"] == pytest.approx(t.value) and 0 <= m["eval/official"] <= 1
    assert any(r.data.tags["asd.cache"] == "hit" for r in runs.values())
    p = mlflow.get_run(parent)
    assert p.info.status == "FINISHED" and "mlflow.parentRunId" not in p.data.tags
    assert p.data.metrics["best/dev/official"] == pytest.approx(study.best_value)
    assert p.data.tags["best.trial"] == str(study.best_trial.number)
    arts = {a.path for a in mlflow.tracking.MlflowClient().list_artifacts(parent, "plots")}
    assert "plots/optimization_history.png" in arts and "plots/parallel_coordinate.png" in arts

    # The same command with a larger count continues the study under the same parent run.
    out2 = _cli([*args, "--n-trials", "8"])
    assert out2.strip().splitlines()[-1] == f"run_id: {parent}"
    study = optuna.load_study(study_name="t", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert len(study.trials) == 8 and sorted(_trial_runs(parent)) == list(range(8))

    best = _cli(["search", "--best", "--study-name", "t", "--storage", f"sqlite:///{tmp_path / 'optuna.db'}"])
    bt = study.best_trial
    assert f"best trial {bt.number}: dev/official = {bt.value:.4f}" in best
    assert "asd train --dataset toy --recipe ae --seeds 0,1,2,3 --set data.clip_seconds=1" in best
    assert f"--set train.epochs={bt.params['train.epochs']}" in best
    assert f"asd evaluate --run-id <TRAIN_RUN_ID> --backend {bt.params['backend.name']}" in best


def _subprocess_env(uri: str) -> dict:
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(REPO)}
    for k in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID"):
        env.pop(k, None)
    return env


@pytest.mark.slow
def test_killed_worker_trial_is_failed_and_retried(toy_dir, mlflow_store, tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    space = _write(tmp_path, """
recipe: ae
fixed: {data.clip_seconds: 1, data.machines: fan, train.epochs: 30}
params:
  model.bottleneck: {choice: [4, 8]}
""")
    # 30 epochs: the trial is still training when the kill lands, also on a fast machine (with 6 it could
    # finish between the poll that saw it running and the kill).
    # --grace far beyond the test's timeout: the resumed worker must see that the killed worker's process
    # is gone and retry its trial at once, not wait for the heartbeat to go stale (issue 12, case 11).
    cmd = [sys.executable, "-m", "asd.cli", "search", "--data-dir", str(toy_dir), "--space", space, "--storage",
           storage, "--study-name", "k", "--n-trials", "2", "--pruner", "none", "--heartbeat", "1", "--grace", "3600",
           "--no-cache"]
    mlflow.set_experiment("asd")  # the store exists before any worker starts (concurrent first use of a fresh SQLite store races on its schema)
    env = _subprocess_env(mlflow_store)
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    victim = None
    deadline = time.time() + 120
    while victim is None and time.time() < deadline and first.poll() is None:
        time.sleep(0.2)
        if not (tmp_path / "optuna.db").exists():
            continue
        try:
            study = optuna.load_study(study_name="k", storage=storage)
        except Exception:  # noqa: BLE001 - not created yet
            continue
        running = [t for t in study.get_trials(deepcopy=False) if t.state.name == "RUNNING"]
        if running and "mlflow_run_id" in running[0].user_attrs and running[0].intermediate_values:
            victim = running[0]  # mid-training: at least one epoch reported
    assert victim is not None, first.communicate()[0][-3000:]
    first.send_signal(signal.SIGKILL)
    first.wait()

    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    study = optuna.load_study(study_name="k", storage=storage)
    states = {t.number: t.state.name for t in study.trials}
    assert states[victim.number] == "FAIL"
    assert sum(s == "COMPLETE" for s in states.values()) == 2
    retry = [t for t in study.trials if t.system_attrs.get("failed_trial") == victim.number]
    assert len(retry) == 1 and retry[0].state.name == "COMPLETE" and retry[0].params == victim.params
    killed = mlflow.get_run(victim.user_attrs["mlflow_run_id"])
    assert killed.info.status == "FAILED" and killed.data.tags["asd.state"] == "FAIL"
    parent = study.user_attrs["mlflow_parent_run_id"]
    assert second.stdout.strip().splitlines()[-1] == f"run_id: {parent}"
    assert sorted(_trial_runs(parent)) == sorted(states)


def test_joining_worker_must_match_the_study(toy_dir, mlflow_store, tmp_path):
    space = _write(tmp_path, "recipe: raw_spec\nparams:\n  backend.k: {int: [1, 3]}\n")
    base = ["search", "--data-dir", str(toy_dir), "--storage", f"sqlite:///{tmp_path / 'o.db'}", "--n-trials", "0"]
    parent = _cli([*base, "--space", space, "--set", "data.clip_seconds=1"]).strip().splitlines()[-1]
    # Same study, this machine's device: accepted (and no space or --set needs repeating).
    assert _cli([*base, "--set", "train.device=cpu"]).strip().splitlines()[-1] == parent
    res = CliRunner().invoke(main, [*base, "--set", "data.clip_seconds=2"])
    assert res.exit_code == 2 and "was created with --set data.clip_seconds=1" in res.output
    res = CliRunner().invoke(main, [*base, "--objective", "eval_official"])
    assert res.exit_code == 2 and "optimises dev/official, not eval/official" in res.output
    # A space naming something unknown fails before any study exists.
    bad = _write(tmp_path, "recipe: raw_spec\nparams:\n  backend.name: {choice: [nope]}\n", "bad.yaml")
    res = CliRunner().invoke(main, [*base, "--space", bad, "--study-name", "other"])
    assert res.exit_code == 2 and "backend.name 'nope' not available" in res.output
    assert "other" not in optuna.study.get_all_study_names(f"sqlite:///{tmp_path / 'o.db'}")
