"""Issue 12, cases 5, 8 and 11: real `asd` processes started together, killed, resumed.

Case 5: two `asd prepare` of one data folder (different sets) serialise on its lock; case 8: four
`asd train` and two `asd search` workers at once on fresh SQLite stores; case 11: a seeded resumed
worker draws new parameters, a half-made study is repaired (the dead trial retried at once is
tests/integration/test_search.py::test_killed_worker_trial_is_failed_and_retried).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import mlflow
import optuna
import psutil
import pytest

from asd.data.index import read_index
from asd.data.prepare import check, lock
from asd.files import LockedError
from tests.conftest import REPO, run_cli

TOY = "seconds=1,n_source_train=4,n_target_train=1,n_test=2,n_dev_machines=1,n_eval_machines=1"
SPACE = "recipe: raw_spec\nfixed: {data.clip_seconds: 1}\nparams:\n  backend.threshold_quantile: {float: [0.5, 0.99]}\n"


def _env(store: str) -> dict:
    env = {**os.environ, "MLFLOW_TRACKING_URI": store, "PYTHONPATH": str(REPO)}
    for k in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID"):
        env.pop(k, None)
    return env


def _asd(args, env, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "asd.cli", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)


def _finish(procs, timeout=300) -> list[str]:
    outs = [p.communicate(timeout=timeout)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]
    return outs


# ---- case 5 ----------------------------------------------------------------------------------------

@pytest.mark.slow
def test_two_prepares_of_one_folder_serialise(tmp_path, mlflow_store):
    env = _env(mlflow_store)
    data = str(tmp_path / "data")
    run_cli(["prepare", "--toy", TOY, "--data-dir", data])  # the store and a first set exist
    other = TOY.replace("n_test=2", "n_test=3")
    procs = [_asd(["prepare", "--toy", spec, "--data-dir", data], env) for spec in (other, TOY)]
    outs = _finish(procs)
    assert any("waiting for pid" in o for o in outs)  # the later ones said why they waited
    spec = json.loads((tmp_path / "data" / "toy" / "toy_spec.json").read_text())
    df = read_index(data, "toy")
    assert len(df) == 2 * (spec["n_source_train"] + spec["n_target_train"] + 4 * spec["n_test"])
    assert check("toy", data, progress=False) == []  # one consistent set: the last one prepared
    assert not list((tmp_path / "data" / "toy").rglob("*.tmp*"))


def test_no_wait_refuses_while_another_prepare_runs(tmp_path, mlflow_store):
    with lock(tmp_path, "toy"):
        with pytest.raises(LockedError, match=r"data folder .*toy \(another `asd prepare`\) is in use by pid "
                                              rf"{os.getpid()}.*without --no-wait"):
            with lock(tmp_path, "toy", wait=False):
                pass
        res = run_cli(["prepare", "--toy", TOY, "--data-dir", str(tmp_path), "--no-wait"], ok=False)
        assert res.exit_code == 2 and "is in use by pid" in res.output


# ---- case 8 ----------------------------------------------------------------------------------------

@pytest.mark.slow
def test_four_trains_and_two_search_workers_on_fresh_stores(tmp_path, toy_dir):
    store = f"sqlite:///{tmp_path / 'fresh.db'}"
    (tmp_path / "s.yaml").write_text(SPACE)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    search = ["search", "--space", str(tmp_path / "s.yaml"), "--data-dir", str(toy_dir), "--storage", storage,
              "--study-name", "w", "--n-trials", "4", "--no-cache"]
    procs = [_asd(["train", "--recipe", "raw_spec", "--data-dir", str(toy_dir)], _env(store)) for _ in range(4)]
    procs += [_asd([*search, "--seed", str(i)], _env(store)) for i in range(2)]
    outs = [o.strip().splitlines()[-1] for o in _finish(procs)]
    mlflow.set_tracking_uri(store)
    trains = [o.split()[1] for o in outs[:4]]
    assert len(set(trains)) == 4 and all(mlflow.get_run(r).info.status == "FINISHED" for r in trains)
    study = optuna.load_study(study_name="w", storage=storage)
    assert sum(t.state.name == "COMPLETE" for t in study.trials) >= 4
    assert set(outs[4:]) == {f"run_id: {study.user_attrs['mlflow_parent_run_id']}"}


# ---- case 11 ---------------------------------------------------------------------------------------

@pytest.mark.slow
def test_seeded_resumed_worker_draws_new_parameters(tmp_path, toy_dir, mlflow_store):
    (tmp_path / "s.yaml").write_text(SPACE)
    base = ["search", "--space", str(tmp_path / "s.yaml"), "--data-dir", str(toy_dir), "--storage",
            f"sqlite:///{tmp_path / 'o.db'}", "--study-name", "r", "--seed", "7", "--sampler", "random"]
    run_cli([*base, "--n-trials", "2"])
    run_cli([*base, "--n-trials", "4"])  # the same command again, resumed
    values = [t.params["backend.threshold_quantile"] for t in
              optuna.load_study(study_name="r", storage=f"sqlite:///{tmp_path / 'o.db'}").trials]
    assert len(values) == 4 and len(set(values)) == 4


@pytest.mark.slow
def test_half_made_study_is_repaired(tmp_path, toy_dir, mlflow_store):
    """A worker SIGKILLed inside study creation leaves a study without parent run: the next one remakes it."""
    storage = f"sqlite:///{tmp_path / 'o.db'}"
    (tmp_path / "s.yaml").write_text(SPACE)
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    started = psutil.Process(victim.pid).create_time()
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    from asd.search.workers import _host

    study = optuna.create_study(study_name="h", storage=storage)
    study.set_user_attr("asd.creator", json.dumps({"host": _host(), "pid": victim.pid, "started": started}))
    args = ["search", "--space", str(tmp_path / "s.yaml"), "--data-dir", str(toy_dir), "--storage", storage,
            "--study-name", "h"]
    res = run_cli([*args, "--best"], ok=False)
    assert res.exit_code == 2 and f"asd search --delete --study-name h --storage {storage}" in res.output
    t0 = time.time()
    run_cli([*args, "--n-trials", "1"])
    assert time.time() - t0 < 100  # repaired, not waited out (the old code waited 120 s, then failed)
    study = optuna.load_study(study_name="h", storage=storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] and "mlflow_parent_run_id" in study.user_attrs
