"""The backend contract, after scikit-learn and PyOD.

``__init__`` only stores parameters; ``fit(X, domains)`` learns from the normal training embeddings
of one machine type and returns ``self``; ``decision_function(X)`` is the anomaly score, higher = more
anomalous (subclasses implement ``_score(X)``, which sees the inputs standardised when the backend
was built with ``standardize``); fitted attributes end in ``_``: ``decision_scores_`` (the training clips' own scores,
leave-one-out where a backend would otherwise score a clip against itself) and ``threshold_``
(fitted on ``decision_scores_`` only, so decisions never need anomalous data); ``predict(X)`` is 0/1.

A fitted backend is fully described by its parameters and its fitted arrays
(:meth:`Backend.fitted_state`), so a detector is saved as arrays and rebuilt without pickles.
"""

from __future__ import annotations

import numpy as np

from asd.errors import AsdError
from asd.registry import init_params


class BackendError(AsdError, ValueError):
    """A backend that cannot be fitted or used on the data given (e.g. too few training clips)."""


def fit_threshold(train_scores: np.ndarray, method: str = "gamma", quantile: float = 0.9) -> float:
    """Decision threshold from normal training scores only.

    ``gamma``: the ``quantile`` of a Gamma distribution fitted to the scores (the official baseline's
    rule, 0.9 by default); ``quantile``: the plain empirical quantile.

    The baseline calls scipy's 3-parameter maximum-likelihood fit. With a shape below 1 that fit is
    no fit at all: the likelihood grows without bound as ``loc`` approaches the smallest score, so
    the optimiser ends on a spike at the minimum, whose quantiles say nothing about the scores (seen
    on kNN distances: a 0.9 quantile 16 times the largest score, so nothing is flagged; and one below
    the median, so most normal clips are). Such a fit is dropped; a fit with ``loc`` fixed at 0 is
    the other candidate, and of those left the one with the higher likelihood is used (with none
    left, or where scipy's fit fails outright, as seen on a handful of z-normalised scores, the
    empirical quantile).
    """
    s = np.asarray(train_scores, dtype=float)
    s = s[np.isfinite(s)]
    if len(s) == 0:
        raise BackendError("no finite training scores to fit a threshold on")
    if method == "quantile" or len(s) < 3 or np.ptp(s) == 0:
        return float(np.quantile(s, quantile))
    if method != "gamma":
        raise BackendError(f"unknown backend.threshold {method!r} (gamma | quantile)")
    import warnings

    import scipy.stats

    g = scipy.stats.gamma
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the optimiser probes invalid shapes
        try:
            fits = [p for p in [g.fit(s)] if p[0] >= 1] + ([g.fit(s, floc=0)] if s.min() > 0 else [])
        except (ValueError, RuntimeError):  # e.g. a few z-normalised scores: the optimiser reaches NaN
            return float(np.quantile(s, quantile))
        loglik = [np.nan_to_num(g.logpdf(s, *p).sum(), nan=-np.inf) for p in fits]
    if not fits:
        return float(np.quantile(s, quantile))
    shape, loc, scale = fits[int(np.argmax(loglik))]
    return float(g.ppf(quantile, shape, loc=loc, scale=scale))


class Backend:
    """Base class: subclasses implement ``_fit(X, domains)`` and ``_score(X)``, and
    ``_train_scores(X, domains)`` where scoring the training clips needs leave-one-out.

    ``input`` names what the backend reads from a frontend's :class:`~asd.training.Embeddings`, in
    order of preference: ``embedding``, ``recon`` (the autoencoder's own score) or ``residual``.

    Args:
        standardize: z-score every input dimension with the mean and standard deviation of this
            machine's training clips (fitted arrays ``center_``, ``scale_``) before the backend sees
            it, so dimensions of large range (e.g. log-mel levels) do not dominate a distance.
    """

    input: tuple[str, ...] = ("embedding",)

    def __init__(self, threshold: str = "gamma", threshold_quantile: float = 0.9, standardize: bool = False):
        self.threshold = threshold
        self.threshold_quantile = threshold_quantile
        self.standardize = standardize

    def fit(self, X: np.ndarray, domains: np.ndarray):
        X = np.asarray(X, dtype=np.float64)
        domains = np.asarray(domains)
        if self.standardize:
            self.center_ = X.mean(0)
            std = X.std(0)
            self.scale_ = np.maximum(std, 1e-8 * max(float(std.max()), 1e-12))  # constant dims stay finite
        X = self._prepare(X)
        self._fit(X, domains)
        self.decision_scores_ = self._train_scores(X, domains)
        self.threshold_ = fit_threshold(self.decision_scores_, self.threshold, self.threshold_quantile)
        return self

    def _prepare(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        return (X - self.center_) / self.scale_ if self.standardize else X

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Anomaly scores ``(n,)`` of inputs ``(n, d)``, higher = more anomalous."""
        return self._score(self._prepare(X))

    def _score(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def predict(self, X: np.ndarray) -> np.ndarray:
        """1 = anomalous (score above ``threshold_``)."""
        return (self.decision_function(X) > self.threshold_).astype(int)

    def _train_scores(self, X: np.ndarray, domains: np.ndarray) -> np.ndarray:
        return self._score(X)

    def get_params(self) -> dict:
        """The constructor arguments (scikit-learn's ``get_params``), read back from the attributes."""
        return {n: getattr(self, n) for n in init_params(type(self))}

    def fitted_state(self) -> dict[str, np.ndarray]:
        """Every fitted attribute (name ending in ``_``) as an array."""
        return {k: np.asarray(v) for k, v in vars(self).items() if k.endswith("_") and not k.startswith("_")}

    @classmethod
    def from_state(cls, params: dict, state: dict[str, np.ndarray]):
        """A fitted backend rebuilt from :meth:`get_params` and :meth:`fitted_state`."""
        obj = cls(**params)
        for k, v in state.items():
            setattr(obj, k, v.item() if v.ndim == 0 else v)
        return obj
