"""Shared fixtures: a tiny toy dataset (real WAVs, DCASE layout) and an isolated MLflow store."""

from __future__ import annotations

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
