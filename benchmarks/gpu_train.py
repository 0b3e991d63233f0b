"""Time `dis_spec_scac_trainable` training on a generated set the size of DCASE 2023.

14 machine types × 1,000 training clips of 10 s (by default) are written as 16-bit WAVs in the DCASE
layout with an index, then the recipe trains for a few epochs through the real code path
(`asd.training.train`: waveform cache, prefetch, pinned memory, autocast) while a thread samples the
GPU's utilisation. The clips are noise with machine- and attribute-specific tones (content does not
change the cost). Prints one table: decode/cache time, seconds per epoch, clips/s, GPU busy %, peak
GPU memory, and the 16-epoch recipe's time extrapolated (cache + 16 epochs).

    python benchmarks/gpu_train.py --device cuda                  # the full size (about 4.5 GB of WAVs)
    python benchmarks/gpu_train.py --device cpu --machines 2 --clips 20 --seconds 2 --epochs 1   # a smoke run
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _write(job: tuple) -> tuple:
    """One clip: noise plus the tones of its class, written as int16; returns its index row."""
    import soundfile as sf

    root, machine, i, seconds, n_attr = job
    mid = int(machine[1:])
    rng = np.random.default_rng([mid, i])
    attr = i % n_attr
    t = np.arange(int(seconds * 16000)) / 16000
    f0 = 80.0 * (1 + 0.1 * mid) * (1 + 0.03 * attr)
    wave = 0.05 * rng.standard_normal(len(t)) + sum(0.1 / k * np.sin(2 * np.pi * k * f0 * t) for k in range(1, 6))
    domain = "target" if i % 100 == 99 else "source"
    name = f"section_00_{domain}_train_normal_{i:04d}_a_{attr}.wav"
    rel = Path("dev_data/raw") / machine / "train" / name
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    sf.write(root / rel, (wave * 0.5).astype(np.float32), 16000, subtype="PCM_16")
    return (str(rel), "toy", 2023, "dev", machine, 0, domain, "train", "normal", f"a={attr}", name)


def make_set(data_dir: Path, machines: int, clips: int, seconds: float) -> float:
    """Write the set and its index under ``data_dir/toy``; returns the seconds it took."""
    import pandas as pd

    from asd.data.index import COLUMNS, write_index

    t0 = time.time()
    root = data_dir / "toy"
    jobs = [(root, f"m{m:02d}", i, seconds, 6) for m in range(machines) for i in range(clips)]
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        rows = list(pool.map(_write, jobs, chunksize=64))
    write_index(pd.DataFrame(rows, columns=COLUMNS), data_dir, "toy")
    return time.time() - t0


class GPUBusy:
    """Samples the GPU's utilisation (NVML, via torch) every 0.1 s in a thread."""

    def __init__(self):
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        import torch

        while not self._stop.wait(0.1):
            try:
                self.samples.append(float(torch.cuda.utilization()))
            except Exception:  # noqa: BLE001 - NVML missing: report no number rather than a wrong one
                return

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def mean(self) -> float:
        return float(np.mean(self.samples)) if self.samples else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--machines", type=int, default=14)
    ap.add_argument("--clips", type=int, default=1000, help="training clips per machine type")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--set", dest="sets", action="append", default=[], help="extra config overrides")
    ap.add_argument("--data-dir", default=None, help="keep the generated set here (default: a temporary folder)")
    args = ap.parse_args()

    import torch

    from asd.config.recipes import load_recipe
    from asd.data.index import read_index
    from asd.data.waves import wave_store
    from asd.training import train

    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(args.data_dir or tmp)
        gen_s = make_set(data_dir, args.machines, args.clips, args.seconds)
        index = read_index(data_dir, "toy")
        cfg = load_recipe("dis_spec_scac_trainable", [f"train.device={args.device}", f"train.epochs={args.epochs}",
                                                      f"data.clip_seconds={args.seconds}", *args.sets])
        t0 = time.time()
        wave_store(index, cfg)  # decode once into the int16 cache, as the first run on a data set does
        cache_s = time.time() - t0
        epochs: list[float] = []
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        with tempfile.TemporaryDirectory() as ck, GPUBusy() as busy:
            train(cfg, index, ck, on_epoch=lambda e, m: epochs.append(m["train/epoch_seconds"]))
        steady = float(np.median(epochs[1:] if len(epochs) > 1 else epochs))
        peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan")
        rows = [("device", torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"),
                ("training clips", f"{len(index)} ({args.machines} machines x {args.clips}, {args.seconds:g} s)"),
                ("write WAVs (s)", f"{gen_s:.1f}"), ("decode into the cache (s)", f"{cache_s:.1f}"),
                ("epoch seconds", ", ".join(f"{e:.1f}" for e in epochs)),
                ("clips/s (steady epoch)", f"{len(index) / steady:.0f}"),
                ("GPU busy (mean of 0.1-s samples, %)", f"{busy.mean():.0f}"),
                ("peak GPU memory (GiB)", f"{peak:.2f}"),
                ("16 epochs, extrapolated (min)", f"{(cache_s + 16 * steady) / 60:.1f}")]
        width = max(len(k) for k, _ in rows)
        print("| " + "measure".ljust(width) + " | value |\n|" + "-" * (width + 2) + "|---|")
        for k, v in rows:
            print(f"| {k.ljust(width)} | {v} |")


if __name__ == "__main__":
    main()
