"""The discriminative family: one shared embedding model for every machine type, trained to classify
meta-information (asd.labels) with an angular-margin loss (asd.losses); SPEC.md §3.3-3.5.

Clips are tiled or cropped to ``data.clip_seconds`` (random crop start in training, 0 at
extraction); the model computes its own spectra, so on a GPU features are made on the GPU and the
host only moves int16-decoded waveforms (asd.cache) in pinned memory, one batch ahead.

Auxiliary objectives (all recipes' extra heads are trainable sub-cluster AdaCos, K = ``loss.subclusters``):
- ``loss.subspace_weight`` > 0: one head per branch sub-embedding predicting the same classes;
- ``loss.featex_weight`` > 0: a 3C-way head on feature-exchanged embeddings (asd.augment.featex).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from asd.config import Config
from asd.data.dataset import clip_samples, wave_store
from asd.train import (EpochCallback, TrainResult, autocast, grad_scaler, make_optimizer, resolve_device,
                       save_checkpoint, seed_everything)


def model_args(cfg: Config) -> dict:
    return dict(n_samples=clip_samples(cfg), sample_rate=cfg.data.sample_rate,
                stft_sizes=[int(n) for n in cfg.model.stft_sizes], use_fft=bool(cfg.model.use_fft),
                embed_dim=int(cfg.model.embed_dim))


def build_heads(cfg: Config, dim: int, branch_dim: int, n_branches: int, n_classes: int) -> nn.ModuleDict:
    """The main loss head plus the auxiliary heads the config asks for."""
    from asd.losses import get_loss

    lc = cfg.loss
    heads = {"main": get_loss(lc.name, dim, n_classes, margin=lc.margin, scale=lc.scale, subclusters=lc.subclusters,
                              trainable=lc.trainable, dynamic=lc.dynamic)}
    if lc.subspace_weight > 0:
        for b in range(n_branches):
            heads[f"sub{b}"] = get_loss("scadacos", branch_dim, n_classes, subclusters=lc.subclusters, trainable=True)
    if lc.featex_weight > 0:
        heads["featex"] = get_loss("scadacos", dim, 3 * n_classes, subclusters=lc.subclusters, trainable=True)
    return nn.ModuleDict(heads)


def objective(heads: nn.ModuleDict, emb: torch.Tensor, target: torch.Tensor, cfg: Config, branch_dim: int,
              gen: torch.Generator) -> torch.Tensor:
    """Total loss = main + subspace_weight·Σ branch heads + featex_weight·FeatEx head."""
    from asd.augment import featex

    loss = heads["main"](emb, target)
    if cfg.loss.subspace_weight > 0:
        subs = [heads[f"sub{b}"](emb[:, b * branch_dim:(b + 1) * branch_dim], target)
                for b in range(emb.shape[1] // branch_dim)]
        loss = loss + cfg.loss.subspace_weight * torch.stack(subs).sum()
    if cfg.loss.featex_weight > 0:
        ex, ex_t = featex(emb, target, cfg.augment.featex_prob, gen, split=branch_dim)
        loss = loss + cfg.loss.featex_weight * heads["featex"](ex, ex_t)
    return loss


def _autocast(device: torch.device, cfg: Config):
    """CUDA: asd.train.autocast (``train.amp``); CPU: bfloat16 autocast when ``train.cpu_bf16``."""
    if device.type == "cpu" and cfg.train.cpu_bf16:
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return autocast(device, cfg.train.amp)


def _to_device(x: np.ndarray, device: torch.device) -> torch.Tensor:
    t = torch.from_numpy(x)
    return t.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else t


def train_classifier(cfg: Config, rows: pd.DataFrame, ckpt_dir: Path, on_epoch: EpochCallback | None,
                     resume: dict | None) -> TrainResult:
    """Train the shared classifier on the training ``rows`` of every machine; see asd.train.train."""
    from asd.augment import mixup, specaug
    from asd.labels import encode, fit_classes
    from asd.models import build_model

    device = resolve_device(cfg.train.device)
    seed_everything(cfg.train.seed)
    rows = rows.reset_index(drop=True)
    classes = resume["classes"] if resume else fit_classes(rows, cfg.data.label)
    y = torch.from_numpy(encode(rows, classes, cfg.data.label))
    if (y < 0).any():
        raise ValueError("training clips with a class missing from the checkpoint's label map; "
                         "resume with the same index and machines as the interrupted run")
    store = wave_store(rows, cfg, "decoding")
    args = model_args(cfg)
    model = build_model(cfg.model.name, **args).to(device)
    heads = build_heads(cfg, model.dim, model.branch_dim, len(model.branches), len(classes)).to(device)
    params = [p for p in list(model.parameters()) + list(heads.parameters()) if p.requires_grad]
    opt = make_optimizer(params, cfg)
    scaler = grad_scaler(device, cfg.train.amp)
    start = 0
    if resume:
        model.load_state_dict(resume["state"]["model"])
        heads.load_state_dict(resume["state"]["heads"])
        opt.load_state_dict(resume["optim"])
        scaler.load_state_dict(resume.get("scaler", {}) or scaler.state_dict())
        start = int(resume["epoch"])
    n, bs, n_cls = args["n_samples"], cfg.train.batch_size, len(classes)
    history = []
    pool = ThreadPoolExecutor(1)  # assembles the next batch while the current one trains
    for epoch in range(start, cfg.train.epochs):
        # Everything random in an epoch derives from (seed, epoch): a resumed run repeats it exactly.
        gen = torch.Generator().manual_seed(cfg.train.seed * 100003 + epoch)
        rng = np.random.default_rng([cfg.train.seed, epoch])
        order = torch.randperm(len(rows), generator=gen).numpy()
        batches = [order[i:i + bs] for i in range(0, len(order), bs)]
        batches = [b for b in batches if len(b) > 1]  # BatchNorm needs two samples
        model.train()
        heads.train()
        t0, tot_loss, tot_acc, count = time.time(), 0.0, 0.0, 0
        nxt = pool.submit(store.batch, batches[0], n, rng) if batches else None
        for bi, idx in enumerate(batches):
            wave_np = nxt.result()
            if bi + 1 < len(batches):
                nxt = pool.submit(store.batch, batches[bi + 1], n, rng)
            wave = _to_device(wave_np, device)
            target = nn.functional.one_hot(y[idx], n_cls).float().to(device)
            wave, target = mixup(wave, target, cfg.augment.mixup_prob, gen)
            wave = specaug(wave, cfg.augment.specaug_prob, gen)
            with _autocast(device, cfg):
                emb = model(wave)
            emb = emb.float()
            loss = objective(heads, emb, target, cfg, model.branch_dim, gen)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.train.grad_clip > 0:
                scaler.unscale_(opt)
                nn.utils.clip_grad_norm_(params, cfg.train.grad_clip)
            scaler.step(opt)
            scaler.update()
            with torch.no_grad():
                acc = (heads["main"].logits(emb).argmax(1) == target.argmax(1)).float().mean()
            tot_loss += float(loss.detach()) * len(idx)
            tot_acc += float(acc) * len(idx)
            count += len(idx)
        seconds = time.time() - t0
        stats = {"train/loss": tot_loss / max(count, 1), "train/accuracy": tot_acc / max(count, 1),
                 "train/lr": opt.param_groups[0]["lr"], "train/clips_per_second": count / max(seconds, 1e-9)}
        if hasattr(heads["main"], "s") and torch.is_tensor(heads["main"].s):
            stats["train/scale"] = float(heads["main"].s)
        history.append(stats)
        save_checkpoint(
            dict(family="classifier", model_name=cfg.model.name, model_args=args, classes=list(classes),
                 label=cfg.data.label, state={"model": model.state_dict(), "heads": heads.state_dict()},
                 optim=opt.state_dict(), scaler=scaler.state_dict(), config=cfg.to_dict(), epoch=epoch + 1),
            ckpt_dir / "last.pt",
        )
        if on_epoch:
            on_epoch(epoch + 1, stats)
    pool.shutdown()
    return TrainResult(ckpt_dir / "last.pt", cfg.train.epochs, history)


def extract_classifier(cfg: Config, index: pd.DataFrame, checkpoint: dict, batch: int = 64):
    """Embeddings ``(n_clips, dim)`` of every row of ``index``, clips cropped from sample 0.

    Machines the model was not trained on are embedded as well (the model is shared); the label map
    is not needed here, since backends work on embeddings.
    """
    from asd.extract import Embeddings
    from asd.models import build_model

    device = resolve_device(cfg.train.device)
    args = checkpoint["model_args"]
    model = build_model(checkpoint["model_name"], **args).to(device)
    model.load_state_dict(checkpoint["state"]["model"])
    model.eval()
    index = index.reset_index(drop=True)
    store = wave_store(index, cfg, "decoding")
    emb = np.zeros((len(index), model.dim), dtype=np.float32)
    pool = ThreadPoolExecutor(1)
    starts = list(range(0, len(index), batch))
    nxt = pool.submit(store.batch, np.arange(0, min(batch, len(index))), args["n_samples"]) if starts else None
    for j, i in enumerate(starts):
        wave_np = nxt.result()
        if j + 1 < len(starts):
            k = starts[j + 1]
            nxt = pool.submit(store.batch, np.arange(k, min(k + batch, len(index))), args["n_samples"])
        with torch.inference_mode(), _autocast(device, cfg):
            emb[i:i + len(wave_np)] = model(_to_device(wave_np, device)).float().cpu().numpy()
    pool.shutdown()
    return Embeddings(index, emb)
