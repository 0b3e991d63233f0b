"""Time-frequency features with ``torch.stft`` and our own filterbanks; no torchaudio (its recent wheels
are CUDA-linked and fail to import next to the CPU torch).

All functions take waveforms shaped ``(batch, samples)`` (float32, -1..1) and return tensors on the
same device, so features can be computed on the GPU inside the training step.
"""

from __future__ import annotations

import math

import torch

from asd.config import FeatureConfig

_EPS = 1e-10


def hz_to_mel(f, scale: str = "htk"):
    """Hz -> mel. ``htk``: 2595·log10(1 + f/700). ``slaney``: linear below 1 kHz, log above."""
    if scale == "htk":
        return 2595.0 * math.log10(1.0 + f / 700.0)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
    return f / f_sp if f < min_log_hz else min_log_mel + math.log(f / min_log_hz) / logstep


def mel_to_hz(m, scale: str = "htk"):
    if scale == "htk":
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
    return f_sp * m if m < min_log_mel else min_log_hz * math.exp(logstep * (m - min_log_mel))


def mel_filterbank(
    n_freqs: int, n_mels: int, sample_rate: int, f_min: float = 0.0, f_max: float | None = None,
    scale: str = "htk", norm: str = "none",
) -> torch.Tensor:
    """Triangular mel filters, shape ``(n_freqs, n_mels)``.

    Filters are triangles over the linear-frequency bins ``linspace(0, sr/2, n_freqs)`` with corners
    at ``n_mels + 2`` points equally spaced on the mel scale between ``f_min`` and ``f_max``. With
    ``scale='htk', norm='none'`` this is torchaudio's ``melscale_fbanks`` default; with
    ``scale='slaney', norm='slaney'`` (area normalisation 2 / bandwidth) it is librosa's default.
    """
    f_max = sample_rate / 2 if not f_max else f_max
    all_freqs = torch.linspace(0, sample_rate // 2, n_freqs, dtype=torch.float64)
    m_min, m_max = hz_to_mel(f_min, scale), hz_to_mel(f_max, scale)
    m_pts = torch.linspace(m_min, m_max, n_mels + 2, dtype=torch.float64)
    f_pts = torch.tensor([mel_to_hz(float(m), scale) for m in m_pts], dtype=torch.float64)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1)  # (n_freqs, n_mels + 2)
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    fb = torch.clamp(torch.minimum(down, up), min=0.0)
    if norm == "slaney":
        fb = fb * (2.0 / (f_pts[2:] - f_pts[:-2])).unsqueeze(0)
    elif norm != "none":
        raise ValueError(f"unknown mel norm {norm!r} (none | slaney)")
    return fb.to(torch.float32)


_WINDOWS: dict[tuple, torch.Tensor] = {}
_FBANKS: dict[tuple, torch.Tensor] = {}


def _window(n_fft: int, device) -> torch.Tensor:
    key = (n_fft, str(device))
    if key not in _WINDOWS:
        _WINDOWS[key] = torch.hann_window(n_fft, periodic=True, device=device)
    return _WINDOWS[key]


def spectrogram(
    wave: torch.Tensor, n_fft: int, hop: int, power: float = 1.0, center: bool = True, normalized: bool = False
) -> torch.Tensor:
    """|STFT|^power, shape ``(batch, n_fft // 2 + 1, frames)``; Hann window, reflect padding."""
    spec = torch.stft(
        wave, n_fft=n_fft, hop_length=hop, window=_window(n_fft, wave.device), center=center,
        pad_mode="reflect", normalized=normalized, return_complex=True,
    ).abs()
    return spec if power == 1.0 else spec.pow(power)


def mel_spectrogram(wave: torch.Tensor, cfg: FeatureConfig, sample_rate: int) -> torch.Tensor:
    """Mel spectrogram ``(batch, n_mels, frames)``; log10 (dB) if ``cfg.kind == 'logmel'``."""
    spec = spectrogram(wave, cfg.n_fft, cfg.hop, cfg.power, cfg.center)
    key = (spec.shape[1], cfg.n_mels, sample_rate, cfg.f_min, cfg.f_max, cfg.mel_scale, cfg.mel_norm, str(wave.device))
    if key not in _FBANKS:
        fb = mel_filterbank(spec.shape[1], cfg.n_mels, sample_rate, cfg.f_min, cfg.f_max, cfg.mel_scale, cfg.mel_norm)
        _FBANKS[key] = fb.to(wave.device)
    mel = torch.matmul(spec.transpose(1, 2), _FBANKS[key]).transpose(1, 2)
    if cfg.kind == "logmel":
        # The baseline's 20/power * log10(max(S, eps)): decibels whatever the power.
        mel = (20.0 / cfg.power) * torch.log10(torch.clamp(mel, min=_EPS))
    return mel


