"""The fused CPU kernels (asd.models.cpu_kernels) against the plain PyTorch layers they replace."""

from __future__ import annotations

import os
import shutil

import pytest
import torch
from torch import nn

from asd.models import build_model, cpu_kernels

# Outside CI a machine without a compiler skips these (training then uses PyTorch's layers); in CI
# (CI=true) they run, so a machine that cannot build the kernels fails here instead of silently.
CAN_BUILD = bool(shutil.which("ninja") and (shutil.which("c++") or shutil.which("g++")))
pytestmark = pytest.mark.skipif(not CAN_BUILD and not os.environ.get("CI"),
                                reason="needs a C++ compiler and ninja to build the kernels")

DTYPES = [(torch.float32, 1e-6), (torch.bfloat16, 6e-3)]  # dtype, relative error allowed against float64


def _map(shape, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g) * 2 + 0.5).to(dtype).contiguous(memory_format=torch.channels_last)


def _rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@pytest.fixture(autouse=True)
def _kernels_on():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the kernels run at one thread (cpu_kernels._single_thread)
    cpu_kernels.use(True)
    yield
    cpu_kernels.use(True)
    torch.set_num_threads(threads)


def test_the_kernels_build_here():
    assert cpu_kernels.ops() is not None, cpu_kernels._state["error"]


@pytest.mark.parametrize("dtype,tol", DTYPES)
@pytest.mark.parametrize("channels", [16, 24])  # 16: a compiled-in count; 24: the run-time count
def test_batch_norm_relu_equals_batch_norm_then_relu(dtype, tol, channels):
    x = _map((6, channels, 11, 9), dtype).requires_grad_()
    ours, ref = nn.BatchNorm2d(channels, affine=False), nn.BatchNorm2d(channels, affine=False).double()
    assert cpu_kernels.applies(x, ours)
    normed, relu = cpu_kernels.batch_norm_relu(x, ours)
    assert normed.is_contiguous(memory_format=torch.channels_last) and normed.dtype == dtype
    g1, g2 = torch.randn_like(normed), torch.randn_like(relu)
    (grad,) = torch.autograd.grad((normed * g1).sum() + (relu * g2).sum(), x)
    xd = x.detach().double().requires_grad_()
    ref_normed = ref(xd)
    (ref_grad,) = torch.autograd.grad((ref_normed * g1.double()).sum() + (torch.relu(ref_normed) * g2.double()).sum(), xd)
    assert _rel(normed, ref_normed) < tol and _rel(relu, torch.relu(ref_normed)) < tol
    assert _rel(grad, ref_grad) < tol
    # running statistics as nn.BatchNorm2d updates them (unbiased variance, momentum), in float32
    assert torch.allclose(ours.running_mean, ref.running_mean.float(), rtol=1e-5, atol=1e-6)
    assert torch.allclose(ours.running_var, ref.running_var.float(), rtol=1e-5)
    assert int(ours.num_batches_tracked) == 1


@pytest.mark.parametrize("dtype,tol", DTYPES)
def test_relu_batch_norm_gradient_has_only_the_relu_path(dtype, tol):
    x = _map((4, 32, 7, 5), dtype, seed=1).requires_grad_()
    out = cpu_kernels.relu_batch_norm(x, nn.BatchNorm2d(32, affine=False))
    g = torch.randn_like(out)
    (grad,) = torch.autograd.grad((out * g).sum(), x)
    xd = x.detach().double().requires_grad_()
    ref = torch.relu(nn.functional.batch_norm(xd, None, None, training=True))
    (ref_grad,) = torch.autograd.grad((ref * g.double()).sum(), xd)
    assert _rel(out, ref) < tol and _rel(grad, ref_grad) < tol


