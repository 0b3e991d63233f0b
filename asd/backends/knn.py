"""k-nearest-neighbour backends with separate source and target neighbour sets (SPEC.md §3.6)."""

from __future__ import annotations

import numpy as np

from asd.backends import Backend, register


def l2_normalize(X: np.ndarray) -> np.ndarray:
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def cosine_distance(X: np.ndarray, R: np.ndarray) -> np.ndarray:
    """``(len(X), len(R))`` distances ``||x - r|| / 2`` between L2-normalised rows (monotone in cosine)."""
    sim = np.clip(l2_normalize(X) @ l2_normalize(R).T, -1.0, 1.0)
    return np.sqrt(np.maximum(2.0 - 2.0 * sim, 0.0)) / 2.0


def knn_mean(D: np.ndarray, k: int) -> np.ndarray:
    """Mean of the ``k`` smallest values per row."""
    k = min(k, D.shape[1])
    return np.partition(D, k - 1, axis=1)[:, :k].mean(1)


@register("knn")
class KNN(Backend):
    """score(x) = min(mean distance to the k nearest source, mean distance to the k nearest target).

    A domain with no training clips is skipped, so a machine with source clips only still scores.
    """

    def __init__(self, k: int = 1, **kw):
        super().__init__(**kw)
        self.k = k

    def _fit(self, X, domains):
        self.source_ = X[domains == "source"]
        self.target_ = X[domains == "target"]
        if len(self.source_) + len(self.target_) == 0:
            raise ValueError("kNN backend: no training embeddings")

    def _sets(self):
        return [s for s in (self.source_, self.target_) if len(s)]

    def score(self, X):
        X = np.asarray(X, dtype=np.float64)
        return np.min([knn_mean(cosine_distance(X, S), self.k) for S in self._sets()], axis=0)

    def _train_scores(self, X, domains):
        # Leave-one-out: a training clip is never its own neighbour.
        out = np.full(len(X), np.inf)
        for S, d in ((self.source_, "source"), (self.target_, "target")):
            if not len(S):
                continue
            D = cosine_distance(X, S)
            own = np.where(domains == d)[0]
            D[own, np.arange(len(own))] = np.inf
            if len(S) > 1 or not len(own):
                out = np.minimum(out, knn_mean(D, self.k))
        return out