def frame_vectors(logmel: torch.Tensor, frames: int) -> torch.Tensor:
    """Stack ``frames`` consecutive frames: ``(batch, n_mels, T)`` -> ``(batch, T - frames + 1, frames * n_mels)``.

    Vector ``t`` is ``[x_t, x_{t+1}, ..., x_{t+frames-1}]`` concatenated (frame-major), as the baseline.
    """
    b, m, t = logmel.shape
    if t < frames:
        raise ValueError(f"clip has {t} frames, fewer than the {frames} context frames needed")
    win = logmel.unfold(2, frames, 1)  # (b, m, T', frames)
    return win.permute(0, 2, 3, 1).reshape(b, t - frames + 1, frames * m)


_KALDI_CACHE: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def _kaldi_window_and_mel(window: str, win: int, n_fft: int, n_mels: int, sample_rate: int, device):
    """Kaldi's analysis window ``(win,)`` and mel matrix ``(n_fft // 2 + 1, n_mels)``, float32, cached.

    The mel matrix follows Kaldi: triangles that are linear in mel (1127·ln(1 + f/700)), corners
    equally spaced in mel between 20 Hz and Nyquist, evaluated at the FFT bin frequencies
    ``k · sr / n_fft`` for ``k < n_fft / 2``; the Nyquist bin gets weight 0. Computed in float32
    like the reference, so the filter values agree to the last bit.
    """
    key = (window, win, n_fft, n_mels, sample_rate, str(device))
    if key not in _KALDI_CACHE:
        if window == "povey":  # Hann that reaches zero at both ends, raised to 0.85
            w = torch.hann_window(win, periodic=False, dtype=torch.float32).pow(0.85)
        elif window == "hanning":
            w = torch.hann_window(win, periodic=False, dtype=torch.float32)
        else:
            raise ValueError(f"unknown Kaldi window {window!r} (povey | hanning)")
        mel_lo, mel_hi = (1127.0 * math.log(1.0 + f / 700.0) for f in (20.0, sample_rate / 2))
        delta = (mel_hi - mel_lo) / (n_mels + 1)
        idx = torch.arange(n_mels).unsqueeze(1)
        left, centre, right = (mel_lo + (idx + k) * delta for k in (0.0, 1.0, 2.0))
        mel = 1127.0 * (1.0 + (sample_rate / n_fft) * torch.arange(n_fft // 2) / 700.0).log()
        tri = torch.clamp(torch.minimum((mel - left) / (centre - left), (right - mel) / (right - centre)), min=0.0)
        tri = torch.nn.functional.pad(tri, (0, 1))  # the Nyquist bin: weight 0
        _KALDI_CACHE[key] = (w.to(device), tri.t().contiguous().to(device))
    return _KALDI_CACHE[key]


def kaldi_fbank(
    wave: torch.Tensor, sample_rate: int = 16000, n_mels: int = 128, frame_length_ms: float = 25.0,
    frame_shift_ms: float = 10.0, window: str = "povey", scale: float = 2.0**15,
) -> torch.Tensor:
    """Kaldi log-mel filterbank (``compute-fbank-feats`` defaults), batched: ``(B, samples)`` -> ``(B, frames, n_mels)``.

    Equal to ``torchaudio.compliance.kaldi.fbank(w * scale, num_mel_bins=n_mels, ...)`` applied to each
    clip: frames of ``frame_length_ms`` every ``frame_shift_ms`` that fit entirely in the clip
    (``1 + (samples - win) // hop`` of them, snip_edges), per frame DC removal, then pre-emphasis 0.97
    (the first sample against itself), then the window (``povey``; AST uses ``hanning``), zero
    padding to the next power of two, power spectrum, Kaldi mel filters, natural log floored at
    float32 epsilon. No dither, no energy column. ``scale`` = 2**15 is BEATs' int16 scaling of a
    [-1, 1] waveform (AST's extractor uses 1.0). Always computed in float32 (autocast off), on the
    input's device.
    """
    if wave.dim() != 2:
        raise ValueError(f"kaldi_fbank expects (batch, samples), got shape {tuple(wave.shape)}")
    win = int(sample_rate * frame_length_ms * 0.001)
    hop = int(sample_rate * frame_shift_ms * 0.001)
    if wave.shape[1] < win:
        raise ValueError(f"clip of {wave.shape[1]} samples is shorter than one {frame_length_ms} ms frame ({win} samples)")
    n_fft = 1 << (win - 1).bit_length()
    w, mel = _kaldi_window_and_mel(window, win, n_fft, n_mels, sample_rate, wave.device)
    with torch.autocast(wave.device.type, enabled=False):
        frames = (wave.float() * scale).unfold(1, win, hop)  # (B, T, win), a view
        frames = frames - frames.mean(dim=2, keepdim=True)
        previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=2)
        frames = (frames - 0.97 * previous) * w
        power = torch.fft.rfft(frames, n=n_fft).abs().pow(2.0)  # rfft zero-pads to n_fft
        return torch.clamp(power @ mel, min=torch.finfo(torch.float32).eps).log()
