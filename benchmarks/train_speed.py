"""Training and extraction speed against the hardware's limit: a roofline table.

For each model (the dual-branch CNN of ``dis_spec_scac_trainable``; optionally the 12-layer 768-d
BEATs with LoRA of ``dis_beats_scac_trainable``) and precision (float32, bfloat16 autocast) it times
a training step (forward, backward, AdamW with the sub-cluster AdaCos head) and an embedding pass,
counts their floating-point operations with ``torch.utils.flop_counter`` and prints clips/s, achieved
GFLOP/s, the nominal peak of the device for that precision and the fraction reached, and peak memory.
Each is measured in up to four ways (``--variants``): ``plain`` (NCHW layout, the for-each AdamW:
the code before the speed work), ``unfused`` (channels_last and the fused AdamW, PyTorch's own
layers: ``train.cpu_kernels=false``), ``tuned`` (as training runs now: channels_last, the fused AdamW
and, on CPUs, the fused BatchNorm/ReLU/pool kernels of ``asd.models.cpu_kernels``) and ``compiled``
(channels_last plus ``train.compile``: ``torch.compile`` of the model; its FLOPs are counted on the
eager model, and ``first_call_s`` shows what the compilation costs).
On the CPU it also times the data path (WAV decoding, cached int16 batches). Clips are synthetic
machine sounds written as 16-bit WAVs.

The CPU peak is nominal, from the CPU's flags, its maximum clock and the threads used: AVX-512
(two FMA units) 64 float32 FLOP per cycle and core, AMX-BF16 1,024 bfloat16 FLOP per cycle and core
(AVX512-BF16 without AMX: 128). GPU peaks are the vendor's dense figures for known parts.

    python benchmarks/train_speed.py                                  # CPU, 10-s clips, batch 64, CNN
    python benchmarks/train_speed.py --seconds 4 --threads 2 --models cnn,beats --batch 8
    python benchmarks/train_speed.py --device cuda --steps 10
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

# Dense TFLOP/s by precision, vendor datasheets (SXM parts): name fragment -> (fp32, bf16).
GPU_PEAKS = {"H200": (67.0, 989.0), "H100": (67.0, 989.0), "A100": (19.5, 312.0), "L4": (30.3, 121.0),
             "A10": (31.2, 125.0), "V100": (15.7, 125.0)}


def cpu_peak_gflops(threads: int) -> dict[str, float]:
    """Nominal float32 and bfloat16 GFLOP/s of ``threads`` cores from /proc/cpuinfo and lscpu."""
    import re
    import subprocess

    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    flags = set(re.search(r"^flags\s*:\s*(.*)$", info, re.M).group(1).split()) if "flags" in info else set()
    mhz = 0.0
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        m = re.search(r"CPU max MHz:\s*([\d.]+)", out)
        mhz = float(m.group(1)) if m else 0.0
    except OSError:
        pass
    if not mhz:
        mhz = max((float(x) for x in re.findall(r"cpu MHz\s*:\s*([\d.]+)", info)), default=0.0)
    fp32 = 64 if "avx512f" in flags else 32 if "avx2" in flags else 8
    bf16 = 1024 if "amx_bf16" in flags else 128 if "avx512_bf16" in flags else fp32
    ghz = mhz / 1000
    return {"fp32": fp32 * ghz * threads, "bf16": bf16 * ghz * threads}


def gpu_peak_gflops() -> dict[str, float]:
    name = torch.cuda.get_device_name()
    for key, (fp32, bf16) in GPU_PEAKS.items():
        if key in name:
            return {"fp32": fp32 * 1000, "bf16": bf16 * 1000}
    return {"fp32": float("nan"), "bf16": float("nan")}


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


def timed(fn, repeats: int, sync) -> float:
    """Wall seconds per call, after one warm-up call."""
    return timed_first(fn, repeats, sync)[0]


def timed_first(fn, repeats: int, sync) -> tuple[float, float]:
    """(wall seconds per call after one warm-up call, seconds of that first call: compilation included)."""
    t0 = time.perf_counter()
    fn()
    sync()
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync()
    return (time.perf_counter() - t0) / repeats, first


def flops(fn) -> float:
    """Floating-point operations of one call (matrix products and convolutions, as torch counts them)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def build(kind: str, n: int, device: torch.device, tmp: Path):
    """(model, head) of a recipe's frontend with random weights."""
    from asd.losses import build_loss
    from asd.models import build_model

    if kind == "cnn":
        model = build_model("multiresnet", n_samples=n, stft_sizes=[1024])
    else:
        from beats_fixtures import FULL, write_checkpoint

        ckpt = write_checkpoint(tmp / "beats_12x768.pt", FULL)
        model = build_model("beats", n_samples=n, checkpoint=str(ckpt), embed_dim=256, lora_rank=64)
    head = build_loss("scadacos", model.dim, 32, subclusters=16, trainable=True)
    return model.to(device), head.to(device)


