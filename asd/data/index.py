"""The clip index: one row per clip, written by ``prepare`` and read by every later stage.

Contract (docs/architecture.md): ``<data-dir>/<dataset>/index.csv`` with the columns of :data:`COLUMNS`.
``path`` is relative to the folder holding ``index.csv`` so a data folder can be moved or mounted
elsewhere; :func:`read_index` adds an absolute ``abspath`` column.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from asd.errors import AsdError

COLUMNS = [
    "path",  # relative to the index folder
    "dataset",  # toy, dcase2020, ...
    "year",  # the year whose rules apply (toy: 2023)
    "split",  # dev | eval
    "machine",  # machine type, as distributed (ToyCar, fan, ...)
    "section",  # int; 2020: the machine ID
    "domain",  # source | target
    "phase",  # train | test | supplemental
    "label",  # normal | anomaly | unknown
    "attributes",  # key=value;key=value (empty when none)
    "file",  # file name exactly as distributed (anonymised for eval test clips)
]
ALLOWED = {
    "split": {"dev", "eval"},
    "domain": {"source", "target"},
    "phase": {"train", "test", "supplemental"},
    "label": {"normal", "anomaly", "unknown"},
}
INDEX_NAME = "index.csv"


class ClipIndexError(AsdError):
    """The clip index is missing, malformed or inconsistent with the files on disk."""


def default_data_dir() -> Path:
    """``--data-dir`` default: ``$ASD_DATA_DIR`` or ``./data``."""
    return Path(os.environ.get("ASD_DATA_DIR", "data"))


def index_path(data_dir: str | Path, dataset: str) -> Path:
    return Path(data_dir) / dataset / INDEX_NAME


def write_index(df: pd.DataFrame, data_dir: str | Path, dataset: str) -> Path:
    """Validate and write the index atomically; returns its path."""
    validate_index(df, where=f"index of {dataset}")
    out = index_path(data_dir, dataset)
    out.parent.mkdir(parents=True, exist_ok=True)
    df = df[COLUMNS].sort_values(["split", "machine", "section", "phase", "file"], kind="stable")
    tmp = out.with_suffix(".csv.tmp")
    df.to_csv(tmp, index=False)
    os.replace(tmp, out)
    return out


def read_index(data_dir: str | Path, dataset: str, machines: list[str] | None = None) -> pd.DataFrame:
    """Read ``<data_dir>/<dataset>/index.csv``; optionally keep only ``machines``.

    Raises:
        ClipIndexError: the index does not exist (with the ``asd prepare`` command that makes it),
            has missing columns or bad values, or ``machines`` names a machine it lacks.
    """
    path = index_path(data_dir, dataset)
    if not path.is_file():
        if not Path(data_dir).exists():
            hint = f"data directory '{data_dir}' does not exist"
        else:
            hint = f"no index at '{path}'"
        raise ClipIndexError(
            f"{hint}; run `asd prepare --dataset {dataset} --data-dir {data_dir}` first "
            "(or set --data-dir / ASD_DATA_DIR to where you prepared it)"
        )
    df = pd.read_csv(path, dtype={"attributes": str, "file": str, "path": str}, keep_default_na=False)
    validate_index(df, where=str(path))
    if machines:
        unknown = sorted(set(machines) - set(df["machine"]))
        if unknown:
            raise ClipIndexError(
                f"machine(s) {', '.join(unknown)} not in {path}; available: {', '.join(sorted(df['machine'].unique()))}"
            )
        df = df[df["machine"].isin(machines)]
    df = df.reset_index(drop=True)
    df["abspath"] = [str(path.parent / p) for p in df["path"]]
    return df


def validate_index(df: pd.DataFrame, where: str = "index") -> None:
    """Check columns and value domains; raise :class:`ClipIndexError` naming the first bad row."""
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ClipIndexError(f"{where}: missing column(s) {missing}; re-run `asd prepare`")
    for col, allowed in ALLOWED.items():
        bad = ~df[col].isin(allowed)
        if bad.any():
            row = df[bad].iloc[0]
            raise ClipIndexError(
                f"{where}: {int(bad.sum())} row(s) with {col} not in {sorted(allowed)} "
                f"(first: {row['file']!r} has {col}={row[col]!r}); re-run `asd prepare`"
            )
    dup = df["path"].duplicated()
    if dup.any():
        raise ClipIndexError(f"{where}: duplicate path {df.loc[dup, 'path'].iloc[0]!r}")


def parse_attributes(text: str) -> dict[str, str]:
    """``'spd=28V;mic=2'`` -> ``{'spd': '28V', 'mic': '2'}``."""
    if not text:
        return {}
    return dict(kv.split("=", 1) for kv in text.split(";") if kv)


def format_attributes(attrs: dict[str, str] | list[tuple[str, str]]) -> str:
    items = attrs.items() if isinstance(attrs, dict) else attrs
    return ";".join(f"{k}={v}" for k, v in items)
