"""Detection quality, multi-seed and floor-relative: recipes x seeds on a toy layout.

Every quality claim in the README and docs is a mean ± std over seeds next to the training-free
floor ``raw_stats`` (pooled log-mel mean and std, standardised per machine on its training clips,
cosine 1-NN). For each recipe and seed this trains once, embeds every train and test clip once,
keeps the embeddings, and scores them with each backend asked for; the table gives the official
dev and eval scores (DCASE rule of the toy set) and their difference from the floor.

    PYTHONPATH=$PWD nice -n 10 python benchmarks/quality.py --data-dir /tmp/q/data \\
        --toy seconds=4.5,n_dev_machines=7,n_eval_machines=7 --recipe dis_spec_scac_trainable \\
        --seeds 0,1,2 --backends knn_smote,knn_kmeans,knn_rescale --out /tmp/q/runs

A variant is a tag plus ``--set`` overrides applied to every recipe of the call (``--tag bnshort
--set model.shortcut=raw``). A backend with options is ``NAME:key=value:key=value`` (keys of the
``backend`` section). Finished runs are kept in ``OUT/<recipe>__<tag>__seed<N>/`` (``emb.npz``,
``rows.csv``, ``train.json``, ``scores.json``) and not redone, so new backends score old
embeddings without training again; ``--report-only`` prints the table from what is there.
Training runs one process per run (``--jobs`` at once), one thread each by default; CPU seconds
(not wall) are the comparable cost on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

FLOOR = "raw_stats"


SCORING = 2  # bumped when the same spec scores differently (2: backend.floor, default auto)


def _parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", required=True, help="data folder; the toy set is generated there if missing")
    ap.add_argument("--toy", default="", help="toy spec for `asd prepare --toy` (used when the set is generated)")
    ap.add_argument("--recipe", default="dis_spec_scac_trainable", help="comma-separated recipes")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--backends", default="", help="comma-separated; default: each recipe's own")
    ap.add_argument("--set", action="append", default=[], help="override for every recipe (repeatable)")
    ap.add_argument("--tag", default="default", help="name of this variant in folders and the table")
    ap.add_argument("--out", required=True)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-floor", action="store_true", help="leave out the raw_stats floor")
    ap.add_argument("--ensemble", action="store_true", help="add each variant's seeds scored as one detector")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--worker", nargs=3, metavar=("RECIPE", "SEED", "DIR"), help=argparse.SUPPRESS)
    return ap.parse_args()


def _index(data_dir: Path, toy: str):
    from asd.data.index import read_index

    if not (data_dir / "toy" / "index.csv").is_file():
        from asd.data.prepare import prepare
        from asd.data.toy import parse_spec

        prepare("toy", data_dir, toy_spec=parse_spec(toy))
    return read_index(data_dir, "toy")


def _config(recipe: str, seed: int, data_dir: Path, sets: list[str], threads: int):
    from asd.config.recipes import load_recipe

    spec = json.loads((data_dir / "toy" / "toy_spec.json").read_text())
    base = [f"data.clip_seconds={spec['seconds']}", f"train.seed={seed}", "train.device=cpu"]
    from asd.training import family_name

    cfg = load_recipe(recipe, base)
    if family_name(cfg.model.name) != "raw":
        base.append(f"train.num_threads={threads}")
    return load_recipe(recipe, base + list(sets))


def worker(recipe: str, seed: int, run_dir: Path, data_dir: Path, sets: list[str], threads: int) -> None:
    """Train (if the recipe trains), embed every clip once, write ``emb.npz``, ``rows.csv``, ``train.json``."""
    from asd.config import to_yaml
    from asd.detector import Detector
    from asd.training import train, trains
    from asd.training.runtime import load_checkpoint

    cfg = _config(recipe, seed, data_dir, sets, threads)
    index = _index(data_dir, "")
    t0, c0 = time.time(), _cpu()
    ckpt = None
    if trains(cfg):
        log = lambda e, m: print(f"epoch {e}: loss {m['train/loss']:.4f}, {m['train/epoch_seconds']:.0f} s", flush=True)  # noqa: E731
        ckpt = load_checkpoint(train(cfg, index, run_dir / "checkpoints", log).checkpoint)
    t1, c1 = time.time(), _cpu()
    emb = Detector(cfg, ckpt).embed(index)
    t2, c2 = time.time(), _cpu()
    arrays = {k: v for k in ("embedding", "recon", "residual") if (v := getattr(emb, k)) is not None}
    np.savez(run_dir / "emb.npz", **arrays)
    emb.rows.to_csv(run_dir / "rows.csv", index=False)
    info = dict(recipe=recipe, seed=seed, sets=sets, train_wall_s=t1 - t0, train_cpu_s=c1 - c0,
                embed_wall_s=t2 - t1, embed_cpu_s=c2 - c1, maxrss_mb=_maxrss_mb(), config=to_yaml(cfg))
    (run_dir / "train.json").write_text(json.dumps(info, indent=1))


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _run_worker(recipe: str, seed: int, run_dir: Path, sets: list[str], a: argparse.Namespace) -> None:
    """One training run in its own process (``--threads`` threads), logged to ``run_dir/log.txt``."""
    if (run_dir / "train.json").is_file():
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **{v: str(a.threads) for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                                         "OPENBLAS_NUM_THREADS")}}
    cmd = [sys.executable, __file__, "--data-dir", a.data_dir, "--out", a.out, "--threads", str(a.threads),
           "--worker", recipe, str(seed), str(run_dir)] + [x for s in sets for x in ("--set", s)]
    with open(run_dir / "log.txt", "w") as log:
        rc = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        print(f"FAILED: {recipe} seed {seed} (exit {rc}); see {run_dir / 'log.txt'}", file=sys.stderr)


def backend_spec(spec: str) -> tuple[str, dict]:
    """``knn:k=3:standardize=true`` -> ("knn", {"backend.k": "3", "backend.standardize": "true"})."""
    name, *opts = spec.split(":")
    return name, {f"backend.{k}": v for k, v in (o.split("=", 1) for o in opts)}


def _load(run_dir: Path):
    """(config, Embeddings) of a finished run."""
    import pandas as pd

    from asd.config import from_yaml
    from asd.training import Embeddings

    cfg = from_yaml(json.loads((run_dir / "train.json").read_text())["config"])
    rows = pd.read_csv(run_dir / "rows.csv", dtype={"file": str, "attributes": str}, keep_default_na=False)
    with np.load(run_dir / "emb.npz") as z:
        emb = Embeddings(rows, z["embedding"], z["recon"] if "recon" in z else None,
                         z["residual"] if "residual" in z else None)
    return cfg, emb


def _detector(cfg, spec: str):
    from asd.config.overrides import apply_overrides
    from asd.detector import Detector

    name, opts = backend_spec(spec)
    return Detector(apply_overrides(cfg, {"backend.name": name, **opts}))


def _split_scores(m: dict) -> dict:
    return {"dev": m.get("dev/official"), "eval": m.get("eval/official"), "all": m.get("official")}


def score_run(run_dir: Path, specs: list[str]) -> dict:
    """Official dev/eval scores of each backend spec on the run's embeddings (cached in ``scores.json``)."""
    from asd.evaluation.scoring import evaluate

    path = run_dir / "scores.json"
    done = json.loads(path.read_text()) if path.is_file() else {}
    if done.pop("scoring", None) != SCORING:  # scored by older detector code: every spec again
        done = {}
    todo = [s for s in specs if s not in done]
    if todo:
        cfg, emb = _load(run_dir)
        for spec in todo:
            done[spec] = _split_scores(evaluate(_detector(cfg, spec), emb).metrics)
        path.write_text(json.dumps({"scoring": SCORING, **done}, indent=1))
    return done