@pytest.mark.parametrize("dtype,tol", DTYPES)
@pytest.mark.parametrize("shape", [(3, 16, 31, 22), (2, 5, 8, 7)])  # odd and even sizes, a run-time count
def test_stem_equals_max_pool_of_relu_of_batch_norm(dtype, tol, shape):
    h = _map(shape, dtype, seed=2).requires_grad_()
    norm, pool = nn.BatchNorm2d(shape[1], affine=False), nn.MaxPool2d(3, 2)
    assert cpu_kernels.stem_applies(h, norm, pool)
    y = cpu_kernels.stem(h, norm)
    g = torch.randn_like(y)
    (grad,) = torch.autograd.grad((y * g).sum(), h)
    hd = h.detach().double().requires_grad_()
    ref_norm = nn.BatchNorm2d(shape[1], affine=False).double()
    ref = pool(torch.relu(ref_norm(hd)))
    (ref_grad,) = torch.autograd.grad((ref * g.double()).sum(), hd)
    assert y.shape == ref.shape and y.is_contiguous(memory_format=torch.channels_last)
    assert _rel(y, ref) < tol and _rel(grad, ref_grad) < tol
    assert torch.allclose(norm.running_var, ref_norm.running_var.float(), rtol=1e-5)


@pytest.mark.parametrize("dtype,tol", DTYPES)
@pytest.mark.parametrize("layout", ["map", "sequence"])  # ResBlock's (with shortcut); FFTBranch's (with ReLU)
def test_excite_equals_squeeze_excitation(dtype, tol, layout):
    """Output and gradients (input, shortcut, the gate's two weights) against float64 PyTorch layers."""
    from asd.models.cnn import SqueezeExcite

    torch.manual_seed(5)
    module = SqueezeExcite(64)
    ref_module = SqueezeExcite(64).double()
    ref_module.load_state_dict(module.state_dict())
    if layout == "map":
        x, s, relu = _map((4, 64, 6, 5), dtype, seed=3), _map((4, 64, 6, 5), dtype, seed=4), False
    else:
        x = (torch.randn(4, 37, 64, generator=torch.Generator().manual_seed(3))).to(dtype)
        s, relu = None, True
    inputs = [t.requires_grad_() for t in (x, s) if t is not None]
    assert cpu_kernels.excite_applies(x, module, *([s] if s is not None else []))
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        out = cpu_kernels.excite(x, module, s, relu=relu)
    assert out.dtype == dtype and out.shape == x.shape
    g = torch.randn_like(out)
    params = list(module.gate.parameters())
    grads = torch.autograd.grad((out.float() * g.float()).sum(), inputs + params)
    ref_inputs = [t.detach().double().requires_grad_() for t in inputs]
    xd = torch.relu(ref_inputs[0]) if relu else ref_inputs[0]
    ref = (ref_module(xd) if layout == "map" else ref_module.length_major(xd)) + (ref_inputs[1] if s is not None else 0)
    ref_grads = torch.autograd.grad((ref * g.double()).sum(), ref_inputs + list(ref_module.gate.parameters()))
    assert _rel(out, ref) < tol
    for a, b in zip(grads, ref_grads):
        # bf16 maps (measured <= 3.0e-3 here, PyTorch's layers with their bf16 gate 5.6e-3)
        assert _rel(a, b) < (tol if dtype == torch.float32 else 6e-3), (a, b)



def test_nan_input_gives_nan_output_not_a_number():
    x = _map((2, 16, 9, 9), torch.float32, seed=5)
    x[0, 3, 4, 4] = float("nan")
    norm = nn.BatchNorm2d(16, affine=False)
    _, relu = cpu_kernels.batch_norm_relu(x, norm)
    y = cpu_kernels.stem(x, nn.BatchNorm2d(16, affine=False))
    assert torch.isnan(relu[:, 3]).all() and torch.isfinite(relu[:, :3]).all()  # the channel's statistics are NaN
    assert torch.isnan(y[:, 3]).all() and torch.isfinite(y[:, 4:]).all()


def test_other_layouts_dtypes_and_modes_take_the_plain_layers():
    norm = nn.BatchNorm2d(16, affine=False)
    assert not cpu_kernels.applies(torch.randn(2, 16, 5, 5), norm)  # not channels-last
    assert not cpu_kernels.applies(_map((2, 16, 5, 5), torch.float64), norm)
    assert not cpu_kernels.applies(_map((2, 16, 5, 5), torch.float16), norm)
    assert not cpu_kernels.applies(_map((2, 16, 5, 5), torch.float32), norm.eval())
    assert not cpu_kernels.stem_applies(_map((2, 16, 5, 5), torch.float32), nn.BatchNorm2d(16, affine=False),
                                        nn.MaxPool2d(3, 2, padding=1))
    torch.set_num_threads(2)
    assert not cpu_kernels.applies(_map((2, 16, 5, 5), torch.float32), nn.BatchNorm2d(16, affine=False))
    torch.set_num_threads(1)
    cpu_kernels.use(False)
    assert not cpu_kernels.applies(_map((2, 16, 5, 5), torch.float32), nn.BatchNorm2d(16, affine=False))


