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


NORMS = ("none", "mean", "zscore")


@register("knn")
class KNN(Backend):
    """score(x) = min(mean distance to the k nearest source, mean distance to the k nearest target).

    A domain with no training clips is skipped, so a machine with source clips only still scores.

    Args:
        domain_norm: how each domain's distances are put on a common scale before the minimum,
            from the leave-one-out distances of that domain's training clips to their own set
            (``norm_``: one (mean, std) row per set): ``none``; ``mean``: divided by their mean;
            ``zscore``: minus their mean, divided by their standard deviation. A domain with fewer
            than two usable training clips takes the source domain's statistics.
    """

    def __init__(self, k: int = 1, domain_norm: str = "none", **kw):
        super().__init__(**kw)
        self.k, self.domain_norm = k, domain_norm

    def _fit(self, X, domains):
        if self.domain_norm not in NORMS:
            raise BackendError(f"backend.domain_norm={self.domain_norm!r}: choose one of {', '.join(NORMS)}")
        self.source_ = X[domains == "source"]
        self.target_ = X[domains == "target"]
        if len(self.source_) + len(self.target_) == 0:
            raise BackendError("kNN backend: no training embeddings")
        self._fit_more(X, domains)
        if self.domain_norm != "none":
            self.norm_ = _domain_stats(self._loo_distances(X, domains), self._set_domains(), domains)

    def _fit_more(self, X, domains):
        """Subclasses add to the neighbour sets here (before the normalisation is fitted)."""

    def _set_domains(self) -> list[str]:
        return [d for S, d in ((self.source_, "source"), (self.target_, "target")) if len(S)]

    def _sets(self):
        return [s for s in (self.source_, self.target_) if len(s)]

    def _combine(self, dists: list[np.ndarray]) -> np.ndarray:
        """Minimum over the sets' distances, each normalised as ``domain_norm`` says."""
        if self.domain_norm == "mean":
            dists = [d / m for d, (m, _) in zip(dists, self.norm_)]
        elif self.domain_norm == "zscore":
            dists = [(d - m) / s for d, (m, s) in zip(dists, self.norm_)]
        return np.min(dists, axis=0)

    def _score(self, X):
        X = np.asarray(X, dtype=np.float64)
        return self._combine([knn_mean(cosine_distance(X, S), self.k) for S in self._sets()])

    def _loo_distances(self, X, domains) -> list[np.ndarray]:
        """Per set, the training clips' distances with each clip left out of its own set (inf: nothing left)."""
        out = []
        for S, d in ((self.source_, "source"), (self.target_, "target")):
            if not len(S):
                continue
            D = cosine_distance(X, S)
            own = np.where(domains == d)[0]
            D[own, np.arange(len(own))] = np.inf
            out.append(knn_mean(D, self.k) if len(S) > 1 or not len(own) else np.full(len(X), np.inf))
        return out

    def _train_scores(self, X, domains):
        # Leave-one-out: a training clip is never its own neighbour.
        return self._combine(self._loo_distances(X, domains))


def _domain_stats(loo: list[np.ndarray], set_domains: list[str], domains: np.ndarray) -> np.ndarray:
    """(mean, std) of each set's leave-one-out distances over the training clips of its own domain."""
    stats = {}
    for dist, d in zip(loo, set_domains):
        v = dist[(domains == d) & np.isfinite(dist)]
        if len(v) >= 2:
            stats[d] = (float(v.mean()), max(float(v.std()), 1e-12))
    if not stats:
        raise BackendError("backend.domain_norm needs a domain with at least 2 training clips")
    fallback = stats.get("source", next(iter(stats.values())))
    return np.array([stats.get(d, fallback) for d in set_domains])


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

    def _fit_more(self, X, domains):
        real = l2_normalize(self.target_)
        n_new = int(self.smote_ratio * len(self.source_) - len(real))
        syn, self.parents_ = smote(real, n_new, self.smote_neighbors, self.seed)
        self.n_real_target_ = len(real)
        self.target_ = np.vstack([real, l2_normalize(syn)]) if len(syn) else real

    def _loo_distances(self, X, domains):
        out = []
        own_src, own_tgt = np.where(domains == "source")[0], np.where(domains == "target")[0]
        if len(self.source_):
            D = cosine_distance(X, self.source_)
            D[own_src, np.arange(len(own_src))] = np.inf
            out.append(knn_mean(D, self.k) if len(self.source_) > 1 or not len(own_src) else np.full(len(X), np.inf))
        if len(self.target_):
            D = cosine_distance(X, self.target_)
            syn_cols = self.n_real_target_ + np.arange(len(self.parents_))
            for j, row in enumerate(own_tgt):
                D[row, j] = np.inf
                D[row, syn_cols[(self.parents_ == j).any(1)]] = np.inf
            dist = np.full(len(X), np.inf)
            usable = np.isfinite(D).any(1)
            dist[usable] = knn_mean(D[usable], self.k)
            out.append(dist)
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
