"""asd.features.kaldi_fbank against Kaldi's recipe written out by hand in numpy, one frame at a time."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from asd.features import kaldi_fbank

SR, WIN, HOP, NFFT, NMELS = 16000, 400, 160, 512, 128
EPS32 = float(np.finfo(np.float32).eps)


def mel(f):
    return 1127.0 * np.log(1.0 + f / 700.0)


def numpy_fbank_frame(x: np.ndarray, window: str = "povey", scale: float = 2.0**15) -> np.ndarray:
    """One Kaldi fbank frame of ``x`` (400 samples in [-1, 1]) in float64, following the recipe step by step."""
    x = x.astype(np.float64) * scale
    x = x - x.mean()  # DC removal per frame
    emph = np.empty_like(x)  # pre-emphasis; the first sample is compared with itself
    emph[0] = x[0] - 0.97 * x[0]
    for j in range(1, len(x)):
        emph[j] = x[j] - 0.97 * x[j - 1]
    n = np.arange(WIN)
    hann = 0.5 - 0.5 * np.cos(2 * math.pi * n / (WIN - 1))
    w = hann**0.85 if window == "povey" else hann
    padded = np.zeros(NFFT)
    padded[:WIN] = emph * w
    power = np.abs(np.fft.rfft(padded)) ** 2  # 257 bins
    lo, hi = mel(20.0), mel(SR / 2)
    delta = (hi - lo) / (NMELS + 1)
    out = np.empty(NMELS)
    for m in range(NMELS):
        left, centre, right = lo + m * delta, lo + (m + 1) * delta, lo + (m + 2) * delta
        energy = 0.0
        for k in range(NFFT // 2):  # bin 256 (Nyquist) is outside every Kaldi filter
            mk = mel(k * SR / NFFT)
            weight = max(0.0, min((mk - left) / (centre - left), (right - mk) / (right - centre)))
            energy += weight * power[k]
        out[m] = math.log(max(energy, EPS32))
    return out


def assert_fbank_close(got: np.ndarray, ref: np.ndarray, atol: float = 1e-3) -> None:
    """Log-domain agreement for bins within e^10 of each frame's peak; weaker bins agree in energy.

    float32 FFT rounding is about 1e-7 of a frame's total energy, so bins far below the peak
    carry that absolute error, which is large in log terms; compare them as energies instead.
    """
    strong = ref > ref.max(axis=1, keepdims=True) - 10.0
    np.testing.assert_allclose(got[strong], ref[strong], atol=atol, rtol=0)
    peak = np.exp(ref.max(axis=1, keepdims=True))
    np.testing.assert_allclose(np.exp(got) / peak, np.exp(ref) / peak, atol=1e-6, rtol=1e-3)


def frames_of(wave: np.ndarray, idx) -> np.ndarray:
    return np.stack([numpy_fbank_frame(wave[i * HOP: i * HOP + WIN]) for i in idx])


def test_sine_matches_hand_recipe():
    t = np.arange(8000) / SR
    wave = (0.5 * np.sin(2 * math.pi * 1000.0 * t) + 0.1 * np.sin(2 * math.pi * 3170.0 * t)).astype(np.float32)
    got = kaldi_fbank(torch.from_numpy(wave)[None])[0].numpy()
    ref = frames_of(wave, [0, 7, 47])
    assert_fbank_close(got[[0, 7, 47]], ref)
    # The 1 kHz tone lands in the filter whose centre is nearest 1 kHz in mel.
    centres = mel(20.0) + np.arange(1, NMELS + 1) * (mel(8000.0) - mel(20.0)) / (NMELS + 1)
    assert abs(int(got[7].argmax()) - int(np.abs(centres - mel(1000.0)).argmin())) <= 1


def test_noise_matches_hand_recipe_with_hanning_and_unit_scale():
    wave = np.random.default_rng(0).uniform(-1, 1, 4000).astype(np.float32)
    got = kaldi_fbank(torch.from_numpy(wave)[None], window="hanning", scale=1.0)[0].numpy()
    ref = np.stack([numpy_fbank_frame(wave[i * HOP: i * HOP + WIN], "hanning", 1.0) for i in (0, 5)])
    assert_fbank_close(got[[0, 5]], ref)


def test_silence_gives_the_log_floor():
    got = kaldi_fbank(torch.zeros(1, 1600))
    assert torch.all(got == math.log(EPS32))
    assert math.log(EPS32) == pytest.approx(-15.942385, abs=1e-6)


def test_dc_offset_is_removed_per_frame():
    """A constant offset vanishes frame by frame, so the fbank equals the one without the offset."""
    rng = np.random.default_rng(1)
    wave = rng.normal(0, 0.1, 3200).astype(np.float32)
    plain = kaldi_fbank(torch.from_numpy(wave)[None])
    shifted = kaldi_fbank(torch.from_numpy(wave + 0.3)[None])
    torch.testing.assert_close(shifted, plain, atol=2e-3, rtol=0)
    dc_only = kaldi_fbank(torch.full((1, 3200), 0.3))  # pure DC: nothing left but rounding
    assert float(dc_only.max()) < 0.0
    assert_fbank_close(shifted[0, [3]].numpy(), frames_of(wave + 0.3, [3]), atol=2e-3)


@pytest.mark.parametrize("samples, frames", [(400, 1), (559, 1), (560, 2), (16000, 98), (160000, 998)])
def test_frame_count_snips_edges(samples, frames):
    assert kaldi_fbank(torch.zeros(2, samples)).shape == (2, frames, NMELS)


def test_too_short_clip_is_refused():
    with pytest.raises(ValueError, match="399 samples is shorter than one 25.0 ms frame"):
        kaldi_fbank(torch.zeros(1, 399))


def test_batch_rows_equal_single_clips():
    wave = torch.randn(3, 4000, generator=torch.Generator().manual_seed(2)).clamp(-1, 1)
    batch = kaldi_fbank(wave)
    for i in range(3):
        torch.testing.assert_close(batch[i], kaldi_fbank(wave[i:i + 1])[0], atol=1e-5, rtol=0)


def test_dtype_and_device_follow_the_input_in_float32():
    wave = torch.randn(2, 2000, generator=torch.Generator().manual_seed(3)).clamp(-1, 1)
    ref = kaldi_fbank(wave)
    assert ref.dtype == torch.float32 and ref.device == wave.device
    half = kaldi_fbank(wave.to(torch.bfloat16))  # cast up to float32 inside
    assert half.dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = kaldi_fbank(wave)
    assert auto.dtype == torch.float32
    torch.testing.assert_close(auto, ref, atol=1e-5, rtol=0)
    if torch.cuda.is_available():  # not run on our CPU machines
        torch.testing.assert_close(kaldi_fbank(wave.cuda()).cpu(), ref, atol=1e-3, rtol=0)