def bench_model(kind: str, device: torch.device, args, tmp: Path, peaks: dict) -> list[dict]:
    from asd.config import TrainConfig
    from asd.models import cpu_kernels
    from asd.training.runtime import autocast, make_optimizer, prepare_model

    n, bs = int(args.seconds * 16000), args.batch
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    wave = (0.1 * torch.randn(bs, n)).to(device)
    target = torch.nn.functional.one_hot(torch.arange(bs) % 32, 32).float().to(device)
    rows, counted = [], {}
    for variant, prec in [(v, p) for v in args.variants.split(",") for p in args.precisions.split(",")]:
        # "plain": NCHW and the for-each AdamW (before the speed work); "tuned": what training uses now
        tuned = variant in ("unfused", "tuned", "compiled")
        train_cfg = TrainConfig(amp=prec == "bf16", amp_dtype="bf16", cpu_bf16=prec == "bf16", lr=1e-4,
                                optimizer="adamw", channels_last=tuned, compile=variant == "compiled",
                                cpu_kernels=variant == "tuned")
        cpu_kernels.use(train_cfg.cpu_kernels)  # as prepare_cpu sets it for training
        torch.manual_seed(0)
        model, head = build(kind, n, device, tmp)
        model, forward = prepare_model(model, train_cfg)
        params = [p for p in list(model.parameters()) + list(head.parameters()) if p.requires_grad]
        opt = make_optimizer(params, train_cfg) if tuned else torch.optim.AdamW(params, lr=1e-4)

        def step():
            with autocast(device, train_cfg):
                emb = forward(wave)
            loss = head(emb.float(), target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        def embed():
            with torch.inference_mode(), autocast(device, train_cfg):
                forward(wave)

        for stage, fn, mode in (("train step", step, model.train), ("embedding", embed, model.eval)):
            mode()
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            seconds, first = timed_first(fn, args.steps, sync)
            if variant != "compiled":  # the FLOP counter does not see inside compiled graphs; the work is the same
                cpu_kernels.use(False)  # nor inside the fused kernels (the stem's convolution): count the plain layers
                counted[(stage, prec)] = flops(fn)
                cpu_kernels.use(train_cfg.cpu_kernels)
            work = counted.get((stage, prec), float("nan"))
            mem = (torch.cuda.max_memory_allocated() if device.type == "cuda"
                   else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2**30
            rows.append(dict(model=kind, stage=stage, variant=variant, precision=prec, clips_per_s=bs / seconds,
                             gflop_per_clip=work / bs / 1e9, gflop_s=work / seconds / 1e9,
                             peak_gflop_s=peaks[prec], of_peak=work / seconds / 1e9 / peaks[prec],
                             peak_mem_gib=mem, first_call_s=first))
    return rows


def data_path(rows: pd.DataFrame, args) -> list[dict]:
    from asd.data.audio import load_clips
    from asd.data.waves import WaveStore

    n, bs = int(args.seconds * 16000), args.batch
    out = [dict(model="data", stage="decode WAVs (soundfile)", precision="-",
                clips_per_s=bs / timed(lambda: load_clips(list(rows["abspath"]), 16000, n), 1, lambda: None))]
    with tempfile.TemporaryDirectory() as cache:
        store = WaveStore(rows, 16000, cache_dir=cache)
        rng = np.random.default_rng(0)
        out.append(dict(model="data", stage="cached batch (int16 memmap)", precision="-",
                        clips_per_s=bs / timed(lambda: store.batch(np.arange(bs), n, rng), args.steps, lambda: None)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu", help="cpu | cuda")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=3, help="timed repetitions per stage (after one warm-up)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    ap.add_argument("--models", default="cnn", help="cnn, beats or cnn,beats")
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--variants", default="plain,tuned",
                    help="plain: NCHW + for-each AdamW (before); unfused: channels_last + fused AdamW, PyTorch's "
                         "layers; tuned: unfused + the fused CPU kernels (now); compiled: channels_last + "
                         "torch.compile (list it after tuned)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from asd.training.runtime import keep_freed_memory

    keep_freed_memory()  # as training does (asd.training.runtime.prepare_cpu), for every variant
    device = torch.device(args.device)
    peaks = gpu_peak_gflops() if device.type == "cuda" else cpu_peak_gflops(torch.get_num_threads())
    torch.manual_seed(0)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        if device.type == "cpu":
            results += data_path(make_clips(Path(tmp), args.batch, args.seconds), args)
        for kind in args.models.split(","):
            results += bench_model(kind, device, args, Path(tmp), peaks)
    where = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"{where}, {args.seconds:g}-s clips, batch {args.batch}, torch {torch.__version__}; nominal peak "
          f"fp32 {peaks['fp32']:,.0f} GFLOP/s, bf16 {peaks['bf16']:,.0f} GFLOP/s\n")
    df = pd.DataFrame(results)
    cols = [c for c in ["model", "stage", "variant", "precision", "clips_per_s", "gflop_per_clip", "gflop_s", "peak_gflop_s",
                        "of_peak", "peak_mem_gib", "first_call_s"] if c in df]
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for _, r in df[cols].iterrows():
        cells = [f"{v:.1%}" if c == "of_peak" and pd.notna(v) else f"{v:,.2f}" if isinstance(v, float) and pd.notna(v)
                 else "" if not isinstance(v, str) and pd.isna(v) else str(v) for c, v in r.items()]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
