"""Issue 12 through the command line: cases 3, 4, 9, 10, 12 (archives) and empty or partial results.
Every user error is one line `error: ...` and exit status 2; real MLflow stores, real archives and WAVs."""

from __future__ import annotations

import io
import zipfile

import mlflow
import numpy as np
import optuna
import pandas as pd
import pytest
import soundfile as sf
from dcase_fixtures import build_year, wav_bytes, write_zip

from asd.data.archives import ArchiveError, Limits, marker_path
from asd.data.dcase import prepare_dcase
from tests.conftest import last_run_id, run_cli

TOY = "seconds=1,n_source_train=6,n_target_train=2,n_test=3,n_dev_machines=1,n_eval_machines=1"


def _user_error(args, match: str) -> str:
    """The command fails as a user error: exit 2, one `error:` line naming the problem, no traceback."""
    res = run_cli(args, ok=False)
    lines = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert res.exit_code == 2 and len(lines) == 1 and "Traceback" not in res.output, res.output
    assert __import__("re").search(match, lines[0]), lines[0]
    return lines[0]


@pytest.fixture
def toy(tmp_path, mlflow_store):
    from asd.data.prepare import prepare

    prepare("toy", tmp_path / "data", toy_spec=TOY, progress=False)
    return tmp_path / "data"


# ---- case 3: asd report on a store without eval results --------------------------------------------

def test_report_on_a_dev_only_store(tmp_path, mlflow_store):
    data = str(tmp_path / "data")
    run_cli(["prepare", "--toy", TOY, "--split", "dev", "--data-dir", data])
    train = last_run_id(run_cli(["train", "--recipe", "raw_spec", "--data-dir", data]).output)
    ev = last_run_id(run_cli(["evaluate", "--run-id", train, "--no-umap", "--data-dir", data]).output)
    dev = mlflow.get_run(ev).data.metrics["dev/official"]
    assert "eval/official" not in mlflow.get_run(ev).data.metrics
    lines = run_cli(["report", "--out", str(tmp_path / "rep")]).output.splitlines()
    assert lines[0] == "| recipe / backend | toy dev | hmean | amean |"
    assert lines[2].startswith(f"| raw_spec / knn | {100 * dev:.2f} |")


# ---- case 4: a mistyped --set never reaches a study; a poisoned study is repaired ------------------

def test_mistyped_set_creates_no_study_and_a_poisoned_one_is_repaired(toy, mlflow_store, tmp_path):
    space = tmp_path / "s.yaml"
    space.write_text("recipe: raw_spec\nfixed: {data.clip_seconds: 1}\nparams:\n  backend.k: {int: [1, 3]}\n")
    storage = f"sqlite:///{tmp_path / 'o.db'}"
    base = ["search", "--space", str(space), "--data-dir", str(toy), "--storage", storage, "--study-name", "p"]
    _user_error([*base, "--n-trials", "1", "--set", "backend.kk=2"], r"unknown config key 'backend\.kk' \(did you mean")
    _user_error([*base, "--n-trials", "1", "--set", "backend.threshold_quantile=1.5"], r"out of range: allowed \(0, 1\)")
    assert optuna.study.get_all_study_names(storage) == []
    # A study an older asd created with the typo stored in it: every worker used to fail on every trial.
    run_cli([*base, "--n-trials", "0", "--set", "backend.threshold_quantile=0.8"])
    optuna.load_study(study_name="p", storage=storage).set_user_attr("asd.sets", '["backend.kk=2"]')
    _user_error([*base, "--n-trials", "1"], r"holds settings no trial can run with .*--reset-settings.*--delete")
    out = run_cli([*base, "--n-trials", "1", "--reset-settings", "--set", "backend.threshold_quantile=0.8"]).output
    study = optuna.load_study(study_name="p", storage=storage)
    assert study.user_attrs["asd.sets"] == '["backend.threshold_quantile=0.8"]'
    assert [t.state.name for t in study.trials] == ["COMPLETE"] and out.strip().endswith(
        study.user_attrs["mlflow_parent_run_id"])
    assert "deleted study p (1 trial(s))" in run_cli([*base, "--delete"]).output
    assert optuna.study.get_all_study_names(storage) == []
    _user_error([*base, "--best"], r"no study 'p' in sqlite:///.*\(studies there: none\)")


