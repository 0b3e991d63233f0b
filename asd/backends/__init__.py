"""Backends: turn embeddings into anomaly scores, scikit-learn/PyOD style.

``__init__`` stores parameters; ``fit(X, domains)`` learns from normal training embeddings of one
machine type and returns ``self``; ``score(X)`` returns higher = more anomalous; fitted attributes end
in ``_``; ``threshold_`` is fitted on training scores only (leave-one-out where a backend would
otherwise score a clip against itself), so decisions never need anomalous data.
"""

from __future__ import annotations

import numpy as np

from asd.registry import Registry

REGISTRY = Registry("backend", ("asd.backends.knn", "asd.backends.kmeans", "asd.backends.mahalanobis"))
register = REGISTRY.register
available = REGISTRY.available
backend_class = REGISTRY.get


def get_backend(name: str, **params):
    return backend_class(name)(**params)


def fit_threshold(train_scores: np.ndarray, method: str = "gamma", quantile: float = 0.9) -> float:
    """Decision threshold from normal training scores only.

    ``gamma``: the ``quantile`` of a Gamma distribution fitted to the scores (the official baseline's
    rule, 0.9 by default); ``quantile``: the plain empirical quantile.

    The baseline calls scipy's 3-parameter maximum-likelihood fit. On some score sets that fit stops
    in a poor optimum with ``loc`` at the smallest score (seen on kNN distances: shape 0.26 and a 0.9
    quantile 16 times the largest training score, so nothing is ever flagged). A fit with ``loc``
    fixed at 0 is a second candidate, and the one with the higher likelihood is used.
    """
    s = np.asarray(train_scores, dtype=float)
    s = s[np.isfinite(s)]
    if len(s) == 0:
        raise ValueError("no finite training scores to fit a threshold on")
    if method == "quantile" or len(s) < 3 or np.ptp(s) == 0:
        return float(np.quantile(s, quantile))
    if method != "gamma":
        raise ValueError(f"unknown threshold method {method!r} (gamma | quantile)")
    import warnings

    import scipy.stats

    g = scipy.stats.gamma
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the optimiser probes invalid shapes
        fits = [g.fit(s)] + ([g.fit(s, floc=0)] if s.min() > 0 else [])
        loglik = [np.nan_to_num(g.logpdf(s, *p).sum(), nan=-np.inf) for p in fits]
    shape, loc, scale = fits[int(np.argmax(loglik))]
    return float(g.ppf(quantile, shape, loc=loc, scale=scale))


class Backend:
    """Base: subclasses implement ``_fit(X, domains)``, ``score(X)`` and ``_train_scores(X, domains)``."""

    def __init__(self, threshold: str = "gamma", threshold_quantile: float = 0.9):
        self.threshold = threshold
        self.threshold_quantile = threshold_quantile

    def fit(self, X: np.ndarray, domains: np.ndarray):
        X = np.asarray(X, dtype=np.float64)
        domains = np.asarray(domains)
        self._fit(X, domains)
        self.train_scores_ = self._train_scores(X, domains)
        self.threshold_ = fit_threshold(self.train_scores_, self.threshold, self.threshold_quantile)
        return self

    def decide(self, X: np.ndarray) -> np.ndarray:
        """1 = anomalous (score above ``threshold_``)."""
        return (self.score(X) > self.threshold_).astype(int)

    def _train_scores(self, X: np.ndarray, domains: np.ndarray) -> np.ndarray:
        return self.score(X)


@register("recon")
class Recon(Backend):
    """The frontend's own score (autoencoder reconstruction error), passed through: ``X`` is ``(n, 1)``."""

    def _fit(self, X, domains):
        self.n_train_ = len(X)

    def score(self, X):
        return np.asarray(X, dtype=np.float64)[:, 0]
