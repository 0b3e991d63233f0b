"""Training families and the one table that dispatches to them.

A family is one module ``asd.training.<name>`` that owns how a frontend is trained and how it embeds
clips:

- ``train(cfg, rows, ckpt_dir, on_epoch, resume) -> TrainResult`` trains on the training rows and
  writes ``<ckpt_dir>/last.pt`` after every epoch;
- ``frontend(cfg, checkpoint, device) -> Frontend`` rebuilds the trained frontend, whose
  ``embed_waves(waves, machine)`` turns ``(n, samples)`` float32 clips into arrays
  (``embedding``, and for the autoencoder ``recon`` and ``residual``);
- ``UNUSED``: the ``train.*`` settings the family has no use for, with why (set one and the config
  is refused instead of being silently ignored), or ``unused(cfg)`` where that depends on the config;
- optionally ``trains(cfg) -> bool`` (default: True): whether the config learns anything;
- optionally ``check(cfg)``: refuse a config the family cannot run (raises ConfigError; e.g. no
  pretrained checkpoint), called whenever a config is checked;
- optionally ``summary(cfg, checkpoint) -> (metrics, params)``: the parameter counts of the trained
  (or training-free) frontend and params that identify it (see :func:`model_summary`; default: 0, 0).

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
    stats: np.ndarray | None = None  # (n_clips, 2 n_mels) pooled log-mel mean and std: the floor's input

    def select(self, mask: np.ndarray) -> "Embeddings":
        mask = np.asarray(mask)
        pick = lambda a: None if a is None else a[mask]  # noqa: E731
        return Embeddings(self.rows[mask].reset_index(drop=True), self.embedding[mask], pick(self.recon),
                          pick(self.residual), pick(self.stats))

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
    table = fam.unused(cfg) if hasattr(fam, "unused") else getattr(fam, "UNUSED", {})
    new, old = cfg.flat(), (base or Config(recipe=cfg.recipe)).flat()
    return {k: why for k, why in table.items() if new[k] != old[k]}


def check_config(cfg: Config, base: Config | None = None) -> None:
    """Refuse what ``cfg``'s family cannot honour: a ``train.*`` setting it would ignore (see
    :func:`unused_settings`), fewer epochs than it needs, clips shorter than its analysis window, a
    loss or backend name that is not registered, or what the family's own ``check`` refuses (e.g. a
    pretrained recipe without its base checkpoint).
    """
    from asd.data.waves import clip_samples

    fam = family(cfg.model.name)
    where = f"recipe {cfg.recipe!r} (model {cfg.model.name}, {family_name(cfg.model.name)} family)"
    for key, why in unused_settings(cfg, base).items():
        raise ConfigError(f"{key}={cfg.flat()[key]} does not apply to {where}: {why}")
    least = getattr(fam, "MIN_EPOCHS", 1)
    if cfg.train.epochs < least:
        raise ConfigError(f"train.epochs={cfg.train.epochs} trains nothing: {where} needs train.epochs >= {least}")
    need = fam.min_samples(cfg) if hasattr(fam, "min_samples") else 0
    if clip_samples(cfg) < need:
        raise ConfigError(f"data.clip_seconds={cfg.data.clip_seconds:g} gives {clip_samples(cfg)} samples per clip, "
                          f"fewer than the {need} that {where} needs to compute its features; use a longer clip")
    _check_names(cfg)
    if hasattr(fam, "check"):
        fam.check(cfg)


def _check_names(cfg: Config) -> None:
    """The loss and backend names exist (a typo fails here, before training, not at evaluation)."""
    from asd.backends import backend_class

    backend_class(cfg.backend.name)  # raises with the available names
    if cfg.backend.name == "fusion":
        for member in cfg.backend.members:
            backend_class(member)
    if cfg.loss.name not in ("mse", "none"):
        from asd.losses import REGISTRY

        REGISTRY.get(cfg.loss.name)


def model_summary(cfg: Config, checkpoint: dict | None) -> tuple[dict[str, float], dict[str, str]]:
    """What a train run logs about its model: ``(metrics, params)``.

    Metrics: ``model/total_params`` and ``model/trainable_params`` of the frontend (every machine's
    model for the autoencoder; 0 and 0 for training-free spectral frontends) and, for shared models
    trained with a loss head, ``model/head_params``: the trained parameters of the loss heads (class
    centres), which training needs but embedding does not. Params: what identifies the model beyond
    the config, e.g. a pretrained base's ``model.base_path`` and ``model.base_sha256``.
    """
    summary = getattr(family(cfg.model.name), "summary", None)
    if summary is None:
        return {"model/total_params": 0, "model/trainable_params": 0}, {}
    return summary(cfg, checkpoint)


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
    lacking = sorted(set(index["machine"]) - set(rows["machine"]))
    if lacking:
        raise ClipIndexError(f"machine(s) {', '.join(lacking)} have no training clip in the index (bad clips left "
                             "out by --skip-bad? see bad_clips.csv): their detector cannot be fitted; leave them out "
                             "with --machines, or replace the clips and re-run `asd prepare`")
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
