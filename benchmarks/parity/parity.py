"""Side-by-side harness: one recipe in asd and in ASDKit (ed27d82) on the same prepared toy clips.

For each recipe and seed it trains and scores with both tools, computes every metric of both
tools' per-clip scores with asd's metric code, and prints one summary (official dev/eval score,
training wall/CPU time, peak RSS of the training process tree) plus a per-machine table
(smix_auc, tmix_auc, mix_pauc), mean ± std over seeds. See README.md beside this file.

Usage::

    PYTHONPATH=$PWD nice -n 10 python benchmarks/parity/parity.py --asdkit ~/dcase-asd-toolkit \\
        --recipe dis_spec_scac_trainable,ae --seeds 0,1,2 --backends knn_smote,knn_kmeans,knn_rescale \\
        --toy seconds=4.5,n_dev_machines=7,n_eval_machines=7 --data-dir /tmp/parity/data --out /tmp/parity
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import pandas as pd

import asd_runner
import asdkit_data
import results
from asdkit_data import ParityError
from asdkit_runner import BACKEND_COLUMNS, Asdkit
from measure import thread_env
from runs import Job, backends_of, run_asd, run_asdkit

# ASDKit's FFT branch (conv kernels/strides 256/64, 64/32, 16/4 over |rfft| of the crop) needs a crop of
# at least 70,014 samples, and its 4096-point STFT branch at least 36 frames (71,680 samples).
MIN_SECONDS = {"dis_multispec_scac_trainable": 71680 / 16000}
MIN_SECONDS_DIS = 70014 / 16000


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--asdkit", required=True, type=Path, help="ASDKit checkout at ed27d82 (not modified)")
    p.add_argument("--recipe", default="dis_spec_scac_trainable,ae", help="comma-separated recipe names")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--backends", default="knn_smote,knn_kmeans,knn_rescale",
                   help=f"asd names, mapped to ASDKit's: {', '.join(k for k in BACKEND_COLUMNS if k != 'recon')}")
    p.add_argument("--data-dir", type=Path, default=None, help="asd data folder (default: OUT/data)")
    p.add_argument("--toy", default="seconds=4.5", help="passed to `asd prepare --dataset toy --toy`")
    p.add_argument("--epochs", type=int, default=None, help="override both tools' epochs (default: each recipe's)")
    p.add_argument("--out", type=Path, required=True, help="folder for tables, raw results, logs, MLflow store")
    p.add_argument("--python", default=str(Path("/work/asdkit-venv/bin/python")),
                   help="interpreter of ASDKit's virtualenv")
    p.add_argument("--threads", type=int, default=1, help="threads per training process (both tools)")
    p.add_argument("--jobs", type=int, default=1, help="runs at once (each uses --threads threads)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--asd-set", action="append", default=[], metavar="KEY=VALUE",
                   help="extra `--set` for asd's training (repeatable), e.g. model.shortcut=bn; part of the "
                        "asd run's settings (a finished asd run with other switches is redone)")
    p.add_argument("--tools", default="asd,ASDKit", help="subset of asd,ASDKit")
    p.add_argument("--force", action="store_true", help="rerun runs whose results are already in OUT/runs")
    p.add_argument("--report-only", action="store_true", help="only rebuild the tables from OUT/runs")
    return p.parse_args(argv)


def _settings(a: argparse.Namespace, recipe: str, backends: list[str], toy: dict) -> dict:
    return dict(recipe=recipe, backends=backends, toy=toy, epochs=a.epochs, threads=a.threads, device=a.device)


def _run_path(out: Path, tool: str, recipe: str, seed: int) -> Path:
    return out / "runs" / f"{tool}__{recipe}__seed{seed}.json"


def _save(out: Path, r: dict, settings: dict) -> None:
    clips = r.pop("clips")
    stem = f"{r['tool']}__{r['recipe']}__seed{r['seed']}"
    (out / "scores").mkdir(parents=True, exist_ok=True)
    clips.to_csv(out / "scores" / f"{stem}.csv", index=False)
    path = _run_path(out, r["tool"], r["recipe"], r["seed"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**r, "settings": settings}, indent=1))
    check = ", ".join(f"{b} {v:.1e}" for b, v in r["check_max_abs_diff"].items())
    print(f"[{time.strftime('%H:%M:%S')}] {stem}: train {r['train']['wall_s']:.0f} s, "
          f"{r['train']['peak_rss_mb']:.0f} MB; "
          + ", ".join(f"{b} dev {m['dev_official']:.4f} eval {m['eval_official']:.4f}" for b, m in r["metrics"].items())
          + f" (own-metric check: {check})", flush=True)


def setup(a: argparse.Namespace) -> tuple[Job, Asdkit | None, pd.DataFrame | None, dict]:
    """asd prepare; ASDKit's patched copy, formatted layout and labels. Returns what runs need."""
    out = a.out.resolve()
    data_dir = (a.data_dir or out / "data").resolve()
    uri = f"sqlite:///{out / 'asd' / 'mlflow.db'}"
    (out / "asd").mkdir(parents=True, exist_ok=True)
    env = thread_env(a.threads, {"MLFLOW_TRACKING_URI": uri, "MLFLOW_EXPERIMENT_NAME": "parity"})
    toy = asd_runner.prepare(data_dir, a.toy, env, out / "asd", out / "logs" / "asd-prepare.log")
    index = pd.read_csv(data_dir / "toy" / "index.csv", dtype={"file": str, "attributes": str}, keep_default_na=False)
    machines = sorted(index["machine"].unique())
    job = Job(out, data_dir, float(toy["seconds"]), a.epochs, a.threads, a.device, env, uri, index, machines,
              tuple(a.asd_set))
    adk = layout = None
    if "ASDKit" in a.tools.split(","):
        src = asdkit_data.patched_copy(a.asdkit, out / "asdkit" / "src")
        ev = asdkit_data.read_eval_list(data_dir / "toy" / "eval_data_list_toy.csv")
        layout = asdkit_data.formatted_layout(index, data_dir / "toy", ev, out / "asdkit" / "data")
        adk = Asdkit(src, out / "asdkit" / "data", out / "asdkit" / "results", a.python, thread_env(a.threads),
                     a.device)
        toy["asdkit_labels"] = adk.labels(out / "logs" / "asdkit-label.log")
    return job, adk, layout, toy


