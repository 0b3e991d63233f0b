"""Angular-margin classification losses over L2-normalised embeddings (docs/methods.md, losses).

Every loss is an ``nn.Module(embed_dim, n_classes, ...)`` holding its class centres, with
``logits(emb) -> (B, n_classes)`` (softmax of these = class probabilities) and
``forward(emb, target) -> scalar``, where ``target`` is ``(B, n_classes)`` one-hot or soft
(mixup) class weights summing to 1. ``build_loss(name, embed_dim, n_classes, **kw)`` builds one by
name, passing only the keyword arguments its constructor takes. Every module of this package is
discovered on the first look-up, so a new loss is one file with its ``@register`` line.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from asd.registry import Registry

REGISTRY = Registry("loss", __name__)
register = REGISTRY.register
available = REGISTRY.available
build_loss = REGISTRY.build  # build_loss(name, embed_dim, n_classes, **loss_section)


def adacos_scale(n_outputs: int) -> float:
    """AdaCos's fixed scale √2·ln(n − 1) for ``n`` outputs (at least 2 so the log is defined)."""
    return math.sqrt(2.0) * math.log(max(n_outputs, 3) - 1)


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of −Σ_c target_c · log softmax(logits)_c."""
    return -(target * torch.log_softmax(logits.float(), dim=1)).sum(1).mean()


def centres(n: int, dim: int, trainable: bool) -> nn.Parameter:
    """``(n, dim)`` Xavier-uniform centres; frozen (``requires_grad=False``) unless ``trainable``."""
    w = torch.empty(n, dim)
    nn.init.xavier_uniform_(w)
    return nn.Parameter(w, requires_grad=trainable)


def cosines(emb: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``(B, n)`` cosine similarities between embeddings and centres, in float32."""
    return nn.functional.normalize(emb.float(), dim=1) @ nn.functional.normalize(w.float(), dim=1).T


def dynamic_scale(cos: torch.Tensor, target: torch.Tensor, scale: float) -> float:
    """AdaCos's adaptive scale: ln(B_avg) / cos(min(π/4, median θ_target)).

    ``B_avg`` = batch mean of Σ over non-target outputs of exp(s·cos); the target angle of a soft
    target is the angle of its target-weighted cosine.
    """
    with torch.no_grad():
        non_target = (target == 0).float()
        b_avg = (torch.exp(scale * cos) * non_target).sum(1).mean()
        cos_t = (cos * target).sum(1) / target.sum(1).clamp_min(1e-12)
        theta = torch.acos(cos_t.clamp(-1 + 1e-7, 1 - 1e-7)).median()
        return float(torch.log(b_avg.clamp_min(1e-12)) / torch.cos(torch.clamp(theta, max=math.pi / 4)))
