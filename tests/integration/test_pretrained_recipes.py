"""The pretrained recipes end to end on the tiny toy set with tiny random bases (no real weights here):
`asd train` / `asd evaluate` through the CLI against a real SQLite MLflow store, what their train runs
log, exact resume, trainable-only checkpoints, a changed or missing base refused, the search space, and
the parameter share of LoRA on the released 90M-parameter BEATs size."""

from __future__ import annotations

import hashlib
import os
import shutil

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from tests.beats_fixtures import BASE, FULL, random_state, write_checkpoint
from tests.conftest import last_run_id, run_cli

MACHINES = "fan,pump"
RECIPES = ["raw_beats", "dis_beats_scac_trainable", "raw_hf", "dis_hf_scac_trainable"]
BASE_OF = {"raw_beats": "beats", "dis_beats_scac_trainable": "beats", "raw_hf": "wavlm", "dis_hf_scac_trainable": "ast"}
_RUNS: dict[str, str] = {}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One SQLite MLflow store for the module, so that each recipe trains once."""
    from tests.conftest import module_store

    with module_store(tmp_path_factory.mktemp("mlflow"), unset=("ASD_PRETRAINED_DIR",)) as uri:
        yield uri


def _train_args(recipe: str, base, toy_dir) -> list[str]:
    epochs = ["--set", "train.epochs=1"] if recipe.startswith("dis_") else []
    return ["train", "--recipe", recipe, "--data-dir", str(toy_dir), "--machines", MACHINES,
            "--set", f"model.checkpoint={base}", "--set", "data.clip_seconds=1", *epochs]


def _trained(recipe: str, bases, toy_dir) -> str:
    if recipe not in _RUNS:
        _RUNS[recipe] = last_run_id(run_cli(_train_args(recipe, bases[BASE_OF[recipe]], toy_dir)).output)
    return _RUNS[recipe]


def _sha256(path) -> str:
    """SHA-256 of a file, or (asd's folder rule) of a folder's relative names and contents in sorted order."""
    h = hashlib.sha256()
    if path.is_file():
        h.update(path.read_bytes())
        return h.hexdigest()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def _expected_counts(recipe: str, base, n_classes: int) -> dict[str, int]:
    """The parameter counts worked out by hand from the tiny bases' sizes and the recipes' settings."""
    if BASE_OF[recipe] == "beats":
        d = BASE["encoder_embed_dim"]  # the relative position bias is layer 0's, shared by the others
        base_n = sum(v.numel() for k, v in random_state(BASE).items()
                     if "relative_attention_bias" not in k or ".layers.0." in k)
    else:
        from transformers import AutoModel

        d = 32
        base_n = sum(p.numel() for p in AutoModel.from_pretrained(str(base)).parameters())
    if recipe.startswith("raw_"):
        return {"model/total_params": base_n, "model/trainable_params": 0}
    lora = 2 * 2 * 64 * (d + d)  # 2 layers x (q, v) x rank 64 x (in + out)
    pool = (d * (d // 16) + d // 16) + (d // 16 * d + d)  # attention MLP with hidden d / 16
    head = 2 * d * 256 + 256  # Linear (mean, std) -> 256
    return {"model/total_params": base_n + lora + pool + head, "model/trainable_params": lora + pool + head,
            "model/head_params": n_classes * 16 * 256}  # sub-cluster AdaCos: K = 16 centres of 256-d per class


@pytest.mark.parametrize("recipe", RECIPES)
def test_train_then_evaluate_through_the_cli(recipe, toy_dir, store, pretrained_bases):
    from asd.data.index import read_index
    from asd.training.targets import fit_classes

    base = pretrained_bases[BASE_OF[recipe]]
    run = mlflow.get_run(_trained(recipe, pretrained_bases, toy_dir))
    assert run.info.status == "FINISHED"
    assert run.data.params["model.base_path"] == str(base)
    assert run.data.params["model.base_sha256"] == _sha256(base)
    idx = read_index(toy_dir, "toy", MACHINES.split(","))
    n_classes = len(fit_classes(idx[idx["phase"] == "train"], "main"))
    expected = _expected_counts(recipe, base, n_classes)
    assert {k: int(v) for k, v in run.data.metrics.items() if k.startswith("model/")} == expected
    if recipe.startswith("dis_"):
        assert expected["model/trainable_params"] < expected["model/total_params"]
        assert [m.step for m in mlflow.tracking.MlflowClient().get_metric_history(run.info.run_id, "train/loss")] == [1]

    out = run_cli(["evaluate", "--run-id", run.info.run_id, "--data-dir", str(toy_dir), "--no-umap"]).output
    ev = mlflow.get_run(last_run_id(out))
    assert f"{recipe} / {ev.data.params['backend.name']}: official" in out
    assert ev.data.params["backend.name"] == ("knn" if recipe.startswith("raw_") else "knn_smote")
    for machine in MACHINES.split(","):
        assert 0.0 < ev.data.metrics[f"{machine}/official"] <= 1.0
        scores = pd.read_csv(mlflow.artifacts.download_artifacts(run_id=ev.info.run_id,
                                                                 artifact_path=f"scores/{machine}.csv"))
        test_clips = idx[(idx["machine"] == machine) & (idx["phase"] == "test")]
        assert len(scores) == len(test_clips) and np.isfinite(scores["score"]).all()
        assert scores["score"].std() > 0  # the clips are told apart


def test_checkpoint_holds_the_trained_parameters_and_the_base_hash_only(toy_dir, store, pretrained_bases):
    from asd.config import Config
    from asd.tracking import local_artifact_dir
    from asd.training import classifier, pretrained
    from asd.training.runtime import load_checkpoint

    run = mlflow.get_run(_trained("dis_beats_scac_trainable", pretrained_bases, toy_dir))
    ckpt = load_checkpoint(local_artifact_dir(run) / "checkpoints" / "last.pt")
    saved = ckpt["state"]["model"]
    assert saved["base"] == {"path": str(pretrained_bases["beats"]), "sha256": run.data.params["model.base_sha256"]}
    model = classifier.build(Config.from_dict(ckpt["config"]), ckpt, torch.device("cpu"), pretrained.Hooks)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(saved["params"]) == trainable
    assert all("lora_" in n or n.startswith(("pool.", "head.")) for n in trainable)
    assert sum(v.numel() for v in saved["params"].values()) == run.data.metrics["model/trainable_params"]


def test_changed_base_is_refused_at_evaluate_time(toy_dir, store, pretrained_bases, tmp_path):
    base = shutil.copy(pretrained_bases["beats"], tmp_path / "BEATs_mine.pt")
    run_id = last_run_id(run_cli(_train_args("dis_beats_scac_trainable", base, toy_dir)).output)
    write_checkpoint(tmp_path / "BEATs_mine.pt", BASE, seed=1)  # same name and layout, other weights
    res = run_cli(["evaluate", "--run-id", run_id, "--data-dir", str(toy_dir), "--no-umap"], ok=False)
    assert res.exit_code == 2
    assert f"base checkpoint {base} has SHA-256 {_sha256(tmp_path / 'BEATs_mine.pt')}" in res.output
    assert "use that exact base file" in res.output


def test_missing_base_fails_at_once_and_says_where_to_get_it(toy_dir, store, tmp_path, monkeypatch):
    before = len(mlflow.search_runs(search_all_experiments=True, output_format="list"))
    res = run_cli(["train", "--recipe", "dis_beats_scac_trainable", "--data-dir", str(toy_dir)], ok=False)
    assert res.exit_code == 2
    for words in ("model.checkpoint='BEATs_iter3.pt' is neither a file here nor in $ASD_PRETRAINED_DIR (unset)",
                  "github.com/microsoft/unilm", "--set model.checkpoint=PATH", "set ASD_PRETRAINED_DIR"):
        assert words in res.output
    res = run_cli(["train", "--recipe", "raw_hf", "--data-dir", str(toy_dir)], ok=False)
    assert res.exit_code == 2 and "needs model.checkpoint, which is not set" in res.output
    res = run_cli(["train", "--recipe", "raw_beats", "--data-dir", str(toy_dir), "--set",
                   f"model.checkpoint={tmp_path / 'nope.pt'}"], ok=False)
    assert res.exit_code == 2 and f"model.checkpoint {tmp_path / 'nope.pt'} does not exist" in res.output
    assert len(mlflow.search_runs(search_all_experiments=True, output_format="list")) == before  # no run made


def test_default_base_name_is_found_in_asd_pretrained_dir(pretrained_bases, tmp_path, monkeypatch):
    from asd.config.recipes import load_recipe
    from asd.training import model_summary

    shutil.copy(pretrained_bases["beats"], tmp_path / "BEATs_iter3.pt")
    monkeypatch.setenv("ASD_PRETRAINED_DIR", str(tmp_path))
    cfg = load_recipe("raw_beats", ["data.clip_seconds=1"])
    assert cfg.model.checkpoint == "BEATs_iter3.pt"
    _, params = model_summary(cfg, None)
    assert params["model.base_path"] == str(tmp_path / "BEATs_iter3.pt")


def test_frozen_recipe_refuses_training_settings(toy_dir, store, pretrained_bases):
    res = run_cli(["train", "--recipe", "raw_beats", "--data-dir", str(toy_dir), "--set",
                   f"model.checkpoint={pretrained_bases['beats']}", "--set", "train.epochs=3"], ok=False)
    assert res.exit_code == 2 and "train.epochs=3 does not apply to recipe 'raw_beats'" in res.output
    assert "trains nothing" in res.output


@pytest.mark.slow
def test_resume_repeats_an_uninterrupted_run_exactly(toy_dir, pretrained_bases, tmp_path):
    """Crash after epoch 1 of 2, resume: same losses, learning rates (the warm-up ramp crosses the
    cut), trained parameters and optimiser state as the run that was never interrupted."""
    from asd.config.recipes import load_recipe
    from asd.data.index import read_index
    from asd.training.runtime import load_checkpoint
    from tests.conftest import assert_same_state, whole_and_resumed

    # 30 training clips in batches of 8: 4 steps an epoch, so the 6-step warm-up ends inside epoch 2.
    cfg = load_recipe("dis_beats_scac_trainable", [f"model.checkpoint={pretrained_bases['beats']}",
                                                   "train.epochs=2", "data.clip_seconds=1", "train.warmup_steps=6"])
    whole, resumed, _ = whole_and_resumed(cfg, read_index(toy_dir, "toy", MACHINES.split(",")), tmp_path)
    assert [h["train/loss"] for h in resumed.history] == [whole.history[-1]["train/loss"]]
    assert resumed.history[-1]["train/lr"] == whole.history[-1]["train/lr"] == pytest.approx(1e-4)
    assert whole.history[0]["train/lr"] == pytest.approx(1e-4 * 3 / 6)  # the 4th step of the ramp
    a, b = load_checkpoint(whole.checkpoint), load_checkpoint(resumed.checkpoint)
    assert_same_state(a["state"], b["state"])
    assert_same_state(a["optim"], b["optim"])
    assert a["optim"]["param_groups"][0]["steps_done"] == 8


def test_search_space_needs_a_base_for_pretrained_recipes(toy_dir, store, pretrained_bases, tmp_path):
    import optuna

    space = tmp_path / "space.yaml"
    space.write_text("recipe: raw_beats\nfixed: {data.clip_seconds: 1, data.machines: 'fan,pump'}\n"
                     "params:\n  backend.k: {int: [1, 3]}\n")
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    base = ["search", "--data-dir", str(toy_dir), "--space", str(space), "--storage", storage, "--n-trials", "1",
            "--study-name", "pt"]
    res = run_cli(base, ok=False)
    assert res.exit_code == 2
    assert f"{space}: recipe raw_beats: recipe 'raw_beats': model.checkpoint='BEATs_iter3.pt'" in res.output
    assert "pt" not in optuna.study.get_all_study_names(storage)  # refused before the study was created

    parent = last_run_id(run_cli([*base, "--set", f"model.checkpoint={pretrained_bases['beats']}"]).output)
    study = optuna.load_study(study_name="pt", storage=storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE"]
    trial = mlflow.search_runs(search_all_experiments=True, output_format="list",
                               filter_string=f"tags.mlflow.parentRunId = '{parent}'")[0]
    assert trial.data.params["model.checkpoint"] == str(pretrained_bases["beats"])
    assert 0.0 < trial.data.metrics["dev/official"] <= 1.0


def test_every_family_logs_its_parameter_counts(toy_dir, store):
    """raw_spec 0 and 0; the AE every machine's model (worked out by hand); the classifier its embedding
    model (all of it trained: the checkpoint's tensors less BatchNorm statistics) and its trained head."""
    from asd.config.recipes import load_recipe
    from asd.pipeline import run_train
    from asd.tracking import local_artifact_dir
    from asd.training.runtime import load_checkpoint

    sets = ["data.clip_seconds=1", f"data.machines={MACHINES}"]
    counts = lambda rid: {k: int(v) for k, v in mlflow.get_run(rid).data.metrics.items()  # noqa: E731
                          if k.startswith("model/")}
    assert counts(run_train(load_recipe("raw_spec", sets), toy_dir)) == {"model/total_params": 0,
                                                                       "model/trainable_params": 0}
    # 640 -> 128 x 4 -> 8 -> 128 x 4 -> 640, each hidden layer Linear + BatchNorm (2 x width)
    ae = (640 * 128 + 128 + 256) + 3 * (128 * 128 + 128 + 256) + (128 * 8 + 8 + 16) + (8 * 128 + 128 + 256) \
        + 3 * (128 * 128 + 128 + 256) + (128 * 640 + 640)
    assert ae == 267_928
    rid = run_train(load_recipe("ae", [*sets, "train.epochs=1"]), toy_dir)
    assert counts(rid) == {"model/total_params": 2 * ae, "model/trainable_params": 2 * ae}
    rid = run_train(load_recipe("dis_spec_scac_trainable", [*sets, "train.epochs=1", "train.batch_size=8"]), toy_dir)
    ckpt = load_checkpoint(local_artifact_dir(mlflow.get_run(rid)) / "checkpoints" / "last.pt")
    stats = ("running_mean", "running_var", "num_batches_tracked")
    n = sum(v.numel() for k, v in ckpt["state"]["model"].items() if not k.endswith(stats))
    assert counts(rid) == {"model/total_params": n, "model/trainable_params": n,
                           "model/head_params": len(ckpt["classes"]) * 16 * 256}


@pytest.mark.slow
def test_lora_trains_under_five_percent_of_the_released_size(tmp_path):
    """The recipe on a random checkpoint of BEATs_iter3's size (12 x 768, 90.3M parameters): LoRA r=64
    on q/v, attentive statistics pooling and the 256-d head are 3.0 % of the parameters."""
    from asd.config.recipes import load_recipe
    from asd.models.beats import BEATs, BEATsConfig
    from asd.training import model_summary

    path = tmp_path / "BEATs_full.pt"
    torch.manual_seed(0)
    torch.save({"cfg": dict(FULL), "model": BEATs(BEATsConfig.from_dict(FULL)).state_dict()}, path)
    cfg = load_recipe("dis_beats_scac_trainable", [f"model.checkpoint={path}", "data.clip_seconds=10"])
    metrics, params = model_summary(cfg, None)
    lora = 12 * 2 * 64 * (768 + 768)
    pool = (768 * 48 + 48) + (48 * 768 + 768)
    head = 2 * 768 * 256 + 256
    assert metrics["model/trainable_params"] == lora + pool + head == 2_827_312
    assert metrics["model/total_params"] == 90_311_792 + lora + pool + head
    assert metrics["model/trainable_params"] / metrics["model/total_params"] < 0.05
    assert params["model.base_sha256"] == _sha256(path)


def test_embedding_store_key_follows_the_base_file(toy_dir, pretrained_bases, tmp_path):
    """Search trials share embeddings by config; a base rewritten under the same name must not hit."""
    from asd.config.recipes import load_recipe
    from asd.data.index import read_index
    from asd.search.embeddings import frontend_key

    base = shutil.copy(pretrained_bases["beats"], tmp_path / "BEATs_mine.pt")
    cfg = load_recipe("raw_beats", [f"model.checkpoint={base}", "data.clip_seconds=1"])
    rows = read_index(toy_dir, "toy", ["fan"])
    key = frontend_key(cfg, rows)
    assert frontend_key(cfg, rows) == key
    write_checkpoint(tmp_path / "BEATs_mine.pt", BASE, seed=1)
    os.utime(base, ns=(1, 1))  # a different time even where the clock is coarse
    assert frontend_key(cfg, rows) != key
