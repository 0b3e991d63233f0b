"""Selective Mahalanobis distance, the official baseline's second AE score (docs/methods.md, autoencoder).

score(x) = min over domains d ∈ {source, target} of (x − μ_d)ᵀ Σ_d⁻¹ (x − μ_d), where x is a clip's
mean reconstruction residual per mel bin (``Embeddings.residual`` of the AE; other frontends give
their embeddings). The baseline takes Σ from per-frame residual blocks centred per batch and
μ = 0; here the backend sees one vector per clip, so μ_d and Σ_d are the mean and the Ledoit-Wolf
shrunk covariance of the training clips' vectors (shrinkage keeps Σ invertible with 10 target clips
in 128 dimensions). The target domain falls back to the source statistics when it has fewer than
two clips, as the baseline does when it has none.
"""

from __future__ import annotations

import numpy as np

from asd.backends import register
from asd.backends.base import Backend, BackendError


def _stats(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.covariance import LedoitWolf

    lw = LedoitWolf().fit(X)
    return lw.location_, np.linalg.pinv(lw.covariance_)


@register("mahalanobis")
class Mahalanobis(Backend):
    """Fitted: ``locations_`` ``(n_domains, d)`` and ``precisions_`` ``(n_domains, d, d)``."""

    input = ("residual", "embedding")  # the AE's residuals where the frontend has them

    def _fit(self, X, domains):
        src, tgt = X[domains == "source"], X[domains == "target"]
        if len(src) < 2 and len(tgt) < 2:
            raise BackendError("mahalanobis backend needs at least 2 training clips in one domain")
        stats = [_stats(S) for S in (src, tgt) if len(S) >= 2]
        self.locations_ = np.stack([mu for mu, _ in stats])
        self.precisions_ = np.stack([prec for _, prec in stats])

    def _score(self, X):
        X = np.asarray(X, dtype=np.float64)
        d = [np.einsum("nd,de,ne->n", X - mu, prec, X - mu) for mu, prec in zip(self.locations_, self.precisions_)]
        return np.min(d, axis=0)
