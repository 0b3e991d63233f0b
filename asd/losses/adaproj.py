"""AdaProj: the class score is the cosine between x and its projection onto the class's subspace."""

from __future__ import annotations

import torch
from torch import nn

from asd.losses import adacos_scale, centres, dynamic_scale, register, soft_cross_entropy


@register("adaproj")
class AdaProj(nn.Module):
    """logit_c = s·cos(x, P_c x) with P_c x = Σ_j (x·v_{c,j}) v_{c,j} over J unit vectors per class.

    As in the reference, the J vectors are not orthonormalised (the sum is a projection only when
    they are orthonormal); cos(x, P_c x) = (x·P_c x) / ‖P_c x‖ = Σ_j (x·v_j)² / ‖Σ_j (x·v_j) v_j‖.
    Scale s = √2·ln(C−1), adaptive by default as in the reference.
    """

    def __init__(self, embed_dim: int, n_classes: int, subclusters: int = 32, scale: float = 0.0,
                 trainable: bool = True, dynamic: bool = True):
        super().__init__()
        self.n_classes, self.j, self.dynamic = n_classes, max(1, subclusters), dynamic and not scale
        self.W = centres(n_classes * self.j, embed_dim, trainable)
        self.register_buffer("s", torch.tensor(float(scale or adacos_scale(n_classes))))

    def cosines(self, emb: torch.Tensor) -> torch.Tensor:
        x = nn.functional.normalize(emb.float(), dim=1)
        v = nn.functional.normalize(self.W.float(), dim=1).view(self.n_classes, self.j, -1)
        coef = torch.einsum("bd,cjd->bcj", x, v)  # (B, C, J)
        proj = torch.einsum("bcj,cjd->bcd", coef, v)
        return (coef**2).sum(-1) / proj.norm(dim=-1).clamp_min(1e-12)

    def logits(self, emb: torch.Tensor) -> torch.Tensor:
        return self.s * self.cosines(emb)

    def forward(self, emb: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        cos = self.cosines(emb)
        if self.dynamic and self.training:
            self.s.fill_(dynamic_scale(cos, target, float(self.s)))
        return soft_cross_entropy(self.s * cos, target)
