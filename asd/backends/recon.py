"""The autoencoder's own score, passed through as a backend."""

from __future__ import annotations

import numpy as np

from asd.backends import register
from asd.backends.base import Backend


@register("recon")
class Recon(Backend):
    """The frontend's own anomaly score (the autoencoder's reconstruction error): ``X`` is ``(n, 1)``."""

    input = ("recon",)

    def _fit(self, X, domains):
        self.n_train_ = len(X)

    def _score(self, X):
        return np.asarray(X, dtype=np.float64)[:, 0]