def _stft_branch_step(sd, shortcut, dtype, wave):
    """Embedding, parameter gradients and running statistics of the CNN's STFT branch after one training step."""
    model = build_model("multiresnet", n_samples=16000, stft_sizes=[1024], shortcut=shortcut, stft_pad="reflect")
    model.load_state_dict(sd)
    branch = model.branches[1]
    branch = (branch.double() if dtype == torch.float64 else branch).to(memory_format=torch.channels_last).train()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        emb = branch(wave.double() if dtype == torch.float64 else wave)
    emb.double().square().sum().backward()
    grads = torch.cat([p.grad.flatten() for p in branch.parameters()])
    stats = torch.cat([b.flatten() for n, b in branch.named_buffers() if "running" in n])
    return emb.detach(), grads, stats


@pytest.mark.parametrize("shortcut", ["raw", "bn"])  # raw: the recipes' block; bn: ASDKit's
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cnn_training_step_is_as_exact_with_the_kernels_as_without(dtype, shortcut):
    """One training step of the STFT branch (stem, 8 residual blocks), kernels on and off, each against
    float64: the embedding, every parameter's gradient and the running statistics are at least as close
    to float64 with the kernels (measured, float32 raw: 3.6e-6 vs 4.7e-6 on the embedding, 7.5e-6 vs
    1.0e-5 on the gradients; bfloat16: 0.073 vs 0.072, 0.334 vs 0.334, both dominated by bf16 convolutions)."""
    torch.manual_seed(0)
    sd = build_model("multiresnet", n_samples=16000, stft_sizes=[1024], shortcut=shortcut).state_dict()
    wave = 0.1 * torch.randn(6, 16000, generator=torch.Generator().manual_seed(1))
    exact = _stft_branch_step(sd, shortcut, torch.float64, wave)
    errors = {}
    for on in (True, False):
        cpu_kernels.use(on)
        errors[on] = [_rel(a, b) for a, b in zip(_stft_branch_step(sd, shortcut, dtype, wave), exact)]
    for with_kernels, plain in zip(errors[True], errors[False]):
        assert with_kernels <= 1.1 * plain + 1e-7, (errors[True], errors[False])
    if dtype == torch.float32:
        assert max(errors[True]) < 2e-5


def _stem_layers():
    torch.manual_seed(3)
    conv = nn.Conv2d(1, 16, 7, 2, bias=False).to(memory_format=torch.channels_last)
    return conv, nn.BatchNorm2d(16, affine=False), nn.MaxPool2d(3, 2)


def _stem_reference(x, weight, g):
    """y and the weight's gradient of relu(pool(batch_norm(conv(x)))) in float64."""
    w = weight.detach().double().requires_grad_()
    h = nn.functional.conv2d(x.double(), w, None, 2)
    y = nn.functional.max_pool2d(torch.relu(nn.functional.batch_norm(h, None, None, training=True)), 3, 2)
    (grad,) = torch.autograd.grad((y * g.double()).sum(), w)
    return y, grad, h.mean((0, 2, 3)), h.var((0, 2, 3))  # var: unbiased


