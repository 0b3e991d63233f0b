"""Fused CPU kernels for the CNN's training step: BatchNorm + ReLU, the whole stem (conv, BatchNorm,
ReLU, max-pool), squeeze-excitation with the residual shortcut, the shortcut's max-pool, the STFT's
frames, magnitude and per-bin normalisation, and mixup.

PyTorch's CPU kernels make one pass over memory per operation (statistics, normalise, ReLU, pool,
each gradient), and their bfloat16 element-wise kernels reach a few GB/s; oneDNN runs the stem's
one-channel convolution far from the CPU's peak. The kernels in ``csrc/cpu_kernels.cpp`` do the same
arithmetic in one or two passes (float32 arithmetic for float32 and bfloat16 storage, statistics
summed in float32 over cache-sized blocks and merged in double).

They are compiled on first use with ``torch.utils.cpp_extension`` (a C++ compiler and ``ninja``;
about 15 s once, then cached under ``TORCH_EXTENSIONS_DIR``, by default ``~/.cache/torch_extensions``),
for this CPU's instruction set. Where the build fails the CNN uses PyTorch's layers and the reason is
logged once; ``train.cpu_kernels=false`` (or ``ASD_CPU_KERNELS=0``) turns them off. Only CPU tensors
on one thread (``train.num_threads=1``, see :func:`_single_thread`) use them: the BatchNorm kernels in
training only, for channels-last float32 or bfloat16 maps; the spectra, squeeze-excitation of the FFT
branch and the frames also when embedding. CUDA, several threads and every other layout or dtype run
the plain layers. The results equal the plain layers' to float rounding and are at least as close to
float64 (tests/unit/test_cpu_kernels.py).
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("csrc") / "cpu_kernels.cpp"
_state: dict = {"wanted": True, "ops": None, "error": None}


def use(flag: bool) -> None:
    """Turn the fused kernels on or off for this process (``train.cpu_kernels``); ``ASD_CPU_KERNELS=0`` keeps them off."""
    _state["wanted"] = bool(flag) and os.environ.get("ASD_CPU_KERNELS", "1") not in ("0", "false", "off")


use(True)


def _cpu_tag() -> str:
    """A short hash of this CPU's feature flags: the build is for this instruction set (``-march=native``)."""
    try:
        flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
    except OSError:
        flags = ""
    return hashlib.sha1(flags.encode()).hexdigest()[:8]


def ops():
    """The compiled ``torch.ops.asd_cpu`` namespace, or ``None`` where it cannot be built (logged once)."""
    if _state["ops"] is None and _state["error"] is None:
        try:
            from torch.utils.cpp_extension import load

            log.info("building the fused CPU kernels (once per machine, about 15 s)")
            # -fno-math-errno: sqrt without the errno branch, so its loops vectorise
            load(f"asd_cpu_kernels_{_cpu_tag()}", [str(SOURCE)],
                 extra_cflags=["-O3", "-march=native", "-fopenmp-simd", "-fno-math-errno"],
                 is_python_module=False, verbose=False)
            _state["ops"] = torch.ops.asd_cpu
        except Exception as err:  # no compiler, no ninja, a read-only cache: the plain layers still work
            _state["error"] = f"{type(err).__name__}: {str(err).strip().splitlines()[-1] if str(err).strip() else ''}"
            log.warning("fused CPU kernels unavailable, using PyTorch's layers (%s)", _state["error"])
    return _state["ops"]


def _single_thread() -> bool:
    """The kernels run on the calling thread only (built without OpenMP: with it they ran 20 % slower).
    With more threads PyTorch's multi-threaded layers are as fast (2 threads, 4.5-s clips, batch 64:
    fp32 129.8 vs 130.7 clips/s, bf16 188.7 vs 196.7), so the kernels are used at one thread, as in
    one process per core (``train.num_threads=1``)."""
    return torch.get_num_threads() == 1


def _available() -> bool:
    """The kernels are wanted (``train.cpu_kernels``), this is one thread and they are built: every check's part."""
    return _state["wanted"] and _single_thread() and ops() is not None


