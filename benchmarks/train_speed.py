"""Throughput of the dual-branch discriminative model's data path and training, in clips per second.

Prints one table row per (device, stage): WAV decoding, cached waveform batches, feature extraction
(the model's STFT + FFT inputs), training steps (forward, backward, AdamW step with the sub-cluster
AdaCos head of ``dis_spec_scac_trainable``) and embedding extraction, plus batch size, threads,
clips per CPU-second (the work, whatever else shares the cores) and the peak resident memory.
Clips are synthetic toy machine sounds written as 16-bit WAVs.

Usage::

    python benchmarks/train_speed.py                    # 10-s clips, batch 64, CPU (+ CUDA if present)
    python benchmarks/train_speed.py --seconds 4 --steps 5 --threads 2
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch


def make_clips(folder: Path, n: int, seconds: float) -> pd.DataFrame:
    import soundfile as sf

    from asd.data.toy import _rng, synthesize

    rows = []
    for i in range(n):
        wave = synthesize("fan", {"spd": "2", "blade": "4"}, "source", None, _rng(0, "bench", i), seconds)
        rel = f"clip_{i:04d}.wav"
        sf.write(str(folder / rel), wave, 16000, subtype="PCM_16")
        rows.append(dict(path=rel, abspath=str(folder / rel), machine="fan", split="dev", phase="train"))
    return pd.DataFrame(rows)


def timed(fn, repeats: int, sync) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) per call, after one warm-up call.

    CPU seconds (all threads) tell the work done when other processes share the cores.
    """
    fn()  # warm-up (allocations, kernel selection)
    sync()
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        fn()
    sync()
    return (time.perf_counter() - t0) / repeats, (time.process_time() - c0) / repeats


def bench_device(device: torch.device, rows: pd.DataFrame, args) -> list[dict]:
    from asd.data.waves import WaveStore
    from asd.data.audio import load_clips
    from asd.losses import build_loss
    from asd.models import build_model

    n = int(args.seconds * 16000)
    bs = args.batch
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    out = []

    def row(stage, times, batch=bs):
        wall, cpu = times
        out.append(dict(device=device.type, stage=stage, batch=batch, threads=torch.get_num_threads(),
                        clips_per_s=batch / wall, clips_per_cpu_s=batch / max(cpu, 1e-9)))

    if device.type == "cpu":  # host-side stages, measured once
        paths = list(rows["abspath"][:bs])
        row("decode WAVs (soundfile)", timed(lambda: load_clips(paths, 16000, n), 1, sync))
        with tempfile.TemporaryDirectory() as cache:
            store = WaveStore(rows, 16000, cache_dir=cache)
            rng = np.random.default_rng(0)
            row("cached batch (int16 memmap)", timed(lambda: store.batch(np.arange(bs), n, rng), args.steps, sync))
    model = build_model("multiresnet", n_samples=n, stft_sizes=[1024]).to(device)
    head = build_loss("scadacos", model.dim, 32, subclusters=16, trainable=True).to(device)
    opt = torch.optim.AdamW(list(model.parameters()) + list(head.parameters()), lr=1e-3)
    wave = (0.1 * torch.randn(bs, n)).to(device)
    target = torch.nn.functional.one_hot(torch.arange(bs) % 32, 32).float().to(device)
    stft, fft = model.branches[1], model.branches[0]

    def features():
        with torch.no_grad():
            stft.spectrogram(wave)
            torch.fft.rfft(wave).abs()

    row("features (STFT 1024 + FFT)", timed(features, args.steps, sync))
    from asd.config import TrainConfig
    from asd.training.runtime import autocast, grad_scaler

    scaler = grad_scaler(device, TrainConfig())

    # On CPU, also the opt-in bfloat16 autocast (train.cpu_bf16); on CUDA, the default train.amp.
    variants = [("", lambda: autocast(device, TrainConfig()))]
    if device.type == "cpu" and args.bf16:
        variants.append((" bf16", lambda: autocast(device, TrainConfig(cpu_bf16=True))))
    for tag, ctx in variants:
        def step():
            with ctx():
                emb = model(wave)
            loss = head(emb.float(), target)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()

        def embed():
            with torch.inference_mode(), ctx():
                model(wave)

        model.train()
        row(f"train step (fwd+bwd+AdamW){tag}", timed(step, args.steps, sync))
        model.eval()
        row(f"embedding extraction{tag}", timed(embed, args.steps, sync))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=3, help="timed repetitions per stage (after one warm-up)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    ap.add_argument("--bf16", action="store_true", help="also time CPU bfloat16 autocast (train.cpu_bf16)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        rows = make_clips(Path(tmp), args.batch, args.seconds)
        results = bench_device(torch.device("cpu"), rows, args)
        if torch.cuda.is_available():
            results += bench_device(torch.device("cuda"), rows, args)
    df = pd.DataFrame(results)
    print(f"dual-branch MultiResNet (FFT + STFT 1024, 256-d), {args.seconds:g}-s clips, batch {args.batch}, "
          f"torch {torch.__version__}")
    print(df.to_string(index=False, float_format=lambda v: f"{v:,.1f}"))
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB")


if __name__ == "__main__":
    main()
