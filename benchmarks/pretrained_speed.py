"""Throughput of the BEATs frontend (12 layers, 768-d, random weights) in clips per second.

Rows: frozen extraction (eval, no gradients, time-mean frames: the ``raw_beats`` path) and one LoRA
training step (r = 64 on q/v, attentive statistics pooling, Linear to 256; forward, backward, AdamW
step), each on CPU in float32 and under bf16 autocast, and on CUDA (float32 and bf16 autocast) when
a GPU is present. Also the process's peak resident memory after each row, and on CUDA the peak
allocated GPU memory. The CUDA rows have not been run on our machines (no GPU here).

Usage::

    python benchmarks/pretrained_speed.py                      # batch 8 of 10-s clips, 2 timed steps
    python benchmarks/pretrained_speed.py --steps 1 --threads 2 --grad-checkpoint
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from beats_fixtures import FULL  # noqa: E402  (the released model's cfg)


def make_checkpoint(folder: Path) -> Path:
    from asd.models.beats import BEATs, BEATsConfig

    torch.manual_seed(0)
    path = folder / "BEATs_random_12x768.pt"
    torch.save({"cfg": dict(FULL), "model": BEATs(BEATsConfig.from_dict(FULL)).state_dict()}, path)
    return path


def timed(fn, steps: int, sync) -> float:
    """Seconds per call, after one warm-up call."""
    fn()
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    sync()
    return (time.perf_counter() - t0) / steps


def bench(ckpt: Path, device: str, bf16: bool, args):
    """Yields (stage, seconds per batch) as each row is measured, so memory can be read after each."""
    from asd.models.pretrained import BEATsEmbedder

    n = int(args.seconds * 16000)
    wave = (0.3 * torch.randn(args.batch, n)).clamp(-1, 1).to(device)
    amp = torch.autocast(device, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    frozen = BEATsEmbedder(n, checkpoint=str(ckpt), embed_dim=0, pooling="mean", freeze=True).to(device).eval()

    def extract():
        with torch.no_grad(), amp:
            frozen(wave)

    yield "frozen extraction", timed(extract, args.steps, sync)
    del frozen

    model = BEATsEmbedder(n, checkpoint=str(ckpt), grad_checkpoint=args.grad_checkpoint).to(device).train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step():
        with amp:
            loss = model(wave).float().square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    yield "LoRA train step", timed(step, args.steps, sync)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=2, help="timed calls per row, after one warm-up call")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--grad-checkpoint", action="store_true")
    ap.add_argument("--no-cpu", action="store_true", help="CUDA rows only")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    configs = [] if args.no_cpu else [("cpu", False), ("cpu", True)]
    if torch.cuda.is_available():
        configs += [("cuda", False), ("cuda", True)]
    print(f"BEATs 12 x 768, batch {args.batch} x {args.seconds:g} s, {args.threads} CPU threads, "
          f"grad checkpoint {args.grad_checkpoint}, torch {torch.__version__}")
    print(f"{'device':6s} {'precision':10s} {'stage':18s} {'s/batch':>9s} {'clips/s':>9s} {'peak RSS GB':>12s} "
          f"{'peak GPU GB':>12s}")
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = make_checkpoint(Path(tmp))
        for device, bf16 in configs:
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            for stage, sec in bench(ckpt, device, bf16, args):
                rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # KB on Linux
                gpu = f"{torch.cuda.max_memory_allocated() / 1e9:12.2f}" if device == "cuda" else f"{'-':>12s}"
                print(f"{device:6s} {'bf16' if bf16 else 'fp32':10s} {stage:18s} {sec:9.2f} {args.batch / sec:9.2f} "
                      f"{rss:12.2f} {gpu}", flush=True)


if __name__ == "__main__":
    main()
