"""The raw family: training-free frontends, whose train runs only record the config.

``raw_spec``: the mel spectrogram (``features.*``) of each clip averaged over time (docs/methods.md,
raw features).
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
    """Time-averaged mel spectrogram per clip."""

    batch = 64
    per_machine = True

    def __init__(self, cfg: Config, device):
        self.cfg, self.device = cfg, device
        self.dim = cfg.features.n_mels

    def embed_waves(self, waves: np.ndarray, machine: str | None = None) -> dict[str, np.ndarray]:
        import torch

        from asd.features import mel_spectrogram

        with torch.inference_mode():
            w = torch.from_numpy(waves).to(self.device)
            mel = mel_spectrogram(w, self.cfg.features, self.cfg.data.sample_rate)
            return {"embedding": mel.mean(-1).cpu().numpy()}


def frontend(cfg: Config, checkpoint: dict | None, device) -> Frontend:
    return Frontend(cfg, device)
