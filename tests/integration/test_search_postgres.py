"""Two `asd search` workers in parallel on one PostgreSQL study (the many-machines setup, on one host).

The fixture starts a throwaway PostgreSQL cluster on 127.0.0.1 (initdb into a temporary folder, run as
the `postgres` OS user when we are root, since PostgreSQL refuses to run as root). Without PostgreSQL
binaries or the psycopg driver the test fails under CI (``CI=true``; `.ci/run` installs both) and is
skipped elsewhere.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlflow
import optuna
import pytest

from tests.conftest import REPO

SPACE = """
recipe: raw_spec
fixed: {data.clip_seconds: 1, data.machines: "fan,pump"}
params:
  features.n_mels: {choice: [32, 64, 128]}
  backend.k: {int: [1, 5]}
"""


def _missing(what: str):
    msg = f"PostgreSQL test needs {what}; `.ci/run` installs it (apt-get install -y postgresql; pip install -e .[dev])"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(msg)
    pytest.skip(msg)


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))  # Debian keeps them off PATH
    return versions[-1] if versions else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres_url():
    """``postgresql+psycopg://postgres@127.0.0.1:<port>`` of a fresh cluster; stopped and removed afterwards."""
    try:
        import psycopg  # noqa: F401  (SQLAlchemy's default PostgreSQL driver)
    except ImportError:
        _missing("the psycopg driver (psycopg[binary])")
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not initdb or not pg_ctl:
        _missing("PostgreSQL server binaries (initdb, pg_ctl)")
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    root = Path(tempfile.mkdtemp(prefix="asd-pg-"))
    if as_user:
        shutil.chown(root, "postgres")
    port = _free_port()
    run = lambda *cmd: subprocess.run([*as_user, *cmd], check=True, capture_output=True, text=True)  # noqa: E731
    run(initdb, "-D", str(root / "db"), "-U", "postgres", "--auth=trust", "-E", "UTF8")
    run(pg_ctl, "-D", str(root / "db"), "-l", str(root / "log"), "-w", "start",
        "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1")
    try:
        import sqlalchemy

        base = f"postgresql+psycopg://postgres@127.0.0.1:{port}"
        engine = sqlalchemy.create_engine(f"{base}/postgres", isolation_level="AUTOCOMMIT")
        with engine.connect() as c:
            c.execute(sqlalchemy.text("CREATE DATABASE optuna"))
            c.execute(sqlalchemy.text("CREATE DATABASE mlflow"))
        engine.dispose()
        yield base
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", str(root / "db"), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_two_workers_share_one_postgres_study(postgres_url, toy_dir, tmp_path, monkeypatch):
    storage, tracking = f"{postgres_url}/optuna", f"{postgres_url}/mlflow"
    monkeypatch.chdir(tmp_path)  # MLflow's local artifact root (./mlruns)
    mlflow.set_tracking_uri(tracking)
    mlflow.set_experiment("asd")  # schema and experiment exist before the workers start (concurrent first use of a fresh SQLite store races on its schema)
    (tmp_path / "space.yaml").write_text(SPACE)
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking, "PYTHONPATH": str(REPO)}
    for k in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID"):
        env.pop(k, None)
    cmd = [sys.executable, "-m", "asd.cli", "search", "--data-dir", str(toy_dir), "--space", "space.yaml",
           "--storage", storage, "--study-name", "pg", "--n-trials", "10", "--pruner", "none", "--no-cache"]
    t0 = time.time()
    # Both start at once: the study and its parent run are created by exactly one of them.
    workers = [subprocess.Popen([*cmd, "--seed", str(i)], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [w.communicate(timeout=400) for w in workers]
    for w, (out, err) in zip(workers, outs):
        assert w.returncode == 0, out[-2000:] + err[-3000:]
    print(f"two workers: {time.time() - t0:.1f} s")

    study = optuna.load_study(study_name="pg", storage=storage)
    trials = study.trials
    states = [t.state.name for t in trials]
    assert states.count("COMPLETE") >= 10 and set(states) == {"COMPLETE"}
    parent = study.user_attrs["mlflow_parent_run_id"]
    for out, _ in outs:
        assert out.strip().splitlines()[-1] == f"run_id: {parent}"
    ran = [{int(line.split()[1].rstrip(":")) for line in out.splitlines() if line.startswith("trial ")}
           for out, _ in outs]
    assert ran[0] and ran[1] and not ran[0] & ran[1]  # both worked, never on the same trial
    assert ran[0] | ran[1] == {t.number for t in trials}

    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    parents = [r for r in runs if r.data.tags.get("asd.stage") == "search"]
    assert [p.info.run_id for p in parents] == [parent]
    children = {int(r.data.tags["asd.trial"]): r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent}
    assert sorted(children) == sorted(t.number for t in trials)
    for t in trials:
        r = children[t.number]
        assert r.info.status == "FINISHED" and r.data.tags["asd.state"] == "COMPLETE"
        assert r.data.metrics["dev/official"] == pytest.approx(t.value)
        assert {k: r.data.params[k] for k in t.params} == {k: str(v) for k, v in t.params.items()}
