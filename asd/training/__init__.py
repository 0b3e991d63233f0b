"""Training families and the one table that dispatches to them.

A family is one module ``asd.training.<name>`` that owns how a frontend is trained and how it embeds
clips:

- ``train(cfg, rows, ckpt_dir, on_epoch, resume) -> TrainResult`` trains on the training rows and
  writes ``<ckpt_dir>/last.pt`` after every epoch;
- ``frontend(cfg, checkpoint, device) -> Frontend`` rebuilds the trained frontend, whose
  ``embed_waves(waves, machine)`` turns ``(n, samples)`` float32 clips into arrays
  (``embedding``, and for the autoencoder ``recon`` and ``residual``);
- ``UNUSED``: the ``train.*`` settings the family has no use for, with why (set one and the config
  is refused instead of being silently ignored);
- optionally ``trains(cfg) -> bool`` (default: True): whether the config learns anything.

Families: ``raw`` (training-free frontends: ``raw_spec``, ``raw_stats``), ``ae`` (one autoencoder per
machine type), ``classifier`` (one shared embedding model trained on meta-information),
``pretrained`` (a pretrained audio encoder, frozen or LoRA-tuned like a classifier). A model
class names its family (``family = "classifier"``); training-free frontends are listed in
:data:`TRAINING_FREE` so that recording their runs needs no torch.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Callable

import numpy as np
import pandas as pd

from asd.config import Config, ConfigError

EpochCallback = Callable[[int, dict[str, float]], None]
TRAINING_FREE = {"raw_spec": "raw", "raw_stats": "raw"}  # model.name -> family, for frontends with no nn.Module


@dataclass
class TrainResult:
    checkpoint: Path | None
    epochs: int
    history: list[dict[str, float]] = field(default_factory=list)


@dataclass
class Embeddings:
    """What a frontend made of some clips, positionally aligned with ``rows``."""

    rows: pd.DataFrame  # index rows (train and test clips)
    embedding: np.ndarray  # (n_clips, dim)
    recon: np.ndarray | None = None  # (n_clips,) the frontend's own anomaly score (autoencoder MSE), if any
    residual: np.ndarray | None = None  # (n_clips, n_mels) mean reconstruction residual (AE), for Mahalanobis

    def select(self, mask: np.ndarray) -> "Embeddings":
        mask = np.asarray(mask)
        pick = lambda a: None if a is None else a[mask]  # noqa: E731
        return Embeddings(self.rows[mask].reset_index(drop=True), self.embedding[mask], pick(self.recon),
                          pick(self.residual))

    def features(self, kinds: tuple[str, ...], who: str = "this backend") -> np.ndarray:
        """The first of ``kinds`` (``embedding``, ``recon``, ``residual``) that this frontend produced."""
        for kind in kinds:
            value = getattr(self, kind)
            if value is not None:
                return value[:, None] if value.ndim == 1 else value
        raise ConfigError(f"{who} needs a frontend with its own score (the autoencoder); "
                          "use knn or another embedding backend")


def family_name(model_name: str) -> str:
    """The training family of ``model.name`` (an unknown model lists the available ones)."""
    if model_name in TRAINING_FREE:
        return TRAINING_FREE[model_name]
    from asd.models import REGISTRY

    return getattr(REGISTRY.get(model_name), "family", "classifier")


def family(model_name: str) -> ModuleType:
    return importlib.import_module(f"{__name__}.{family_name(model_name)}")


def unused_settings(cfg: Config, base: Config | None = None) -> dict[str, str]:
    """The ``train.*`` settings of ``cfg`` that its family ignores, with why.

    ``base`` is the recipe before overrides: only settings that differ from it count as set.
    """
    fam = family(cfg.model.name)
    new, old = cfg.flat(), (base or Config(recipe=cfg.recipe)).flat()
    return {k: why for k, why in getattr(fam, "UNUSED", {}).items() if new[k] != old[k]}


def check_config(cfg: Config, base: Config | None = None) -> None:
    """Refuse a ``train.*`` setting that ``cfg``'s family would ignore (see :func:`unused_settings`)."""
    for key, why in unused_settings(cfg, base).items():
        raise ConfigError(f"{key}={cfg.flat()[key]} does not apply to recipe {cfg.recipe!r} "
                          f"(model {cfg.model.name}, {family_name(cfg.model.name)} family): {why}")


def train(cfg: Config, index: pd.DataFrame, ckpt_dir: str | Path, on_epoch: EpochCallback | None = None,
          resume: dict | None = None) -> TrainResult:
    """Train ``cfg``'s frontend on the training clips of ``index``.

    Args:
        ckpt_dir: where ``last.pt`` is written after each epoch.
        on_epoch: called as ``on_epoch(epoch, metrics)`` after each epoch (1-based).
        resume: a checkpoint dict to continue from (its ``epoch`` epochs are skipped).
    """
    from asd.data.index import ClipIndexError

    check_config(cfg)
    rows = index[index["phase"] == "train"].reset_index(drop=True)
    if rows.empty:
        raise ClipIndexError("no training clips in the index for the selected machines")
    return family(cfg.model.name).train(cfg, rows, Path(ckpt_dir), on_epoch, resume)


def trains(cfg: Config) -> bool:
    """Whether ``cfg``'s frontend learns anything (and so writes checkpoints)."""
    return getattr(family(cfg.model.name), "trains", lambda _cfg: True)(cfg)


def load_frontend(cfg: Config, checkpoint: dict | None):
    """The frontend of ``cfg`` rebuilt from ``checkpoint`` (``None`` for training-free ones), on its device."""
    from asd.training.runtime import resolve_device

    return family(cfg.model.name).frontend(cfg, checkpoint, resolve_device(cfg.train.device))


def embed(cfg: Config, index: pd.DataFrame, checkpoint: dict | None = None, frontend=None) -> Embeddings:
    """Embed every train and test clip of ``index`` with ``cfg``'s frontend (or ``frontend``, if built).

    Clips are read through the waveform cache, tiled or cropped from sample 0 to ``data.clip_seconds``,
    in batches of ``frontend.batch``, per machine type for per-machine frontends.
    """
    from asd.data.waves import clip_samples, wave_store
    from asd.training.runtime import prefetch

    fe = frontend or load_frontend(cfg, checkpoint)
    rows = index[index["phase"].isin(["train", "test"])].reset_index(drop=True)
    n = clip_samples(cfg)
    groups = rows.groupby("machine", sort=False).indices if fe.per_machine else {None: np.arange(len(rows))}
    parts: dict[str, list[np.ndarray]] = {}
    for machine, pos in groups.items():
        store = wave_store(rows.iloc[pos], cfg, "decoding")
        starts = range(0, len(pos), fe.batch)
        waves = prefetch(lambda i: store.batch(np.arange(i, min(i + fe.batch, len(pos))), n), starts)
        for i, w in zip(starts, waves):
            for k, v in fe.embed_waves(w, machine).items():
                parts.setdefault(k, []).append((pos[i:i + len(w)], v))
    arrays = {}
    for k, chunks in parts.items():
        first = chunks[0][1]
        arrays[k] = np.empty((len(rows), *first.shape[1:]), dtype=first.dtype)
        for where, v in chunks:
            arrays[k][where] = v
    return Embeddings(rows, arrays["embedding"], arrays.get("recon"), arrays.get("residual"))
