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


def test_bn_shortcut_adds_the_normalised_input_raw_adds_the_input():
    from asd.models.cnn import ResBlock

    torch.manual_seed(0)
    x = 3.0 + 2.0 * torch.randn(4, 16, 9, 7)  # far from zero mean / unit variance
    for mode in ("bn", "raw"):
        blk = ResBlock(16, 16, shortcut=mode).train()
        h = torch.nn.functional.batch_norm(x, None, None, training=True, eps=1e-5)
        residual = h
        for layer in blk.body[1:]:
            residual = layer(residual)
        expected = residual + (h if mode == "bn" else x)
        assert torch.allclose(blk(x), expected, atol=1e-5)
    with pytest.raises(Exception, match="model.shortcut"):
        ResBlock(16, 16, shortcut="none")


def test_stft_pad_zero_vs_reflect_differs_only_in_the_edge_frames():
    t = torch.arange(16000) / 16000
    wave = (torch.sin(2 * torch.pi * 440 * t) + 0.5)[None]
    zero = STFTBranch(1024, 512, pad="constant").spectrogram(wave)
    refl = STFTBranch(1024, 512, pad="reflect").spectrogram(wave)
    same = torch.isclose(zero, refl, rtol=1e-4, atol=1e-6)[0]  # (bins, frames)
    assert not same[:, 0].all() and not same[:, -1].all() and same[:, 1:-1].all()  # only windows over an end
    # zero padding is the STFT of the clip with n_fft / 2 zeros on each side
    manual = torch.stft(torch.nn.functional.pad(wave, (512, 512)), 1024, 512, window=torch.hann_window(1024),
                        center=False, return_complex=True).abs()[:, 13:] / torch.hann_window(1024).pow(2).sum().sqrt()
    assert torch.allclose(zero, manual, atol=1e-5)


def test_old_checkpoints_rebuild_the_architecture_they_were_trained_with():
    from asd.training.classifier import checkpoint_args

    old = {"model_name": "multiresnet", "model_args": {"n_samples": 16000}}
    assert checkpoint_args(old) == {"n_samples": 16000, "shortcut": "raw", "stft_pad": "reflect"}
    new = {"model_name": "multiresnet", "model_args": {"n_samples": 16000, "shortcut": "bn", "stft_pad": "constant"}}
    assert checkpoint_args(new)["shortcut"] == "bn" and checkpoint_args(new)["stft_pad"] == "constant"
    assert checkpoint_args({"model_name": "beats", "model_args": {"a": 1}}) == {"a": 1}


@pytest.mark.parametrize("c_in,length,k,stride", [(1, 2001, 256, 64), (8, 559, 64, 32), (8, 16, 16, 4), (8, 30, 14, 4)])
def test_length_major_conv1d_equals_conv1d_forward_and_backward(c_in, length, k, stride):
    """Both ways (stride-long chunks when the stride divides the kernel and there are channels, copied
    frames otherwise) give F.conv1d's numbers and gradients, in float64."""
    from asd.models.cnn import conv1d_length_major

    torch.manual_seed(0)
    x = torch.randn(3, c_in, length, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, c_in, k, dtype=torch.float64, requires_grad=True)
    ref = torch.nn.functional.conv1d(x, w, stride=stride)
    out = conv1d_length_major(x.transpose(1, 2), w, stride).transpose(1, 2)
    assert out.shape == ref.shape and torch.allclose(out, ref, atol=1e-10)
    g = torch.randn_like(ref)
    assert all(torch.allclose(a, b, atol=1e-10) for a, b in zip(torch.autograd.grad((out * g).sum(), (x, w)),
                                                                 torch.autograd.grad((ref * g).sum(), (x, w))))


