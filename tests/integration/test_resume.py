"""An interrupted training run resumes exactly: same final loss and weights as an uninterrupted one.

In process for every training family (a crash after epoch 1, then resume from its checkpoint), and
for real: a discriminative run SIGKILLed mid-epoch resumes in the same MLflow run.
"""

import os
import signal
import subprocess
import sys
import time

import mlflow
import pytest

from tests.conftest import REPO, assert_same_state, whole_and_resumed

EPOCHS = 3


@pytest.mark.parametrize("recipe", ["ae", "dis_spec_scac_trainable"])
def test_resume_repeats_an_uninterrupted_run_exactly(recipe, toy_dir, tmp_path):
    from asd.config.recipes import load_recipe
    from asd.data.index import read_index
    from asd.training.runtime import load_checkpoint

    sets = [f"train.epochs={EPOCHS}", "data.clip_seconds=1", "train.batch_size=8", "train.grad_clip=1"]
    whole, resumed, first = whole_and_resumed(load_recipe(recipe, sets), read_index(toy_dir, "toy", ["fan", "valve"]),
                                              tmp_path)
    assert first["epoch"] == 1
    assert resumed.history[-1]["train/loss"] == whole.history[-1]["train/loss"]
    a, b = load_checkpoint(whole.checkpoint), load_checkpoint(resumed.checkpoint)
    assert a["epoch"] == b["epoch"] == EPOCHS
    assert_same_state(a["state"], b["state"])
    assert_same_state(a["optim"], b["optim"])


def _cli(args, env, cwd, **kw):
    return subprocess.Popen([sys.executable, "-m", "asd.cli", *args], env=env, cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume(toy_dir, tmp_path, monkeypatch):
    from asd.tracking import local_artifact_dir
    from asd.training.runtime import load_checkpoint

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_RUN_ID", None)
    env.pop("MLFLOW_EXPERIMENT_ID", None)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)  # set_experiment below exports it; undone after
    sets = ["--set", f"train.epochs={EPOCHS}", "--set", "data.clip_seconds=2", "--set", "train.batch_size=4"]
    # Create the store and experiment first: two processes creating a fresh SQLite store race on its schema.
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("asd")
    proc = _cli(["train", "--recipe", "dis_spec_scac_trainable", "--data-dir", str(toy_dir), "--machines",
                 "fan,pump", *sets], env, tmp_path)
    client = mlflow.tracking.MlflowClient()
    run_id, deadline = None, time.time() + 300
    try:
        # Wait until epoch 1 is fully recorded (checkpoint written, then its metrics logged).
        while time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
            try:
                runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
            except Exception:  # the store may still be being created by the child
                continue
            if runs:
                run_id = runs[0].info.run_id
                if client.get_metric_history(run_id, "train/loss"):
                    break
        assert proc.poll() is None, "training ended before it could be killed: " + proc.stderr.read()[-2000:]
        proc.send_signal(signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL and run_id
    run = mlflow.get_run(run_id)
    assert run.info.status == "RUNNING"  # killed: nobody closed the run
    ckpt_path = local_artifact_dir(run) / "checkpoints" / "last.pt"
    assert load_checkpoint(ckpt_path)["epoch"] == 1  # killed during epoch 2

    resumed = _cli(["train", "--resume", run_id, "--data-dir", str(toy_dir)], env, tmp_path)
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err[-3000:]
    assert out.strip().splitlines()[-1] == f"run_id: {run_id}"
    run = mlflow.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert len(mlflow.search_runs(search_all_experiments=True, output_format="list")) == 1  # resumed in place
    for key in ("train/loss", "train/accuracy", "train/lr"):
        assert sorted(m.step for m in client.get_metric_history(run_id, key)) == list(range(1, EPOCHS + 1))
    assert load_checkpoint(ckpt_path)["epoch"] == EPOCHS

    # ... and ends where the same command run without interruption ends (same threads: 1)
    whole = _cli(["train", "--recipe", "dis_spec_scac_trainable", "--data-dir", str(toy_dir), "--machines",
                  "fan,pump", *sets], env, tmp_path)
    out, err = whole.communicate(timeout=300)
    assert whole.returncode == 0, err[-3000:]
    whole_id = out.strip().splitlines()[-1].split()[1]
    last = lambda rid: client.get_metric_history(rid, "train/loss")[-1].value  # noqa: E731
    assert last(whole_id) == last(run_id)
    whole_ckpt = load_checkpoint(local_artifact_dir(mlflow.get_run(whole_id)) / "checkpoints" / "last.pt")
    assert_same_state(whole_ckpt["state"], load_checkpoint(ckpt_path)["state"])
