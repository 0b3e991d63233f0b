"""The pretrained family: a pretrained audio encoder (``beats``, ``hf``; asd/models/pretrained.py) as the
shared embedding model, LoRA-tuned on the classifier's meta-information task, or frozen.

Training is the classifier family's loop (:mod:`asd.training.classifier`) with other hooks: the model
takes the epoch's generator for its SpecAug on the fbank (``augment.specaug_prob``; no waveform
SpecAug), and checkpoints keep only what was trained plus the base checkpoint's path and SHA-256, so
a checkpoint is megabytes, not the encoder's hundreds. A frozen config (``model.freeze=true`` with
``train.epochs=0``, the ``raw_*`` recipes) trains nothing and embeds with the base encoder itself.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from asd.config import Config
from asd.data.waves import clip_samples
from asd.training import EpochCallback, TrainResult, classifier

UNUSED = dict(classifier.UNUSED)


def model_args(cfg: Config) -> dict:
    m = cfg.model
    return dict(n_samples=clip_samples(cfg), sample_rate=cfg.data.sample_rate, checkpoint=m.checkpoint,
                embed_dim=int(m.embed_dim), lora_rank=int(m.lora_rank), lora_alpha=float(m.lora_alpha),
                lora_dropout=float(m.lora_dropout), freeze=bool(m.freeze), pooling=m.pooling,
                specaug_prob=float(cfg.augment.specaug_prob), grad_checkpoint=bool(m.grad_checkpoint))


class Hooks(classifier.Hooks):
    family = "pretrained"
    wave_specaug = False

    @staticmethod
    def model_args(cfg: Config) -> dict:
        return model_args(cfg)

    @staticmethod
    def forward(model, wave: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return model(wave, generator=gen)

    @staticmethod
    def state(model) -> dict:
        return model.trainable_state_dict()

    @staticmethod
    def load_state(model, state: dict) -> None:
        model.load_trainable_state_dict(state)


def trains(cfg: Config) -> bool:
    return cfg.train.epochs > 0


def train(cfg: Config, rows: pd.DataFrame, ckpt_dir: Path, on_epoch: EpochCallback | None,
          resume: dict | None) -> TrainResult:
    if not trains(cfg):
        return TrainResult(None, 0)
    return classifier.train(cfg, rows, ckpt_dir, on_epoch, resume, hooks=Hooks)


class Frontend(classifier.Frontend):
    batch = 8  # a transformer over 10-s clips: keep activations small


def frontend(cfg: Config, checkpoint: dict | None, device: torch.device) -> Frontend:
    return Frontend(cfg, checkpoint, device, hooks=Hooks)
