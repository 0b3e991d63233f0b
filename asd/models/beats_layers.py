"""The transformer layer of BEATs: attention with a gated relative position bias, and its feed-forward block.

Kept apart from asd/models/beats.py (config, model, checkpoint loading) to keep both files short.
Submodule names equal the official state-dict keys (``self_attn.q_proj``, ``grep_linear``, ...).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class _GradMultiply(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.scale, None


def grad_multiply(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Identity forward; the gradient is multiplied by ``scale`` (the reference's layer-wise gradient decay)."""
    return _GradMultiply.apply(x, scale)


class RelativePositionBias(nn.Module):
    """T5-style bucketed relative position bias, ``weight`` ``(num_buckets, heads)`` -> bias ``(heads, L, L)``.

    Half the buckets are for keys after the query. Distances below a quarter of the buckets each
    get their own bucket; larger ones are binned logarithmically up to ``max_distance``.
    """

    def __init__(self, num_buckets: int, max_distance: int, heads: int):
        super().__init__()
        self.num_buckets, self.max_distance = num_buckets, max_distance
        self.weight = nn.Parameter(torch.empty(num_buckets, heads))
        nn.init.xavier_normal_(self.weight)

    def buckets(self, length: int, device) -> torch.Tensor:
        pos = torch.arange(length, device=device)
        rel = pos[None, :] - pos[:, None]  # key position minus query position
        half = self.num_buckets // 2
        exact = half // 2
        dist = rel.abs()
        # Same float32 operation order as the reference, so that boundary distances land in the same bucket.
        far = exact + (torch.log(dist.clamp(min=1).float() / exact) / math.log(self.max_distance / exact)
                       * (half - exact)).long()
        far = far.clamp(max=half - 1)
        return (rel > 0).long() * half + torch.where(dist < exact, dist, far)

    def forward(self, length: int) -> torch.Tensor:
        return F.embedding(self.buckets(length, self.weight.device), self.weight).permute(2, 0, 1)


class Attention(nn.Module):
    """Multi-head self-attention; with ``gru_rel_pos`` the position bias is gated per query and head."""

    def __init__(self, cfg, rel_bias: RelativePositionBias | None):
        super().__init__()
        d, self.heads = cfg.encoder_embed_dim, cfg.encoder_attention_heads
        if d % self.heads:
            raise ValueError(f"encoder_embed_dim {d} is not divisible by {self.heads} heads")
        self.head_dim, self.dropout = d // self.heads, cfg.attention_dropout
        self.k_proj, self.v_proj, self.q_proj, self.out_proj = (nn.Linear(d, d) for _ in range(4))
        if rel_bias is not None:
            self.relative_attention_bias = rel_bias
        self.gated = cfg.gru_rel_pos
        if cfg.gru_rel_pos:  # the reference creates these whenever gru_rel_pos is set
            self.grep_linear = nn.Linear(self.head_dim, 8)
            self.grep_a = nn.Parameter(torch.ones(1, self.heads, 1, 1))

    def forward(self, x: torch.Tensor, pos_bias: torch.Tensor | None, padding_mask: torch.Tensor | None):
        b, n, d = x.shape
        q, k, v = (p(x).view(b, n, self.heads, self.head_dim).transpose(1, 2)
                   for p in (self.q_proj, self.k_proj, self.v_proj))  # (B, H, L, hd)
        bias = None
        if pos_bias is not None:
            bias = pos_bias.unsqueeze(0)  # (1, H, L, L)
            if self.gated:
                gate_a, gate_b = torch.sigmoid(self.grep_linear(q).view(b, self.heads, n, 2, 4).sum(-1)).chunk(2, -1)
                bias = (gate_a * (gate_b * self.grep_a - 1.0) + 2.0) * bias  # (B, H, L, L)
        if padding_mask is not None:
            keys = padding_mask[:, None, None, :]  # padded keys get no attention
            bias = torch.where(keys, float("-inf"), bias if bias is not None else x.new_zeros((), dtype=torch.float32))
        if bias is not None:
            bias = bias.to(q.dtype)  # SDPA wants the mask in the query's dtype (bf16 under autocast)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=self.dropout if self.training else 0.0)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, d))


def _activation(name: str):
    acts = {
        "gelu": lambda x: F.gelu(x.float()).type_as(x),  # the reference computes GELU in float32
        "gelu_accurate": lambda x: F.gelu(x, approximate="tanh"),
        "gelu_fast": lambda x: F.gelu(x, approximate="tanh"),
        "relu": F.relu, "tanh": torch.tanh, "linear": lambda x: x, "glu": lambda x: x,
    }
    if name not in acts:
        raise ValueError(f"BEATs activation_fn {name!r} is not one of {sorted(acts)}")
    return acts[name]


class GLULinear(nn.Module):
    """``activation_fn='glu'``: Linear to 2 x out, first half times swish(second half)."""

    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.d_out, self.linear = d_out, nn.Linear(d_in, 2 * d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.linear(x)
        return x[..., :self.d_out] * F.silu(x[..., self.d_out:])


class EncoderLayer(nn.Module):
    """Attention + feed-forward; pre-LN if ``layer_norm_first``, else post-LN with deep-norm residual scaling."""

    def __init__(self, cfg, rel_bias: RelativePositionBias | None):
        super().__init__()
        d, ffn = cfg.encoder_embed_dim, cfg.encoder_ffn_embed_dim
        self.cfg = cfg
        self.self_attn = Attention(cfg, rel_bias)
        self.self_attn_layer_norm = nn.LayerNorm(d)
        self.fc1 = GLULinear(d, ffn) if cfg.activation_fn == "glu" else nn.Linear(d, ffn)
        self.fc2 = nn.Linear(ffn, d)
        self.final_layer_norm = nn.LayerNorm(d)
        self.act = _activation(cfg.activation_fn)
        # DeepNet: residual x alpha = (2N)^(1/4) before each post-LN (N = encoder layers).
        self.alpha = math.pow(2 * cfg.encoder_layers, 0.25) if cfg.deep_norm else 1.0

    def _ffn(self, x: torch.Tensor) -> torch.Tensor:
        x = F.dropout(self.act(self.fc1(x)), self.cfg.activation_dropout, self.training)
        return F.dropout(self.fc2(x), self.cfg.dropout, self.training)

    def forward(self, x: torch.Tensor, pos_bias: torch.Tensor | None = None,
                padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        p = self.cfg.dropout
        if self.cfg.layer_norm_first:
            x = x + F.dropout(self.self_attn(self.self_attn_layer_norm(x), pos_bias, padding_mask), p, self.training)
            return x + self._ffn(self.final_layer_norm(x))
        x = self.self_attn_layer_norm(x * self.alpha + F.dropout(self.self_attn(x, pos_bias, padding_mask), p,
                                                                 self.training))
        return self.final_layer_norm(x * self.alpha + self._ffn(x))
