"""Sub-cluster AdaCos: K centres per class; a class's probability is the sum over its sub-clusters."""

from __future__ import annotations

import torch
from torch import nn

from asd.losses import adacos_scale, centres, cosines, dynamic_scale, register, soft_cross_entropy


@register("scadacos")
class SubClusterAdaCos(nn.Module):
    """p_{c,k} = softmax over all C·K scaled cosines; P_c = Σ_k p_{c,k}; loss = −Σ_c y_c·log P_c.

    Centre ``c·K + k`` is sub-cluster ``k`` of class ``c``. :meth:`logits` returns the class logits
    ``logsumexp_k(s·cos_{c,k})``, whose softmax is exactly ``P_c``. Scale s = √2·ln(C·K−1).

    Args:
        subclusters: K (16 in every recipe).
        trainable: learn the centres ("trainable" recipes) or keep the random init ("fixed").
        dynamic: adaptive scale, with the target spread over each class's K sub-clusters.
    """

    def __init__(self, embed_dim: int, n_classes: int, subclusters: int = 16, scale: float = 0.0,
                 trainable: bool = True, dynamic: bool = False):
        super().__init__()
        self.n_classes, self.k, self.dynamic = n_classes, max(1, subclusters), dynamic
        self.W = centres(n_classes * self.k, embed_dim, trainable)
        self.register_buffer("s", torch.tensor(float(scale or adacos_scale(n_classes * self.k))))

    def _class_logits(self, cos: torch.Tensor) -> torch.Tensor:
        return torch.logsumexp((self.s * cos).view(len(cos), self.n_classes, self.k), dim=2)

    def logits(self, emb: torch.Tensor) -> torch.Tensor:
        return self._class_logits(cosines(emb, self.W))

    def forward(self, emb: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        cos = cosines(emb, self.W)
        if self.dynamic and self.training:
            sub_target = target.repeat_interleave(self.k, dim=1) / self.k  # same c·K + k layout as W
            self.s.fill_(dynamic_scale(cos, sub_target, float(self.s)))
        return soft_cross_entropy(self._class_logits(cos), target)
