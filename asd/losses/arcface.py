"""ArcFace: an additive angular margin on the target class only."""

from __future__ import annotations

import math

import torch
from torch import nn

from asd.losses import centres, cosines, register, soft_cross_entropy


@register("arcface")
class ArcFace(nn.Module):
    """Training logits s·cos(θ_c + m·y_c): the margin ``m`` is added to the target angle only.

    ASDKit adds the margin to every class angle (docs/methods.md, losses), which shifts all logits alike and
    so loses the point of a margin; here non-target classes keep s·cos θ. With soft (mixup) targets
    each class gets the margin in proportion to its target weight. θ + m is capped at π so the
    logit keeps decreasing with the angle. :meth:`logits` (inference) has no margin.
    """

    def __init__(self, embed_dim: int, n_classes: int, margin: float = 0.5, scale: float = 0.0,
                 trainable: bool = True):
        super().__init__()
        self.n_classes, self.m = n_classes, margin
        self.s = float(scale or 64.0)
        self.W = centres(n_classes, embed_dim, trainable)

    def logits(self, emb: torch.Tensor) -> torch.Tensor:
        return self.s * cosines(emb, self.W)

    def forward(self, emb: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        cos = cosines(emb, self.W).clamp(-1 + 1e-7, 1 - 1e-7)
        theta = torch.acos(cos)
        with_margin = torch.cos(torch.clamp(theta + self.m * target, max=math.pi))
        return soft_cross_entropy(self.s * with_margin, target)