def test_pooled_batch_norm_is_relu_pool_batch_norm_with_its_gradient_and_running_stats():
    from asd.models.cnn import PooledBatchNorm, pooled_batch_norm_relu

    torch.manual_seed(0)
    pool = torch.nn.MaxPool2d(3, 2)
    h = (0.5 + torch.randn(2, 3, 11, 9, dtype=torch.float64)).contiguous(memory_format=torch.channels_last)
    h.requires_grad_()
    assert torch.autograd.gradcheck(lambda t: PooledBatchNorm.apply(t, 1e-5, pool)[0], (h,))
    ours, theirs = torch.nn.BatchNorm2d(3, affine=False).double(), torch.nn.BatchNorm2d(3, affine=False).double()
    for _ in range(2):
        out = pooled_batch_norm_relu(h, ours, pool)
        ref = torch.relu(pool(theirs(h)))
        assert torch.allclose(out, ref, atol=1e-12)
    g = torch.randn_like(ref)
    assert torch.allclose(*(torch.autograd.grad((y * g).sum(), h)[0] for y in (out, ref)), atol=1e-12)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        assert torch.allclose(getattr(ours, name).double(), getattr(theirs, name).double(), atol=1e-12)


@pytest.mark.parametrize("channels_last", [False, True])
def test_fast_stft_branch_equals_the_plain_layer_composition(channels_last):
    """The STFT branch's fast paths (framed rFFT, stem ReLU after the pool, PooledBatchNorm in float32
    channels-last training) compute what the plain layers compute: outputs, running statistics and,
    for the stem, a gradient as close to the float64 truth as the plain one's (within a factor 2)."""
    import copy

    torch.manual_seed(0)
    b = STFTBranch(1024, 512, pad="constant")
    if channels_last:
        b = b.to(memory_format=torch.channels_last)
    ref = copy.deepcopy(b)

    def plain(m, wave):
        spec = torch.stft(wave, 1024, 512, window=torch.hann_window(1024), center=True, pad_mode="constant",
                          return_complex=True).abs()[:, m.first_bin:] / torch.hann_window(1024).pow(2).sum().sqrt()
        return m.head(m.blocks(m.stem(m.freq_norm(spec).unsqueeze(1))).amax(dim=-1).flatten(1))

    wave = 0.1 * torch.randn(5, 24000)
    for mode in ("train", "train", "eval"):
        b.train(mode == "train")
        ref.train(mode == "train")
        assert torch.allclose(b(wave), plain(ref, wave), atol=2e-4)
    for (name, x), y in zip(b.state_dict().items(), ref.state_dict().values()):
        assert torch.allclose(x.double(), y.double(), rtol=1e-4, atol=1e-5), name

    b.train()
    h = b.stem[0](torch.randn(4, 1, 60, 40)).detach()
    h = h.contiguous(memory_format=torch.channels_last) if channels_last else h.contiguous()
    g = torch.randn(4, 16, 13, 8, dtype=torch.float64)
    ref_stem = lambda t: torch.relu(b.stem[3](torch.nn.functional.batch_norm(t, None, None, training=True)))  # noqa: E731
    hd = h.double().requires_grad_()
    truth = torch.autograd.grad((ref_stem(hd) * g).sum(), hd)[0]
    errs = []
    for fn in (lambda t: b._norm_relu_pool(t), ref_stem):
        hf = h.clone().requires_grad_()
        errs.append((torch.autograd.grad((fn(hf) * g.float()).sum(), hf)[0].double() - truth).abs().max().item())
    assert errs[0] <= max(2 * errs[1], 1e-6)


def test_squeeze_excite_gives_the_same_numbers_and_gradients_in_every_layout():
    from asd.models.cnn import SqueezeExcite

    torch.manual_seed(0)
    se = SqueezeExcite(32).double()
    x = torch.randn(3, 32, 7, 5, dtype=torch.float64)
    g = torch.randn_like(x)
    outs = []
    for t in (x, x.contiguous(memory_format=torch.channels_last)):
        t = t.clone().requires_grad_()
        y = se(t)
        outs.append((y, *torch.autograd.grad((y * g).sum(), (t, *se.parameters()))))
    assert all(torch.allclose(a, b, atol=1e-12) for a, b in zip(*outs))
    seq = torch.randn(3, 32, 40, dtype=torch.float64)  # (B, C, L) and its length-major (B, L, C)
    assert torch.allclose(se.length_major(seq.transpose(1, 2)).transpose(1, 2), se(seq), atol=1e-12)
