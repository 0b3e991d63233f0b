import math

import numpy as np
import pytest
import torch

from asd.config import FeatureConfig
from asd.features import frame_vectors, hz_to_mel, mel_filterbank, mel_spectrogram, mel_to_hz


def test_mel_scales_round_trip_and_known_points():
    assert hz_to_mel(1000.0, "htk") == pytest.approx(1000.0, rel=1e-3)  # HTK: 1 kHz ~ 1000 mel
    assert hz_to_mel(1000.0, "slaney") == pytest.approx(15.0)  # Slaney: linear 200/3 Hz per mel below 1 kHz
    for f in (0.0, 440.0, 1000.0, 3000.0, 8000.0):
        for scale in ("htk", "slaney"):
            assert mel_to_hz(hz_to_mel(f, scale), scale) == pytest.approx(f, abs=1e-6)


def test_mel_filterbank_hand_checked_case():
    # Slaney scale is linear below 1 kHz: with sr=1600 (bins every 100 Hz for n_fft=16 -> 9 bins 0..800 Hz)
    # and 3 mels between 0 and 800 Hz, the corners are at 0, 200, 400, 600, 800 Hz exactly.
    fb = mel_filterbank(9, 3, 1600, 0.0, 800.0, scale="slaney", norm="none").numpy()
    expected = np.array([
        # bins: 0   100  200  300  400  500  600  700  800 Hz
        [0.0, 0.5, 1.0, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0],
        [0.0, 0.0, 0.0, 0.5, 1.0, 0.5, 0.0, 0.0, 0.0],
        [0.0, 0.0, 0.0, 0.0, 0.0, 0.5, 1.0, 0.5, 0.0],
    ]).T
    np.testing.assert_allclose(fb, expected, atol=1e-6)
    # Slaney area normalisation divides each triangle by half its width in Hz: 2 / 400 Hz.
    fbn = mel_filterbank(9, 3, 1600, 0.0, 800.0, scale="slaney", norm="slaney").numpy()
    np.testing.assert_allclose(fbn, expected * (2 / 400), atol=1e-9)


def test_mel_filterbank_htk_matches_formula():
    n_freqs, n_mels, sr = 513, 40, 16000
    fb = mel_filterbank(n_freqs, n_mels, sr, scale="htk").numpy()
    freqs = np.linspace(0, sr / 2, n_freqs)
    mels = np.linspace(0, 2595 * math.log10(1 + 8000 / 700), n_mels + 2)
    pts = 700 * (10 ** (mels / 2595) - 1)
    for m in (0, 17, 39):
        lo, c, hi = pts[m], pts[m + 1], pts[m + 2]
        want = np.clip(np.minimum((freqs - lo) / (c - lo), (hi - freqs) / (hi - c)), 0, None)
        np.testing.assert_allclose(fb[:, m], want, atol=1e-5)


def test_mel_spectrogram_of_a_tone_peaks_at_its_band():
    sr = 16000
    t = torch.arange(sr) / sr
    wave = torch.sin(2 * math.pi * 1000 * t)[None]
    cfg = FeatureConfig(kind="mel", power=2.0, mel_scale="htk", mel_norm="none", n_mels=64)
    mel = mel_spectrogram(wave, cfg, sr)
    assert mel.shape == (1, 64, sr // 512 + 1)
    band = int(mel[0].mean(-1).argmax())
    fb = mel_filterbank(513, 64, sr, scale="htk")
    assert int(fb[64].argmax()) == band  # bin 64 = 1000 Hz


def test_logmel_is_decibels():
    cfg = FeatureConfig(kind="logmel", power=2.0)
    wave = 0.1 * torch.randn(2, 16000)
    lin = mel_spectrogram(wave, FeatureConfig(kind="mel", power=2.0), 16000)
    log = mel_spectrogram(wave, cfg, 16000)
    torch.testing.assert_close(log, 10 * torch.log10(lin.clamp(min=1e-10)))


def test_frame_vectors_are_frame_major_context():
    x = torch.arange(2 * 3 * 6, dtype=torch.float32).reshape(2, 3, 6)  # (batch, mels, T)
    v = frame_vectors(x, 5)
    assert v.shape == (2, 2, 15)
    # vector t = [frame t (3 mels), frame t+1, ..., frame t+4]
    torch.testing.assert_close(v[0, 1], torch.cat([x[0, :, t] for t in range(1, 6)]))
    with pytest.raises(ValueError, match="fewer than"):
        frame_vectors(x[:, :, :3], 5)


def test_raw_stats_is_the_logmel_mean_and_std_over_time():
    from asd.config.recipes import load_recipe
    from asd.training import load_frontend

    cfg = load_recipe("raw_stats")
    assert cfg.backend.name == "knn" and cfg.backend.standardize
    fe = load_frontend(cfg, None)
    rng = np.random.default_rng(0)
    waves = (0.1 * rng.normal(size=(3, 16000))).astype(np.float32)
    emb = fe.embed_waves(waves)["embedding"]
    mel = mel_spectrogram(torch.from_numpy(waves), cfg.features, 16000).numpy()  # log-mel dB
    assert emb.shape == (3, 256) == (3, fe.dim)
    np.testing.assert_allclose(emb[:, :128], mel.mean(-1), rtol=1e-5)
    np.testing.assert_allclose(emb[:, 128:], mel.std(-1), rtol=1e-4)
