"""LoRA (Hu et al. 2021) on chosen ``nn.Linear`` layers: a frozen base plus a trained low-rank update.

Ours rather than ``peft``: peft 0.21 requires transformers and accelerate as hard dependencies and
``import peft`` takes 3.6-5 s here (torch alone 1.5 s), for what is one small module; its wrapped
names (``base_layer``, ``lora_A.default``) would also differ from ours. The numerics follow
peft's defaults as the ASDKit recipes use them: ``A`` Kaiming-uniform, ``B`` zero (so an
untrained adapter changes nothing), scale ``alpha / rank``, dropout on the adapter's input only
(in ``forward``; code that reads ``.weight`` directly gets the adapted weight without dropout).
"""

from __future__ import annotations

import math

import torch
from torch import nn


class LoRALinear(nn.Module):
    """``base(x) + dropout(x) @ A^T @ B^T * (alpha / rank)``; ``base`` frozen, ``A`` ``(rank, in)``, ``B`` ``(out, rank)``."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        if rank <= 0:
            raise ValueError(f"LoRA rank must be positive, got {rank}")
        self.base, self.in_features, self.out_features = base, base.in_features, base.out_features
        base.requires_grad_(False)
        self.rank, self.scale = rank, alpha / rank
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, device=base.weight.device))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, device=base.weight.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout)

    @property
    def weight(self) -> torch.Tensor:
        """The adapted weight ``W + B A alpha / r``, for code that reads a projection's weight directly
        (transformers' WavLM passes ``q_proj.weight`` to ``F.multi_head_attention_forward``)."""
        return self.base.weight + (self.lora_B @ self.lora_A) * self.scale

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dropout.p == 0 or not self.training:
            # One matmul with the adapted weight: for 768 x 768, rank 64 and ~4,000 tokens a clip this is
            # cheaper than the two low-rank matmuls, and equal to them up to rounding.
            return nn.functional.linear(x, self.weight, self.bias)
        return self.base(x) + (self.dropout(x) @ self.lora_A.t() @ self.lora_B.t()) * self.scale

    def merged(self) -> nn.Linear:
        """The base layer with the update folded into its weight (a new nn.Linear, for inference)."""
        out = nn.Linear(self.base.in_features, self.base.out_features, self.base.bias is not None,
                        device=self.base.weight.device, dtype=self.base.weight.dtype)
        with torch.no_grad():
            delta = (self.lora_B.float() @ self.lora_A.float()) * self.scale
            out.weight.copy_(self.base.weight.float() + delta)
            if self.base.bias is not None:
                out.bias.copy_(self.base.bias)
        return out.requires_grad_(False)


def apply_lora(model: nn.Module, targets=("q_proj", "v_proj"), rank: int = 64, alpha: float = 8.0,
               dropout: float = 0.0) -> int:
    """Wrap every ``nn.Linear`` whose attribute name is in ``targets`` in a LoRALinear; returns how many.

    Only the wrapped layers are frozen; freezing the rest of the model is the caller's choice.

    Raises ValueError when no layer matches (a wrong target name would otherwise train nothing).
    """
    found = [(parent, name) for parent in model.modules() for name, child in parent.named_children()
             if name in targets and isinstance(child, nn.Linear)]
    if not found:
        raise ValueError(f"no nn.Linear named {list(targets)} in {type(model).__name__}; nothing to adapt")
    for parent, name in found:
        setattr(parent, name, LoRALinear(getattr(parent, name), rank, alpha, dropout))
    return len(found)


def merge_lora(model: nn.Module) -> int:
    """Replace every LoRALinear by its merged nn.Linear (parameter names become the base's again)."""
    found = [(parent, name, child) for parent in model.modules() for name, child in parent.named_children()
             if isinstance(child, LoRALinear)]
    for parent, name, child in found:
        setattr(parent, name, child.merged())
    return len(found)
