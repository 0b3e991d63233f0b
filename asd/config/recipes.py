"""Named recipes: small presets over the :mod:`asd.config` dataclasses.

Each value is a flat ``{dotted.key: value}`` dict applied on top of the defaults; the facts behind
each preset are in ``docs/methods.md``.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable

from asd.config import Config, ConfigError
from asd.config.overrides import apply_overrides

log = logging.getLogger(__name__)

RECIPES: dict[str, dict] = {
    # The official DCASE autoencoder baseline (docs/methods.md, autoencoder): librosa-style log-mel (Slaney mel scale
    # and norm, power 2, 10*log10), 5 frames -> 640 dims, MLP 128x4 with an 8-d bottleneck,
    # Adam 1e-3, batch 256, 100 epochs, 10% frame-level validation; one model per machine type.
    # The score is the mean squared reconstruction error (backend "recon").
    "ae": {
        "model.name": "ae",
        "loss.name": "mse",
        "features.kind": "logmel",
        "features.power": 2.0,
        "features.mel_scale": "slaney",
        "features.mel_norm": "slaney",
        "train.epochs": 100,
        "train.batch_size": 256,
        "train.lr": 1e-3,
        "train.optimizer": "adam",
        "backend.name": "recon",
    },
    # No training: magnitude mel spectrogram (128 mels, htk scale, no norm, no log) averaged over
    # time -> 128-d, scored by cosine kNN with separate source and target neighbour sets (docs/methods.md, raw features).
    "raw_spec": {
        "model.name": "raw_spec",
        "loss.name": "none",
        "features.kind": "mel",
        "features.power": 1.0,
        "features.mel_scale": "htk",
        "features.mel_norm": "none",
        "features.f_max": 8000.0,
        "train.epochs": 0,
        "backend.name": "knn",
    },
    # The floor every trained recipe must beat: log-mel (librosa conventions, 128 mels) mean and
    # standard deviation over time per clip -> 256-d, standardised per machine on its training
    # clips, cosine 1-NN with separate source and target neighbour sets (docs/methods.md, raw features).
    "raw_stats": {
        "model.name": "raw_stats",
        "loss.name": "none",
        "features.kind": "logmel",
        "features.power": 2.0,
        "features.mel_scale": "slaney",
        "features.mel_norm": "slaney",
        "train.epochs": 0,
        "backend.name": "knn",
        "backend.standardize": True,
    },
}

# The discriminative recipes (docs/methods.md, discriminative recipes): one shared MultiResNet for every machine type,
# trained on linear-magnitude spectra to classify machine x section x attributes x domain, AdamW
# 1e-3 (weight decay 0.01, torch's default), batch 64, 16 epochs, no LR schedule; scored by cosine
# kNN with SMOTE-augmented target neighbours (the backend of the reference's results table).
_DIS_SPEC = {
    "model.name": "multiresnet",
    "model.stft_sizes": [1024],
    "model.use_fft": True,
    "model.embed_dim": 128,  # per branch: FFT + STFT -> 256-d
    "loss.name": "scadacos",
    "loss.subclusters": 16,
    "loss.trainable": False,
    "loss.dynamic": False,
    "augment.mixup_prob": 0.5,
    "data.label": "main",
    "train.optimizer": "adamw",
    "train.lr": 1e-3,
    "train.batch_size": 64,
    "train.epochs": 16,
    "backend.name": "knn_smote",
}
RECIPES.update({
    "dis_spec_adacos_fixed_wo_mixup": {**_DIS_SPEC, "loss.name": "adacos", "loss.subclusters": 1,
                                       "augment.mixup_prob": 0.0},
    "dis_spec_adacos_fixed": {**_DIS_SPEC, "loss.name": "adacos", "loss.subclusters": 1},
    "dis_spec_scac_fixed": dict(_DIS_SPEC),
    "dis_spec_scac_trainable": {**_DIS_SPEC, "loss.trainable": True},
    # Main head with fixed centres plus one trainable sub-cluster head per 128-d branch embedding.
    "dis_spec_subspaceloss": {**_DIS_SPEC, "loss.subspace_weight": 1.0},
    # Main head with fixed centres plus a trainable 3C-way head on feature-exchanged embeddings.
    "dis_spec_featex": {**_DIS_SPEC, "loss.featex_weight": 1.0, "augment.featex_prob": 0.5},
    "dis_multispec_scac_trainable": {**_DIS_SPEC, "model.stft_sizes": [256, 1024, 4096], "loss.trainable": True},
})

# Pretrained encoders (docs/methods.md, pretrained encoders; README, "Pretrained encoders"). The base
# checkpoint is model.checkpoint: a path, or a bare name looked up in $ASD_PRETRAINED_DIR. The BEATs
# recipes name BEATs_iter3.pt, the checkpoint of ASDKit's published results; the HF ones have no default
# (any local transformers audio encoder folder). A config whose base is not found is refused at once.
# raw_*: the frozen encoder's last-layer frames averaged over time, scored by cosine kNN.
_RAW_PRETRAINED = {"model.freeze": True, "model.pooling": "mean", "model.embed_dim": 0, "loss.name": "none",
                   "train.epochs": 0, "backend.name": "knn"}
# dis_*: ASDKit's dis_beats recipe: LoRA r=64 on the attention q/v projections (alpha 8, dropout 0: peft's
# defaults), attentive statistics pooling -> Linear 256, trainable sub-cluster AdaCos (K=16) on the main
# classes, mixup 0.5, AdamW 1e-4 (weight decay 0.01) after a linear warm-up over 5000 steps, batch 8,
# 25 epochs, kNN+SMOTE. SpecAug on the fbank (p 0.5, widths < 80) for BEATs, as the issue asks; ASDKit
# has it but leaves it off. The HF recipe leaves it off, since waveform models have no spectrogram.
_DIS_PRETRAINED = {
    "model.lora_rank": 64, "model.lora_alpha": 8.0, "model.lora_dropout": 0.0, "model.freeze": False,
    "model.pooling": "asp", "model.embed_dim": 256,
    "loss.name": "scadacos", "loss.subclusters": 16, "loss.trainable": True, "loss.dynamic": False,
    "augment.mixup_prob": 0.5, "data.label": "main",
    "train.optimizer": "adamw", "train.lr": 1e-4, "train.warmup_steps": 5000, "train.batch_size": 8,
    "train.epochs": 25, "backend.name": "knn_smote",
}
DEFAULT_BEATS = "BEATs_iter3.pt"
RECIPES.update({
    "raw_beats": {"model.name": "beats", "model.checkpoint": DEFAULT_BEATS, **_RAW_PRETRAINED},
    "dis_beats_scac_trainable": {"model.name": "beats", "model.checkpoint": DEFAULT_BEATS, **_DIS_PRETRAINED,
                                 "augment.specaug_prob": 0.5},
    "raw_hf": {"model.name": "hf", **_RAW_PRETRAINED},
    "dis_hf_scac_trainable": {"model.name": "hf", **_DIS_PRETRAINED},
})


def load_recipe(name: str, overrides: Iterable[str] | dict[str, Any] | None = None, shared: bool = False) -> Config:
    """The recipe ``name`` with ``overrides`` applied, checked against its training family.

    Args:
        shared: the overrides are shared by several recipes (``asd main --set``): a ``train.*``
            setting this recipe's family does not use is left out for it, with a warning, instead
            of being an error.

    Raises:
        ConfigError: an unknown recipe or key, a bad value, or (unless ``shared``) an override the
            recipe's training family does not use (e.g. ``train.val_fraction`` for a classifier).
    """
    from asd.training import check_config, unused_settings

    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}; available: {', '.join(sorted(RECIPES))}")
    base = apply_overrides(Config(recipe=name), RECIPES[name])
    cfg = apply_overrides(base, overrides)
    if shared:
        unused = unused_settings(cfg, base)
        for key, why in unused.items():
            log.warning("%s=%s is not used for recipe %s: %s", key, cfg.flat()[key], name, why)
        cfg = apply_overrides(cfg, {k: base.flat()[k] for k in unused})
    check_config(cfg, base)
    return cfg
