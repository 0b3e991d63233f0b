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
def test_scale_add_equals_gate_times_map_plus_shortcut(dtype, tol):
    x, s = _map((4, 64, 6, 5), dtype, seed=3).requires_grad_(), _map((4, 64, 6, 5), dtype, seed=4).requires_grad_()
    w = torch.rand(4, 64).to(dtype).requires_grad_()
    assert cpu_kernels.maps_apply(x, s)
    out = cpu_kernels.scale_add(x, w, s)
    g = torch.randn_like(out)
    grads = torch.autograd.grad((out * g).sum(), (x, w, s))
    xd, wd, sd = (t.detach().double().requires_grad_() for t in (x, w, s))
    ref = xd * wd[:, :, None, None] + sd
    ref_grads = torch.autograd.grad((ref * g.double()).sum(), (xd, wd, sd))
    assert _rel(out, ref) < tol
    assert all(_rel(a, b) < tol for a, b in zip(grads, ref_grads))
    assert grads[1].dtype == dtype


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