# ---- case 9 and 12: foreign, empty and oversized archives never "succeed" -------------------------

@pytest.mark.parametrize("members, message", [
    ({}, r"holds no WAV clip \(0 other file"),
    ({"fan/attributes_00.csv": b"file_name\n"}, r"holds no WAV clip \(1 other file"),
    ({"train/section_00_source_train_normal_0000_m-n_W.wav": None}, r"1 member\(s\) outside fan/ .*not the DCASE archive"),
    ({"dev_data/fan/train/section_00_source_train_normal_0000_m-n_W.wav": None}, r"outside fan/"),
    ({"fan/train/section_00_source_train_normal_0000_m-n_W.wav": bytes(20_000_000)},
     r"unpacks to 20\.0 MB, more than the 2\.8 MB a clip of this year can take"),
])
def test_foreign_empty_or_oversized_archive_is_refused(tmp_path, members, message):
    build_year("dcase2023", tmp_path / "arch", ["fan"])
    write_zip(tmp_path / "arch" / "dev_fan.zip", {k: wav_bytes() if v is None else v for k, v in members.items()})
    data = tmp_path / "data"
    with pytest.raises(ArchiveError, match=message):
        prepare_dcase("dcase2023", data, split="dev", machines=["fan"], archives=tmp_path / "arch", progress=False)
    assert not marker_path(tmp_path / "arch" / "dev_fan.zip", data / "dcase2023" / "dev_data" / "raw").exists()
    assert not (data / "dcase2023" / "index.csv").exists()


def test_archive_size_limit_and_its_flag(tmp_path):
    build_year("dcase2023", tmp_path / "arch", ["fan"])
    args = dict(split="dev", machines=["fan"], archives=tmp_path / "arch", progress=False)
    with pytest.raises(ArchiveError, match=r"unpacks to 0\.[0-9] MB, more than the 0\.1 MB an archive .*--max-archive-gb"):
        prepare_dcase("dcase2023", tmp_path / "data", limits=Limits(max_archive_gb=1e-4), **args)
    prepare_dcase("dcase2023", tmp_path / "data", limits=Limits(max_archive_gb=1.0), **args)
    # The zip bomb of the issue: ~450 KB of zip that unpacks to 200 MB, refused before a byte is written.
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        zf.writestr("fan/train/section_00_source_train_normal_0099_m-n_W.wav", bytes(200_000_000))
    assert len(buf.getvalue()) < 500_000
    (tmp_path / "arch" / "dev_fan.zip").write_bytes(buf.getvalue())
    with pytest.raises(ArchiveError, match=r"unpacks to 200\.0 MB"):
        prepare_dcase("dcase2023", tmp_path / "d2", **args)


# ---- case 10: user errors that used to end in a traceback ----------------------------------------

def _ae_train_run_without_weights(checkpoint: bytes | None) -> str:
    from asd.config import to_yaml
    from asd.config.recipes import load_recipe

    with mlflow.start_run() as run:
        mlflow.set_tag("asd.stage", "train")
        mlflow.log_text(to_yaml(load_recipe("ae")), "config.yaml")
        if checkpoint is not None:
            mlflow.log_text("", "checkpoints/last.pt")
    return run.info.run_id


