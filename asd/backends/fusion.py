"""Label-free fusion of several backends (docs/methods.md, backends).

Each member backend is fitted on the same training clips; its scores are put on a common scale by
the mean and standard deviation of its own leave-one-out training scores (``decision_scores_``,
normal clips only, so no anomaly is needed), and the z-scores are combined by their mean, minimum
or maximum. The fused training scores are the members' training scores combined the same way.
"""

from __future__ import annotations

import numpy as np

from asd.backends import backend_class, build_backend, register
from asd.backends.base import Backend, BackendError
from asd.registry import accepted_kwargs

COMBINE = {"mean": np.mean, "min": np.min, "max": np.max}


def zstats(train: np.ndarray) -> np.ndarray:
    """``(members, 2)``: mean and standard deviation (at least 1e-12) of each row of ``(members, n)``
    training scores, non-finite scores left out: the scale every label-free fusion z-normalises by."""
    train = np.asarray(train, dtype=float)
    train = np.where(np.isfinite(train), train, np.nan)
    return np.c_[np.nanmean(train, 1), np.maximum(np.nanstd(train, 1), 1e-12)]


def zscores(scores: np.ndarray, stats: np.ndarray) -> np.ndarray:
    """``(members, n)`` scores on the scale of :func:`zstats`."""
    return (scores - stats[:, :1]) / stats[:, 1:]


@register("fusion")
class Fusion(Backend):
    """z-normalised member scores combined by ``fusion``; fitted: ``zstats_`` (members, 2) and each member's arrays.

    Args:
        members: backend names (``backend.members``); every member gets the other ``backend.*``
            settings named here, and sees the inputs as this backend does (standardised or not).
        fusion: ``mean`` | ``min`` | ``max`` of the members' z-scores.
    """

    def __init__(self, members=("knn_smote", "knn_rescale"), fusion: str = "mean", k: int = 1, k_ref: int = 4,
                 clusters: int = 16, smote_ratio: float = 0.2, smote_neighbors: int = 2, domain_norm: str = "none",
                 **kw):
        super().__init__(**kw)
        self.members, self.fusion = list(members), fusion
        self.k, self.k_ref, self.clusters, self.domain_norm = k, k_ref, clusters, domain_norm
        self.smote_ratio, self.smote_neighbors = smote_ratio, smote_neighbors

    def _member_params(self) -> dict:
        return dict(k=self.k, k_ref=self.k_ref, clusters=self.clusters, smote_ratio=self.smote_ratio,
                    smote_neighbors=self.smote_neighbors, domain_norm=self.domain_norm,
                    threshold=self.threshold, threshold_quantile=self.threshold_quantile)

    def _fit(self, X, domains):
        if self.fusion not in COMBINE:
            raise BackendError(f"backend.fusion={self.fusion!r}: choose one of {', '.join(COMBINE)}")
        names = [m for m in self.members if m]
        bad = [m for m in names if m == "fusion" or backend_class(m).input[0] != "embedding"]
        if not names or bad:
            raise BackendError(f"backend.members={','.join(self.members)}: name one or more embedding backends "
                               f"(not {', '.join(bad) or 'nothing'}), e.g. knn_smote,knn_rescale")
        self._fitted = [build_backend(m, **self._member_params()).fit(X, domains) for m in names]
        self.zstats_ = zstats(np.stack([b.decision_scores_ for b in self._fitted]))

    def _combined(self, scores: np.ndarray) -> np.ndarray:
        return COMBINE[self.fusion](zscores(scores, self.zstats_), axis=0)

    def _score(self, X):
        return self._combined(np.stack([b.decision_function(X) for b in self._fitted]))

    def _train_scores(self, X, domains):
        return self._combined(np.stack([b.decision_scores_ for b in self._fitted]))

    def fitted_state(self) -> dict[str, np.ndarray]:
        state = super().fitted_state()
        for i, b in enumerate(self._fitted):
            state.update({f"m{i}_{k}": v for k, v in b.fitted_state().items()})
        return state

    @classmethod
    def from_state(cls, params: dict, state: dict[str, np.ndarray]):
        own = {k: v for k, v in state.items() if not (k[0] == "m" and k.split("_", 1)[0][1:].isdigit())}
        obj = super().from_state(params, own)
        names = [m for m in obj.members if m]
        obj._fitted = []
        for i, name in enumerate(names):
            sub = {k.split("_", 1)[1]: v for k, v in state.items() if k.startswith(f"m{i}_")}
            member = backend_class(name)
            obj._fitted.append(member.from_state(accepted_kwargs(member, obj._member_params()), sub))
        return obj
