"""The waveform cache: every clip decoded once, kept as int16 on disk and memory-mapped.

This is the only thing ``asd`` calls a *cache*: decoded clips, which can be rebuilt from the WAVs at
any time. (The search keeps an *embedding store*, :mod:`asd.search.embeddings`.)

Training reads each clip every epoch; decoding WAVs again each time costs more than a CPU training
step of a small model. :class:`WaveStore` decodes the clips of some index rows once into
``<data-dir>/<dataset>/cache/waves-<key>.npy`` (one file per machine, split and phase; clips end
to end at their own length) plus an offsets file. The key hashes each clip's *content*
(:func:`asd.data.verify.fresh_hashes`: the hash ``prepare`` recorded, or a new one for a file whose
stamp changed since), the sample rate, the channel and the checks applied, so a replaced clip can
never be served from the cache of the old one, whatever its size and timestamps. Decoding goes
through the same checks as ``prepare`` (:func:`asd.data.audio.decode`). Clips are stored at full
length, so any ``data.clip_seconds`` and random crops read from the same cache. int16 is lossless
for the 16-bit PCM of DCASE and the toy set and halves the size; reading through the page cache
makes the in-memory case free.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from asd.config import Config
from asd.data.audio import AudioError, Expect, decode, fix_length
from asd.data.years import get_year
from asd.errors import AsdError
from asd.files import atomic


def cache_dir_of(rows: pd.DataFrame) -> Path | None:
    """``<data-dir>/<dataset>/cache`` for index rows (``abspath`` ends with the relative ``path``)."""
    if len(rows) == 0 or "abspath" not in rows:
        return None
    absp, rel = str(rows["abspath"].iloc[0]), str(rows["path"].iloc[0])
    return Path(absp[: len(absp) - len(rel)]) / "cache" if absp.endswith(rel) else None


def _key(hashes: list[str], expect: Expect, channel: int | None) -> str:
    h = hashlib.sha256(f"v2|{expect}|{channel}".encode())
    for x in hashes:
        h.update(x.encode())
    return h.hexdigest()[:20]


class _Chunk:
    """One group's clips end to end (int16) plus offsets, from the on-disk cache or decoded in memory."""

    def __init__(self, rows: pd.DataFrame, expect: Expect, channel: int | None, cache_dir: Path | None,
                 progress: str | None):
        from asd.data.verify import fresh_hashes

        paths, hashes = list(rows["abspath"]), fresh_hashes(rows)
        if cache_dir is None:
            self.data, self.offsets = _decode(paths, hashes, expect, channel, progress)
            return
        key = _key(hashes, expect, channel)
        data_f, off_f = cache_dir / f"waves-{key}.npy", cache_dir / f"waves-{key}.offsets.npy"
        if not (data_f.exists() and off_f.exists()):
            data, offsets = _decode(paths, hashes, expect, channel, progress)
            # Atomic, under a name unique to this process: a concurrent or killed writer never leaves a
            # half file under the final name, nor shares a temporary file with another writer.
            for arr, dest in ((data, data_f), (offsets, off_f)):
                with atomic(dest) as tmp, open(tmp, "wb") as fh:
                    np.save(fh, arr)
        self.data = np.load(data_f, mmap_mode="r")
        self.offsets = np.load(off_f)
        if len(self.offsets) != len(paths) + 1:
            raise AsdError(f"{off_f}: cache holds {len(self.offsets) - 1} clips, expected {len(paths)}; "
                           "delete the file and run again")


def _decode(paths, hashes, expect, channel, progress) -> tuple[np.ndarray, np.ndarray]:
    from tqdm import tqdm

    clips = []
    for p, sha in tqdm(list(zip(paths, hashes)), desc=progress, unit="clip", leave=False,
                       disable=progress is None or len(paths) < 50):
        data = Path(p).read_bytes()
        if hashlib.sha256(data).hexdigest() != sha:  # keyed under one content, about to store another
            raise AudioError(f"{p}: the file changed while it was being read; run the command again")
        w = decode(data, p, expect, channel)
        clips.append(np.clip(np.round(w * 32768.0), -32768, 32767).astype(np.int16))
    offsets = np.zeros(len(clips) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(c) for c in clips])
    return (np.concatenate(clips) if clips else np.zeros(0, np.int16)), offsets