def ensemble(runs: list[Path], spec: str) -> dict:
    """The runs (seeds) as one detector: per machine, each run's test scores z-normalised by the mean
    and std of its own leave-one-out training scores, then averaged over runs (no labels used)."""
    from asd.backends.fusion import zstats
    from asd.evaluation.scoring import compute_metrics

    total, out = 0.0, None
    for d in runs:
        cfg, emb = _load(d)
        det = _detector(cfg, spec).fit(emb)
        sc = det.score(emb)
        stats = {m: zstats(b.decision_scores_[None])[0] for m, b in det.backends_.items()}
        mean, std = sc["machine"].map(lambda m: stats[m][0]), sc["machine"].map(lambda m: stats[m][1])
        if out is not None and not (out["file"].to_numpy() == sc["file"].to_numpy()).all():
            raise SystemExit(f"{d}: its test clips are not those of {runs[0]}; ensembles need the same data")
        out = sc
        total = total + ((sc["score"] - mean) / std).to_numpy()
    out = out.assign(score=total / len(runs)).drop(columns=["decision"])
    return _split_scores(compute_metrics(out, cfg.data.dataset)[0])


def _mean_std(xs: list[float]) -> str:
    xs = [100 * x for x in xs if x is not None]
    if not xs:
        return "–"
    return f"{np.mean(xs):.2f} ± {np.std(xs, ddof=1) if len(xs) > 1 else 0.0:.2f}"


