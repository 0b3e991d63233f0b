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
# Written by `prepare` since clips are verified (asd.data.verify); an index without them still reads.
VERIFIED = [
    "sha256",  # hash of the file's bytes: keys the waveform cache and the embedding store
    "frames",  # samples per channel
    "stamp",  # size-mtime_ns-ctime_ns-inode when verified: a changed file is re-hashed, never served stale
    "bad",  # '' for a good clip, else why it is unusable (kept by --skip-bad; read_index leaves it out)
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
    from asd.files import atomic

    validate_index(df, where=f"index of {dataset}")
    good = df[df["bad"] == ""] if "bad" in df else df
    if good.empty:
        raise ClipIndexError(f"no usable clip to index for {dataset} (found {len(df)}); check the archives or "
                             "files under the data folder")
    out = index_path(data_dir, dataset)
    df = df[COLUMNS + [c for c in VERIFIED if c in df]].sort_values(["split", "machine", "section", "phase", "file"],
                                                                    kind="stable")
    with atomic(out) as tmp:
        df.to_csv(tmp, index=False)
    return out


def read_index(data_dir: str | Path, dataset: str, machines: list[str] | None = None) -> pd.DataFrame:
    """Read ``<data_dir>/<dataset>/index.csv``; optionally keep only ``machines``.

    Raises:
        ClipIndexError: the index does not exist (with the ``asd prepare`` command that makes it),
            has missing columns or bad values, or ``machines`` names a machine it lacks.
    """
    path = index_path(data_dir, dataset)
    df = read_rows(path)
    df = df[df["bad"] == ""] if "bad" in df else df
    if df.empty:
        raise ClipIndexError(f"{path} lists no usable clip; run `asd prepare --dataset {dataset} --data-dir {data_dir}`")
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


def read_rows(path: Path) -> pd.DataFrame:
    """Every row of the index file ``path``, bad clips included, validated (no ``abspath``)."""
    if not path.is_file():
        data_dir, dataset = path.parent.parent, path.parent.name
        hint = f"data directory '{data_dir}' does not exist" if not data_dir.exists() else f"no index at '{path}'"
        raise ClipIndexError(f"{hint}; run `asd prepare --dataset {dataset} --data-dir {data_dir}` first "
                             "(or set --data-dir / ASD_DATA_DIR to where you prepared it)")
    try:
        df = pd.read_csv(path, keep_default_na=False,
                         dtype={"attributes": str, "file": str, "path": str, "sha256": str, "stamp": str, "bad": str})
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as e:
        raise ClipIndexError(f"{path} is not a clip index ({type(e).__name__}: {str(e)[:100]}); delete it and "
                             "re-run `asd prepare`") from None
    validate_index(df, where=str(path))
    return df


def excluded_clips(data_dir: str | Path, dataset: str, machines: list[str] | None = None) -> pd.DataFrame:
    """The clips ``prepare --skip-bad`` found unusable (column ``bad`` says why), of ``machines`` if given."""
    df = read_rows(index_path(data_dir, dataset))
    if "bad" not in df:
        return df.iloc[:0]
    bad = df[df["bad"] != ""]
    return bad[bad["machine"].isin(machines)] if machines else bad


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