class WaveStore:
    """Decoded clips of ``rows`` (positionally), read back as fixed-length float32 batches.

    The cache is kept per (machine, split, phase) group, so training (train clips of every machine)
    and extraction (train and test clips) share the decoded training clips.

    Args:
        cache_dir: where to keep the on-disk cache; ``None`` decodes into memory only.
        expect: what every clip must be (default: ``sample_rate``, any channel count and duration).
    """

    def __init__(self, rows: pd.DataFrame, sample_rate: int, channel: int | None = None,
                 cache_dir: str | Path | None = None, progress: str | None = None, expect: Expect | None = None):
        cache_dir = Path(cache_dir) if cache_dir is not None else None
        expect = expect or Expect(sample_rate, None)
        self.chunks: list[_Chunk] = []
        self.where = np.zeros((len(rows), 2), dtype=np.int64)  # row -> (chunk, position in chunk)
        pos = np.arange(len(rows))
        for (machine, split, phase), g in rows.assign(_pos=pos).groupby(["machine", "split", "phase"], sort=True):
            desc = f"{progress} {machine}/{split}/{phase}" if progress else None
            self.where[g["_pos"].to_numpy()] = np.c_[np.full(len(g), len(self.chunks)), np.arange(len(g))]
            self.chunks.append(_Chunk(g, expect, channel, cache_dir, desc))

    def __len__(self) -> int:
        return len(self.where)

    def batch(self, idx, n: int, rng: np.random.Generator | None = None, shift: str = "tile") -> np.ndarray:
        """``(len(idx), n)`` float32 clips of the rows ``idx``: tiled when shorter than ``n``, else cropped.

        Without ``rng`` every crop starts at 0 (embedding). With ``rng`` (training) a clip longer
        than ``n`` is cropped at a uniform random start, and ``shift`` says what shorter ones get:
        ``tile`` (ASDKit): tiled a whole number of times, then cropped at a random start, so a clip
        of exactly ``n`` samples is never shifted; ``roll``: every clip up to ``n`` samples starts
        at a uniform random sample of itself (a circular shift, full-length clips included);
        ``none``: tiled from sample 0.
        """
        if shift not in SHIFTS:
            raise AsdError(f"augment.shift={shift!r}: choose one of {', '.join(SHIFTS)}")
        out = np.empty((len(idx), n), dtype=np.float32)
        for j, i in enumerate(idx):
            c, k = self.where[i]
            chunk = self.chunks[c]
            clip = chunk.data[chunk.offsets[k] : chunk.offsets[k + 1]]
            out[j] = fix_length(clip, n, _start(len(clip), n, rng, shift))
        out *= 1.0 / 32768.0
        return out


SHIFTS = ("tile", "roll", "none")


def _start(length: int, n: int, rng: np.random.Generator | None, shift: str) -> int:
    """Where the crop of ``n`` samples starts in the clip tiled as :func:`fix_length` tiles it."""
    if rng is None:
        return 0
    if length > n:
        return int(rng.integers(0, length - n + 1))
    if shift == "roll":
        return int(rng.integers(0, length))
    slack = -(-n // length) * length - n  # what the tiled clip is longer than the crop
    if shift == "tile" and slack > 0:
        return int(rng.integers(0, slack + 1))
    return 0


def clip_samples(cfg: Config) -> int:
    """Samples per clip: ``data.clip_seconds`` or the year's default, times the sample rate."""
    seconds = cfg.data.clip_seconds or get_year(cfg.data.dataset).clip_seconds
    return int(round(seconds * cfg.data.sample_rate))


def channel_of(cfg: Config) -> int | None:
    """The channel to read: only multi-channel years (2026) pick one; elsewhere stereo is an error."""
    year = get_year(cfg.data.dataset)
    return year.channel if year.channels > 1 else None


def wave_store(rows: pd.DataFrame, cfg: Config, desc: str | None = None) -> WaveStore:
    """A :class:`WaveStore` over ``rows``, cached on disk unless ``data.cache`` is off."""
    year = get_year(cfg.data.dataset)
    expect = Expect(cfg.data.sample_rate, year.channels, year.min_seconds, year.max_seconds)
    return WaveStore(rows, cfg.data.sample_rate, channel_of(cfg), cache_dir_of(rows) if cfg.data.cache else None, desc,
                     expect)


def load_waves(rows: pd.DataFrame, cfg: Config, desc: str | None = None) -> np.ndarray:
    """``(len(rows), clip_samples)`` float32 waveforms of the index rows, tiled or cropped from 0."""
    return wave_store(rows, cfg, desc).batch(np.arange(len(rows)), clip_samples(cfg))
