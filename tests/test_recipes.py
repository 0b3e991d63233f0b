"""Every recipe x every backend end to end on the tiny toy set: train once per recipe (real SQLite
MLflow store), extract once, score with every backend."""

import mlflow
import numpy as np
import pandas as pd
import pytest

from asd.backends import available
from asd.recipes import RECIPES

MACHINES = "fan,pump"
SETS = ["train.epochs=1", "data.clip_seconds=1", "train.batch_size=8", f"data.machines={MACHINES}"]
_CACHE: dict = {}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.delenv("MLFLOW_RUN_ID", raising=False)
        mp.delenv("MLFLOW_EXPERIMENT_ID", raising=False)  # mlflow.set_experiment exports it: other stores' ids
        mp.chdir(tmp)
        mlflow.set_tracking_uri(uri)
        while mlflow.active_run():
            mlflow.end_run()
        yield uri


def _embeddings(recipe, toy_dir):
    """(train run id, Embeddings) of ``recipe``, trained and extracted once per test session."""
    if recipe not in _CACHE:
        from asd.config import load_recipe
        from asd.data.index import read_index
        from asd.extract import extract
        from asd.pipeline import load_train_run, run_train

        run_id = run_train(load_recipe(recipe, SETS), toy_dir)
        cfg, ckpt, _ = load_train_run(run_id, None)
        _CACHE[recipe] = run_id, extract(cfg, read_index(toy_dir, "toy", MACHINES.split(",")), ckpt)
    return _CACHE[recipe]


@pytest.mark.parametrize("backend", available())
@pytest.mark.parametrize("recipe", list(RECIPES))
def test_recipe_with_backend(recipe, backend, toy_dir, store):
    from asd.config import BackendConfig
    from asd.evaluate import evaluate_embeddings

    run_id, emb = _embeddings(recipe, toy_dir)
    assert mlflow.get_run(run_id).info.status == "FINISHED"
    if backend == "recon" and emb.recon is None:
        with pytest.raises(ValueError, match="backend 'recon' needs a frontend with its own score"):
            evaluate_embeddings(emb, BackendConfig(name=backend), "toy")
        return
    result = evaluate_embeddings(emb, BackendConfig(name=backend), "toy")
    assert 0.0 <= result.metrics["official"] <= 1.0
    for machine in MACHINES.split(","):
        for key in ("smix_auc", "tmix_auc", "mix_pauc"):
            assert 0.0 <= result.metrics[f"{machine}/{key}"] <= 1.0
        assert np.isfinite(result.thresholds[machine])
    test_rows = emb.rows[emb.rows["phase"] == "test"]
    assert len(result.scores) == len(test_rows) and result.scores["decision"].isin([0, 1]).all()


def test_discriminative_run_logs_epoch_metrics_and_label_map(toy_dir, store):
    from asd.pipeline import load_train_run

    run_id, emb = _embeddings("dis_spec_scac_trainable", toy_dir)
    client = mlflow.tracking.MlflowClient()
    for key in ("train/loss", "train/accuracy", "train/lr"):
        assert [m.step for m in client.get_metric_history(run_id, key)] == [1]
    cfg, ckpt, _ = load_train_run(run_id, None)
    assert ckpt["family"] == "classifier" and ckpt["epoch"] == 1
    assert all(c.split("---")[0] in ("fan", "pump") for c in ckpt["classes"])
    assert emb.embedding.shape[1] == 256
    assert cfg.backend.name == "knn_smote" and cfg.train.optimizer == "adamw"


def test_multispec_embedding_is_512_d(toy_dir, store):
    _, emb = _embeddings("dis_multispec_scac_trainable", toy_dir)
    assert emb.embedding.shape == (len(emb.rows), 512)


def test_labels_cover_training_classes_only(toy_dir):
    from asd.data.index import read_index
    from asd.labels import encode, fit_classes

    idx = read_index(toy_dir, "toy")
    train, test = idx[idx["phase"] == "train"], idx[(idx["phase"] == "test") & (idx["split"] == "dev")]
    classes = fit_classes(train, "main")
    assert classes == sorted(classes) and (encode(train, classes) >= 0).all()
    assert set(np.unique(encode(test, classes))) - {-1} <= set(range(len(classes)))
    ms = fit_classes(train, "machine_section")
    assert ms == sorted(f"{m}---0" for m in idx["machine"].unique())
    with pytest.raises(ValueError, match="unknown data.label"):
        fit_classes(train, "nope")


def test_wave_cache_is_reused_and_matches_the_wav_reader(toy_dir):
    from asd.cache import WaveStore, cache_dir_of
    from asd.data.audio import load_clips
    from asd.data.index import read_index

    rows = read_index(toy_dir, "toy", ["valve"])
    cache = cache_dir_of(rows)
    assert cache == toy_dir / "toy" / "cache"
    store = WaveStore(rows, 16000, cache_dir=cache)
    files = sorted(cache.glob("waves-*.npy"))
    again = WaveStore(rows, 16000, cache_dir=cache)
    assert sorted(cache.glob("waves-*.npy")) == files
    expect = load_clips(list(rows["abspath"]), 16000, 24000)  # 1-s clips tiled to 1.5 s
    assert np.array_equal(again.batch(np.arange(len(rows)), 24000), expect)
    assert np.array_equal(store.batch([0], 8000), expect[:1, :8000])


def test_cli_evaluate_several_backends_from_one_extraction(toy_dir, store):
    from click.testing import CliRunner

    from asd.cli import main

    run_id, _ = _embeddings("dis_spec_adacos_fixed", toy_dir)
    res = CliRunner().invoke(main, ["evaluate", "--run-id", run_id, "--data-dir", str(toy_dir), "--no-umap",
                                    "--backend", "knn_smote", "--backend", "knn_rescale"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    ids = [ln.split()[1] for ln in res.output.splitlines() if ln.startswith("run_id: ")]
    assert [mlflow.get_run(i).data.params["backend.name"] for i in ids] == ["knn_smote", "knn_rescale"]
    scores = pd.read_csv(mlflow.artifacts.download_artifacts(run_id=ids[0], artifact_path="scores/fan.csv"))
    assert {"file", "score", "decision", "domain"} <= set(scores.columns)


def test_cpu_bf16_training_and_machine_section_labels(toy_dir, tmp_path):
    from asd.config import load_recipe
    from asd.data.index import read_index
    from asd.train import load_checkpoint
    from asd.train_classifier import extract_classifier, train_classifier

    cfg = load_recipe("dis_spec_adacos_fixed", ["train.epochs=2", "data.clip_seconds=1", "train.batch_size=8",
                                                "train.cpu_bf16=true", "data.label=machine_section"])
    idx = read_index(toy_dir, "toy", ["valve", "slider"])
    seen = []
    result = train_classifier(cfg, idx[idx["phase"] == "train"], tmp_path, lambda e, m: seen.append((e, m)), None)
    assert [e for e, _ in seen] == [1, 2] and all(np.isfinite(m["train/loss"]) for _, m in seen)
    ckpt = load_checkpoint(result.checkpoint)
    assert ckpt["classes"] == ["slider---0", "valve---0"] and ckpt["label"] == "machine_section"
    emb = extract_classifier(cfg, idx, ckpt)
    assert emb.embedding.shape == (len(idx), 256) and np.isfinite(emb.embedding).all()
