"""Waveforms for a selection of index rows, through the waveform cache (asd.cache)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from asd.config import Config
from asd.data.years import get_year


def clip_samples(cfg: Config) -> int:
    """Samples per clip: ``data.clip_seconds`` or the year's default, times the sample rate."""
    seconds = cfg.data.clip_seconds or get_year(cfg.data.dataset).clip_seconds
    return int(round(seconds * cfg.data.sample_rate))


def channel_of(cfg: Config) -> int | None:
    """The channel to read: only multi-channel years (2026) pick one; elsewhere stereo is an error."""
    year = get_year(cfg.data.dataset)
    return year.channel if year.channels > 1 else None


def wave_store(rows: pd.DataFrame, cfg: Config, desc: str | None = None):
    """A :class:`asd.cache.WaveStore` over ``rows``, cached on disk unless ``data.cache`` is off."""
    from asd.cache import WaveStore, cache_dir_of

    return WaveStore(rows, cfg.data.sample_rate, channel_of(cfg), cache_dir_of(rows) if cfg.data.cache else None, desc)


def load_waves(rows: pd.DataFrame, cfg: Config, desc: str | None = None) -> np.ndarray:
    """``(len(rows), clip_samples)`` float32 waveforms of the index rows, tiled or cropped from 0."""
    return wave_store(rows, cfg, desc).batch(np.arange(len(rows)), clip_samples(cfg))