@pytest.mark.parametrize("bf16", [False, True])
@pytest.mark.parametrize("size", [(40, 27), (31, 44)])  # odd/even heights, widths off the 8-position tile
def test_stem_conv_is_at_least_as_exact_as_the_plain_layers(bf16, size):
    """The whole stem on one kernel against float64, next to the plain layers (conv, BatchNorm, ReLU,
    max-pool) against float64: its output is closer (its convolution is float32 also under bf16 autocast)
    and its weight gradient as close (measured at 64 x 500 x 141: fp32 dW 5.9e-4 vs 5.0e-4, bf16 1.7e-3 vs 7.9e-2)."""
    conv, norm, pool = _stem_layers()
    x = torch.randn(5, 1, *size, generator=torch.Generator().manual_seed(4)) * 3 + 1
    g = torch.randn(5, 16, ((size[0] - 7) // 2 + 1 - 3) // 2 + 1, ((size[1] - 7) // 2 + 1 - 3) // 2 + 1)
    y64, grad64, mean64, var64 = _stem_reference(x, conv.weight, g)
    errors = {}
    for fused in (True, False):
        w = conv.weight.detach().clone().requires_grad_()
        layer = nn.Conv2d(1, 16, 7, 2, bias=False)
        layer.weight = nn.Parameter(w)
        bn = nn.BatchNorm2d(16, affine=False)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            assert cpu_kernels.stem_conv_applies(x, layer, bn, pool)
            y = cpu_kernels.stem_conv(x, layer, bn) if fused else torch.relu(pool(bn(layer(x))))
        assert y.dtype == (torch.bfloat16 if bf16 else torch.float32)
        (grad,) = torch.autograd.grad((y.float() * g).sum(), layer.weight)
        errors[fused] = (_rel(y, y64), _rel(grad, grad64))
        if fused:
            assert y.is_contiguous(memory_format=torch.channels_last)
            assert torch.allclose(bn.running_mean.double(), 0.1 * mean64, atol=1e-6)
            assert torch.allclose(bn.running_var.double(), 0.9 + 0.1 * var64, rtol=1e-5)  # unbiased, as BatchNorm
    assert errors[True][0] <= errors[False][0] + 1e-7, errors
    assert errors[True][1] <= 1.25 * errors[False][1] + 1e-6, errors
    assert errors[True][0] < (2e-3 if bf16 else 1e-6) and errors[True][1] < (3e-3 if bf16 else 1e-5), errors


def test_stem_conv_takes_the_plain_layers_where_it_does_not_apply():
    conv, norm, pool = _stem_layers()
    x = torch.randn(2, 1, 20, 20)
    assert cpu_kernels.stem_conv_applies(x, conv, norm, pool)
    assert not cpu_kernels.stem_conv_applies(x.requires_grad_(), conv, norm, pool)  # a gradient for the input
    x = x.detach()
    assert not cpu_kernels.stem_conv_applies(x.double(), conv, norm, pool)
    assert not cpu_kernels.stem_conv_applies(x[..., :10], conv, norm, pool)  # too narrow for conv 7/2 + pool 3/2
    assert not cpu_kernels.stem_conv_applies(x, conv, norm.eval(), pool)
    assert not cpu_kernels.stem_conv_applies(x, nn.Conv2d(1, 16, 7, 2, padding=1, bias=False), norm.train(), pool)
    with torch.autocast("cpu", dtype=torch.float16):
        assert not cpu_kernels.stem_conv_applies(x, conv, norm, pool)
    torch.set_num_threads(2)
    assert not cpu_kernels.stem_conv_applies(x, conv, norm, pool)


@pytest.mark.parametrize("pad", ["constant", "reflect"])
def test_stft_frames_equal_the_padded_unfold(pad):
    from asd.models.cnn import STFTBranch

    branch = STFTBranch(256, 128, pad=pad)
    for length in (5000, 300, 1000):  # several frames; fewer samples than n_fft; frames at both padded ends
        wave = torch.randn(3, length, generator=torch.Generator().manual_seed(length))
        assert cpu_kernels.rows_apply(wave)
        ours = branch._rfft(wave)
        cpu_kernels.use(False)
        plain = branch._rfft(wave)
        cpu_kernels.use(True)
        assert ours.shape == plain.shape and torch.equal(ours, plain)


def test_unfold_rows_equal_the_copied_unfold_in_the_products_dtype():
    x = torch.rand(3, 1000)
    assert torch.equal(cpu_kernels.unfold_rows(x, 64, 16), x.unfold(1, 64, 16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = cpu_kernels.unfold_rows(x, 64, 16)
    assert ours.dtype == torch.bfloat16 and torch.equal(ours, x.unfold(1, 64, 16).to(torch.bfloat16))


def test_magnitude_equals_abs():
    spec = torch.fft.rfft(torch.randn(4, 3000))
    assert cpu_kernels.spectra_apply(spec)
    assert torch.allclose(cpu_kernels.magnitude(spec), spec.abs(), rtol=1e-6, atol=0)
    assert torch.allclose(cpu_kernels.magnitude(spec, 7), spec[:, 7:].abs(), rtol=1e-6, atol=0)
    assert not cpu_kernels.spectra_apply(spec.to(torch.complex128))


@pytest.mark.parametrize("training", [True, False])
def test_normalised_spectrum_equals_batch_norm_of_the_magnitude(training):
    """Also where the first frame is far out (a click at the clip's start): per-bin statistics merged
    block by block, not shifted by the first row (which lost 4 digits of the variance there)."""
    wave = 0.1 * torch.randn(6, 16000, generator=torch.Generator().manual_seed(1))
    wave[:, :300] += 5 * torch.randn(6, 300)
    spec = torch.fft.rfft(wave.unfold(1, 1024, 512) * torch.hann_window(1024))  # (B, frames, bins)
    ours, ref = nn.BatchNorm1d(500, affine=False), nn.BatchNorm1d(500, affine=False).double()
    if not training:
        for norm in (ours, ref):
            norm.running_mean.fill_(3.0)
            norm.running_var.fill_(2.0)
            norm.eval()
    x = cpu_kernels.normalised_spectrum(spec, 13, ours)
    mag = spec[..., 13:].abs().double()
    expected = ref(mag.reshape(-1, 500)).view_as(mag).transpose(1, 2)
    assert x.shape == expected.shape and x.is_contiguous()
    assert torch.allclose(x.double(), expected, rtol=2e-6, atol=2e-6)  # float32 rounding of |spec|
    assert torch.allclose(ours.running_mean.double(), ref.running_mean, rtol=1e-6, atol=1e-7)
    assert torch.allclose(ours.running_var.double(), ref.running_var, rtol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("size", [(123, 33), (8, 9)])
def test_max_pool_equals_max_pool2d_3x3_stride2_padding1(dtype, size):
    """The downsampling shortcut's pool, values and gradients exactly (ties: bf16 maps have many); a place
    that is the maximum of several windows gets their gradients summed in float32 and rounded once (as
    float64's sum rounded), where PyTorch's bfloat16 kernel rounds after each addition."""
    x = _map((3, 16, *size), dtype, seed=6).requires_grad_()
    pool = nn.MaxPool2d(3, 2, padding=1)
    assert cpu_kernels.pool_applies(x, pool)
    y = cpu_kernels.max_pool(x)
    ref = pool(x)
    assert y.is_contiguous(memory_format=torch.channels_last) and torch.equal(y, ref)
    g = torch.randn_like(y)
    xd = x.detach().double().requires_grad_()
    exact = torch.autograd.grad((pool(xd) * g.double()).sum(), xd)[0]
    ours = torch.autograd.grad((y * g).sum(), x)[0]
    if dtype == torch.bfloat16:
        assert torch.equal(ours, exact.to(dtype))
    else:  # float32 sums of up to four gradients
        assert torch.allclose(ours.double(), exact, rtol=1e-6, atol=1e-6)
    assert not cpu_kernels.pool_applies(x, nn.MaxPool2d(3, 2))


@pytest.mark.parametrize("dtype,tol", DTYPES)
def test_batch_norm_relu_passes_the_input_through_with_its_gradient_added(dtype, tol):
    """The raw shortcut's form: ``(x, relu(norm(x)))``, the gradient of both in one pass."""
    x = _map((6, 16, 11, 9), dtype).requires_grad_()
    same, relu = cpu_kernels.batch_norm_relu(x, nn.BatchNorm2d(16, affine=False), "input")
    assert torch.equal(same, x)
    g1, g2 = torch.randn_like(same), torch.randn_like(relu)
    (grad,) = torch.autograd.grad((same * g1).sum() + (relu * g2).sum(), x)
    xd = x.detach().double().requires_grad_()
    ref = (xd * g1.double()).sum() + (torch.relu(nn.BatchNorm2d(16, affine=False).double()(xd)) * g2.double()).sum()
    assert _rel(grad, torch.autograd.grad(ref, xd)[0]) < tol


def test_mixup_gives_the_numbers_of_the_plain_formula():
    from asd.training.augment import mixup

    wave, target = torch.randn(8, 5000), torch.eye(8)
    assert cpu_kernels.rows_apply(wave)
    ours = mixup(wave, target, 0.5, torch.Generator().manual_seed(2))
    cpu_kernels.use(False)
    plain = mixup(wave, target, 0.5, torch.Generator().manual_seed(2))
    assert torch.equal(ours[0], plain[0]) and torch.equal(ours[1], plain[1])
    assert not torch.equal(ours[0], wave)  # some rows were mixed
