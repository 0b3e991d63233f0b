"""CLI commands against a real SQLite MLflow store on the tiny toy set."""

import mlflow
import pytest

from tests.conftest import last_run_id as _last_run_id
from tests.conftest import run_cli as _run


def test_train_and_evaluate_ae(toy_dir, mlflow_store):
    sets = ["--set", "train.epochs=2", "--set", "data.clip_seconds=1", "--machines", "fan,pump"]
    train_id = _last_run_id(_run(["train", "--recipe", "ae", "--data-dir", str(toy_dir), *sets]).output)
    run = mlflow.get_run(train_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["loss.name"] == "mse" and run.data.params["train.epochs"] == "2"
    hist = mlflow.tracking.MlflowClient().get_metric_history(train_id, "train/loss")
    assert [m.step for m in hist] == [1, 2]
    arts = {a.path for a in mlflow.tracking.MlflowClient().list_artifacts(train_id)}
    assert {"config.yaml", "checkpoints"} <= arts

    out = _run(["evaluate", "--run-id", train_id, "--data-dir", str(toy_dir), "--no-umap"]).output
    eval_id = _last_run_id(out)
    m = mlflow.get_run(eval_id).data.metrics
    for machine in ("fan", "pump"):
        for key in ("smix_auc", "tmix_auc", "mix_pauc", "s_auc", "t_auc", "mix_auc", "official"):
            assert 0.0 <= m[f"{machine}/{key}"] <= 1.0
    assert {"official", "dev/official", "eval/official"} <= set(m)
    assert mlflow.get_run(eval_id).data.params["backend.name"] == "recon"
    scores = {a.path for a in mlflow.tracking.MlflowClient().list_artifacts(eval_id, "scores")}
    assert scores == {"scores/fan.csv", "scores/pump.csv"}


def test_raw_spec_records_config_only_and_several_backends(toy_dir, mlflow_store):
    train_id = _last_run_id(_run(["train", "--recipe", "raw_spec", "--data-dir", str(toy_dir),
                                  "--set", "data.clip_seconds=1", "--machines", "valve"]).output)
    arts = {a.path for a in mlflow.tracking.MlflowClient().list_artifacts(train_id)}
    assert "config.yaml" in arts and "checkpoints" not in arts
    out = _run(["evaluate", "--run-id", train_id, "--data-dir", str(toy_dir), "--no-umap",
                "--backend", "knn", "--set", "backend.k=3"]).output
    run = mlflow.get_run(_last_run_id(out))
    assert run.data.params["backend.k"] == "3" and run.data.params["backend.name"] == "knn"
    assert run.data.tags["asd.train_run_id"] == train_id


def test_recon_backend_on_embeddings_is_a_clear_error(toy_dir, mlflow_store):
    train_id = _last_run_id(_run(["train", "--recipe", "raw_spec", "--data-dir", str(toy_dir),
                                  "--set", "data.clip_seconds=1", "--machines", "valve"]).output)
    res = _run(["evaluate", "--run-id", train_id, "--data-dir", str(toy_dir), "--backend", "recon"], ok=False)
    assert res.exit_code == 2 and "backend 'recon' needs a frontend with its own score" in res.output


def test_missing_data_dir_is_a_clear_error(tmp_path, mlflow_store):
    res = _run(["train", "--recipe", "raw_spec", "--data-dir", str(tmp_path / "none")], ok=False)
    assert res.exit_code == 2
    assert "does not exist" in res.output and "asd prepare --dataset toy" in res.output


def test_resume_continues_in_the_same_run(toy_dir, mlflow_store):
    sets = ["--set", "train.epochs=3", "--set", "data.clip_seconds=1", "--machines", "bearing"]
    train_id = _last_run_id(_run(["train", "--recipe", "ae", "--data-dir", str(toy_dir), *sets]).output)
    # Simulate an interruption after epoch 1: rewind the checkpoint's epoch counter.
    from asd.tracking import local_artifact_dir
    from asd.training.runtime import load_checkpoint, save_checkpoint

    ckpt_path = local_artifact_dir(mlflow.get_run(train_id)) / "checkpoints" / "last.pt"
    ckpt = load_checkpoint(ckpt_path)
    ckpt["epoch"] = 1
    save_checkpoint(ckpt, ckpt_path)
    out = _run(["train", "--resume", train_id, "--data-dir", str(toy_dir)]).output
    assert _last_run_id(out) == train_id
    steps = [m.step for m in mlflow.tracking.MlflowClient().get_metric_history(train_id, "train/loss")]
    assert sorted(set(steps)) == [1, 2, 3]
    assert load_checkpoint(ckpt_path)["epoch"] == 3
