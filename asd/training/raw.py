"""The raw family: training-free frontends, whose train runs only record the config.

``raw_spec``: the mel spectrogram (``features.*``) of each clip averaged over time; ``raw_stats``: its
mean and standard deviation over time, concatenated (docs/methods.md, raw features).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from asd.config import Config
from asd.training import EpochCallback, TrainResult

_TRAINING = "the raw frontends have nothing to train"
UNUSED = {k: _TRAINING for k in ("train.epochs", "train.batch_size", "train.lr", "train.optimizer",
                                  "train.weight_decay", "train.val_fraction", "train.grad_clip",
                                  "train.warmup_steps")}
MIN_EPOCHS = 0  # nothing to train


def trains(cfg: Config) -> bool:
    return False


def min_samples(cfg: Config) -> int:
    """A clip must hold one analysis window."""
    return cfg.features.n_fft


def train(cfg: Config, rows: pd.DataFrame, ckpt_dir: Path, on_epoch: EpochCallback | None,
          resume: dict | None) -> TrainResult:
    return TrainResult(None, 0)


class Frontend:
    """Time-pooled mel spectrogram per clip: the mean (``raw_spec``), or mean and std (``raw_stats``)."""

    batch = 64
    per_machine = True

    def __init__(self, cfg: Config, device):
        self.cfg, self.device = cfg, device
        self.stats = cfg.model.name == "raw_stats"
        self.dim = cfg.features.n_mels * (2 if self.stats else 1)

    def embed_waves(self, waves: np.ndarray, machine: str | None = None) -> dict[str, np.ndarray]:
        import torch

        from asd.features import mel_spectrogram

        with torch.inference_mode():
            w = torch.from_numpy(waves).to(self.device)
            mel = mel_spectrogram(w, self.cfg.features, self.cfg.data.sample_rate)
            pooled = [mel.mean(-1)] + ([mel.std(-1, unbiased=False)] if self.stats else [])
            return {"embedding": torch.cat(pooled, dim=1).cpu().numpy()}


def frontend(cfg: Config, checkpoint: dict | None, device) -> Frontend:
    return Frontend(cfg, device)
