"""Training: one explicit loop per model family, device and mixed-precision handling, checkpoints.

Families:
- ``none`` (``raw_spec``): nothing to learn; the run records the config only.
- ``ae``: one autoencoder per machine type, all trained in lockstep so that an epoch, its metrics and
  its checkpoint mean the same thing as for a shared model.
- ``classifier``: one shared embedding model for all machine types (asd.train_classifier).

Checkpoints are dicts holding everything needed to rebuild and resume: ``family``, ``model_name``,
``model_args``, ``state`` (state dicts), ``optim``, ``config``, ``epoch``; written atomically to
``<ckpt_dir>/last.pt`` after every epoch and read back with ``weights_only=True``.
"""

from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from asd.config import Config

from asd.models import FAMILIES, family_of  # noqa: F401  (re-exported: the training families)

EpochCallback = Callable[[int, dict[str, float]], None]


@dataclass
class TrainResult:
    checkpoint: Path | None
    epochs: int
    history: list[dict[str, float]] = field(default_factory=list)


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available; ``cuda`` without a GPU is an error that says so."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("--device cuda requested but no CUDA device is visible; use --device cpu or auto")
    return torch.device(name)


def autocast(device: torch.device, enabled: bool):
    """Mixed precision on CUDA (bfloat16 where supported, else float16); a no-op on CPU."""
    if device.type != "cuda" or not enabled:
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def grad_scaler(device: torch.device, enabled: bool) -> torch.amp.GradScaler:
    # float16 needs loss scaling; bfloat16 and fp32 do not.
    use = device.type == "cuda" and enabled and not torch.cuda.is_bf16_supported()
    return torch.amp.GradScaler("cuda", enabled=use)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def save_checkpoint(obj: dict, path: Path) -> None:
    """Write atomically: a killed process never leaves a half-written checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def make_optimizer(params, cfg: Config) -> torch.optim.Optimizer:
    if cfg.train.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    if cfg.train.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay or 0.01)
    raise ValueError(f"unknown optimizer {cfg.train.optimizer!r} (adam | adamw)")


def train(cfg: Config, index: pd.DataFrame, ckpt_dir: str | Path, on_epoch: EpochCallback | None = None,
          resume: dict | None = None) -> TrainResult:
    """Train ``cfg``'s model on the training clips of ``index``.

    Args:
        ckpt_dir: where ``last.pt`` is written after each epoch.
        on_epoch: called as ``on_epoch(epoch, metrics)`` after each epoch (1-based).
        resume: a checkpoint dict to continue from (its ``epoch`` epochs are skipped).
    """
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    family = family_of(cfg.model.name)
    if family == "none":
        return TrainResult(None, 0)
    train_rows = index[index["phase"] == "train"]
    if train_rows.empty:
        raise ValueError("no training clips in the index for the selected machines")
    if family == "ae":
        return train_ae(cfg, train_rows, Path(ckpt_dir), on_epoch, resume)
    from asd.train_classifier import train_classifier

    return train_classifier(cfg, train_rows, Path(ckpt_dir), on_epoch, resume)


# --------------------------------------------------------------------------------------- autoencoder


def ae_vectors(cfg: Config, waves: np.ndarray, device: torch.device, chunk: int = 64) -> torch.Tensor:
    """Log-mel frame vectors ``(clips, frames', n_mels * frames)`` on ``device``."""
    from asd.features import frame_vectors, mel_spectrogram

    out = []
    for i in range(0, len(waves), chunk):
        w = torch.from_numpy(waves[i : i + chunk]).to(device)
        out.append(frame_vectors(mel_spectrogram(w, cfg.features, cfg.data.sample_rate), cfg.features.frames))
    return torch.cat(out)


def ae_model_args(cfg: Config) -> dict:
    return dict(input_dim=cfg.features.n_mels * cfg.features.frames, hidden=cfg.model.hidden,
                bottleneck=cfg.model.bottleneck, layers=cfg.model.layers)


def train_ae(cfg: Config, rows: pd.DataFrame, ckpt_dir: Path, on_epoch: EpochCallback | None,
             resume: dict | None) -> TrainResult:
    from tqdm import tqdm

    from asd.data.dataset import load_waves
    from asd.models import build_model

    device = resolve_device(cfg.train.device)
    seed_everything(cfg.train.seed)
    machines = sorted(rows["machine"].unique())
    args = ae_model_args(cfg)
    data, models, optims = {}, {}, {}
    for m in machines:
        waves = load_waves(rows[rows["machine"] == m], cfg, desc=f"loading {m}")
        vec = ae_vectors(cfg, waves, device).reshape(-1, args["input_dim"])
        # The baseline holds out a random 10% of frame vectors for validation.
        perm = torch.randperm(len(vec), generator=torch.Generator().manual_seed(cfg.train.seed)).to(device)
        n_val = int(len(vec) * cfg.train.val_fraction)
        data[m] = (vec[perm[n_val:]], vec[perm[:n_val]])
        models[m] = build_model("ae", **args).to(device)
        optims[m] = make_optimizer(models[m].parameters(), cfg)
    start = 0
    if resume:
        for m in machines:
            models[m].load_state_dict(resume["state"][m])
            optims[m].load_state_dict(resume["optim"][m])
        start = int(resume["epoch"])
    scaler = grad_scaler(device, cfg.train.amp)
    history = []
    bs = cfg.train.batch_size
    bar = tqdm(range(start, cfg.train.epochs), desc="train ae", unit="epoch", initial=start, total=cfg.train.epochs)
    for epoch in bar:
        torch.manual_seed(cfg.train.seed * 100003 + epoch)  # same shuffles whether resumed or not
        stats: dict[str, float] = {}
        for m in machines:
            model, opt = models[m], optims[m]
            tr, va = data[m]
            model.train()
            total, count = 0.0, 0
            order = torch.randperm(len(tr), device=device)
            for i in range(0, len(tr), bs):
                x = tr[order[i : i + bs]]
                if len(x) < 2:  # BatchNorm needs two samples
                    continue
                with autocast(device, cfg.train.amp):
                    recon, _ = model(x)
                    loss = torch.mean((recon.float() - x) ** 2)
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                total += loss.item() * len(x)
                count += len(x)
            stats[f"train/{m}/loss"] = total / max(count, 1)
            if len(va):
                model.eval()
                with torch.no_grad(), autocast(device, cfg.train.amp):
                    stats[f"val/{m}/loss"] = float(torch.mean((model(va)[0].float() - va) ** 2))
        stats["train/loss"] = float(np.mean([stats[f"train/{m}/loss"] for m in machines]))
        if any(f"val/{m}/loss" in stats for m in machines):
            stats["val/loss"] = float(np.mean([v for k, v in stats.items() if k.startswith("val/")]))
        stats["train/lr"] = optims[machines[0]].param_groups[0]["lr"]
        history.append(stats)
        bar.set_postfix(loss=f"{stats['train/loss']:.3f}")
        save_checkpoint(
            dict(family="ae", model_name="ae", model_args=args, machines=machines,
                 state={m: models[m].state_dict() for m in machines},
                 optim={m: optims[m].state_dict() for m in machines},
                 config=cfg.to_dict(), epoch=epoch + 1),
            ckpt_dir / "last.pt",
        )
        if on_epoch:
            on_epoch(epoch + 1, stats)
    return TrainResult(ckpt_dir / "last.pt", cfg.train.epochs, history)
