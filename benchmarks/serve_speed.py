"""Serving speed: a registered detector scoring 10-s clips end to end on one CPU core.

For each recipe (default: ae, raw_spec, dis_spec_adacos_fixed), trains it briefly on a generated toy
set of one machine type (``valve``, 10-s clips), evaluates it with ``--log-model`` and registers it
in a scratch SQLite registry, then measures, with the scoring process pinned to one core and one
torch thread (``OMP_NUM_THREADS=1``):

- ``asd score``: the real command as a subprocess on ``--clips`` WAV files; its summary gives the
  per-clip latency (one ``predict`` call per clip: decode, frontend, backend) and clips/s; the
  command's wall time (start-up and model loading included) is printed too;
- HTTP: ``mlflow models serve`` (one uvicorn worker, pinned to the same core) answering one
  client, then ``--clients`` concurrent clients, on 127.0.0.1 (threads of this process, on another core where
  there is one), each posting one base64 clip per request (``dataframe_split``) until ``--clips``
  requests are done; latency is the client's request time.

Prints one table; nothing is asserted. Training quality is irrelevant here (1 epoch): the cost of
scoring a clip does not depend on the weights.

    python benchmarks/serve_speed.py [--clips 40] [--clients 4] [--seconds 10] [--recipes ae,raw_spec]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
MACHINE = "valve"


def build(work: Path, recipes: list[str], seconds: float, n_test: int) -> dict[str, str]:
    """Generate the data, train + evaluate + register each recipe; returns recipe -> model URI."""
    from asd.config.recipes import load_recipe
    from asd.data.prepare import prepare_toy
    from asd.data.toy import ToySpec
    from asd.pipeline import run_evaluate, run_train
    from asd.serving.register import run_register

    data = work / "data"
    prepare_toy(data, machines=[MACHINE], spec=ToySpec(seconds=seconds, n_source_train=12, n_target_train=3,
                                                       n_test=n_test), progress=False)
    sets = ["train.epochs=1", "train.batch_size=8", f"data.machines={MACHINE}", f"data.clip_seconds={seconds:g}",
            "train.num_threads=1"]
    uris = {}
    for recipe in recipes:
        eval_run = run_evaluate(data, run_id=run_train(load_recipe(recipe, sets, shared=True), data), umap=False,
                                log_model=True)[0]
        uris[recipe] = run_register(eval_run, f"bench-{recipe}", "bench", data)[1]
    return uris


def pinned_env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}


def pin(core: int):
    return lambda: os.sched_setaffinity(0, {core})


def bench_score(uri: str, files: list[Path], core: int, work: Path) -> dict:
    """The real ``asd score`` on ``files``; latency figures from its summary line."""
    cmd = [sys.executable, "-m", "asd.cli", "score", "--model", uri, "--machine", MACHINE,
           "--out", str(work / "scores.csv"), *map(str, files)]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, env=pinned_env(), capture_output=True, text=True, preexec_fn=pin(core))
    wall = time.perf_counter() - t0
    if out.returncode:
        raise SystemExit(f"asd score failed:\n{out.stderr[-3000:]}")
    m = re.search(r"p50 ([\d.]+) ms, p95 ([\d.]+) ms, ([\d.]+) clips/s", out.stdout)
    return dict(path="asd score", clients=1, clips=len(files), clips_per_s=float(m.group(3)),
                p50_ms=float(m.group(1)), p95_ms=float(m.group(2)), wall_s=wall)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(uri: str, core: int, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", uri, "--env-manager", "local",
           "-h", "127.0.0.1", "-p", str(port), "--workers", "1"]
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=pinned_env(), preexec_fn=pin(core),
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        if proc.poll() is not None:
            raise SystemExit(f"server exited:\n{log.read_text()[-3000:]}")
        try:
            if urllib.request.urlopen(f"{url}/ping", timeout=2).status == 200:
                return proc, url
        except OSError:
            time.sleep(0.2)
    raise SystemExit("server did not start in 120 s")


def post(url: str, body: bytes) -> float:
    req = urllib.request.Request(f"{url}/invocations", data=body, headers={"Content-Type": "application/json"})
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=300) as r:
        pred = json.loads(r.read())["predictions"][0]
    if pred["error"]:
        raise SystemExit(pred["error"])
    return time.perf_counter() - t0


def run_clients(url: str, bodies: list[bytes], clients: int) -> dict:
    """``clients`` threads posting one clip per request until every body was sent once."""
    lat: list[float] = []
    todo = iter(range(len(bodies)))
    lock = threading.Lock()

    def client() -> None:
        while True:
            with lock:
                i = next(todo, None)
            if i is None:
                return
            lat.append(post(url, bodies[i]))

    threads = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ms = np.array(lat) * 1000
    return dict(path="HTTP /invocations", clients=clients, clips=len(bodies), clips_per_s=len(bodies) / wall,
                p50_ms=float(np.percentile(ms, 50)), p95_ms=float(np.percentile(ms, 95)), wall_s=wall)


def bench_http(uri: str, files: list[Path], clients: list[int], core: int, work: Path) -> list[dict]:
    """One server; for each count in ``clients``, that many concurrent clients send every file once."""
    bodies = [json.dumps({"dataframe_split": {"columns": ["machine", "audio"], "data": [
        [MACHINE, base64.b64encode(f.read_bytes()).decode("ascii")]]}}).encode() for f in files]
    proc, url = start_server(uri, core, work / "serve.log")
    try:
        post(url, bodies[0])  # warm-up
        return [run_clients(url, bodies, c) for c in clients]
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--recipes", default="ae,raw_spec,dis_spec_adacos_fixed")
    ap.add_argument("--clips", type=int, default=40, help="test clips scored per measurement")
    ap.add_argument("--clients", type=int, default=4, help="concurrent HTTP clients")
    ap.add_argument("--seconds", type=float, default=10.0, help="clip length")
    ap.add_argument("--core", type=int, default=0, help="the CPU core the scoring process is pinned to")
    ap.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    a = ap.parse_args()
    import pandas as pd

    with tempfile.TemporaryDirectory(prefix="asd-serve-bench-") as tmp:
        work = Path(a.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        os.environ.update(MLFLOW_TRACKING_URI=f"sqlite:///{work / 'mlflow.db'}",
                          MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false")
        os.environ.pop("MLFLOW_RUN_ID", None)
        uris = build(work, a.recipes.split(","), a.seconds, n_test=-(-a.clips // 4))
        files = sorted((work / "data" / "toy" / "dev_data" / "raw" / MACHINE / "test").glob("*.wav"))[: a.clips]
        others = sorted(set(range(os.cpu_count() or 1)) - {a.core})
        if others:  # the clients and this process stay off the scoring core
            os.sched_setaffinity(0, set(others))
        rows = []
        for recipe, uri in uris.items():
            for r in [bench_score(uri, files, a.core, work), *bench_http(uri, files, [1, a.clients], a.core, work)]:
                rows.append({"recipe": recipe, **r, "x_realtime": a.seconds * 1000 / r["p50_ms"]})
    print(f"{a.seconds:g}-s clips of {MACHINE}, scoring process pinned to core {a.core}, 1 torch thread; "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:,.1f}"))
    print("x_realtime: clip seconds per second of p50 latency (> 1: faster than the clip plays)")


if __name__ == "__main__":
    main()