def _pool_is(pool: nn.MaxPool2d, padding: int) -> bool:
    """Whether ``pool`` is the 3 x 3, stride-2 max-pool with ``padding`` that the kernels implement."""
    return (pool.kernel_size in (3, (3, 3)) and pool.stride in (2, (2, 2))
            and pool.padding in (padding, (padding, padding)) and pool.dilation in (1, (1, 1))
            and not pool.ceil_mode and not pool.return_indices)


def applies(x: torch.Tensor, norm: nn.BatchNorm2d) -> bool:
    """Whether a training-mode ``norm`` (no affine parameters) on ``x`` runs on the fused kernels."""
    return norm.training and not norm.affine and maps_apply(x)


def _rows(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` as the ``(B, H, W, C)`` rows the kernels read: a view when channels-last, else a copy."""
    return x.permute(0, 2, 3, 1).contiguous()


def _maps(rows: torch.Tensor) -> torch.Tensor:
    """``(B, H, W, C)`` rows back as a channels-last ``(B, C, H, W)`` tensor (a view)."""
    return rows.permute(0, 3, 1, 2)


def update_running_stats(norm: nn.BatchNorm2d, mean: torch.Tensor, var: torch.Tensor, n: int) -> None:
    """``norm``'s running statistics after a batch, as ``nn.BatchNorm2d`` updates them (unbiased variance, momentum)."""
    if not norm.track_running_stats:
        return
    with torch.no_grad():
        norm.num_batches_tracked.add_(1)
        momentum = norm.momentum if norm.momentum is not None else 1.0 / float(norm.num_batches_tracked)
        norm.running_mean.lerp_(mean.to(norm.running_mean.dtype), momentum)
        norm.running_var.lerp_((var * (n / max(n - 1, 1))).to(norm.running_var.dtype), momentum)


class _BatchNormReLU(torch.autograd.Function):
    """Outputs ``(first, relu, mean, var)``: ``first`` is the normalised map (``with_first="normed"``) or
    ``x`` itself (``"input"``, so the raw shortcut's gradient reaches this backward); ``(relu, mean, var)``
    without one."""

    @staticmethod
    def forward(ctx, x, eps, with_first):
        rows = _rows(x)
        normed, relu, mean, invstd, var = ops().bn_relu_forward(rows, eps, with_first == "normed")
        ctx.save_for_backward(rows, mean, invstd)
        ctx.with_first = with_first
        ctx.mark_non_differentiable(mean, var)
        if with_first is None:
            return _maps(relu), mean, var
        return (_maps(normed) if with_first == "normed" else x), _maps(relu), mean, var

    @staticmethod
    def backward(ctx, *grads):
        rows, mean, invstd = ctx.saved_tensors
        grad_first, grad_relu = grads[:2] if ctx.with_first else (None, grads[0])
        grad_relu = torch.zeros_like(rows) if grad_relu is None else _rows(grad_relu.to(rows.dtype))
        grad_first = None if grad_first is None else _rows(grad_first.to(rows.dtype))
        normed, extra = (grad_first, None) if ctx.with_first == "normed" else (None, grad_first)
        return _maps(ops().bn_relu_backward(grad_relu, normed, rows, mean, invstd, extra)), None, None


def batch_norm_relu(x: torch.Tensor, norm: nn.BatchNorm2d, first: str = "normed") -> tuple[torch.Tensor, torch.Tensor]:
    """``(norm(x), relu(norm(x)))`` in training (see :func:`applies`), with ``norm``'s running statistics updated;
    with ``first="input"``, ``(x, relu(norm(x)))``.

    The gradient with respect to ``x`` is the sum of both outputs' (one fused pass: the ReLU's mask,
    the addition of a residual shortcut's gradient and BatchNorm's backward).
    """
    out, relu, mean, var = _BatchNormReLU.apply(x, norm.eps, first)
    update_running_stats(norm, mean, var, x.numel() // x.shape[1])
    return out, relu


def relu_batch_norm(x: torch.Tensor, norm: nn.BatchNorm2d) -> torch.Tensor:
    """``relu(norm(x))`` in training (see :func:`applies`), with ``norm``'s running statistics updated."""
    relu, mean, var = _BatchNormReLU.apply(x, norm.eps, None)
    update_running_stats(norm, mean, var, x.numel() // x.shape[1])
    return relu


class _Stem(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, eps):
        rows = _rows(h)
        y, where, mean, invstd, var = ops().stem_forward(rows, eps)
        ctx.save_for_backward(rows, where, y, mean, invstd)
        ctx.mark_non_differentiable(mean, var)
        return _maps(y), mean, var

    @staticmethod
    def backward(ctx, grad_y, _grad_mean, _grad_var):
        rows, where, y, mean, invstd = ctx.saved_tensors
        return _maps(ops().stem_backward(_rows(grad_y.to(rows.dtype)), rows, where, y, mean, invstd)), None


def stem_applies(h: torch.Tensor, norm: nn.BatchNorm2d, pool: nn.MaxPool2d) -> bool:
    """Whether the stem's ``relu(pool(norm(h)))`` runs on the fused kernel (3 x 3 max-pool, stride 2, no padding)."""
    return applies(h, norm) and _pool_is(pool, 0) and h.shape[2] >= 3 and h.shape[3] >= 3


def stem(h: torch.Tensor, norm: nn.BatchNorm2d) -> torch.Tensor:
    """``maxpool3x3/2(relu(norm(h)))`` in training, with ``norm``'s running statistics updated."""
    y, mean, var = _Stem.apply(h, norm.eps)
    update_running_stats(norm, mean, var, h.numel() // h.shape[1])
    return y


class _Pool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        rows = _rows(x)
        y, where = ops().pool_forward(rows)
        ctx.save_for_backward(where)
        ctx.size, ctx.dtype = rows.shape[1:3], x.dtype
        return _maps(y)

    @staticmethod
    def backward(ctx, grad):
        (where,) = ctx.saved_tensors
        return _maps(ops().pool_backward(_rows(grad.to(ctx.dtype)), where, *ctx.size))


def pool_applies(x: torch.Tensor, pool: nn.MaxPool2d) -> bool:
    """Whether ``pool`` (3 x 3, stride 2, padding 1: the downsampling shortcut's) on ``x`` runs on the kernel."""
    return maps_apply(x) and _pool_is(pool, 1)


def max_pool(x: torch.Tensor) -> torch.Tensor:
    """``max_pool2d(x, 3, 2, padding=1)`` of a channels-last map (see :func:`pool_applies`)."""
    return _Pool.apply(x)


class _StemConv(torch.autograd.Function):
    """Outputs ``(y, mean, var)``; the gradient is the weight's only (the spectrum is an input, not a parameter)."""

    @staticmethod
    def forward(ctx, x, weight, eps, bf16):
        taps = weight.detach().float().reshape(weight.shape[0], -1).t().contiguous()  # (49, 16)
        y, where, mean, invstd, var = ops().stem_conv_forward(x, taps, eps, bf16)
        ctx.save_for_backward(x, taps, where, y, mean, invstd)
        ctx.weight = (weight.shape, weight.dtype)
        ctx.mark_non_differentiable(mean, var)
        return _maps(y), mean, var

    @staticmethod
    def backward(ctx, grad_y, _grad_mean, _grad_var):
        x, taps, where, y, mean, invstd = ctx.saved_tensors
        grad = ops().stem_conv_backward(_rows(grad_y.to(y.dtype)), x, taps, where, y, mean, invstd)
        shape, dtype = ctx.weight
        return None, grad.t().reshape(shape).to(dtype), None, None


def stem_conv_applies(x: torch.Tensor, conv: nn.Conv2d, norm: nn.BatchNorm2d, pool: nn.MaxPool2d) -> bool:
    """Whether the whole stem, ``relu(pool(norm(conv(x))))``, runs on the fused kernel.

    ``conv``: 7 x 7, stride 2, no padding or bias, one input channel, 16 outputs; ``x``: a float32
    ``(B, 1, H, W)`` input that needs no gradient (the spectrum), H, W >= 11; float32 training or
    bfloat16 autocast.
    """
    return (x.device.type == "cpu" and x.dim() == 4 and x.shape[1] == 1
            and x.dtype == torch.float32 and not x.requires_grad and x.shape[2] >= 11 and x.shape[3] >= 11
            and tuple(conv.weight.shape) == (16, 1, 7, 7) and conv.bias is None and conv.stride == (2, 2)
            and conv.padding == (0, 0) and conv.dilation == (1, 1) and conv.groups == 1
            and _autocast_dtype() in (None, torch.bfloat16) and norm.training and not norm.affine
            and _pool_is(pool, 0) and _available())


def _autocast_dtype() -> torch.dtype | None:
    """The CPU autocast dtype in effect, or ``None``."""
    return torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None


def stem_conv(x: torch.Tensor, conv: nn.Conv2d, norm: nn.BatchNorm2d) -> torch.Tensor:
    """``maxpool3x3/2(relu(norm(conv(x))))`` in training (see :func:`stem_conv_applies`), running statistics updated.

    The convolution runs in float32 (input and weight unrounded, also under bfloat16 autocast); the
    output is channels-last, bfloat16 under autocast, else float32.
    """
    bf16 = _autocast_dtype() == torch.bfloat16
    y, mean, var = _StemConv.apply(x[:, 0].contiguous(), conv.weight, norm.eps, bf16)
    n = x.shape[0] * ((x.shape[2] - 7) // 2 + 1) * ((x.shape[3] - 7) // 2 + 1)
    update_running_stats(norm, mean, var, n)
    return y


def spectra_apply(spec: torch.Tensor) -> bool:
    """Whether a complex64 CPU spectrum that needs no gradient (an rFFT of the clips) takes the fused kernels."""
    return (spec.device.type == "cpu" and spec.dtype == torch.complex64 and spec.is_contiguous()
            and not spec.requires_grad and _available())


def rows_apply(x: torch.Tensor) -> bool:
    """Whether a float32 CPU ``(B, L)`` batch that needs no gradient (clips, spectra) takes the fused kernels
    (:func:`frames`, :func:`unfold_rows`, :func:`mixup`)."""
    return x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 2 and not x.requires_grad and _available()


def frames(wave: torch.Tensor, n_fft: int, hop: int, window: torch.Tensor, reflect: bool) -> torch.Tensor:
    """``(B, frames, n_fft)`` windowed frames of the centred STFT: ``pad(wave, n_fft // 2).unfold(...) * window``."""
    return ops().frames(wave.contiguous(), n_fft, hop, window.float().contiguous(), reflect)


def unfold_rows(x: torch.Tensor, k: int, stride: int) -> torch.Tensor:
    """``x.unfold(1, k, stride)`` of a ``(B, L)`` float32 input, copied (see :func:`rows_apply`), in bfloat16
    under bfloat16 autocast (as autocast would cast the copy for a matrix product), else float32."""
    return ops().unfold_rows(x.contiguous(), k, stride, _autocast_dtype() == torch.bfloat16)


def mixup(x: torch.Tensor, perm: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """``lam * x + (1 - lam) * x[perm]`` per row (``lam``: one per row) in one pass, the same numbers (see :func:`rows_apply`)."""
    return ops().mixup(x.contiguous(), perm.to(torch.int64).contiguous(), lam.float().contiguous())


def magnitude(spec: torch.Tensor, first: int = 0) -> torch.Tensor:
    """``spec[..., first:].abs()`` in one pass (see :func:`spectra_apply`)."""
    return ops().magnitude(torch.view_as_real(spec), first)


def normalised_spectrum(spec: torch.Tensor, first: int, norm: nn.BatchNorm1d) -> torch.Tensor:
    """``norm`` over bins of ``|spec[..., first:]|`` for a ``(B, frames, bins)`` spectrum, returned ``(B, bins, frames)``.

    What ``norm(|spec|.reshape(-1, bins))`` then a transpose compute (batch statistics in training,
    running statistics updated; the running ones in evaluation), in two passes instead of six.
    """
    batch_stats = norm.training or not norm.track_running_stats
    stats = (norm.running_mean, norm.running_var) if not batch_stats else (torch.empty(0), torch.empty(0))
    x, mean, var = ops().spectrum_norm(torch.view_as_real(spec), first, norm.eps, batch_stats,
                                       *(t.float().contiguous() for t in stats))
    if norm.training:
        update_running_stats(norm, mean, var, spec.shape[0] * spec.shape[1])
    return x


class _Excite(torch.autograd.Function):
    """``r * gate(mean of r)`` (+ shortcut) on ``(B, positions, C)`` rows, r = x or relu(x), with the gate
    ``sigmoid(relu(m W1^T) W2^T)`` in float32 and its backward written out (no nested autograd, so hooks
    such as the FLOP counter's still work)."""

    @staticmethod
    def forward(ctx, rows, shortcut, relu, w1, w2):
        mean = ops().excite_mean(rows, relu)
        with torch.autocast("cpu", enabled=False):
            hidden = mean @ w1.float().t()
            act = torch.relu(hidden)
            w = torch.sigmoid(act @ w2.float().t()).contiguous()
        ctx.save_for_backward(rows, mean, hidden, act, w, w1, w2)
        ctx.relu, ctx.has_shortcut = relu, shortcut is not None
        return ops().excite_apply(rows, w, shortcut, relu)

    @staticmethod
    def backward(ctx, grad):
        rows, mean, hidden, act, w, w1, w2 = ctx.saved_tensors
        grad = grad.to(rows.dtype).contiguous()
        with torch.autocast("cpu", enabled=False):
            grad_pre = ops().excite_grad_gate(grad, rows, ctx.relu) * w * (1 - w)  # through the sigmoid
            grad_w2 = grad_pre.t() @ act
            grad_hidden = (grad_pre @ w2.float()) * (hidden > 0)
            grad_w1 = grad_hidden.t() @ mean
            grad_mean = (grad_hidden @ w1.float()).contiguous()
        grad_x = ops().excite_grad_input(grad, rows, w, grad_mean, ctx.relu)
        return grad_x, grad if ctx.has_shortcut else None, None, grad_w1.to(w1.dtype), grad_w2.to(w2.dtype)


def _gate_weights(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(W1, W2)`` of a squeeze-excitation gate ``Linear -> ReLU -> Linear -> Sigmoid`` without biases, else ``None``."""
    layers = list(getattr(module, "gate", ()))
    kinds = (nn.Linear, nn.ReLU, nn.Linear, nn.Sigmoid)
    if len(layers) != 4 or not all(type(m) is k for m, k in zip(layers, kinds)) or layers[0].bias is not None \
            or layers[2].bias is not None:
        return None
    return layers[0].weight, layers[2].weight


def excite_applies(x: torch.Tensor, module: nn.Module, *more: torch.Tensor) -> bool:
    """Whether :func:`excite` takes ``x`` (and the shortcut in ``more``): a channels-last map (see
    :func:`maps_apply`) or a contiguous length-major ``(B, L, C)`` sequence, and a gate it knows."""
    if _gate_weights(module) is None:
        return False
    if x.dim() == 4:
        return maps_apply(x, *more)
    return (x.device.type == "cpu" and x.dim() == 3 and x.dtype in (torch.float32, torch.bfloat16)
            and all(t.shape == x.shape and t.dtype == x.dtype and t.is_contiguous() for t in (x, *more))
            and _available())


def excite(x: torch.Tensor, module: nn.Module, shortcut: torch.Tensor | None = None, relu: bool = False) -> torch.Tensor:
    """Squeeze-excitation ``module`` applied to ``r = relu(x)`` (or ``x``), plus ``shortcut``: ``r * gate(mean(r)) + s``.

    ``x``: a channels-last ``(B, C, H, W)`` map or a contiguous length-major ``(B, L, C)`` sequence (see
    :func:`excite_applies`). Three passes forward and two backward over the map, where PyTorch's layers
    make two and five (the mean's broadcast gradient and its addition to the gating's among them); the
    gate runs in float32 (under bf16 autocast too).
    """
    w1, w2 = _gate_weights(module)
    if x.dim() == 4:
        b, c, h, w = x.shape
        rows = x.permute(0, 2, 3, 1).reshape(b, h * w, c)
        s = None if shortcut is None else shortcut.permute(0, 2, 3, 1).reshape(b, h * w, c)
        return _Excite.apply(rows, s, relu, w1, w2).view(b, h, w, c).permute(0, 3, 1, 2)
    return _Excite.apply(x, shortcut, relu, w1, w2)


def maps_apply(*maps: torch.Tensor) -> bool:
    """Whether channels-last CPU maps of one shape and dtype (float32 or bfloat16) can take the fused kernels."""
    x = maps[0]
    return (x.device.type == "cpu" and x.dim() == 4 and x.dtype in (torch.float32, torch.bfloat16)
            and all(m.shape == x.shape and m.dtype == x.dtype and m.device == x.device
                    and m.is_contiguous(memory_format=torch.channels_last) for m in maps)
            and _available())
