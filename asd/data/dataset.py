"""Waveforms for a selection of index rows, decoded once per process and kept in memory."""

from __future__ import annotations

import numpy as np
import pandas as pd

from asd.config import Config
from asd.data.audio import load_clips
from asd.data.years import get_year

_CACHE: dict[tuple, np.ndarray] = {}
_CACHE_LIMIT_BYTES = 4 << 30  # keep at most ~4 GB of decoded audio per process


def clip_samples(cfg: Config) -> int:
    """Samples per clip: ``data.clip_seconds`` or the year's default, times the sample rate."""
    seconds = cfg.data.clip_seconds or get_year(cfg.data.dataset).clip_seconds
    return int(round(seconds * cfg.data.sample_rate))


def load_waves(rows: pd.DataFrame, cfg: Config, desc: str | None = None) -> np.ndarray:
    """``(len(rows), clip_samples)`` float32 waveforms of the index rows, tiled or cropped from 0."""
    n = clip_samples(cfg)
    year = get_year(cfg.data.dataset)
    # Only multi-channel years (2026) pick a channel; elsewhere a stereo file is an error.
    channel = year.channel if year.channels > 1 else None
    key = (tuple(rows["abspath"]), n, cfg.data.sample_rate, channel)
    if key not in _CACHE:
        waves = load_clips(list(rows["abspath"]), cfg.data.sample_rate, n, channel=channel, progress=desc)
        while _CACHE and sum(v.nbytes for v in _CACHE.values()) + waves.nbytes > _CACHE_LIMIT_BYTES:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = waves
    return _CACHE[key]
