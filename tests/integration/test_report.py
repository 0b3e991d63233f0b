"""`asd main --seeds` then `asd report`: 2 recipes x 2 seeds on a tiny toy set, real MLflow store."""

import mlflow
import numpy as np
import pandas as pd
import pytest

from tests.conftest import last_run_id as _last_run_id
from tests.conftest import run_cli as _run

TINY = "seconds=1,n_source_train=12,n_target_train=3,n_test=6"


def test_main_seeds_then_report(tmp_path, mlflow_store):
    out = _run(["main", "--recipes", "ae,raw_spec", "--seeds", "0,1", "--machines", "fan,pump", "--no-umap",
                "--set", "train.epochs=1", "--set", "data.clip_seconds=1", "--toy", TINY,
                "--data-dir", str(tmp_path / "data")]).output
    parent = mlflow.get_run(out.strip().splitlines()[-1].split()[1])
    assert parent.data.params["main.seeds"] == "0,1"
    client = mlflow.tracking.MlflowClient()
    evals = client.search_runs([parent.info.experiment_id], "tags.`asd.stage` = 'evaluate'")
    assert sorted((r.data.tags["asd.recipe"], r.data.tags["asd.seed"]) for r in evals) == [
        ("ae", "0"), ("ae", "1"), ("raw_spec", "0"), ("raw_spec", "1")]
    ae_dev = [r.data.metrics["dev/official"] for r in evals if r.data.tags["asd.recipe"] == "ae"]
    assert parent.data.metrics["ae/dev/official"] == pytest.approx(np.mean(ae_dev))
    assert parent.data.metrics["ae/dev/official_std"] == pytest.approx(np.std(ae_dev, ddof=1))

    rep_dir = tmp_path / "report"
    res = _run(["report", "--out", str(rep_dir)])
    lines = res.output.strip().splitlines()
    report_id = lines[-1].split()[1]
    assert lines[0].startswith("| recipe / backend | toy dev | toy eval | hmean | amean |")
    row = next(line for line in lines if line.startswith("| ae / recon |"))
    cell = f"{100 * np.mean(ae_dev):.2f} ± {100 * np.std(ae_dev, ddof=1):.2f}"
    assert cell in row  # mean ± std over the two seeds, in %
    assert any(line.startswith("| raw_spec / knn |") for line in lines)

    table = pd.read_csv(rep_dir / "official.csv")
    assert list(table.columns) == ["recipe", "backend", "dataset", "split", "mean", "std", "n_seeds"]
    assert len(table) == 4 and (table["n_seeds"] == 2).all()
    ae = table[(table["recipe"] == "ae") & (table["split"] == "dev")].iloc[0]
    assert ae["mean"] == pytest.approx(np.mean(ae_dev)) and ae["std"] == pytest.approx(np.std(ae_dev, ddof=1))
    machines = pd.read_csv(rep_dir / "machines_toy_eval.csv")
    assert set(machines["machine"]) == {"pump", "official"}
    assert (rep_dir / "machines_toy_dev.md").read_text().startswith("| recipe / backend | fan | official |")
    import matplotlib.image

    img = matplotlib.image.imread(rep_dir / "heatmap.png")
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100 and img[..., :3].std() > 0.05

    run = mlflow.get_run(report_id)
    assert run.data.tags["asd.stage"] == "report" and run.data.metrics["report/evaluate_runs"] == 4
    assert run.data.tags["mlflow.note.content"].startswith("Results table over 4 evaluate runs of asd")
    arts = {a.path for sub in ("plots", "tables") for a in client.list_artifacts(report_id, sub)}
    assert {"plots/heatmap.png", "plots/heatmap_machines_toy_dev.png", "tables/official.csv",
            "tables/official.md"} <= arts

    # a second report ignores the first (it reads evaluate runs only); --filter narrows the runs
    res = _run(["report", "--out", str(tmp_path / "r2"), "--filter", "tags.`asd.recipe` = 'raw_spec'"])
    assert "raw_spec / knn" in res.output and "ae / recon" not in res.output
    assert mlflow.get_run(res.output.strip().splitlines()[-1].split()[1]).data.metrics["report/evaluate_runs"] == 2


def test_report_without_runs_is_a_clear_error(tmp_path, mlflow_store):
    res = _run(["report", "--experiment", "nothing-here", "--out", str(tmp_path / "r")], ok=False)
    assert res.exit_code == 2 and "no MLflow experiment named 'nothing-here'" in res.output
    mlflow.set_experiment("empty")
    res = _run(["report", "--experiment", "empty", "--out", str(tmp_path / "r")], ok=False)
    assert res.exit_code == 2 and "has no finished evaluate runs" in res.output
