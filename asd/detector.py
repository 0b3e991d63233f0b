"""A trained detector as one object: a frontend plus the fitted backend (and threshold) of each machine type.

Evaluation, the search and serving all score clips through a :class:`Detector`::

    det = Detector(cfg, checkpoint)         # a trained frontend (checkpoint None for raw recipes)
    emb = det.embed(index)                  # every train and test clip, one extraction
    det.fit(emb)                            # one backend per machine type, on its training clips
    scores = det.score(emb)                 # test clips: index columns + score, decision

A fitted detector is saved as arrays and config, never as pickled objects: ``config.yaml``, the
frontend's weights (``frontend.pt``, a plain tensor dict), one ``backends/<machine>.npz`` of fitted
arrays and ``detector.json`` (backend name and parameters, machines, those whose backend is fused
with the pooled-spectrum floor (``backend.floor``, :mod:`asd.backends.floor`), the ``asd`` version). Loading
refuses a detector saved by another ``asd`` version: its scores would not be guaranteed to match.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from asd import __version__
from asd.config import Config, from_yaml, to_yaml
from asd.data.index import ClipIndexError
from asd.errors import CheckpointError
from asd.training import Embeddings

FRONTEND_KEYS = ("family", "model_name", "model_args", "state", "config", "epoch", "classes", "label", "machines")


class Detector:
    """Frontend (``cfg`` + ``checkpoint``) and, once fitted, ``backends_``: machine type -> fitted backend."""

    def __init__(self, cfg: Config, checkpoint: dict | None = None, backends: dict | None = None):
        self.cfg = cfg
        self.checkpoint = checkpoint
        self.backends_ = dict(backends or {})
        self._frontend = None
        self._floor_fe = None  # the floor's frontend (backend.floor), built on first use

    def with_backend(self, name: str | None = None, overrides=None) -> "Detector":
        """The same frontend with another (unfitted) backend: ``backend.name`` and ``backend.*`` overrides."""
        from asd.config.overrides import apply_overrides

        cfg = apply_overrides(self.cfg, {**({"backend.name": name} if name else {}), **dict(overrides or {})})
        det = Detector(cfg, self.checkpoint)
        det._frontend = self._frontend
        return det

    @property
    def thresholds(self) -> dict[str, float]:
        return {m: float(b.threshold_) for m, b in self.backends_.items()}

    @property
    def frontend(self):
        """The frontend, rebuilt from the checkpoint on first use (and kept)."""
        if self._frontend is None:
            from asd.training import load_frontend

            self._frontend = load_frontend(self.cfg, self.checkpoint)
        return self._frontend

    def embed(self, index: pd.DataFrame) -> Embeddings:
        """Embeddings of every train and test clip of ``index`` (with the floor's input, ``stats``,
        where a machine type of ``index`` will be fused with the floor)."""
        from asd.backends import floor
        from asd.training import embed

        emb = embed(self.cfg, index, frontend=self.frontend)
        counts = emb.rows.loc[emb.rows["phase"] == "train", "machine"].value_counts()
        if any(floor.wanted(self.cfg, int(n)) for n in counts):
            emb.stats = self._stats(emb.rows)
        return emb

    def _stats(self, rows: pd.DataFrame) -> np.ndarray:
        """The floor's input for ``rows``: each clip's pooled log-mel mean and std (``raw_stats``)."""
        from asd.training import embed

        return embed(self._floor_cfg(), rows, frontend=self._floor_frontend()).embedding

    def _floor_input(self, emb: Embeddings) -> np.ndarray:
        if emb.stats is None:  # embedded elsewhere (e.g. the search's embedding store): computed once here
            emb.stats = self._stats(emb.rows)
        return emb.stats

    def _floor_cfg(self) -> Config:
        from asd.backends.floor import floor_config

        return floor_config(self.cfg)

    def _floor_frontend(self):
        if self._floor_fe is None:
            from asd.training import load_frontend

            self._floor_fe = load_frontend(self._floor_cfg(), None)
        return self._floor_fe

    @property
    def floored(self) -> list[str]:
        """The machine types whose fitted backend is fused with the floor."""
        from asd.backends.floor import FloorFused

        return sorted(m for m, b in self.backends_.items() if isinstance(b, FloorFused))

    def _input(self, emb: Embeddings) -> np.ndarray:
        from asd.backends import backend_class

        return emb.features(backend_class(self.cfg.backend.name).input, f"backend {self.cfg.backend.name!r}")

    def fit(self, clips: Embeddings | pd.DataFrame) -> "Detector":
        """Fit one backend per machine type on its training clips (an index is embedded first)."""
        from asd.backends import build_backend, floor

        emb = clips if isinstance(clips, Embeddings) else self.embed(clips)
        X, rows = self._input(emb), emb.rows
        domains = rows["domain"].to_numpy()
        self.backends_ = {}
        for machine in sorted(rows["machine"].unique()):
            tr = np.where((rows["machine"] == machine) & (rows["phase"] == "train"))[0]
            if len(tr) == 0:
                raise ClipIndexError(f"machine {machine!r} has test clips but no training clips to fit the backend on")
            backend = build_backend(self.cfg.backend.name, **vars(self.cfg.backend))
            if floor.wanted(self.cfg, len(tr)):
                self.backends_[machine] = floor.build(backend).fit(X[tr], self._floor_input(emb)[tr], domains[tr])
            else:
                self.backends_[machine] = backend.fit(X[tr], domains[tr])
        return self

    def _decide(self, machine: str, X: np.ndarray, stats) -> np.ndarray:
        """Scores of one machine type's clips; ``stats()`` gives the floor's input, asked only if it is fused."""
        from asd.backends.floor import FloorFused

        backend = self._backend(machine)
        if isinstance(backend, FloorFused):
            return backend.decision_function(X, stats())
        return backend.decision_function(X)

    def score(self, clips: Embeddings | pd.DataFrame) -> pd.DataFrame:
        """The test clips' rows with ``score`` (higher = more anomalous) and ``decision`` (0/1)."""
        emb = clips if isinstance(clips, Embeddings) else self.embed(clips)
        X, rows = self._input(emb), emb.rows
        out = []
        for machine in sorted(rows["machine"].unique()):
            te = np.where((rows["machine"] == machine) & (rows["phase"] == "test"))[0]
            if len(te):
                df = rows.iloc[te].copy()
                df["score"] = self._decide(machine, X[te], lambda te=te: self._floor_input(emb)[te])
                df["decision"] = (df["score"] > self.backends_[machine].threshold_).astype(int)
                out.append(df)
        if not out:
            raise ClipIndexError("no test clips to score among the clips given")
        return pd.concat(out, ignore_index=True)

    def score_waves(self, machine: str, waves: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, decisions)`` of ``(n, samples)`` float32 clips of one machine type, already at clip length."""
        arrays = self.frontend.embed_waves(waves, machine)
        emb = Embeddings(pd.DataFrame(index=range(len(waves))), arrays["embedding"], arrays.get("recon"),
                         arrays.get("residual"))
        scores = self._decide(machine, self._input(emb), lambda: self._floor_frontend().embed_waves(waves)["embedding"])
        return scores, (scores > self.backends_[machine].threshold_).astype(int)

    def _backend(self, machine: str):
        if machine not in self.backends_:
            raise ClipIndexError(f"this detector has no backend for machine {machine!r} "
                                 f"(fitted for: {', '.join(sorted(self.backends_)) or 'none'})")
        return self.backends_[machine]

    def save(self, folder: str | Path) -> Path:
        """Write the fitted detector into ``folder`` as arrays and config; returns the folder."""
        import torch

        out = Path(folder)
        (out / "backends").mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(to_yaml(self.cfg))
        if self.checkpoint is not None:  # weights only: no optimiser state
            torch.save({k: v for k, v in self.checkpoint.items() if k in FRONTEND_KEYS}, out / "frontend.pt")
        params = {}
        for machine, backend in self.backends_.items():
            np.savez(out / "backends" / f"{machine}.npz", **backend.fitted_state())
            params = backend.get_params()
        meta = {"asd_version": __version__, "backend": self.cfg.backend.name, "params": params,
                "machines": sorted(self.backends_), "floor": self.floored, "thresholds": self.thresholds}
        (out / "detector.json").write_text(json.dumps(meta, indent=2, default=str))
        return out

    @classmethod
    def load(cls, folder: str | Path) -> "Detector":
        """A detector written by :meth:`save`, rebuilt from its arrays and config."""
        import torch

        from asd.backends import backend_class
        from asd.backends.floor import FloorFused

        d = Path(folder)
        if not (d / "detector.json").is_file():
            raise CheckpointError(f"{d}: not a saved detector (no detector.json)")
        meta = json.loads((d / "detector.json").read_text())
        if meta.get("asd_version") != __version__:  # features and backends may score differently across versions
            raise CheckpointError(f"{d}: detector saved by asd {meta.get('asd_version')}, this is asd {__version__}; "
                                  f"install asd {meta.get('asd_version')} to use it, or re-fit it with this version "
                                  "(`asd register --run-id EVAL_RUN` refits from the evaluate run)")
        cfg = from_yaml((d / "config.yaml").read_text())
        ckpt = torch.load(d / "frontend.pt", map_location="cpu", weights_only=True) \
            if (d / "frontend.pt").is_file() else None
        cls_ = backend_class(meta["backend"])
        backends = {}
        for machine in meta["machines"]:
            with np.load(d / "backends" / f"{machine}.npz") as z:
                state = {k: z[k] for k in z.files}
            backends[machine] = FloorFused.from_state(cls_, meta["params"], state) \
                if machine in meta.get("floor", []) else cls_.from_state(meta["params"], state)
        return cls(cfg, ckpt, backends)
