"""The files of a served detector, and loading them back.

A bundle is one folder: what :meth:`asd.detector.Detector.save` writes (``config.yaml``, the frontend's
weights ``frontend.pt``, one ``backends/<machine>.npz`` of fitted arrays, ``detector.json``) plus
``serving.json``, which holds what scoring a new clip needs beyond the detector: the sections of
each machine type, each machine's decision threshold, and the clip rule of the dataset (sample
rate, channel, samples per clip) as evaluation computed it. Arrays and config only: loading
rebuilds every object, and refuses a bundle written by another ``asd`` version.

Sections are only checked, never used to pick a model: backends are fitted per machine type on the
training clips of all its sections pooled (as evaluation does), so a clip's section does not change
its score.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from asd import __version__
from asd.detector import Detector
from asd.errors import CheckpointError

log = logging.getLogger(__name__)
DEVICE_ENV = "ASD_SERVE_DEVICE"  # cpu | cuda | auto: where a served detector's frontend runs


@dataclass
class ServingInfo:
    """``serving.json``: what a request row is checked and read against."""

    dataset: str
    recipe: str
    backend: str
    sample_rate: int
    channel: int | None  # the channel read from multi-channel files; None: the file must be mono
    clip_samples: int  # every clip is tiled or cropped (from sample 0) to this length
    device: str  # the device type the detector was evaluated on (cpu | cuda)
    sections: dict[str, list[int]]  # machine type -> its sections in the clip index
    thresholds: dict[str, float]  # machine type -> decision threshold (score > threshold: anomalous)
    runs: dict[str, str] = field(default_factory=dict)  # evaluate_run_id, train_run_id
    asd_version: str = __version__

    @property
    def machines(self) -> list[str]:
        return sorted(self.thresholds)


def serving_info(det: Detector, rows: pd.DataFrame, runs: dict[str, str] | None = None) -> ServingInfo:
    """The :class:`ServingInfo` of a fitted detector; ``rows`` are index rows (for the sections)."""
    from asd.data.waves import channel_of, clip_samples
    from asd.training.runtime import resolve_device

    if not det.backends_:
        raise CheckpointError("the detector is not fitted: nothing to serve")
    sections = {m: sorted(int(s) for s in rows.loc[rows["machine"] == m, "section"].unique()) for m in det.backends_}
    return ServingInfo(dataset=det.cfg.data.dataset, recipe=det.cfg.recipe, backend=det.cfg.backend.name,
                       sample_rate=det.cfg.data.sample_rate, channel=channel_of(det.cfg),
                       clip_samples=clip_samples(det.cfg), device=resolve_device(det.cfg.train.device).type,
                       sections=sections, thresholds=det.thresholds, runs=dict(runs or {}))


def write_bundle(det: Detector, info: ServingInfo, folder: str | Path) -> Path:
    """Save the fitted detector and ``serving.json`` into ``folder``; returns the folder."""
    out = det.save(folder)
    (out / "serving.json").write_text(json.dumps(asdict(info), indent=2))
    return out


def read_bundle(folder: str | Path) -> tuple[Detector, ServingInfo]:
    """The detector and its :class:`ServingInfo` from a bundle folder.

    The frontend runs on ``$ASD_SERVE_DEVICE`` if set, else on the device type the detector was
    evaluated on (its scores match evaluation's there), falling back to the CPU, with a warning,
    where that was CUDA and none is visible.
    """
    from asd.config.overrides import apply_overrides

    d = Path(folder)
    det = Detector.load(d)  # refuses another asd version
    if not (d / "serving.json").is_file():
        raise CheckpointError(f"{d}: no serving.json; log the model again with `asd register --run-id EVAL_RUN`")
    info = ServingInfo(**json.loads((d / "serving.json").read_text()))
    det.cfg = apply_overrides(det.cfg, {"train.device": _device(info.device)})
    return det, info


def _device(evaluated_on: str) -> str:
    import torch

    if os.environ.get(DEVICE_ENV):
        return os.environ[DEVICE_ENV]  # asked for: an impossible choice is an error when the frontend is built
    if evaluated_on == "cuda" and not torch.cuda.is_available():
        log.warning("this detector was evaluated on CUDA, which is not visible here: scoring on the CPU "
                    "(scores may differ from the evaluate run's in the last digits)")
        return "cpu"
    return evaluated_on
