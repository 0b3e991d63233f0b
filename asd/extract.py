"""From a trained (or training-free) frontend to per-clip embeddings and frontend scores.

:func:`extract` returns an :class:`Embeddings` aligned with the index rows it was given, so every
backend and every plot reads the same extraction (one extraction, many backends).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from asd.config import Config
from asd.train import ae_vectors, autocast, family_of, resolve_device


@dataclass
class Embeddings:
    rows: pd.DataFrame  # index rows (train and test clips), positionally aligned with the arrays
    embedding: np.ndarray  # (n_clips, dim)
    recon: np.ndarray | None = None  # (n_clips,) frontend anomaly score (autoencoder MSE), if any
    residual: np.ndarray | None = None  # (n_clips, n_mels) mean reconstruction residual (AE), for Mahalanobis

    def select(self, mask: np.ndarray) -> "Embeddings":
        mask = np.asarray(mask)
        pick = lambda a: None if a is None else a[mask]  # noqa: E731
        return Embeddings(self.rows[mask].reset_index(drop=True), self.embedding[mask], pick(self.recon),
                          pick(self.residual))


def extract(cfg: Config, index: pd.DataFrame, checkpoint: dict | None, batch: int = 64) -> Embeddings:
    """Embed every clip of ``index`` (train and test phases) with ``cfg``'s frontend."""
    index = index[index["phase"].isin(["train", "test"])].reset_index(drop=True)
    family = family_of(cfg.model.name)
    if family == "none":
        return _extract_raw(cfg, index, batch)
    if checkpoint is None:
        raise ValueError(f"model {cfg.model.name!r} needs a checkpoint to extract embeddings")
    if family == "ae":
        return _extract_ae(cfg, index, checkpoint)
    from asd.train_classifier import extract_classifier

    return extract_classifier(cfg, index, checkpoint, batch)


def _extract_raw(cfg: Config, index: pd.DataFrame, batch: int) -> Embeddings:
    from asd.data.dataset import load_waves
    from asd.features import mel_spectrogram

    device = resolve_device(cfg.train.device)
    out = []
    for m, rows in index.groupby("machine", sort=False):
        waves = load_waves(rows, cfg, desc=f"loading {m}")
        for i in range(0, len(waves), batch):
            w = torch.from_numpy(waves[i : i + batch]).to(device)
            out.append((rows.index[i : i + batch], mel_spectrogram(w, cfg.features, cfg.data.sample_rate).mean(-1).cpu()))
    order = np.concatenate([o[0] for o in out])
    emb = torch.cat([o[1] for o in out]).numpy()
    result = np.empty_like(emb)
    result[order] = emb
    return Embeddings(index, result)


def _extract_ae(cfg: Config, index: pd.DataFrame, ckpt: dict) -> Embeddings:
    from asd.data.dataset import load_waves
    from asd.models import build_model

    device = resolve_device(cfg.train.device)
    n = len(index)
    emb = np.zeros((n, cfg.model.bottleneck), np.float32)
    recon = np.zeros(n, np.float32)
    residual = np.zeros((n, cfg.features.n_mels), np.float32)
    for m, rows in index.groupby("machine", sort=False):
        if m not in ckpt["state"]:
            raise ValueError(f"the autoencoder checkpoint has no model for machine {m!r} "
                             f"(trained on: {', '.join(ckpt['state'])}); train with --machines including it")
        model = build_model("ae", **ckpt["model_args"]).to(device)
        model.load_state_dict(ckpt["state"][m])
        model.eval()
        waves = load_waves(rows, cfg, desc=f"loading {m}")
        pos = rows.index.to_numpy()
        for i in range(0, len(waves), 32):
            x = ae_vectors(cfg, waves[i : i + 32], device)  # (b, T', D)
            b, t, d = x.shape
            with torch.no_grad(), autocast(device, cfg.train.amp):
                r, z = model(x.reshape(b * t, d))
            err = (r.float().reshape(b, t, d) - x)
            sl = pos[i : i + 32]
            recon[sl] = err.pow(2).mean(dim=(1, 2)).cpu().numpy()
            emb[sl] = z.float().reshape(b, t, -1).mean(1).cpu().numpy()
            # Mean residual per mel bin over frames and context positions (selective Mahalanobis input).
            residual[sl] = err.reshape(b, t, cfg.features.frames, -1).mean(dim=(1, 2)).cpu().numpy()
    return Embeddings(index, emb, recon, residual)
