"""Pipeline speed: CLI start-up, per-stage start-up, UMAP per machine and the whole `ae` recipe.

Workload as the reference measurements: the toy generator in the DCASE 2023 layout with 14 machines
(7 dev, 7 eval), 4-s clips, 200 source + 10 target training clips per machine (2,940 in all) and 200
test clips per machine. Prints a table; nothing is asserted.

    python benchmarks/pipeline_speed.py [--work DIR] [--epochs 100] [--skip-ae]

Reference (ASDKit on the same 2-core CPU): 6.7 s start-up per stage call, 17 s per machine on UMAP,
39 min for the whole `ae` recipe.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REFERENCE = {"cli": None, "stage": 6.7, "umap": 17.0, "ae": 39 * 60.0}


def timed(cmd: list[str], env: dict, cwd: Path) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
    return time.perf_counter() - t0, out.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="/tmp/asd_bench", help="scratch folder (data + MLflow store)")
    ap.add_argument("--epochs", type=int, default=100, help="AE epochs (the baseline's 100)")
    ap.add_argument("--skip-ae", action="store_true", help="only start-up and UMAP")
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}", "ASD_DATA_DIR": str(work / "data")}
    asd = [sys.executable, "-m", "asd.cli"]
    rows = []

    t, _ = timed([*asd, "prepare", "--dataset", "toy", "--toy",
                  "seconds=4,n_source_train=200,n_target_train=10,n_test=50,n_dev_machines=7,n_eval_machines=7"],
                 env, work)
    rows.append(("prepare toy, 14 machines, 5,740 clips (s)", t, None))

    cli = [timed([*asd, "--help"], env, work)[0] for _ in range(5)]
    rows.append(("CLI start: `asd --help` (s, median of 5)", statistics.median(cli), REFERENCE["cli"]))
    imp = [timed([sys.executable, "-c", "import asd.pipeline, asd.training.classifier, mlflow, torch"], env, work)[0] for _ in range(3)]
    rows.append(("stage start-up: imports (s, median of 3)", statistics.median(imp), None))
    st = [timed([*asd, "train", "--recipe", "raw_spec", "--machines", "fan"], env, work)[0] for _ in range(3)]
    rows.append(("stage call: `asd train --recipe raw_spec` (s, median of 3)", statistics.median(st), REFERENCE["stage"]))

    # UMAP: one figure per machine on raw_spec embeddings of all 14 machines (numba compile included).
    t, out = timed([*asd, "train", "--recipe", "raw_spec"], env, work)
    rid = out.strip().splitlines()[-1].split()[1]
    t_no, _ = timed([*asd, "evaluate", "--run-id", rid, "--no-umap"], env, work)
    t_umap, _ = timed([*asd, "evaluate", "--run-id", rid], env, work)
    rows.append(("UMAP per machine, 410 clips each (s, incl. numba compile)", (t_umap - t_no) / 14, REFERENCE["umap"]))

    if not a.skip_ae:
        t0 = time.perf_counter()
        _, out = timed([*asd, "train", "--recipe", "ae", "--set", f"train.epochs={a.epochs}"], env, work)
        rid = out.strip().splitlines()[-1].split()[1]
        _, out = timed([*asd, "evaluate", "--run-id", rid], env, work)
        total = time.perf_counter() - t0
        official = [ln for ln in out.splitlines() if "official" in ln]
        rows.append((f"whole `ae` recipe, {a.epochs} epochs, train+evaluate+UMAP (s)", total, REFERENCE["ae"]))
        print("ae result:", *official)

    import torch

    print(f"\nthreads: {torch.get_num_threads()}, cpus: {os.cpu_count()}, python {sys.version.split()[0]}, torch {torch.__version__}")
    print(f"{'measurement':<66} {'asd':>9} {'reference':>10} {'speed-up':>9}")
    for name, value, ref in rows:
        speed = f"{ref / value:8.1f}x" if ref else ""
        print(f"{name:<66} {value:9.2f} {ref if ref else '':>10} {speed:>9}")


if __name__ == "__main__":
    main()
