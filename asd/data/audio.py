"""Reading clips: checked WAV decoding, tiling/cropping to a fixed length.

Every clip ``asd`` decodes, at ``prepare`` (:mod:`asd.data.verify`) and for training and scoring
(:mod:`asd.data.waves`), goes through :func:`decode`, which refuses what a plain reader would
silently turn into wrong audio: a file cut short (libsndfile reads what is there and reports that as
the length), non-finite or out-of-range float samples (they would become 0 or full scale in the int16
cache), a sample rate, channel count or duration the dataset does not have.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from asd.errors import AsdError

# WAVE format tags asd reads; others (ADPCM, mu-law, ...) are not what DCASE distributes.
_PCM, _FLOAT, _EXTENSIBLE = 1, 3, 0xFFFE


class AudioError(AsdError):
    """A clip that cannot be used: not a readable WAV, cut short, wrong sample rate, channels or length."""


@dataclass(frozen=True)
class Expect:
    """What a dataset's clips must be: sample rate, channel count and duration range in seconds.

    ``channels`` None accepts any count (then ``channel`` of :func:`decode` picks one).
    """

    sample_rate: int = 16000
    channels: int | None = 1
    min_seconds: float = 0.0
    max_seconds: float = float("inf")


@dataclass(frozen=True)
class Header:
    format: int  # 1 PCM, 3 IEEE float
    channels: int
    sample_rate: int
    bits: int
    frames: int  # as the data chunk's size declares


def parse_header(data: bytes, path: str | Path) -> Header:
    """The RIFF/WAVE header of a whole file's bytes; refuses a file whose data chunk is cut short.

    Raises:
        AudioError: not RIFF/WAVE, no ``fmt``/``data`` chunk, an encoding other than PCM/float, or a
            data chunk that declares more bytes than the file holds (a truncated copy).
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise AudioError(f"{path}: not a readable WAV file (no RIFF/WAVE header); replace it with the original clip")
    pos, fmt = 12, None
    while pos + 8 <= len(data):
        cid, size = data[pos:pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        body = pos + 8
        if cid == b"fmt " and size >= 16:
            tag, channels, rate, _, align, bits = struct.unpack_from("<HHIIHH", data, body)
            if tag == _EXTENSIBLE and size >= 26:
                tag = struct.unpack_from("<H", data, body + 24)[0]
            fmt = (tag, channels, rate, align, bits)
        elif cid == b"data":
            if fmt is None:
                raise AudioError(f"{path}: data chunk before the fmt chunk; not a valid WAV file")
            return _checked(fmt, size, len(data) - body, path)
        pos = body + size + (size & 1)  # chunks are padded to an even size
    raise AudioError(f"{path}: no audio data chunk (the file is cut short or not a WAV); replace it with the original clip")


def _checked(fmt: tuple, size: int, available: int, path) -> Header:
    tag, channels, rate, align, bits = fmt
    if tag not in (_PCM, _FLOAT) or align == 0 or channels == 0:
        raise AudioError(f"{path}: unsupported WAV encoding (format tag {tag}, {channels} channels); "
                         "asd reads PCM and float WAVs")
    if size == 0xFFFFFFFF:  # a streaming writer that never filled in the size: the data runs to the end
        size = available - available % align
    if size > available:
        raise AudioError(f"{path}: truncated: the header declares {size // align} frames, the file holds "
                         f"{available // align}; replace it with a complete copy of the clip")
    return Header(tag, channels, rate, bits, size // align)


def decode(data: bytes, path: str | Path, expect: Expect, channel: int | None = None) -> np.ndarray:
    """Decode a whole WAV file's bytes as float32 mono in [-1, 1], checked against ``expect``.

    Args:
        channel: for multi-channel files, the channel to keep (DCASE 2026 is stereo, channel 0 being
            the former mono microphone). ``None`` means the file must be mono.

    Raises:
        AudioError: naming the file, what is wrong and what to do.
    """
    import soundfile as sf

    h = parse_header(data, path)
    _check_format(h, path, expect, channel)
    try:
        wave, _ = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception as e:  # noqa: BLE001 - soundfile raises LibsndfileError / RuntimeError for bad input
        raise AudioError(f"{path}: not a readable WAV file ({e}); replace it with the original clip") from None
    if len(wave) != h.frames:
        raise AudioError(f"{path}: decoded {len(wave)} frames but the header declares {h.frames}; the file is damaged")
    if h.format == _FLOAT:
        bad = ~np.isfinite(wave)
        if bad.any():
            raise AudioError(f"{path}: {int(bad.sum())} sample(s) are NaN or infinite (first at frame "
                             f"{int(np.argwhere(bad)[0][0])}); replace the clip")
        if np.abs(wave).max(initial=0.0) > 1.0:
            raise AudioError(f"{path}: float samples outside [-1, 1] (peak {np.abs(wave).max():.3g}); they would be "
                             "clipped: normalise the clip or write it as 16-bit PCM")
    return np.ascontiguousarray(wave[:, 0 if channel is None else channel])


def _check_format(h: Header, path, expect: Expect, channel: int | None) -> None:
    if h.frames == 0:
        raise AudioError(f"{path}: empty WAV (0 samples); replace it with the original clip")
    if h.sample_rate != expect.sample_rate:
        raise AudioError(f"{path}: sample rate {h.sample_rate} Hz, expected {expect.sample_rate} Hz; resample it "
                         f"(e.g. `sox in.wav -r {expect.sample_rate} out.wav`) or set data.sample_rate")
    if expect.channels is not None and h.channels != expect.channels:
        raise AudioError(f"{path}: {h.channels} channel(s), expected {expect.channels} for this dataset; replace "
                         "it with the original clip")
    if h.channels > 1 and channel is None:
        raise AudioError(f"{path}: {h.channels} channels, expected mono; convert it "
                         "(e.g. `sox in.wav out.wav remix 1`) or use a dataset whose loader picks a channel")
    if channel is not None and channel >= h.channels:
        raise AudioError(f"{path}: has {h.channels} channel(s), channel {channel} requested")
    seconds = h.frames / h.sample_rate
    if not expect.min_seconds <= seconds <= expect.max_seconds:
        raise AudioError(f"{path}: {seconds:.3f} s long, outside the {expect.min_seconds:g}-{expect.max_seconds:g} s "
                         "this dataset's clips last; replace it with the original clip"
                         + (" (or raise the limit with --max-clip-seconds)" if seconds > expect.max_seconds else ""))


def read_wav(path: str | Path, sample_rate: int = 16000, channel: int | None = None,
             expect: Expect | None = None) -> np.ndarray:
    """Read and :func:`decode` the WAV file ``path`` (``expect`` defaults to ``sample_rate``, any duration)."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: file not found; re-run `asd prepare` to rebuild the index")
    return decode(path.read_bytes(), path, expect or Expect(sample_rate, None), channel)


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
