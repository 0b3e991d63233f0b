"""The official submission files of an evaluate run: what the DCASE evaluators read.

One pair of header-less CSVs per evaluated (machine, section), rows ``file,value`` with the file
name exactly as distributed (anonymised for eval test clips), sorted by file name:

- 2022-2026 (and the toy set): ``anomaly_score_<machine>_section_<SS>_test.csv`` and
  ``decision_result_<machine>_section_<SS>_test.csv`` (EV22-EV25);
- 2021: one pair per domain, ``..._section_<SS>_source_test.csv`` / ``..._target_test.csv`` (EV21);
- 2020: ``anomaly_score_<machine>_id_<II>.csv`` (EV20 reads scores only; decisions come alongside).

Scores are written with Python's shortest round-trip repr, so a file read back gives the very same
float64 values that the run's metrics were computed from.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd

from asd.data.years import get_year
from asd.errors import AsdError, RunError


class ExportError(AsdError, ValueError):
    """Scores that cannot be written as a valid submission."""


def _stems(year: int, section: int, g: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    if year == 2020:
        return [(f"id_{section:02d}", g)]
    if year == 2021:
        return [(f"section_{section:02d}_{d}_test", g[g["domain"] == d]) for d in ("source", "target")
                if (g["domain"] == d).any()]
    return [(f"section_{section:02d}_test", g)]


def _write(path: Path, files, values) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerows(zip(files, values))


def write_submission(scores: pd.DataFrame, dataset: str, out_dir: str | Path) -> list[Path]:
    """Write the submission files of ``scores`` (one row per test clip: ``machine, section, domain,
    file, score, decision``) into ``out_dir``; returns the paths written.

    Raises:
        ExportError: a score is not finite, or a file name repeats within one (machine, section).
    """
    year = get_year(dataset).year
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for (machine, section), g in scores.groupby(["machine", "section"], sort=True):
        dup = g["file"][g["file"].duplicated()]
        if len(dup):
            raise ExportError(f"{machine} section {int(section):02d}: file name {dup.iloc[0]!r} appears more than "
                             "once; the evaluator matches rows by file name")
        bad = g[~pd.to_numeric(g["score"], errors="coerce").map(lambda v: v == v and abs(v) != float("inf"))]
        if len(bad):
            raise ExportError(f"{machine} section {int(section):02d}: score of {bad['file'].iloc[0]!r} is "
                             f"{bad['score'].iloc[0]!r}; the evaluator needs a finite number for every clip")
        for stem, part in _stems(year, int(section), g):
            part = part.sort_values("file", kind="stable")
            files = part["file"].tolist()
            a = out / f"anomaly_score_{machine}_{stem}.csv"
            _write(a, files, [repr(float(v)) for v in part["score"]])
            d = out / f"decision_result_{machine}_{stem}.csv"
            _write(d, files, [int(v) for v in part["decision"]])
            paths += [a, d]
    return paths


def load_run_scores(run_id: str) -> tuple[pd.DataFrame, str]:
    """The per-clip scores (``scores/<machine>.csv`` artifacts) and dataset of an evaluate run."""
    import tempfile

    from asd import tracking

    run = tracking.get_run(run_id, stage="evaluate")
    dataset = run.data.tags.get("asd.dataset") or run.data.params.get("data.dataset")
    with tempfile.TemporaryDirectory() as tmp:
        d = tracking.download(run_id, "scores", tmp)
        files = sorted(d.glob("*.csv"))
        if not files:
            raise RunError(f"evaluate run {run_id} has no scores/<machine>.csv artifacts to export")
        frames = [pd.read_csv(f, dtype={"file": str}).assign(machine=f.stem)
                  for f in files]
    return pd.concat(frames, ignore_index=True), dataset


def export_run(run_id: str, out_dir: str | Path) -> list[Path]:
    """``asd export``: the submission files of evaluate run ``run_id`` written into ``out_dir``."""
    from asd import tracking

    tracking.setup()
    scores, dataset = load_run_scores(run_id)
    return write_submission(scores, dataset, out_dir)
