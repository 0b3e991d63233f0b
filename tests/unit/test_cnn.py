"""MultiResNet: layer sizes follow the clip length, spectra as specified, gradients reach every weight."""

import pytest
import torch

from asd.models import build_model
from asd.models.cnn import FFTBranch, STFTBranch


def test_flatten_sizes_at_10_seconds_match_the_reference_formulas():
    # docs/methods.md (AK layer formulas), 10-s clips: FFT 80,001 -> 6 positions; STFT F' 16 (1024), 4 (256), 63 (4096).
    m = build_model("multiresnet", n_samples=160_000, stft_sizes=[256, 1024, 4096])
    fft, s256, s1024, s4096 = m.branches
    assert fft.flat_len == 6
    assert [b.flat_bins for b in (s256, s1024, s4096)] == [4, 16, 63]
    assert m.dim == 512


def test_stft_drops_bins_below_200_hz_and_keeps_linear_magnitude():
    b = STFTBranch(1024, 512)
    assert b.first_bin == 13  # 13 * 15.625 Hz = 203 Hz is the first kept bin
    t = torch.arange(16000) / 16000
    wave = torch.sin(2 * torch.pi * 1000 * t)[None]
    spec = b.spectrogram(wave)
    assert spec.shape == (1, 500, 32)
    assert spec.min() >= 0
    peak = int(spec[0, :, 10].argmax()) + b.first_bin
    assert peak == 64  # 1000 Hz / 15.625 Hz per bin
    # Linear magnitude: doubling the wave doubles the spectrum (no log, no power).
    assert torch.allclose(b.spectrogram(2 * wave), 2 * spec, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("seconds,sizes,dim", [(1.0, [1024], 256), (4.0, [1024], 256), (1.0, [256, 1024, 4096], 512)])
def test_short_clips_work_and_every_weight_gets_a_gradient(seconds, sizes, dim):
    torch.manual_seed(0)
    n = int(seconds * 16000)
    m = build_model("multiresnet", n_samples=n, stft_sizes=sizes)
    out = m(0.1 * torch.randn(3, n))
    assert out.shape == (3, dim) and torch.isfinite(out).all()
    out.pow(2).sum().backward()
    params = list(m.named_parameters())
    assert all(p.grad is not None for _, p in params)
    # A squeeze-excitation gate of 16 channels has one hidden ReLU unit, which may be off for a
    # whole small batch; everything else must learn.
    dead = [n for n, p in params if p.grad.abs().sum() == 0 and ".gate." not in n]
    assert not dead


def test_no_bias_and_no_affine_batchnorm():
    m = build_model("multiresnet", n_samples=16000)
    assert not [n for n, _ in m.named_parameters() if "bias" in n]
    norms = [x for x in m.modules() if isinstance(x, torch.nn.modules.batchnorm._BatchNorm)]
    assert norms and all(not x.affine for x in norms)


def test_fft_branch_shrinks_kernels_for_short_clips():
    assert FFTBranch(64_000).flat_len == 1  # 4 s: 32,001 -> 497 -> 14 -> kernel 14 -> 1
    assert FFTBranch(192_000).flat_len == 8  # 12 s (2024): the reference's 8 positions


def test_too_short_clip_is_a_clear_error():
    with pytest.raises(ValueError, match="too short"):
        build_model("multiresnet", n_samples=500)


def test_strided_conv_with_one_output_column_is_right_under_cpu_bf16():
    """oneDNN's AMX-BF16 kernel leaves such outputs partly unwritten (NaN from reused memory) on our
    AMX machines; StridedConv2d computes them in float32. Memory is filled with NaN first so that
    an unwritten element shows (on CPUs without AMX the plain kernel is right and this passes too)."""
    from asd.models.cnn import StridedConv2d

    torch.manual_seed(0)
    conv = StridedConv2d(64, 128, 3, 2, padding=1, bias=False)
    for _ in range(10):
        x = torch.relu(torch.randn(8, 64, 31, 2))
        junk = [torch.full((8 * 128 * 16,), float("nan"), dtype=torch.bfloat16) for _ in range(4)]
        del junk
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = conv(x)
        ref = torch.nn.functional.conv2d(x, conv.weight, stride=2, padding=1)
        assert y.dtype == torch.bfloat16 and y.shape == (8, 128, 16, 1)
        assert torch.isfinite(y).all()
        assert torch.equal(y, ref.bfloat16())  # computed in float32, rounded once
