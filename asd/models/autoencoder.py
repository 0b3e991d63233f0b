"""The official DCASE baseline autoencoder (docs/methods.md, autoencoder)."""

from __future__ import annotations

import torch
from torch import nn

from asd.models import register


def _block(d_in: int, d_out: int) -> list[nn.Module]:
    # BatchNorm settings of the baseline (Keras-style momentum 0.99 = torch momentum 0.01).
    return [nn.Linear(d_in, d_out), nn.BatchNorm1d(d_out, momentum=0.01, eps=1e-3), nn.ReLU()]


@register("ae")
class AutoEncoder(nn.Module):
    """MLP autoencoder: ``input_dim -> hidden x layers -> bottleneck -> hidden x layers -> input_dim``.

    Every hidden layer (bottleneck included) is Linear + BatchNorm + ReLU; the output layer is linear.
    Input: ``(batch, input_dim)`` frame vectors (5 stacked log-mel frames = 640 dims by default).
    """

    family = "ae"  # one model per machine type (asd.training.ae)

    def __init__(self, input_dim: int = 640, hidden: int = 128, bottleneck: int = 8, layers: int = 4):
        super().__init__()
        enc: list[nn.Module] = []
        d = input_dim
        for _ in range(layers):
            enc += _block(d, hidden)
            d = hidden
        enc += _block(hidden, bottleneck)
        dec: list[nn.Module] = []
        d = bottleneck
        for _ in range(layers):
            dec += _block(d, hidden)
            d = hidden
        dec.append(nn.Linear(hidden, input_dim))
        self.encoder, self.decoder = nn.Sequential(*enc), nn.Sequential(*dec)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``(reconstruction, bottleneck)``."""
        z = self.encoder(x)
        return self.decoder(z), z
