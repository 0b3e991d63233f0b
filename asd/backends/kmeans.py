"""kNN against k-means-condensed source embeddings plus every target embedding (docs/methods.md, backends)."""

from __future__ import annotations

import numpy as np

from asd.backends import register
from asd.backends.base import Backend, BackendError
from asd.backends.knn import l2_normalize


@register("knn_kmeans")
class KNNKMeans(Backend):
    """score(x) = min over centres of ½‖x − c‖² = 1 − cos(x, c) (x and centres normalised).

    Centres: ``clusters`` k-means centres of the normalised source embeddings (random_state 0,
    re-normalised), plus every target training embedding as its own centre, so the few target
    clips are not swallowed by source clusters. With fewer source clips than ``clusters``, every
    source clip is a centre. Training scores leave a target clip's own centre out; a source clip is
    scored against the centres as they are (a centre is a mean of several clips).
    """

    def __init__(self, clusters: int = 16, seed: int = 0, **kw):
        super().__init__(**kw)
        self.clusters, self.seed = clusters, seed

    def _fit(self, X, domains):
        from sklearn.cluster import KMeans

        src, tgt = l2_normalize(X[domains == "source"]), l2_normalize(X[domains == "target"])
        if len(src) > self.clusters:
            km = KMeans(n_clusters=self.clusters, random_state=self.seed, n_init=10).fit(src)
            src = l2_normalize(km.cluster_centers_)
        if len(src) + len(tgt) == 0:
            raise BackendError("knn_kmeans backend: no training embeddings")
        self.n_source_centres_ = len(src)
        self.centres_ = np.vstack([src, tgt])

    def _dist(self, X):
        return 1.0 - l2_normalize(np.asarray(X, dtype=np.float64)) @ self.centres_.T

    def _score(self, X):
        return self._dist(X).min(1)

    def _train_scores(self, X, domains):
        D = self._dist(X)
        own = np.where(domains == "target")[0]
        D[own, self.n_source_centres_ + np.arange(len(own))] = np.inf
        D[~np.isfinite(D).any(1)] = 0.0
        return D.min(1)
