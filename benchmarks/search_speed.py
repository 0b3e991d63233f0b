"""Wall time of a 20-trial `asd search` with and without the shared embedding cache.

Each run is a fresh study (SQLite), a fresh MLflow store and, with the cache, an empty cache, so the
"cache on" time includes computing every distinct frontend once. Both runs sample the same trials
(random sampler, fixed seed) and prune nothing, so they do the same work apart from the cache.

Usage:
    asd prepare --dataset toy --data-dir /tmp/toy6
    python benchmarks/search_speed.py --data-dir /tmp/toy6 [--trials 20] [--spaces raw_spec,ae]

Prints one table row per (space, cache) with the wall time, seconds per trial and cache hits.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Spaces where many trials share a frontend: only backend settings vary, or two frontends x backends.
SPACES = {
    "raw_spec": """
recipe: raw_spec
params:
  backend.k: {int: [1, 8]}
  backend.threshold: {choice: [gamma, quantile]}
""",
    "ae": """
recipe: ae
fixed: {train.epochs: 2, data.machines: "fan,pump"}
params:
  model.bottleneck: {choice: [8, 16]}
  backend.name: {choice: [recon, knn]}
  backend.k: {int: [1, 8], when: {backend.name: [knn]}}
""",
}


def run(space: str, data_dir: str, trials: int, cache: bool, seed: int) -> tuple[float, int]:
    shutil.rmtree(Path(data_dir) / "toy" / "cache", ignore_errors=True)  # cold cache for every run
    with tempfile.TemporaryDirectory(prefix="asd-bench-") as tmp:
        (Path(tmp) / "space.yaml").write_text(SPACES[space])
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db", "PYTHONPATH": str(REPO)}
        env.pop("MLFLOW_RUN_ID", None)
        cmd = [sys.executable, "-m", "asd.cli", "search", "--data-dir", data_dir, "--space", "space.yaml",
               "--n-trials", str(trials), "--pruner", "none", "--sampler", "random", "--seed", str(seed),
               "--storage", f"sqlite:///{tmp}/optuna.db", *([] if cache else ["--no-cache"])]
        t0 = time.time()
        proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True)
        wall = time.time() - t0
        if proc.returncode != 0:
            sys.exit(f"search failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
        con = sqlite3.connect(f"{tmp}/mlflow.db")
        hits = con.execute("select count(*) from tags where key='asd.cache' and value='hit'").fetchone()[0]
        con.close()
    return wall, hits


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default="/tmp/toy6")
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--spaces", default="raw_spec,ae")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    print(f"{'space':<10} {'cache':<6} {'trials':>6} {'wall s':>8} {'s/trial':>8} {'hits':>5}", flush=True)
    for space in a.spaces.split(","):
        for cache in (True, False):
            wall, hits = run(space, a.data_dir, a.trials, cache, a.seed)
            print(f"{space:<10} {'on' if cache else 'off':<6} {a.trials:>6} {wall:>8.1f} {wall / a.trials:>8.2f} "
                  f"{hits:>5}", flush=True)


if __name__ == "__main__":
    main()
