"""The pooled-spectrum floor fused into a detector (docs/methods.md, backends: floor fusion).

``raw_stats`` (each clip's log-mel mean and standard deviation over time, standardised per machine
type, cosine 1-NN with separate source and target sets) is the training-free floor every trained
recipe is measured against. Its scores and a trained embedding's scores make different mistakes:
put on one scale by the mean and standard deviation of each one's own leave-one-out training scores
(normal clips only: no label is used) and averaged, they beat both on every toy layout measured,
most of all with few training clips (docs/parity.md, floor fusion).

``backend.floor``: ``auto`` (default) fuses the floor into the machine types of the classifier family
that have at most :data:`AUTO_MAX_CLIPS` training clips; ``on`` into every machine type of any recipe
but ``raw_stats`` itself; ``off`` never. The DCASE development sets (about 1,000 training clips per
machine type) stay with the reference's plain backend under ``auto``: no measurement at that size
says the floor helps there.
"""

from __future__ import annotations

import numpy as np

from asd.backends.base import fit_threshold
from asd.backends.fusion import zscores, zstats

AUTO_MAX_CLIPS = 200  # measured gains at 30 and 110 clips per machine type; none measured above
FLOOR_RECIPE = "raw_stats"


def wanted(cfg, n_train: int) -> bool:
    """Whether a machine type with ``n_train`` training clips gets the floor under ``cfg``."""
    from asd.training import family_name

    mode = cfg.backend.floor
    if mode == "off" or cfg.model.name == FLOOR_RECIPE:
        return False
    if mode == "on":
        return True
    return family_name(cfg.model.name) == "classifier" and n_train <= AUTO_MAX_CLIPS


def floor_config(cfg):
    """The ``raw_stats`` recipe on ``cfg``'s data (dataset, clip length, sample rate, cache) and device."""
    from asd.config.recipes import load_recipe

    d = cfg.data
    return load_recipe(FLOOR_RECIPE, {"data.dataset": d.dataset, "data.clip_seconds": d.clip_seconds,
                                      "data.sample_rate": d.sample_rate, "data.cache": d.cache,
                                      "train.device": cfg.train.device})


def _floor_params(main) -> tuple[str, dict]:
    """The floor's backend name and settings: ``raw_stats``'s (knn, standardised), with ``main``'s threshold rule."""
    from asd.config.recipes import load_recipe

    cfg = load_recipe(FLOOR_RECIPE).backend
    return cfg.name, {**vars(cfg), "threshold": main.threshold, "threshold_quantile": main.threshold_quantile}


class FloorFused:
    """One machine type's fitted backend (``main``) and the fitted floor, scored as the mean of their z-scores.

    Fitted: ``zstats_`` (2, 2): mean and std of the main's and the floor's leave-one-out training
    scores; ``decision_scores_``: the fused training scores; ``threshold_``: fitted on them by the
    main backend's rule. ``decision_function(X, S)`` takes the main backend's input ``X`` and the
    floor's pooled log-mel statistics ``S`` of the same clips.
    """

    def __init__(self, main, floor):
        self.main, self.floor = main, floor

    def fit(self, X: np.ndarray, S: np.ndarray, domains: np.ndarray) -> "FloorFused":
        self.main.fit(X, domains)
        self.floor.fit(S, domains)
        train = np.stack([self.main.decision_scores_, self.floor.decision_scores_])
        self.zstats_ = zstats(train)
        self.decision_scores_ = self._fused(train)
        self.threshold_ = fit_threshold(self.decision_scores_, self.main.threshold, self.main.threshold_quantile)
        return self

    def _fused(self, scores: np.ndarray) -> np.ndarray:
        return zscores(scores, self.zstats_).mean(0)

    def decision_function(self, X: np.ndarray, S: np.ndarray) -> np.ndarray:
        return self._fused(np.stack([self.main.decision_function(X), self.floor.decision_function(S)]))

    def get_params(self) -> dict:
        return self.main.get_params()

    def fitted_state(self) -> dict[str, np.ndarray]:
        """The main backend's arrays as they are, the floor's under ``floor.``, the fusion's under ``fused.``."""
        return {**self.main.fitted_state(), **{f"floor.{k}": v for k, v in self.floor.fitted_state().items()},
                "fused.zstats_": self.zstats_, "fused.decision_scores_": self.decision_scores_,
                "fused.threshold_": np.asarray(self.threshold_)}

    @classmethod
    def from_state(cls, main_cls, params: dict, state: dict[str, np.ndarray]) -> "FloorFused":
        from asd.backends import backend_class
        from asd.registry import accepted_kwargs

        main = main_cls.from_state(params, {k: v for k, v in state.items() if "." not in k})
        name, fparams = _floor_params(main)
        fcls = backend_class(name)
        floor = fcls.from_state(accepted_kwargs(fcls, fparams),
                                {k[len("floor."):]: v for k, v in state.items() if k.startswith("floor.")})
        obj = cls(main, floor)
        obj.zstats_, obj.decision_scores_ = state["fused.zstats_"], state["fused.decision_scores_"]
        obj.threshold_ = float(state["fused.threshold_"])
        return obj


def build(main) -> FloorFused:
    """``main`` (an unfitted backend) paired with an unfitted floor that uses the same threshold rule."""
    from asd.backends import build_backend

    name, params = _floor_params(main)
    return FloorFused(main, build_backend(name, **params))
