"""Shared fixtures: a tiny toy dataset (real WAVs, DCASE layout) and an isolated MLflow store."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

from asd.data.toy import ToySpec

# Tiny but complete: every machine, both domains, both labels, eval clips anonymised.
TINY = ToySpec(seconds=1.0, n_source_train=12, n_target_train=3, n_test=6, seed=0)
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def toy_dir(tmp_path_factory) -> Path:
    """A prepared tiny toy dataset shared by the session (read-only for tests)."""
    from asd.data.prepare import prepare_toy

    data_dir = tmp_path_factory.mktemp("data")
    prepare_toy(data_dir, spec=TINY, progress=False)
    return data_dir


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch) -> str:
    """A fresh SQLite tracking store (and artifact folder) for one test, the current directory set to tmp."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    # mlflow.set_experiment exports MLFLOW_EXPERIMENT_ID; setting the names first makes monkeypatch
    # remove whatever the test leaves there (a later test's subprocess would inherit a foreign id).
    for name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    import mlflow

    mlflow.set_tracking_uri(uri)
    while mlflow.active_run():
        mlflow.end_run()
    yield uri
    while mlflow.active_run():
        mlflow.end_run()


@pytest.fixture(autouse=True)
def _threads():
    # Two cores on CI: keep torch from oversubscribing when tests run alongside data loading.
    import torch

    torch.set_num_threads(min(2, os.cpu_count() or 1))


def run_cli(args, ok=True):
    """Invoke the ``asd`` CLI in-process; with ``ok`` the command must exit 0."""
    from click.testing import CliRunner

    from asd.cli import main

    res = CliRunner().invoke(main, args, catch_exceptions=False)
    if ok:
        assert res.exit_code == 0, res.output
    return res


def last_run_id(output: str) -> str:
    """The id of the ``run_id: <ID>`` line every run-creating command ends with."""
    last = output.strip().splitlines()[-1]
    assert last.startswith("run_id: "), output
    return last.split()[1]


@pytest.fixture(scope="session")
def pretrained_bases(tmp_path_factory) -> dict[str, Path]:
    """Tiny random pretrained bases in their official formats, shared by the session (read-only):
    ``beats`` a BEATs checkpoint file (2 layers, 48-d, BEATs_iter3's switches), ``ast`` and ``wavlm``
    transformers folders (2 layers, 32-d)."""
    from tests.beats_fixtures import BASE, write_checkpoint
    from tests.hf_fixtures import write_folder

    d = tmp_path_factory.mktemp("pretrained")
    return {"beats": write_checkpoint(d / "BEATs_tiny.pt", BASE), "ast": write_folder("ast", d / "ast"),
            "wavlm": write_folder("wavlm", d / "wavlm")}


def base_sets(recipe: str, bases: dict[str, Path], hf: str | None = None) -> list[str]:
    """``["model.checkpoint=<tiny base>"]`` for a recipe with a pretrained encoder, else ``[]``.

    HF recipes get ``hf`` or by default: raw_hf WavLM (with the tiny random AST, fan's 15 training
    scores are spread so that the Gamma threshold lies below 8 of them, which test_recipes' floor
    refuses), the rest AST.
    """
    from asd.config.recipes import RECIPES

    model = RECIPES[recipe].get("model.name")
    if model not in ("beats", "hf"):
        return []
    key = "beats" if model == "beats" else hf or ("wavlm" if recipe == "raw_hf" else "ast")
    return [f"model.checkpoint={bases[key]}"]


@contextlib.contextmanager
def module_store(tmp: Path, unset: tuple[str, ...] = ()):
    """A fresh SQLite MLflow store in ``tmp`` for a whole test module (yields its URI), the current
    directory set to ``tmp``; ``unset``: more environment variables to remove meanwhile."""
    import mlflow

    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        for name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", *unset):
            mp.delenv(name, raising=False)
        mp.chdir(tmp)
        mlflow.set_tracking_uri(uri)
        while mlflow.active_run():
            mlflow.end_run()
        yield uri
        # the CLI's set_experiment exported this store's experiment id; the context's undo then puts
        # back whatever was there before the module
        os.environ.pop("MLFLOW_EXPERIMENT_ID", None)


class Crash(Exception):
    """Raised by :func:`whole_and_resumed`'s epoch callback to interrupt a run."""


def whole_and_resumed(cfg, index, tmp: Path):
    """``(whole, resumed, first)``: ``cfg`` trained uninterrupted; the same run crashed after epoch 1
    and resumed from that checkpoint (``first``, the epoch-1 checkpoint dict)."""
    from asd.training import train
    from asd.training.runtime import load_checkpoint

    whole = train(cfg, index, tmp / "whole")

    def crash_after_first(epoch, _stats):
        if epoch == 1:
            raise Crash()

    with pytest.raises(Crash):
        train(cfg, index, tmp / "cut", on_epoch=crash_after_first)
    first = load_checkpoint(tmp / "cut" / "last.pt")
    return whole, train(cfg, index, tmp / "cut", resume=first), first


def assert_same_state(a: dict, b: dict) -> None:
    """Equal nested state dicts (tensors compared exactly)."""
    import torch

    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], dict):
            assert_same_state(a[k], b[k])
        elif torch.is_tensor(a[k]):
            assert torch.equal(a[k], b[k]), k
        else:
            assert a[k] == b[k], k