def table(results: list[dict]) -> str:
    """Markdown: recipe, tag, backend, seeds, dev and eval mean ± std (%), difference to the floor, CPU."""
    floor = next((r for r in results if r["tag"] == "floor"), None)
    lines = ["| recipe | variant | backend | seeds | dev official (%) | eval official (%) | dev − floor | "
             "eval − floor | train CPU (s) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        dev, ev = r["dev"], r["eval"]
        gap = []
        for split, xs in (("dev", dev), ("eval", ev)):
            f = floor[split][0] if floor and floor[split] else None
            gap.append(f"{100 * (np.mean(xs) - f):+.2f}" if f is not None and xs and r is not floor else "")
        lines.append(f"| {r['recipe']} | {r['tag']} | {r['backend']} | {len(dev)} | {_mean_std(dev)} | "
                     f"{_mean_std(ev)} | {gap[0]} | {gap[1]} | {np.mean(r['cpu']):.0f} |")
    return "\n".join(lines)


def _jobs(a: argparse.Namespace, recipes: list[str], seeds: list[int]) -> list[tuple]:
    """``(recipe, tag, seed, folder, sets)`` per run; the floor is one run of its own recipe, no overrides."""
    out = Path(a.out)
    jobs = [(r, a.tag, s, out / f"{r}__{a.tag}__seed{s}", a.set) for r in recipes for s in seeds]
    if not a.no_floor and FLOOR not in recipes:
        jobs.append((FLOOR, "floor", 0, out / f"{FLOOR}__floor__seed0", []))
    return jobs


def collect(jobs: list[tuple], specs: dict[str, list[str]], ensembles: bool = False) -> list[dict]:
    """Score every finished run and gather ``{recipe, tag, backend, dev: [...], eval: [...], cpu: [...]}``."""
    groups: dict[tuple, list[Path]] = {}
    for recipe, tag, _, folder, _ in jobs:
        if (folder / "train.json").is_file():
            groups.setdefault((recipe, tag), []).append(folder)
    results = []
    for (recipe, tag), runs in groups.items():
        backends = specs["floor" if tag == "floor" else recipe]
        scored = [score_run(d, backends) for d in runs]
        cpu = [json.loads((d / "train.json").read_text())["train_cpu_s"] for d in runs]
        for spec in backends:
            results.append(dict(recipe=recipe, tag=tag, backend=spec, dev=[s[spec]["dev"] for s in scored],
                                eval=[s[spec]["eval"] for s in scored], cpu=cpu))
            if ensembles and len(runs) > 1:
                e = ensemble(runs, spec)
                results.append(dict(recipe=recipe, tag=f"{tag}, {len(runs)} seeds as one", backend=spec,
                                    dev=[e["dev"]], eval=[e["eval"]], cpu=[sum(cpu)]))
    return results


def main() -> None:
    a = _parse()
    data_dir = Path(a.data_dir)
    if a.worker:
        recipe, seed, run_dir = a.worker
        worker(recipe, int(seed), Path(run_dir), data_dir, a.set, a.threads)
        return
    from asd.config.recipes import load_recipe

    _index(data_dir, a.toy)  # generate the toy set once, before workers start
    seeds = [int(s) for s in a.seeds.split(",")]
    recipes = [r for r in a.recipe.split(",") if r]
    jobs = _jobs(a, recipes, seeds)
    specs = {r: [s for s in a.backends.split(",") if s] or [load_recipe(r).backend.name] for r in recipes}
    specs["floor"] = [load_recipe(FLOOR).backend.name]
    if not a.report_only:
        with ThreadPoolExecutor(max(1, a.jobs)) as pool:
            list(pool.map(lambda j: _run_worker(j[0], j[2], j[3], j[4], a), jobs))
    print(table(collect(jobs, specs, a.ensemble)))


if __name__ == "__main__":
    main()
