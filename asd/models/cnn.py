"""MultiResNet: the dual-branch and multi-branch CNN frontends of the discriminative recipes (docs/methods.md, discriminative recipes).

One model name, ``multiresnet``, configured by ``stft_sizes`` and ``use_fft``:
``[1024]`` + FFT is the dual-branch model (2 x 128 = 256-d), ``[256, 1024, 4096]`` + FFT the
multi-branch one (512-d). The model takes raw waveforms ``(batch, samples)`` and computes its
spectra itself, so features are made on the same device as the network (GPU included).

Every layer is bias-free and every BatchNorm has no affine parameters (ASDKit's ``use_bias=False``).
Layer sizes are derived from the input length: the flatten sizes follow ``n_samples``, the FFT
branch shrinks a kernel that would be longer than its input, and a spectrogram with fewer frames
than the stem needs is tiled in time. So 1-s test clips and 4-s toy clips work as well as 10-s ones.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from asd.config import ConfigError
from asd.models import cpu_kernels, register

SHORTCUTS = ("bn", "raw")
PAD_MODES = ("constant", "reflect")
F_CUT_HZ = 200.0  # STFT bins below this are dropped (hum and rumble carry little machine identity)
_STEM_MIN_FRAMES = 11  # conv 7 (stride 2) then max-pool 3 need at least 11 input frames


class StridedConv2d(nn.Conv2d):
    """``nn.Conv2d`` that computes in float32 where the CPU's bfloat16 kernel is wrong.

    oneDNN 3.12 (torch 2.13's CPU build) picks an AMX-BF16 brgemm kernel for bf16 convolutions on
    CPUs with AMX. For a convolution with stride > 1 whose output is one column wide, that kernel
    leaves part of its output unwritten, so the result holds whatever the allocator's memory held
    (NaN included): measured on our AMX machines, 148 of 300 such shapes gave non-finite outputs or
    gradients, none of 1,068 other shapes, and no Conv1d. A 1-s clip reaches the CNN's last
    stride-2 block two frames wide, so bf16 training there gave NaN losses. The affected
    convolutions are one column wide, so running them in float32 costs nothing measurable.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and torch.is_autocast_enabled("cpu") and self.stride[1] > 1:
            width = (x.shape[-1] + 2 * self.padding[1] - self.dilation[1] * (self.kernel_size[1] - 1) - 1)
            if width // self.stride[1] + 1 == 1:
                with torch.autocast("cpu", enabled=False):
                    return super().forward(x.float()).to(torch.get_autocast_dtype("cpu"))
        return super().forward(x)


class SqueezeExcite(nn.Module):
    """Channel gating from the channel means, for ``(B, C, L)`` or ``(B, C, H, W)`` inputs."""

    def __init__(self, channels: int, ratio: int = 16):
        super().__init__()
        hidden = max(1, channels // ratio)
        self.gate = nn.Sequential(nn.Linear(channels, hidden, bias=False), nn.ReLU(),
                                  nn.Linear(hidden, channels, bias=False), nn.Sigmoid())

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """The ``(B, C)`` gate of ``x``, from its channel means."""
        if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            return self.gate(_mean_over_rows(_channels_last_rows(x)))
        return self.gate(x.flatten(2).mean(-1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weights(x)
        return x * w.view(*w.shape, *([1] * (x.dim() - 2)))

    def length_major(self, x: torch.Tensor) -> torch.Tensor:
        """The same gating of a length-major ``(B, L, C)`` input."""
        return x * self.gate(_mean_over_rows(x)).unsqueeze(1)


def _channels_last_rows(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` as ``(B, H * W, C)``: a view when ``x`` is channels-last."""
    return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, x.shape[1])


def _mean_over_rows(rows: torch.Tensor) -> torch.Tensor:
    """``rows.mean(1)`` of ``(B, L, C)`` as a product with a row of ones.

    The plain mean's gradient is a broadcast (stride-0) tensor, which autograd then adds to the
    other gradient of the same input; on CPUs that mixed-layout addition (and, for a channels-last
    map, ``flatten``'s copy) cost more than the squeeze-excitation itself (measured fwd + bwd at
    64 x 16 x 123 x 33, one core: 52 -> 15 ms in float32, 32 -> 17 ms in bfloat16). The product's
    gradient is a dense tensor in the input's layout; the sum is accumulated in float32 either way.
    Only on CPUs (float32 or bfloat16): a float16 sum over thousands of positions could overflow, and
    CUDA's mean has neither problem.
    """
    if rows.device.type != "cpu" or rows.dtype == torch.float16:
        return rows.mean(1)
    ones = torch.ones(1, rows.shape[1], dtype=rows.dtype, device=rows.device)
    return torch.matmul(ones, rows)[:, 0] / rows.shape[1]


class ResBlock(nn.Module):
    """Pre-activation residual block: BN-ReLU-conv3x3(stride)-BN-ReLU-conv3x3-SE plus a shortcut.

    ``shortcut="bn"`` (ASDKit) feeds the shortcut the block's batch-normalised input, so every
    block's output is a sum of normalised terms; ``"raw"`` feeds it the block's input as it came
    (the textbook pre-activation block; checkpoints written before this option have it).
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 1, shortcut: str = "raw"):
        super().__init__()
        if shortcut not in SHORTCUTS:
            raise ConfigError(f"model.shortcut={shortcut!r}: choose one of {', '.join(SHORTCUTS)}")
        self.bn_shortcut = shortcut == "bn"
        self.body = nn.Sequential(
            nn.BatchNorm2d(c_in, affine=False), nn.ReLU(),
            StridedConv2d(c_in, c_out, 3, stride, padding=1, bias=False),
            nn.BatchNorm2d(c_out, affine=False), nn.ReLU(),
            nn.Conv2d(c_out, c_out, 3, 1, padding=1, bias=False),
            SqueezeExcite(c_out),
        )
        short: list[nn.Module] = []
        if stride != 1:
            short.append(nn.MaxPool2d(3, stride, padding=1))
        if c_in != c_out:
            short.append(nn.Conv2d(c_in, c_out, 1, bias=False))
        self.shortcut = nn.Sequential(*short)

    def _short(self, h: torch.Tensor) -> torch.Tensor:
        """The shortcut of the fused path: its max-pool on the kernel where it applies."""
        layers = list(self.shortcut)
        if layers and isinstance(layers[0], nn.MaxPool2d) and cpu_kernels.pool_applies(h, layers[0]):
            h, layers = cpu_kernels.max_pool(h), layers[1:]
        for layer in layers:
            h = layer(h)
        return h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm_in, _, conv1, norm_mid, _, conv2, excite = self.body
        if cpu_kernels.applies(x, norm_in):  # training on a CPU: BatchNorm + ReLU fused (asd.models.cpu_kernels)
            # h: what the shortcut adds, the normalised input or the input, its gradient added in the same pass
            h, r = cpu_kernels.batch_norm_relu(x, norm_in, "normed" if self.bn_shortcut else "input")
            r = conv1(r)
            r = cpu_kernels.relu_batch_norm(r, norm_mid) if cpu_kernels.applies(r, norm_mid) else torch.relu(norm_mid(r))
            r, short = conv2(r), self._short(h)
            if cpu_kernels.excite_applies(r, excite, short):  # squeeze-excitation and the shortcut's addition fused
                return cpu_kernels.excite(r, excite, short)
            return excite(r) + short
        h = norm_in(x)
        r = h
        for layer in self.body[1:]:
            r = layer(r)
        return r + self.shortcut(h if self.bn_shortcut else x)


def _half(n: int) -> int:
    """Output size of a stride-2 layer that keeps ceil(n / 2) (3x3 conv or pool with padding 1)."""
    return (n - 1) // 2 + 1


def _tiled(spec: torch.Tensor) -> torch.Tensor:
    """A ``(B, frames, bins)`` spectrum of a very short clip, tiled in time to the frames the stem needs."""
    if spec.shape[1] < _STEM_MIN_FRAMES:
        spec = spec.repeat(1, -(-_STEM_MIN_FRAMES // spec.shape[1]), 1)
    return spec


class STFTBranch(nn.Module):
    """Linear-magnitude STFT (bins >= 200 Hz) -> ResNet with squeeze-excitation -> ``out_dim``.

    ``pad``: how the centred STFT pads the clip's ends (``constant`` = zeros, as ASDKit and
    torchaudio's default; ``reflect`` = torch's default); ``shortcut``: see :class:`ResBlock`.
    """

    def __init__(self, n_fft: int, hop: int, sample_rate: int = 16000, out_dim: int = 128, pad: str = "reflect",
                 shortcut: str = "raw"):
        super().__init__()
        if pad not in PAD_MODES:
            raise ConfigError(f"model.stft_pad={pad!r}: choose one of {', '.join(PAD_MODES)}")
        self.n_fft, self.hop, self.pad = n_fft, hop, pad
        self.first_bin = math.ceil(F_CUT_HZ * n_fft / sample_rate)
        n_bins = n_fft // 2 + 1 - self.first_bin
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.freq_norm = nn.BatchNorm1d(n_bins, affine=False)  # per-bin standardisation
        self.stem = nn.Sequential(StridedConv2d(1, 16, 7, 2, bias=False), nn.BatchNorm2d(16, affine=False), nn.ReLU(),
                                  nn.MaxPool2d(3, 2))
        blocks = [ResBlock(16, 16, shortcut=shortcut), ResBlock(16, 16, shortcut=shortcut)]
        for c_in, c_out in ((16, 32), (32, 64), (64, 128)):
            blocks += [ResBlock(c_in, c_out, 2, shortcut), ResBlock(c_out, c_out, shortcut=shortcut)]
        self.blocks = nn.Sequential(*blocks)
        f = ((n_bins - 7) // 2 + 1 - 3) // 2 + 1
        for _ in range(3):
            f = _half(f)
        self.flat_bins = f
        self.head = nn.Sequential(nn.BatchNorm1d(128 * f, affine=False), nn.Linear(128 * f, out_dim, bias=False))

    def _spectrum(self, wave: torch.Tensor) -> torch.Tensor:
        """``(B, frames, bins)`` magnitude of the centred STFT, normalised by the window's energy.

        Framed by hand (a strided view of the padded clip) and transformed with one ``rfft``, which
        gives the frames-major layout the per-bin normalisation reads fastest; the same numbers as
        ``torch.stft(..., center=True).abs()`` in about a third of the time on a CPU.
        """
        return _tiled(magnitude(self._rfft(wave), self.first_bin))

    def _rfft(self, wave: torch.Tensor) -> torch.Tensor:
        """``(B, frames, n_fft // 2 + 1)`` complex STFT of the centred, windowed frames (all bins)."""
        half, window = self.n_fft // 2, self.window / self.window.pow(2).sum().sqrt()
        if window.dtype == torch.float32 and cpu_kernels.rows_apply(wave) and (self.pad == "constant"
                                                                                 or half < wave.shape[-1]):
            return torch.fft.rfft(cpu_kernels.frames(wave, self.n_fft, self.hop, window, self.pad == "reflect"))
        padded = nn.functional.pad(wave.unsqueeze(1), (half, half), mode=self.pad).squeeze(1)
        return torch.fft.rfft(padded.unfold(-1, self.n_fft, self.hop) * window)

    def spectrogram(self, wave: torch.Tensor) -> torch.Tensor:
        """``(B, bins, frames)`` magnitude, normalised by the window's energy (torchaudio's ``normalized``)."""
        return self._spectrum(wave).transpose(1, 2)

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        """conv 7/2 -> BatchNorm -> ReLU -> max-pool 3/2, the same numbers computed in a cheaper order.

        ReLU is increasing, and so is a BatchNorm without affine parameters applied with fixed
        statistics (``(x - mean) / std`` per channel), so both commute with a max over a window of
        one channel: the ReLU (and, in evaluation, the normalisation) runs on the pooled map, a
        quarter of the conv output. In float32 training :class:`PooledBatchNorm` normalises the
        pooled map with the statistics of the whole conv output; in bfloat16 the normalisation stays
        before the pool (the CPU's bfloat16 element-wise kernels are slower than its BatchNorm). On
        the fused CPU kernels (training, one thread) the whole stem, convolution included, is one
        kernel that never stores the conv output (:func:`asd.models.cpu_kernels.stem_conv`).
        """
        conv, norm, _, pool = self.stem
        if cpu_kernels.stem_conv_applies(x, conv, norm, pool):
            return cpu_kernels.stem_conv(x, conv, norm)
        return self._norm_relu_pool(conv(x))

    def _norm_relu_pool(self, h: torch.Tensor) -> torch.Tensor:
        """The stem after its convolution (see :meth:`_stem`)."""
        _, norm, _, pool = self.stem
        if not norm.training:
            return torch.relu(norm(pool(h)))
        if cpu_kernels.stem_applies(h, norm, pool):
            return cpu_kernels.stem(h, norm)
        if h.dtype == torch.float32 and h.is_contiguous(memory_format=torch.channels_last):
            return pooled_batch_norm_relu(h, norm, pool)
        return torch.relu(pool(norm(h)))

    def _normalised_spectrum(self, wave: torch.Tensor) -> torch.Tensor:
        """``(B, bins, frames)``: each bin of the magnitude normalised over batch and frames (``freq_norm``)."""
        full = self._rfft(wave)
        if cpu_kernels.spectra_apply(full) and full.shape[1] >= _STEM_MIN_FRAMES and full.numel():
            return cpu_kernels.normalised_spectrum(full, self.first_bin, self.freq_norm)
        spec = _tiled(magnitude(full, self.first_bin))
        return self.freq_norm(spec.reshape(-1, spec.shape[-1])).view_as(spec).transpose(1, 2).contiguous()

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        with torch.autocast(wave.device.type, enabled=False):  # spectra in float32 even under AMP
            x = self._normalised_spectrum(wave.float())
        x = self.blocks(self._stem(x.unsqueeze(1)))  # (B, 128, F', T')
        return self.head(x.amax(dim=-1).flatten(1))  # max over time, then the frequency layout is kept


def pooled_batch_norm_relu(h: torch.Tensor, norm: nn.BatchNorm2d, pool: nn.MaxPool2d) -> torch.Tensor:
    """``relu(pool(norm(h)))`` in training, for a float32 channels-last ``h``: see :class:`PooledBatchNorm`.

    Updates ``norm``'s running statistics as ``nn.BatchNorm2d`` does (unbiased variance, momentum).
    """
    y, mean, var = PooledBatchNorm.apply(h, norm.eps, pool)
    cpu_kernels.update_running_stats(norm, mean, var, h.numel() // h.shape[1])
    return y


class PooledBatchNorm(torch.autograd.Function):
    """``relu((maxpool(h) - mean) / std)`` with the batch statistics of the whole ``h``, and its gradient.

    The same function as ``relu(maxpool(batch_norm(h)))`` (see ``STFTBranch._stem``), with the
    normalisation done on the pooled quarter. The statistics are matrix products over the
    ``(positions, channels)`` view of the channels-last map (sums and sums of squares, float32:
    exact enough where the mean is not orders of magnitude above the standard deviation, as for the
    stem, whose input is standardised per bin and whose conv has no bias), several times faster than
    a BatchNorm pass; the gradient with respect to ``h`` is written once
    as the per-channel ``a + b * h`` from the statistics, and the pooled gradient is added in place
    at each window's maximum (instead of max-pool's zero-filled scatter plus two more passes).
    Measured on the CNN's stem (64 x 16 x 247 x 68, one core), forward and backward with the pool
    and the ReLU: 90 ms against 109 ms for BatchNorm2d -> MaxPool2d -> ReLU.
    """

    @staticmethod
    def forward(ctx, h, eps, pool):
        rows = _channels_last_rows(h).reshape(-1, h.shape[1])  # (positions, C): a view
        mean = _mean_over_rows(rows[None])[0]
        var = ((rows.t() @ rows).diagonal() / rows.shape[0] - mean.square()).clamp_min(0)
        invstd = torch.rsqrt(var + eps)
        pooled, where = nn.functional.max_pool2d(h, pool.kernel_size, pool.stride, pool.padding, pool.dilation,
                                                 pool.ceil_mode, return_indices=True)
        y = torch.relu((pooled - mean.view(1, -1, 1, 1)) * invstd.view(1, -1, 1, 1))
        ctx.save_for_backward(h, where, y, mean, invstd)
        ctx.mark_non_differentiable(mean, var)
        return y, mean, var

    @staticmethod
    def backward(ctx, grad_y, _grad_mean, _grad_var):
        h, where, y, mean, invstd = ctx.saved_tensors
        n = h.numel() // h.shape[1]
        grad_z = grad_y * (y > 0)  # through the ReLU; grad_z * z == grad_z * y
        grad_pooled = grad_z * invstd.view(1, -1, 1, 1)
        grad_mean = -grad_pooled.sum(dim=(0, 2, 3))
        grad_var = -0.5 * invstd.square() * (grad_z * y).sum(dim=(0, 2, 3))
        b = 2 * grad_var / n  # d/dh of the statistics: grad_mean / n + grad_var * 2 (h - mean) / n
        a = grad_mean / n - b * mean
        grad_h = torch.addcmul(a.view(1, -1, 1, 1), h, b.view(1, -1, 1, 1)).contiguous(memory_format=torch.channels_last)
        # Then the pooled gradient added at each window's maximum: `where` indexes the (H, W) plane
        # of one (sample, channel), which is dim 1 of the channels-last rows view (no offsets to build).
        _channels_last_rows(grad_h).scatter_add_(1, _channels_last_rows(where),
                                                 _channels_last_rows(grad_pooled.to(grad_h.dtype)))
        return grad_h, None, None


def magnitude(spec: torch.Tensor, first: int = 0) -> torch.Tensor:
    """``|spec[..., first:]|`` of a complex tensor as ``sqrt(re^2 + im^2)``: a few times faster than ``abs`` on CPUs.

    Three passes (``re * re``, ``+ im * im`` in one ``addcmul``, an in-place ``sqrt``): measured on a
    64 x 141 x 501 spectrum on one core, 10.9 ms against 18.7 ms for ``square() + square()`` and 34 ms
    for ``abs``; one pass on the fused CPU kernel where it applies.
    """
    if cpu_kernels.spectra_apply(spec):
        return cpu_kernels.magnitude(spec, first)
    parts = torch.view_as_real(spec[..., first:])
    real, imag = parts[..., 0], parts[..., 1]
    return torch.addcmul(real * real, imag, imag).sqrt_()


def conv1d_length_major(x: torch.Tensor, weight: torch.Tensor, stride: int) -> torch.Tensor:
    """``conv1d`` without padding of a length-major ``(B, L, C_in)`` input -> ``(B, positions, C_out)``.

    The same numbers as ``F.conv1d`` on ``(B, C_in, L)``, computed as matrix products, which reach
    the CPU's matrix units where oneDNN's direct kernels for these long, strided 1-D kernels do not
    (measured fwd + bwd in bfloat16 on one core: 37 -> 14 ms for the first FFT-branch layer, 40 -> 18
    ms for the second). When the stride divides the kernel the input is cut into stride-long chunks
    (a view), each position is a sum of ``k / stride`` chunk products and no frame is copied;
    otherwise the overlapping frames are copied out and multiplied once.
    """
    c_out, c_in, k = weight.shape
    n = (x.shape[1] - k) // stride + 1
    if c_in > 1 and k % stride == 0:
        r = k // stride  # chunk j of position p is chunk p + j of the input
        chunks = x[:, : (n + r - 1) * stride].reshape(-1, stride * c_in)  # (B * chunks, stride * C_in)
        pieces = weight.permute(0, 2, 1).reshape(c_out, r, stride * c_in).transpose(0, 1).reshape(r * c_out, -1)
        z = torch.matmul(chunks, pieces.t()).view(x.shape[0], n + r - 1, r * c_out)  # one 2-D product
        y = z[:, :n, :c_out]
        for j in range(1, r):
            y = y + z[:, j:j + n, j * c_out:(j + 1) * c_out]
        return y
    if c_in == 1 and cpu_kernels.rows_apply(x[..., 0]):
        frames = cpu_kernels.unfold_rows(x[..., 0], k, stride).reshape(-1, k)  # copied once, in the product's dtype
        return torch.matmul(frames, weight.reshape(c_out, -1).t()).view(x.shape[0], n, c_out)
    frames = x.unfold(1, k, stride).reshape(-1, c_in * k)  # (B * positions, C_in * k): overlapping frames copied
    return torch.matmul(frames, weight.reshape(c_out, -1).t()).view(x.shape[0], n, c_out)


class FFTBranch(nn.Module):
    """|rFFT| of the whole clip -> three strided Conv1d+SE -> MLP -> ``out_dim``."""

    SPECS = ((256, 64), (64, 32), (16, 4))  # (kernel, stride) of the reference layers

    def __init__(self, n_samples: int, out_dim: int = 128, channels: int = 128):
        super().__init__()
        length = n_samples // 2 + 1
        layers: list[nn.Module] = []
        c_in = 1
        for k, s in self.SPECS:
            k = min(k, length)  # short clips: the kernel covers what is left instead of failing
            s = min(s, k)
            layers += [nn.Conv1d(c_in, channels, k, s, bias=False), nn.ReLU(), SqueezeExcite(channels)]
            length = (length - k) // s + 1
            c_in = channels
        self.convs = nn.Sequential(*layers)
        self.flat_len = length
        mlp: list[nn.Module] = [nn.Linear(channels * length, 128, bias=False), nn.BatchNorm1d(128, affine=False),
                                nn.ReLU()]
        for _ in range(4):
            mlp += [nn.Linear(128, 128, bias=False), nn.BatchNorm1d(128, affine=False), nn.ReLU()]
        mlp.append(nn.Linear(128, out_dim, bias=False))
        self.mlp = nn.Sequential(*mlp)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        with torch.autocast(wave.device.type, enabled=False):
            mag = magnitude(torch.fft.rfft(wave.float()))
        x = mag.unsqueeze(-1)  # length-major (B, L, C) all the way: see conv1d_length_major
        for i in range(0, len(self.convs), 3):
            conv, _, excite = self.convs[i:i + 3]  # Conv1d, ReLU, SqueezeExcite
            x = conv1d_length_major(x, conv.weight, conv.stride[0]).contiguous()
            if cpu_kernels.excite_applies(x, excite):  # the ReLU and squeeze-excitation fused
                x = cpu_kernels.excite(x, excite, relu=True)
            else:
                x = excite.length_major(torch.relu(x))
        return self.mlp(x.transpose(1, 2).flatten(1))  # flattened channel-major, as the layers were trained


@register("multiresnet")
class MultiResNet(nn.Module):
    """Waveform ``(B, n_samples)`` -> embedding ``(B, embed_dim * branches)``: [FFT | STFT n1 | STFT n2 ...].

    Args:
        n_samples: clip length in samples (every clip is tiled or cropped to it).
        stft_sizes: FFT sizes of the STFT branches; hop = n_fft / 2.
        use_fft: add the whole-clip spectrum branch.
        embed_dim: output size of each branch (128 in every recipe).
        shortcut: what the residual shortcuts of the STFT branches add (see :class:`ResBlock`).
        stft_pad: how the STFT branches pad the clip's ends (see :class:`STFTBranch`).
    """

    family = "classifier"  # one model for every machine type (asd.training.classifier)

    def __init__(self, n_samples: int, sample_rate: int = 16000, stft_sizes=(1024,), use_fft: bool = True,
                 embed_dim: int = 128, shortcut: str = "raw", stft_pad: str = "reflect"):
        super().__init__()
        if n_samples < 1024:
            raise ConfigError(f"clips of {n_samples} samples are too short for the CNN; use data.clip_seconds >= 0.1")
        branches: list[nn.Module] = [FFTBranch(n_samples, embed_dim)] if use_fft else []
        branches += [STFTBranch(int(n), int(n) // 2, sample_rate, embed_dim, stft_pad, shortcut) for n in stft_sizes]
        if not branches:
            raise ConfigError("multiresnet needs at least one branch: set model.use_fft=true or model.stft_sizes")
        self.branches = nn.ModuleList(branches)
        self.branch_dim = embed_dim
        self.dim = embed_dim * len(branches)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return torch.cat([b(wave) for b in self.branches], dim=1)