def test_user_errors_are_one_line(toy, mlflow_store, tmp_path):
    import torch

    d = ["--data-dir", str(toy)]
    _user_error(["evaluate", "--run-id", "0" * 32, *d], r"no MLflow run '0{32}'")
    _user_error(["evaluate", "--run-id", _ae_train_run_without_weights(None), *d],
                r"has no artifact 'checkpoints/last.pt'")
    _user_error(["evaluate", "--run-id", _ae_train_run_without_weights(b""), *d], r"empty file \(0 bytes\)")
    _user_error(["train", "--resume", _ae_train_run_without_weights(b""), *d], r"empty file \(0 bytes\)")

    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    torch.save({"x": Evil()}, tmp_path / "evil.pt")
    line = _user_error(["evaluate", "--checkpoint", str(tmp_path / "evil.pt"), *d],
                       r"evil\.pt: a torch file holding Python objects asd does not load")
    assert "weights_only" not in line and "checkpoints/last.pt of a train run" in line
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    _user_error(["evaluate", "--checkpoint", str(tmp_path / "junk.pt"), *d], r"junk\.pt: not a torch checkpoint")
    _user_error(["train", "--recipe", "raw_spec", "--set", "data.clip_seconds=inf", *d], r"clip_seconds=inf is out")
    empty = tmp_path / "empty"
    (empty / "toy").mkdir(parents=True)
    (empty / "toy" / "index.csv").write_text("")
    _user_error(["train", "--recipe", "raw_spec", "--data-dir", str(empty)], r"index\.csv is not a clip index")
    storage = ["--storage", f"sqlite:///{tmp_path / 'o.db'}"]
    _user_error(["search", "--storage", "nope://x", *d], r"--storage 'nope://x' is not a database URL")
    _user_error(["search", "--pruner", "median:bogus=1", *storage, *d], r"median takes n_startup_trials")
    _user_error(["search", "--best", "--study-name", "missing", *storage], r"no study 'missing'")
    victim = pd.read_csv(toy / "toy" / "index.csv")["path"][0]
    sf.write(toy / "toy" / victim, np.zeros((0, 2), np.float32), 16000)  # 0-sample stereo
    _user_error(["prepare", "--toy", TOY, *d], rf"1 bad clip\(s\) \(first: {victim}: empty WAV")


# ---- empty results are errors; an official number the rule cannot compute is reported, not fatal ---

@pytest.fixture
def y2021(tmp_path):
    build_year("dcase2021", tmp_path / "arch", ["gearbox"], n_train=3, n_test=2)
    prepare_dcase("dcase2021", tmp_path / "data", split="dev", machines=["gearbox"], archives=tmp_path / "arch",
                  progress=False)
    return tmp_path / "data"


def test_2021_rule_on_one_domain_logs_what_it_can(y2021, mlflow_store):
    index = y2021 / "dcase2021" / "index.csv"
    df = pd.read_csv(index, keep_default_na=False, dtype=str)
    df[~((df["phase"] == "test") & (df["domain"] == "target"))].to_csv(index, index=False)
    d = ["--data-dir", str(y2021)]
    train = last_run_id(run_cli(["train", "--dataset", "dcase2021", "--recipe", "raw_spec", *d]).output)
    out = run_cli(["evaluate", "--run-id", train, "--no-umap", *d]).output
    assert "raw_spec / knn: no official score; official not computed: official score (hmean2021) needs" in out
    run = mlflow.get_run(last_run_id(out))
    assert run.info.status == "FINISHED" and 0 <= run.data.metrics["gearbox/s_auc"] <= 1
    assert "official" not in run.data.metrics and "official" in run.data.tags["asd.missing_metrics"].split(",")
    table = pd.read_csv(io.StringIO(mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/tables/missing_metrics.csv")))
    assert "dev/official" in set(table["metric"]) and table["why"].str.contains("lacks them").all()


def test_no_training_clip_and_no_label_are_errors(y2021, mlflow_store):
    index = y2021 / "dcase2021" / "index.csv"
    full = pd.read_csv(index, keep_default_na=False, dtype=str)
    d = ["--dataset", "dcase2021", "--data-dir", str(y2021)]
    full.assign(label=np.where(full["phase"] == "test", "unknown", full["label"])).to_csv(index, index=False)
    train = last_run_id(run_cli(["train", "--recipe", "raw_spec", *d]).output)
    _user_error(["evaluate", "--run-id", train, "--no-umap", "--data-dir", str(y2021)],
                r"none of the \d+ test clips scored has a label")
    full[full["phase"] != "train"].to_csv(index, index=False)
    _user_error(["train", "--recipe", "ae", "--set", "train.epochs=1", *d], r"gearbox have no training clip")
