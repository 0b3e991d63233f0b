"""The pretrained family: a pretrained audio encoder (``beats``, ``hf``; asd/models/pretrained.py) as the
shared embedding model, LoRA-tuned on the classifier's meta-information task, or frozen.

Training is the classifier family's loop (:mod:`asd.training.classifier`) with other hooks: the model
takes the epoch's generator for its SpecAug on the fbank (``augment.specaug_prob``; no waveform
SpecAug), and checkpoints keep only what was trained plus the base checkpoint's path and SHA-256, so
a checkpoint is megabytes, not the encoder's hundreds. A frozen config (``model.freeze=true`` with
``train.epochs=0``, the ``raw_*`` recipes) trains nothing and embeds with the base encoder itself.
Embedding merges the LoRA updates into the encoder's weights (one plain Linear per projection).

A config names its base in ``model.checkpoint`` (a path, or a bare name looked up in
``$ASD_PRETRAINED_DIR``); :func:`check` refuses a config whose base cannot be found before anything runs.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import torch

from asd.config import Config, ConfigError
from asd.data.waves import clip_samples
from asd.training import EpochCallback, TrainResult, classifier

UNUSED = dict(classifier.UNUSED)
MIN_EPOCHS = 0  # the frozen raw_* recipes train nothing
_NOTHING = "this config trains nothing (frozen encoder, mean pooling, no Linear head): it embeds with the base itself"
TRAINING_KEYS = ("train.epochs", "train.batch_size", "train.lr", "train.optimizer", "train.weight_decay",
                 "train.val_fraction", "train.grad_clip", "train.warmup_steps")
# Where the bases come from, for the error that says a config has none (README, "Pretrained encoders").
WHERE = {
    "beats": "an official BEATs checkpoint from the BEATs authors' release (github.com/microsoft/unilm, the "
             "README of its 'beats' folder; ASDKit's published results use BEATs_iter3.pt, and "
             "BEATs_iter3_plus_AS2M.pt and the AS2M fine-tuned checkpoints load too)",
    "hf": "a transformers audio encoder (AST, wav2vec 2.0, HuBERT, WavLM, Data2Vec-audio or Whisper) as a folder "
          "written by save_pretrained, e.g. MIT/ast-finetuned-audioset-10-10-0.4593 or microsoft/wavlm-base-plus "
          "from the Hugging Face hub",
}


def learns_nothing(cfg: Config) -> bool:
    """A frozen encoder with parameter-free pooling and no head: no parameter to train."""
    m = cfg.model
    return bool(m.freeze) and m.pooling == "mean" and int(m.embed_dim) <= 0


def unused(cfg: Config) -> dict[str, str]:
    """The classifier's unused settings, and every training setting for a config with nothing to train."""
    return {k: _NOTHING for k in TRAINING_KEYS} if learns_nothing(cfg) else UNUSED


def check(cfg: Config) -> None:
    """Refuse a config whose base checkpoint is not set or not found, saying where to get one and how
    to point asd at it (raises ConfigError)."""
    from asd.models.beats import CheckpointError
    from asd.models.pretrained import resolve_checkpoint

    name, kind = cfg.model.checkpoint, cfg.model.name
    how = (f"get {WHERE.get(kind, 'its base checkpoint')}, then give --set model.checkpoint=PATH, or put it into "
           "a folder, set ASD_PRETRAINED_DIR to that folder and give its name as model.checkpoint")
    if not name:
        raise ConfigError(f"recipe {cfg.recipe!r} (model {kind}) needs model.checkpoint, which is not set; {how}")
    root = os.environ.get("ASD_PRETRAINED_DIR")
    try:
        path = Path(resolve_checkpoint(name, folders_ok=kind == "hf"))
    except CheckpointError:  # a bare file name found nowhere
        raise ConfigError(f"recipe {cfg.recipe!r}: model.checkpoint={name!r} is neither a file here nor in "
                          f"$ASD_PRETRAINED_DIR ({root or 'unset'}); {how}") from None
    # A missing BEATs file is an error now; a missing HF folder may still be a hub id (transformers
    # then looks in its cache and names what it lacks), unless it is written as a path.
    looks_like_path = kind == "beats" or path.is_absolute() or name.startswith((".", "~"))
    if looks_like_path and not path.exists():
        raise ConfigError(f"recipe {cfg.recipe!r}: model.checkpoint {path} does not exist; {how}")


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


def summary(cfg: Config, checkpoint: dict | None) -> tuple[dict[str, float], dict[str, str]]:
    """Parameter counts (the encoder with its LoRA, pooling and head; see asd.training.model_summary)
    and the base checkpoint's ``model.base_path`` and ``model.base_sha256``."""
    model = classifier.build(cfg, checkpoint, torch.device("cpu"), Hooks)
    return (classifier.param_counts(cfg, model, checkpoint),
            {"model.base_path": model.base_path, "model.base_sha256": model.base_sha256})


class Frontend(classifier.Frontend):
    """The trained (or frozen) encoder with its LoRA updates merged into the weights for inference."""

    batch = 8  # a transformer over 10-s clips: keep activations small

    def __init__(self, cfg: Config, checkpoint: dict | None, device: torch.device):
        from asd.models.lora import merge_lora

        super().__init__(cfg, checkpoint, device, hooks=Hooks)
        merge_lora(self.model)


def frontend(cfg: Config, checkpoint: dict | None, device: torch.device) -> Frontend:
    return Frontend(cfg, checkpoint, device)
