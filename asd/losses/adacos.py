"""AdaCos: cross-entropy over scaled cosines to class centres, with a fixed or adaptive scale."""

from __future__ import annotations

import torch
from torch import nn

from asd.losses import adacos_scale, centres, cosines, dynamic_scale, register, soft_cross_entropy


@register("adacos")
class AdaCos(nn.Module):
    """logits = s·cos(x, w_c); s = √2·ln(C−1) unless ``scale`` is given.

    Args:
        trainable: learn the centres; ``False`` keeps them at their random init ("fixed" recipes).
        dynamic: update ``s`` from every training batch (AdaCos's rule); off in every recipe.
    """

    def __init__(self, embed_dim: int, n_classes: int, scale: float = 0.0, trainable: bool = True,
                 dynamic: bool = False):
        super().__init__()
        self.n_classes, self.dynamic = n_classes, dynamic
        self.W = centres(n_classes, embed_dim, trainable)
        self.register_buffer("s", torch.tensor(float(scale or adacos_scale(n_classes))))

    def logits(self, emb: torch.Tensor) -> torch.Tensor:
        return self.s * cosines(emb, self.W)

    def forward(self, emb: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        cos = cosines(emb, self.W)
        if self.dynamic and self.training:
            self.s.fill_(dynamic_scale(cos, target, float(self.s)))
        return soft_cross_entropy(self.s * cos, target)
