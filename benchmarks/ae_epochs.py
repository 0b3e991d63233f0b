"""The AE recipe's time per epoch on 10-s clips, and whether subnormal floats appear as it trains.

Subnormal (denormal) floats make x86 arithmetic tens of times slower; a model whose weights,
gradients or Adam state drift into that range slows down epoch after epoch. This trains the `ae`
recipe through `asd.training.train` on generated 10-s clips at a realistic recording level (toy
valve sounds scaled to an RMS of about 0.003, with a stretch of digital silence in each), and prints
per epoch: wall and CPU seconds, the loss, and the count of subnormal values in the weights, the
Adam state and the BatchNorm buffers.

    python benchmarks/ae_epochs.py                         # 245 clips (one DCASE machine), 20 epochs
    python benchmarks/ae_epochs.py --no-flush              # without flushing subnormals to zero
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def write_clips(data_dir: Path, n: int, seconds: float, level: float) -> None:
    """``n`` training clips of one machine type in the DCASE layout, with an index."""
    import pandas as pd
    import soundfile as sf

    from asd.data.index import COLUMNS, write_index
    from asd.data.toy import _attr_values, synthesize

    rows = []
    for i in range(n):
        rng = np.random.default_rng(i)
        attrs = dict(_attr_values("valve", "source", rng))
        wave = synthesize("valve", attrs, "source", None, rng, seconds) * level
        start = rng.integers(0, len(wave) - 32000)
        wave[start:start + 32000] = 0.0  # 2 s of digital silence, as some recorders write
        name = f"section_00_source_train_normal_{i:04d}_pat_{attrs['pat']}.wav"
        rel = f"dev_data/raw/valve/train/{name}"
        (data_dir / "toy" / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(data_dir / "toy" / rel, wave, 16000, subtype="PCM_16")
        rows.append((rel, "toy", 2023, "dev", "valve", 0, "source", "train", "normal", f"pat={attrs['pat']}", name))
    write_index(pd.DataFrame(rows, columns=COLUMNS), data_dir, "toy")


def subnormals(tensors) -> int:
    import torch

    tiny = torch.finfo(torch.float32).tiny
    return int(sum(((t.abs() > 0) & (t.abs() < tiny)).sum() for t in tensors if t.is_floating_point()))


def run(data_dir: Path, epochs: int, flush: bool, threads: int) -> list[dict]:
    """Train the ae recipe; one row per epoch (seconds, loss, subnormal counts)."""
    import torch

    from asd.config.recipes import load_recipe
    from asd.data.index import read_index
    from asd.training import train
    from asd.training.runtime import load_checkpoint

    cfg = load_recipe("ae", [f"train.epochs={epochs}", "data.clip_seconds=10", f"train.num_threads={threads}",
                             f"train.flush_denormal={flush}"])
    rows, clock = [], [time.time(), time.process_time()]
    with tempfile.TemporaryDirectory() as ck:
        def on_epoch(epoch, stats):
            state = load_checkpoint(Path(ck) / "last.pt")
            weights = [t for sd in state["state"].values() for t in sd.values()]
            adam = [t for o in state["optim"].values() for s in o["state"].values() for t in s.values()
                    if torch.is_tensor(t) and t.ndim]
            rows.append(dict(epoch=epoch, wall_s=time.time() - clock[0], cpu_s=time.process_time() - clock[1],
                             loss=stats["train/loss"], sub_weights=subnormals(weights), sub_adam=subnormals(adam)))
            clock[:] = [time.time(), time.process_time()]

        train(cfg, read_index(data_dir, "toy"), ck, on_epoch=on_epoch)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=245)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--level", type=float, default=0.03, help="gain on the toy sounds (RMS about 0.1 x this)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-flush", action="store_true", help="train.flush_denormal=false")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        write_clips(Path(tmp), args.clips, 10.0, args.level)
        rows = run(Path(tmp), args.epochs, not args.no_flush, args.threads)
    print(f"ae, {args.clips} clips of 10 s, {args.threads} thread(s), flush_denormal={not args.no_flush}\n")
    print("| epoch | wall s | CPU s | loss | subnormal weights | subnormal Adam state |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['epoch']} | {r['wall_s']:.2f} | {r['cpu_s']:.2f} | {r['loss']:.3f} | {r['sub_weights']} | "
              f"{r['sub_adam']} |")


if __name__ == "__main__":
    main()
