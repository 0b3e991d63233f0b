"""BEATs (Chen et al. 2022), our implementation, loading the official ``{"cfg", "model"}`` checkpoints.

Parameter names equal the official state-dict keys, so an official checkpoint loads with
``strict=True`` (a fine-tuned one's 527-class ``predictor.*`` is dropped). Every cfg switch of the
reference is honoured: ``deep_norm`` (post-LN with residual scaling) or ``layer_norm_first``
(pre-LN), ``relative_position_embedding`` with ``gru_rel_pos`` (gated relative position bias),
``embed_dim != encoder_embed_dim`` (a projection), ``input_patch_size``, ``conv_bias``, the
activation, dropouts, layer drop and layer-wise gradient decay. ``frames(wave)`` equals the
reference's ``extract_features(wave)[0]``; benchmarks/beats_parity.py measures the difference.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import math
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint as _checkpoint

from asd import errors
from asd.models.beats_layers import EncoderLayer, RelativePositionBias, grad_multiply

FBANK_MEAN, FBANK_STD = 15.41663, 6.55582  # the reference's AudioSet fbank statistics
FITTING = ("BEATs_iter3.pt, BEATs_iter3_plus_AS2M.pt or a fine-tuned AS2M checkpoint such as "
           "BEATs_iter3_plus_AS2M_finetuned_on_AS2M_cpt2.pt (published by the BEATs authors: "
           "github.com/microsoft/unilm, the README of its 'beats' folder)")


class CheckpointError(errors.CheckpointError, ValueError):
    """A file that is not a usable BEATs checkpoint."""


@dataclasses.dataclass
class BEATsConfig:
    """The reference ``BEATsConfig`` fields and defaults (a checkpoint's ``cfg`` overrides them)."""

    input_patch_size: int = -1
    embed_dim: int = 512
    conv_bias: bool = False
    encoder_layers: int = 12
    encoder_embed_dim: int = 768
    encoder_ffn_embed_dim: int = 3072
    encoder_attention_heads: int = 12
    activation_fn: str = "gelu"
    layer_wise_gradient_decay_ratio: float = 1.0
    layer_norm_first: bool = False
    deep_norm: bool = False
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0
    encoder_layerdrop: float = 0.0
    dropout_input: float = 0.0
    conv_pos: int = 128
    conv_pos_groups: int = 16
    relative_position_embedding: bool = False
    num_buckets: int = 320
    max_distance: int = 1280
    gru_rel_pos: bool = False
    finetuned_model: bool = False
    predictor_dropout: float = 0.1
    predictor_class: int = 527

    @classmethod
    def from_dict(cls, cfg: dict) -> "BEATsConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in cfg.items() if k in names})  # the reference ignores unknown keys too


class WeightNormConv1d(nn.Module):
    """Grouped Conv1d whose weight is ``weight_g * weight_v / ||weight_v||``, the norm over all dims but 2.

    The reference uses ``nn.utils.weight_norm(conv, dim=2)``; we keep its ``weight_g``/``weight_v``
    parameter names without the deprecated hook.
    """

    def __init__(self, dim: int, kernel: int, groups: int):
        super().__init__()
        self.padding, self.groups = kernel // 2, groups
        self.weight_g = nn.Parameter(torch.ones(1, 1, kernel))
        self.weight_v = nn.Parameter(torch.randn(dim, dim // groups, kernel) * math.sqrt(4.0 / (kernel * dim)))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = self.weight_v
        weight = v * (self.weight_g / torch.linalg.vector_norm(v, dim=(0, 1), keepdim=True))
        return F.conv1d(x, weight, self.bias, padding=self.padding, groups=self.groups)


class BEATs(nn.Module):
    """The BEATs encoder: waveform ``(B, samples)`` at 16 kHz in [-1, 1] -> frames ``(B, tokens, dim)``.

    ``tokens = (fbank frames // patch) * (128 // patch)``, time-major (8 frequency patches per time
    step for the 16x16 patches of the released models): 496 for a 10-s clip.
    """

    def __init__(self, cfg: BEATsConfig, grad_checkpoint: bool = False):
        super().__init__()
        if cfg.deep_norm and cfg.layer_norm_first:
            raise CheckpointError("BEATs cfg sets both deep_norm and layer_norm_first; the reference forbids it")
        if cfg.input_patch_size <= 0:
            raise CheckpointError(f"BEATs cfg input_patch_size must be positive, got {cfg.input_patch_size}")
        self.cfg, self.grad_checkpoint = cfg, grad_checkpoint
        d = cfg.encoder_embed_dim
        self.dim = d
        self.patch_embedding = nn.Conv2d(1, cfg.embed_dim, cfg.input_patch_size, cfg.input_patch_size,
                                         bias=cfg.conv_bias)
        self.layer_norm = nn.LayerNorm(cfg.embed_dim)
        if cfg.embed_dim != d:
            self.post_extract_proj = nn.Linear(cfg.embed_dim, d)
        self.encoder = Encoder(cfg)

    def fbank(self, wave: torch.Tensor) -> torch.Tensor:
        """Normalised Kaldi fbank ``(B, frames, 128)`` in float32: (log-mel − 15.41663) / (2 × 6.55582)."""
        from asd.features import kaldi_fbank

        return (kaldi_fbank(wave) - FBANK_MEAN) / (2 * FBANK_STD)

    def encode(self, fbank: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Normalised fbank ``(B, frames, 128)`` -> frames ``(B, tokens, dim)``.

        ``padding_mask`` (``(B, frames)``, True = padding) is reduced to tokens as the reference does:
        cut to a multiple of the token count, then a token is padding when all its chunk is.
        """
        x = self.patch_embedding(fbank.unsqueeze(1))  # (B, E, T', F')
        x = self.layer_norm(x.flatten(2).transpose(1, 2))  # (B, T' * F', E), time-major
        if padding_mask is not None:
            if x.shape[1] > padding_mask.shape[1]:  # the reference would mask every token and return NaN
                raise ValueError(f"a padding mask needs at most one token per fbank frame; this model makes "
                                 f"{x.shape[1]} tokens from {padding_mask.shape[1]} frames")
            padding_mask = _reduce_mask(padding_mask, x.shape[1])
        if hasattr(self, "post_extract_proj"):
            x = self.post_extract_proj(x)
        x = F.dropout(x, self.cfg.dropout_input, self.training)
        return self.encoder(x, padding_mask, self.grad_checkpoint)

    def frames(self, wave: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Waveform ``(B, samples)`` -> ``(B, tokens, dim)``, the reference's ``extract_features(wave)[0]``.

        ``padding_mask``: optional ``(B, samples)`` bool, True = padded sample (reference semantics).
        """
        fbank = self.fbank(wave)
        if padding_mask is not None:
            padding_mask = _reduce_mask(padding_mask, fbank.shape[1])
        return self.encode(fbank, padding_mask)

    forward = frames


def _reduce_mask(mask: torch.Tensor, n: int) -> torch.Tensor:
    """``(B, L)`` -> ``(B, n)``: the reference's reduction (drop ``L % n`` trailing entries, all() per chunk)."""
    extra = mask.shape[1] % n
    if extra:
        mask = mask[:, :-extra]
    return mask.reshape(mask.shape[0], n, -1).all(-1)


class Encoder(nn.Module):
    """Positional convolution, then the transformer layers (post-LN/deep-norm or pre-LN)."""

    def __init__(self, cfg: BEATsConfig):
        super().__init__()
        d = cfg.encoder_embed_dim
        self.cfg = cfg
        self.pos_conv = nn.Sequential(WeightNormConv1d(d, cfg.conv_pos, cfg.conv_pos_groups))
        self.trim = 1 if cfg.conv_pos % 2 == 0 else 0  # an even kernel with padding k // 2 gives one extra step
        rel = RelativePositionBias(cfg.num_buckets, cfg.max_distance, cfg.encoder_attention_heads) \
            if cfg.relative_position_embedding else None
        # One bias table shared by every layer (the reference aliases layer 0's into each layer).
        self.layers = nn.ModuleList(EncoderLayer(cfg, rel) for _ in range(cfg.encoder_layers))
        self.layer_norm = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None, grad_checkpoint: bool) -> torch.Tensor:
        cfg = self.cfg
        if padding_mask is not None:
            x = x.masked_fill(padding_mask.unsqueeze(-1), 0.0)
        conv = self.pos_conv(x.transpose(1, 2))
        if self.trim:
            conv = conv[..., :-self.trim]
        x = x + F.gelu(conv).transpose(1, 2)
        if not cfg.layer_norm_first:
            x = self.layer_norm(x)
        x = F.dropout(x, cfg.dropout, self.training)
        attn0 = self.layers[0].self_attn if len(self.layers) else None
        pos_bias = attn0.relative_attention_bias(x.shape[1]) if hasattr(attn0, "relative_attention_bias") else None
        for layer in self.layers:
            if cfg.layer_wise_gradient_decay_ratio != 1.0:
                x = grad_multiply(x, cfg.layer_wise_gradient_decay_ratio)
            if self.training and cfg.encoder_layerdrop > 0 and float(torch.rand(())) <= cfg.encoder_layerdrop:
                continue  # layer drop (the reference keeps a layer when its draw is above the rate)
            if grad_checkpoint and self.training and torch.is_grad_enabled():
                x = _checkpoint(layer, x, pos_bias, padding_mask, use_reentrant=False)
            else:
                x = layer(x, pos_bias, padding_mask)
        return self.layer_norm(x) if cfg.layer_norm_first else x


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_checkpoint(path: Path) -> tuple[dict, str]:
    """(``{"cfg", "model"}`` dict, SHA-256 of the bytes loaded), with errors that name the file."""
    hint = f"use {FITTING}"
    if not path.is_file():
        raise CheckpointError(f"BEATs checkpoint {path} does not exist; {hint}")
    data = path.read_bytes()
    if not data:
        raise CheckpointError(f"BEATs checkpoint {path} is empty (0 bytes), probably an interrupted download; {hint}")
    try:
        ckpt = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # not a torch file, or a pickle holding objects other than tensors and plain data
        # torch's own message advises loading untrusted code; name only what the file holds.
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        what = f"it pickles a Python object ({found.group(1)}), which BEATs checkpoints never hold" if found \
            else "it is not a torch.save file, or holds more than tensors"
        raise CheckpointError(f"{path} is not a BEATs checkpoint: it cannot be read as tensors and plain data "
                              f"({what}); {hint}") from None
    if not (isinstance(ckpt, dict) and isinstance(ckpt.get("cfg"), dict) and isinstance(ckpt.get("model"), dict)):
        found = sorted(map(str, ckpt))[:6] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{path} is not a BEATs checkpoint: expected a dict with 'cfg' and 'model', "
                              f"found {found}; {hint}")
    if "quant_n" in ckpt["cfg"] or any(k.startswith("quantize") for k in ckpt["model"]):
        raise CheckpointError(f"{path} is a BEATs Tokenizer checkpoint (it has a quantizer), not an audio "
                              f"encoder; {hint}")
    return ckpt, hashlib.sha256(data).hexdigest()


def load_beats(path: str | Path, grad_checkpoint: bool = False) -> BEATs:
    """Build our BEATs from an official checkpoint, in eval mode, on CPU.

    The returned module has ``checkpoint_path`` and ``checkpoint_sha256`` (of the bytes loaded).
    Raises CheckpointError naming the file when it is missing, empty, unreadable with
    ``weights_only=True``, a Tokenizer, or its keys do not fit its cfg.
    """
    path = Path(path)
    ckpt, sha = _read_checkpoint(path)
    cfg = BEATsConfig.from_dict(ckpt["cfg"])
    state = {k: v for k, v in ckpt["model"].items() if not k.startswith("predictor.")}
    try:
        model = BEATs(cfg, grad_checkpoint=grad_checkpoint)
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # a tensor whose shape does not fit the cfg
        raise CheckpointError(f"{path} does not fit its own cfg as a BEATs model: "
                              f"{str(e).splitlines()[-1].strip()}; use {FITTING}") from None
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"{path} does not fit its own cfg as a BEATs model: missing keys {result.missing_keys[:5]}, "
            f"unexpected keys {result.unexpected_keys[:5]}; use {FITTING}")
    model.checkpoint_path, model.checkpoint_sha256 = str(path), sha
    return model.eval()