def check_lengths(recipes: list[str], seconds: float) -> None:
    for r in recipes:
        need = 0.0 if r == "ae" else MIN_SECONDS.get(r, MIN_SECONDS_DIS)
        if seconds < need:
            raise ParityError(f"recipe {r}: ASDKit's model needs clips of at least {need:.3f} s, the toy set has "
                              f"{seconds} s; add seconds=4.5 to --toy (both tools then use the same 4.5-s clips)")


def run_all(a: argparse.Namespace, recipes: list[str], seeds: list[int], backends: list[str]) -> int:
    """Run every (recipe, seed, tool) not yet done with the same settings; returns the number that failed."""
    job, adk, layout, toy = setup(a)
    check_lengths(recipes, job.clip_seconds)
    info = dict(toy=toy, data_dir=str(job.data_dir), machines=job.machines,
                splits={m: s for m, s in zip(job.index["machine"], job.index["split"])},
                asdkit_commit=asdkit_data.checkout_commit(a.asdkit), asdkit_python=a.python)
    (a.out / "setup.json").write_text(json.dumps(info, indent=1))
    tasks = []
    for recipe in recipes:
        bs = backends_of(recipe, backends)
        settings = _settings(a, recipe, bs, {k: v for k, v in toy.items() if k != "asdkit_labels"})
        for seed in seeds:
            for tool in a.tools.split(","):
                st = {**settings, "asd_set": list(a.asd_set)} if tool == "asd" and a.asd_set else settings
                path = _run_path(a.out, tool, recipe, seed)
                if path.exists() and not a.force and json.loads(path.read_text()).get("settings") == st:
                    continue
                fn = (lambda r=recipe, s=seed, b=bs: run_asd(job, r, s, b)) if tool == "asd" else \
                     (lambda r=recipe, s=seed, b=bs: run_asdkit(job, adk, layout, r, s, b))
                tasks.append((f"{tool}__{recipe}__seed{seed}", fn, st))
    print(f"{len(tasks)} runs to do ({a.jobs} at a time)", flush=True)
    failed = 0
    with ThreadPoolExecutor(max_workers=max(1, a.jobs)) as pool:
        futures = {pool.submit(fn): (name, settings) for name, fn, settings in tasks}
        for fut in as_completed(futures):
            name, settings = futures[fut]
            try:
                _save(a.out, fut.result(), settings)
            except ParityError as e:  # the others go on; this one is reported and left for a rerun
                failed += 1
                print(f"error: {name}: {e}", file=sys.stderr, flush=True)
    return failed


def report(out: Path, recipes: list[str], seeds: list[int]) -> str:
    """Write summary/machines tables (Markdown + CSV) from OUT/runs; return the Markdown."""
    runs = [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*.json"))]
    runs = [r for r in runs if r["recipe"] in recipes and r["seed"] in seeds]
    if not runs:
        raise ParityError(f"no finished runs in {out / 'runs'} for {recipes} and seeds {seeds}")
    long = results.long_table(runs)
    split_of = json.loads((out / "setup.json").read_text())["splits"]
    summ, mach = results.summary(long), results.machines(long, split_of)
    long.to_csv(out / "runs.csv", index=False)
    summ.to_csv(out / "summary.csv", index=False)
    mach.to_csv(out / "machines.csv", index=False)
    text = ("## Official score and training cost (mean ± std over seeds)\n\n" + results.summary_markdown(summ)
            + "\n\n## Per machine: smix_auc, tmix_auc, mix_pauc (%)\n\n" + results.machines_markdown(mach) + "\n")
    (out / "summary.md").write_text(text)
    return text


def main(argv=None) -> int:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # reading scores back
    a = parse_args(argv)
    a.out = a.out.resolve()
    a.out.mkdir(parents=True, exist_ok=True)
    recipes = [r.strip() for r in a.recipe.split(",") if r.strip()]
    seeds = [int(s) for s in a.seeds.split(",") if s.strip()]
    backends = [b.strip() for b in a.backends.split(",") if b.strip()]
    try:
        unknown = [b for b in backends if b not in BACKEND_COLUMNS or b == "recon"]
        if unknown:
            raise ParityError(f"--backends {','.join(unknown)}: unknown; choose from knn, knn_smote, knn_kmeans, knn_rescale")
        t0 = time.time()
        failed = 0 if a.report_only else run_all(a, recipes, seeds, backends)
        print(report(a.out, recipes, seeds))
        print(f"tables in {a.out}/summary.md, summary.csv, machines.csv; raw runs in {a.out}/runs/ "
              f"({time.time() - t0:.0f} s)")
    except ParityError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if failed:
        print(f"error: {failed} run(s) failed (see above); rerun the same command to retry only those",
              file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
