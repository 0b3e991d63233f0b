"""Reading clips: checked WAV decoding, tiling/cropping to a fixed length, and an in-memory cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from asd.errors import AsdError


class AudioError(AsdError):
    """A clip that cannot be used: not a readable WAV, wrong sample rate or channel count."""


def read_wav(path: str | Path, sample_rate: int = 16000, channel: int | None = None) -> np.ndarray:
    """Decode a WAV as float32 mono in [-1, 1].

    Args:
        channel: for multi-channel files, the channel to keep (DCASE 2026 is stereo, channel 0 being
            the former mono microphone). ``None`` means the file must be mono.

    Raises:
        AudioError: naming the file, what is wrong and what to do.
    """
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: file not found; re-run `asd prepare` to rebuild the index")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises LibsndfileError / RuntimeError for non-audio input
        raise AudioError(
            f"{path}: not a readable WAV file ({e}); replace it with the original clip or remove it "
            "and re-run `asd prepare`"
        ) from None
    if sr != sample_rate:
        raise AudioError(
            f"{path}: sample rate {sr} Hz, expected {sample_rate} Hz; resample it "
            f"(e.g. `sox in.wav -r {sample_rate} out.wav`) or set data.sample_rate"
        )
    if data.shape[1] != 1:
        if channel is None:
            raise AudioError(
                f"{path}: {data.shape[1]} channels, expected mono; convert it "
                "(e.g. `sox in.wav out.wav remix 1`) or use a dataset whose loader picks a channel"
            )
        if channel >= data.shape[1]:
            raise AudioError(f"{path}: has {data.shape[1]} channels, channel {channel} requested")
        return np.ascontiguousarray(data[:, channel])
    if data.shape[0] == 0:
        raise AudioError(f"{path}: empty WAV (0 samples); replace it with the original clip")
    return data[:, 0]


def fix_length(wave: np.ndarray, n: int, start: int = 0) -> np.ndarray:
    """Crop ``n`` samples from ``start``, tiling the clip as often as that needs (ASDKit's rule)."""
    if len(wave) < start + n:
        reps = -(-(start + n) // len(wave))
        wave = np.tile(wave, reps)
    return wave[start : start + n] if start + n <= len(wave) else wave[-n:]


def load_clips(
    paths: list[str], sample_rate: int, n_samples: int, channel: int | None = None, progress: str | None = None
) -> np.ndarray:
    """Decode and fix the length of many clips -> ``(len(paths), n_samples)`` float32.

    Decoding fails on the first bad clip with a message naming it (nothing is silently dropped).
    """
    from tqdm import tqdm

    out = np.empty((len(paths), n_samples), dtype=np.float32)
    it = tqdm(paths, desc=progress, unit="clip", leave=False, disable=progress is None or len(paths) < 50)
    for i, p in enumerate(it):
        out[i] = fix_length(read_wav(p, sample_rate, channel), n_samples)
    return out
