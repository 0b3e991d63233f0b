"""`mlflow run . --env-manager local` on a tiny toy set: the run tree, metrics and artifacts."""

import os
import subprocess
import sys

import mlflow
import pytest

from tests.conftest import REPO

TINY_TOY = "seconds=1,n_source_train=12,n_target_train=3,n_test=6"


@pytest.mark.slow
def test_mlflow_run_main(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    env.pop("MLFLOW_RUN_ID", None)
    cmd = [sys.executable, "-m", "mlflow", "run", str(REPO), "--env-manager", "local",
           "-P", f"data_dir={tmp_path / 'data'}", "-P", f"toy={TINY_TOY}", "-P", "machines=fan,valve,slider",
           "-P", "set=train.epochs=2 data.clip_seconds=1"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    stdout_lines = proc.stdout.strip().splitlines()
    assert stdout_lines[-1].startswith("run_id: ")
    parent_id = stdout_lines[-1].split()[1]

    mlflow.set_tracking_uri(uri)
    client = mlflow.tracking.MlflowClient()
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert [p.info.run_id for p in parents] == [parent_id]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent_id]
    assert all(c.info.status == "FINISHED" for c in children)
    stages = sorted(c.data.tags["asd.stage"] for c in children)
    assert stages == ["evaluate", "evaluate", "prepare", "train", "train"]

    evaluations = {c.data.tags["asd.recipe"]: c for c in children if c.data.tags["asd.stage"] == "evaluate"}
    assert set(evaluations) == {"ae", "raw_spec"}
    for recipe, run in evaluations.items():
        m = run.data.metrics
        # the parent carries each recipe's numbers as its evaluate run logged them
        for key in ("official", "dev/official", "eval/official"):
            assert mlflow.get_run(parent_id).data.metrics[f"{recipe}/{key}"] == m[key]
        for machine in ("fan", "valve", "slider"):
            assert {f"{machine}/{key}" for key in ("smix_auc", "tmix_auc", "mix_pauc", "official")} <= set(m)
        plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
        machines = ("fan", "valve", "slider")
        assert plots == {f"plots/{kind}_{x}.png" for x in machines for kind in ("umap", "roc", "hist")}
        scores = {a.path for a in client.list_artifacts(run.info.run_id, "scores")}
        assert scores == {f"scores/{x}.csv" for x in ("fan", "valve", "slider")}
        assert "config.yaml" in {a.path for a in client.list_artifacts(run.info.run_id)}
    ae_train = [c for c in children if c.data.tags["asd.stage"] == "train" and c.data.tags["asd.recipe"] == "ae"][0]
    assert "checkpoints/last.pt" in {a.path for a in client.list_artifacts(ae_train.info.run_id, "checkpoints")}
    parent = mlflow.get_run(parent_id)
    assert {"ae/official", "raw_spec/official"} <= set(parent.data.metrics)
