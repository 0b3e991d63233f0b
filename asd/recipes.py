"""Named recipes: small presets over the :mod:`asd.config` dataclasses.

Each value is a flat ``{dotted.key: value}`` dict applied on top of the defaults.
"""

from __future__ import annotations

RECIPES: dict[str, dict] = {
    # The official DCASE autoencoder baseline (SPEC.md §3.1): librosa-style log-mel (Slaney mel scale
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
    # time -> 128-d, scored by cosine kNN with separate source and target neighbour sets (SPEC.md §3.7).
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
}
