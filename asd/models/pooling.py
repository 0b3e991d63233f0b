"""Pooling of encoder frames ``(B, T, D)`` over time into one vector per clip."""

from __future__ import annotations

import torch
from torch import nn


class AttentiveStatsPool(nn.Module):
    """Attentive statistics pooling: per-channel attention over time, weighted mean and std -> ``(B, 2 D)``.

    Attention logits ``W2 tanh(W1 x_t)`` (hidden ``D // hidden_ratio``) are softmaxed over time per
    channel (ECAPA-TDNN's channel-dependent variant of Okabe et al. 2018). Statistics are computed
    in float32 even under autocast; the std is floored at 1e-4 (so its gradient stays finite).
    """

    def __init__(self, dim: int, hidden_ratio: int = 16):
        super().__init__()
        hidden = max(1, dim // hidden_ratio)
        self.attention = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, dim))
        self.dim = 2 * dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.attention(x)
        with torch.autocast(x.device.type, enabled=False):
            x, w = x.float(), torch.softmax(logits.float(), dim=1)
            mean = (w * x).sum(1)
            var = (w * x.square()).sum(1) - mean.square()
            return torch.cat([mean, var.clamp(min=1e-8).sqrt()], dim=1)


class MeanPool(nn.Module):
    """Time average ``(B, T, D)`` -> ``(B, D)`` in float32."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.float().mean(1)
