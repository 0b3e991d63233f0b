"""What verifying clips and keying caches by content cost: ``prepare --check`` on 2,940 4-s clips.

Generates (once, then reuses) a toy set of 2,940 clips of 4 s (6 machines x 490 clips, 16-bit
mono, 128 KB each, 376 MB in all) and prints one row per step:

- ``prepare --check`` end to end (scan, disk vs index, every clip decoded and checked, hashes compared);
- the decode-and-check pass alone, on 1 thread and on the default thread pool;
- hashing every file's bytes (sha256), reading from the page cache;
- the cache key of every clip when nothing changed (one ``stat`` per clip, the recorded hashes used);
- the cache key when every file's stamp changed (a copied data folder: every clip re-hashed);
- the key the old cache used (path + size + mtime), for comparison.

Usage::

    python benchmarks/verify_speed.py                       # data in /tmp/asd-bench-verify
    python benchmarks/verify_speed.py --data-dir DIR --repeats 3
"""

from __future__ import annotations

import argparse
import hashlib
import os
import time
from pathlib import Path

from asd.data.toy import ToySpec

SPEC = ToySpec(seconds=4.0, n_source_train=270, n_target_train=20, n_test=50)  # 6 x 490 = 2,940 clips


def timed(fn, repeats: int) -> tuple[float, float]:
    """(best wall seconds, its process CPU seconds) over ``repeats`` calls, after one warm-up call."""
    fn()
    best = (float("inf"), 0.0)
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        best = min(best, (time.perf_counter() - t0, time.process_time() - c0))
    return best


def old_key(paths: list[str]) -> str:
    h = hashlib.sha256(b"16000|None")
    for p in paths:
        st = os.stat(p)
        h.update(f"|{p}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default="/tmp/asd-bench-verify")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import asd.data.verify as verify
    from asd.data.index import read_index, read_rows
    from asd.data.prepare import check, lock, prepare_toy
    from asd.data.prepare import _toy_expect

    data = Path(args.data_dir)
    t0 = time.perf_counter()
    with lock(data, "toy"):
        prepare_toy(data, spec=SPEC, progress=True)
    print(f"toy set ready in {time.perf_counter() - t0:.1f} s (generated once, then reused)")
    rows = read_index(data, "toy")
    index = read_rows(data / "toy" / "index.csv")
    paths = list(rows["abspath"])
    mb = sum(os.path.getsize(p) for p in paths) / 1e6
    n, expect, threads = len(rows), _toy_expect(SPEC), verify.workers()
    stale = rows.assign(stamp="changed")  # every stamp differs: what a copied or moved data folder looks like

    steps = [
        ("prepare --check, end to end", lambda: check("toy", data, progress=False), threads),
        ("decode + check every clip, 1 thread", None, 1),
        (f"decode + check every clip, {threads} threads", None, threads),
        ("sha256 of every file", lambda: [verify.file_sha256(p) for p in paths], 1),
        ("cache key, nothing changed (stat only)", lambda: verify.fresh_hashes(rows), threads),
        ("cache key, every stamp changed (re-hash)", lambda: verify.fresh_hashes(stale), threads),
        ("old cache key (path + size + mtime)", lambda: old_key(paths), 1),
    ]
    print(f"\n{n} clips of {SPEC.seconds:g} s, {mb:.0f} MB, {os.cpu_count()} CPUs; best of {args.repeats}\n")
    print(f"| step | threads | wall s | CPU s | clips/s | MB/s |\n|---|---|---|---|---|---|")
    for name, fn, k in steps:
        if fn is None:
            def fn(k=k):
                verify.workers, old = (lambda: k), verify.workers
                try:
                    verify.verify(index.drop(columns=verify.COLUMNS), data / "toy", expect, progress=False)
                finally:
                    verify.workers = old
        wall, cpu = timed(fn, args.repeats)
        print(f"| {name} | {k} | {wall:.3f} | {cpu:.3f} | {n / wall:,.0f} | {mb / wall:,.0f} |")


if __name__ == "__main__":
    main()
