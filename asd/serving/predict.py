"""A request DataFrame -> one result row per input row: ``score``, ``decision``, ``threshold``, ``error``.

``score`` is the number ``asd evaluate`` writes for that clip (higher = more anomalous), ``decision``
is 1 when ``score > threshold`` (the machine's threshold, fitted on its normal training clips).
A row that cannot be scored (unreadable audio, wrong sample rate, unknown machine, ...) gets
``error`` (a message naming the row and what to fix) and ``None`` in the other columns; the other
rows are scored as usual, so one bad clip never takes a batch down. The columns hold Python
objects (``None`` for missing), which JSON encodes as ``null``; ``df["score"].astype(float)`` gives
floats with NaN.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from asd.data.audio import AudioError
from asd.detector import Detector
from asd.serving.bundle import ServingInfo
from asd.serving.clips import RowError, read_clip, row_machine

OUTPUT_COLUMNS = ["score", "decision", "threshold", "error"]


def score_frame(det: Detector, info: ServingInfo, df: pd.DataFrame) -> pd.DataFrame:
    """Score every row of ``df`` (columns ``machine``, [``section``], ``path`` or ``audio``); see the module doc."""
    out = {c: [None] * len(df) for c in OUTPUT_COLUMNS}
    clips: dict[str, list[tuple[int, np.ndarray]]] = {}
    with tempfile.TemporaryDirectory(prefix="asd-serve-") as tmp:
        for i, row in enumerate(df.to_dict("records")):
            try:
                machine = row_machine(row, i, info)
                clips.setdefault(machine, []).append((i, read_clip(row, i, info, Path(tmp))))
            except (RowError, AudioError) as e:
                out["error"][i] = str(e)
    for machine, items in clips.items():
        for start in range(0, len(items), det.frontend.batch):
            chunk = items[start:start + det.frontend.batch]
            scores, decisions = det.score_waves(machine, np.stack([w for _, w in chunk]))
            for (i, _), s, d in zip(chunk, scores, decisions):
                out["score"][i], out["decision"][i] = float(s), int(d)
                out["threshold"][i] = float(info.thresholds[machine])
    return pd.DataFrame({c: pd.Series(v, dtype=object, index=df.index) for c, v in out.items()})
