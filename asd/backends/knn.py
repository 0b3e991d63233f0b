"""k-nearest-neighbour backends with separate source and target neighbour sets (docs/methods.md, backends)."""

from __future__ import annotations

import numpy as np

from asd.backends import register
from asd.backends.base import Backend, BackendError


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
            raise BackendError("kNN backend: no training embeddings")

    def _sets(self):
        return [s for s in (self.source_, self.target_) if len(s)]

    def _score(self, X):
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


def smote(X: np.ndarray, n_new: int, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """SMOTE: ``n_new`` points on segments between a random row of ``X`` and one of its ``k`` nearest rows.

    Returns ``(synthetic (n_new, d), parents (n_new, 2))``, parents being the two row indices each
    point was made from. Neighbours are Euclidean (on the normalised embeddings it is given).
    """
    k = min(k, len(X) - 1)
    if n_new <= 0 or k < 1:
        return np.zeros((0, X.shape[1])), np.zeros((0, 2), dtype=int)
    rng = np.random.default_rng(seed)
    D = np.linalg.norm(X[:, None, :] - X[None, :, :], axis=-1)
    np.fill_diagonal(D, np.inf)
    nn_idx = np.argsort(D, axis=1)[:, :k]
    base = rng.integers(0, len(X), n_new)
    other = nn_idx[base, rng.integers(0, k, n_new)]
    gap = rng.random((n_new, 1))
    return X[base] + gap * (X[other] - X[base]), np.c_[base, other]


@register("knn_smote")
class KNNSmote(KNN):
    """kNN whose target set is topped up with SMOTE points until #target = ``smote_ratio`` · #source.

    Synthetic points are interpolated between normalised target embeddings and re-normalised
    (seeded, so a fit is deterministic); source neighbours are real clips only. A machine with
    fewer than two target clips gets no synthetic points. Training scores leave out a clip's own
    embedding and every synthetic point made from it.
    """

    def __init__(self, k: int = 1, smote_ratio: float = 0.2, smote_neighbors: int = 2, seed: int = 0, **kw):
        super().__init__(k=k, **kw)
        self.smote_ratio, self.smote_neighbors, self.seed = smote_ratio, smote_neighbors, seed

    def _fit(self, X, domains):
        super()._fit(X, domains)
        real = l2_normalize(self.target_)
        n_new = int(self.smote_ratio * len(self.source_) - len(real))
        syn, self.parents_ = smote(real, n_new, self.smote_neighbors, self.seed)
        self.n_real_target_ = len(real)
        self.target_ = np.vstack([real, l2_normalize(syn)]) if len(syn) else real

    def _train_scores(self, X, domains):
        out = np.full(len(X), np.inf)
        own_src, own_tgt = np.where(domains == "source")[0], np.where(domains == "target")[0]
        if len(self.source_):
            D = cosine_distance(X, self.source_)
            D[own_src, np.arange(len(own_src))] = np.inf
            if len(self.source_) > 1 or not len(own_src):
                out = np.minimum(out, knn_mean(D, self.k))
        if len(self.target_):
            D = cosine_distance(X, self.target_)
            syn_cols = self.n_real_target_ + np.arange(len(self.parents_))
            for j, row in enumerate(own_tgt):
                D[row, j] = np.inf
                D[row, syn_cols[(self.parents_ == j).any(1)]] = np.inf
            usable = np.isfinite(D).any(1)
            out[usable] = np.minimum(out[usable], knn_mean(D[usable], self.k))
        return out


@register("knn_rescale")
class KNNRescale(Backend):
    """Local density normalisation: score = mean over the k smallest of ‖x − r_j‖ / c_j.

    References r_j are all normalised training embeddings (source and target); c_j is the mean
    Euclidean distance from r_j to its ``k_ref`` nearest other references, so a distance counts
    relative to how spread the training data are around that reference.
    """

    def __init__(self, k: int = 1, k_ref: int = 4, **kw):
        super().__init__(**kw)
        self.k, self.k_ref = k, k_ref

    def _fit(self, X, domains):
        self.ref_ = l2_normalize(X)
        if len(self.ref_) < 2:
            raise BackendError("knn_rescale backend needs at least 2 training embeddings")
        D = np.linalg.norm(self.ref_[:, None, :] - self.ref_[None, :, :], axis=-1)
        np.fill_diagonal(D, np.inf)
        self.c_ = np.maximum(knn_mean(D, min(self.k_ref, len(D) - 1)), 1e-12)

    def _ratios(self, X):
        D = np.linalg.norm(l2_normalize(np.asarray(X, dtype=np.float64))[:, None, :] - self.ref_[None], axis=-1)
        return D / self.c_[None, :]

    def _score(self, X):
        return knn_mean(self._ratios(X), self.k)

    def _train_scores(self, X, domains):
        R = self._ratios(X)
        np.fill_diagonal(R, np.inf)  # X is the reference set itself: leave each clip out
        return knn_mean(R, self.k)
