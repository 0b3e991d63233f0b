"""``asd prepare``: from archives or the toy generator to a verified clip index.

Real DCASE years are handled by :mod:`asd.data.dcase`; the toy set is generated here and indexed by
scanning what is on disk with the same scanner and rules (:mod:`asd.data.scan`) as a real year.
Either way every clip is decoded and checked once (:mod:`asd.data.verify`), and one process at a time
prepares a data folder: ``<data-dir>/<dataset>/.prepare.lock`` is held for the whole run (a second
``prepare`` waits, or with ``wait=False`` refuses).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path

import pandas as pd

from asd.config import ConfigError
from asd.data.archives import Limits
from asd.data.audio import Expect
from asd.data.index import ClipIndexError, index_path, read_rows, write_index
from asd.files import is_tmp, locked, write_text

log = logging.getLogger(__name__)
LOCK = ".prepare.lock"


def lock(data_dir: str | Path, dataset: str, wait: bool = True):
    """The lock of ``<data_dir>/<dataset>``: held by ``prepare`` and ``prepare --check``."""
    folder = Path(data_dir) / dataset
    return locked(folder / LOCK, f"data folder {folder} (another `asd prepare`)", wait=wait)


def prepare(dataset: str, data_dir: str | Path, split: str = "all", machines: list[str] | None = None,
            mirror: str | None = None, archives: str | Path | None = None, strict: bool = False,
            progress: bool = True, toy_spec=None, skip_bad: bool = False, wait: bool = True,
            limits: Limits | None = None) -> Path:
    """Prepare ``dataset`` under ``data_dir``; returns the path of the written ``index.csv``.

    Args:
        skip_bad: index the good clips when some are bad (they are listed in ``bad_clips.csv`` and
            left out of training and evaluation, visibly); otherwise a bad clip is an error.
        wait: when another ``prepare`` holds the data folder, wait for it (else raise LockedError).
        limits: raise the unpacking and clip-length limits (:class:`asd.data.archives.Limits`).
    """
    from asd.data.years import get_year

    data_dir = Path(data_dir)
    get_year(dataset)  # raises with the list of known datasets
    if dataset == "toy" and (mirror or archives):
        raise ConfigError("--mirror/--archives do not apply to the built-in toy dataset (it is generated)")
    with lock(data_dir, dataset, wait):
        if dataset == "toy":
            return prepare_toy(data_dir, split=split, machines=machines, spec=toy_spec, progress=progress,
                               strict=strict, skip_bad=skip_bad)
        from asd.data.dcase import prepare_dcase

        return prepare_dcase(dataset, data_dir, split=split, machines=machines, mirror=mirror,
                             archives=Path(archives) if archives else None, strict=strict, progress=progress,
                             skip_bad=skip_bad, limits=limits)


def check(dataset: str, data_dir: str | Path, strict: bool = False, progress: bool = True, wait: bool = True,
          limits: Limits | None = None) -> list[str]:
    """``asd prepare --check``: verify an existing index, its files and their audio; returns warning lines.

    Raises:
        ClipIndexError: naming the first problem (errors are listed in each dataset's check).
    """
    read_rows(index_path(data_dir, dataset))  # no index: say how to make one (before the lock creates folders)
    with lock(data_dir, dataset, wait):
        if dataset == "toy":
            return check_toy(Path(data_dir), strict=strict, progress=progress)
        from asd.data.dcase import check_index

        return check_index(dataset, Path(data_dir), strict=strict, progress=progress, limits=limits)


def _toy_setup(root: Path, spec, machines: list[str] | None, split: str = "all"):
    """The toy set's year (its machine names), the machines to index per split, and its ground truth."""
    from asd.data.groundtruth import GroundTruth, read_eval_list
    from asd.data.toy import machine_names
    from asd.data.years import get_year

    dev, evl = machine_names(spec)
    year = dataclasses.replace(get_year("toy"), dev_machines=tuple(dev), eval_machines=tuple(evl))
    prepared = {s: {m for m in ms if not machines or m in machines} if split in ("all", s) else set()
                for s, ms in (("dev", dev), ("eval", evl))}
    gt_file = root / "eval_data_list_toy.csv"
    gt = GroundTruth(eval_test=read_eval_list(gt_file, year.year) if gt_file.is_file() else {})
    return year, prepared, gt


def _toy_expect(spec) -> Expect:
    from asd.data.toy import SR

    seconds = int(spec.seconds * SR) / SR  # generated clips are exactly this long
    return Expect(SR, 1, seconds - 0.5 / SR, seconds + 0.5 / SR)


def _toy_scan(root: Path, prepared: dict, year, gt, strict: bool) -> pd.DataFrame:
    """Scan the toy folders like a DCASE year and check the ground truth; files not indexed are logged as
    warnings (errors with ``strict``)."""
    from asd.data.scan import build_index, problems

    df, unknown, notes = build_index(year, root, prepared, gt)
    for note in notes:
        log.info("toy: %s", note)
    for w in problems(year, df, gt, prepared, unknown, strict):
        log.warning("toy: %s", w)
    return df


def _toy_counts(df: pd.DataFrame, spec, prepared: dict, root: Path) -> None:
    """The toy set holds exactly what its spec makes: a missing or extra clip is an error."""
    want = {("source", "train", "normal"): spec.n_source_train, ("target", "train", "normal"): spec.n_target_train,
            **{(d, "test", lab): spec.n_test for d in ("source", "target") for lab in ("normal", "anomaly")}}
    have = df.groupby(["split", "machine", "domain", "phase", "label"]).size().to_dict()
    diffs = [f"{s}/{m} {' '.join(cell)}: {have.get((s, m, *cell), 0)} (spec {n})"
             for s, ms in prepared.items() for m in sorted(ms) for cell, n in want.items()
             if have.get((s, m, *cell), 0) != n]
    if diffs:
        raise ClipIndexError(f"the toy set under {root} differs from its spec (toy_spec.json) in {len(diffs)} cell(s): "
                             f"{'; '.join(diffs[:3])}; run `asd prepare --dataset toy` (it makes missing clips), "
                             f"remove extra files, or delete {root} and prepare it afresh")


def prepare_toy(data_dir: Path, split: str = "all", machines: list[str] | None = None, spec=None,
                progress: bool = True, strict: bool = False, skip_bad: bool = False) -> Path:
    """Generate (or reuse) the toy set and index it from the files on disk (call under :func:`lock`).

    ``spec`` (a :class:`asd.data.toy.ToySpec`, or ``"key=value,..."``) is remembered in
    ``toy/toy_spec.json``: without one, an existing set keeps its size; with a different one, the old
    clips are removed and the set is generated anew.
    """
    from asd.data.toy import generate
    from asd.data.verify import admit

    root = data_dir / "toy"
    spec = _toy_spec(root, spec)
    generate(root, spec, machines=machines, progress=progress)
    year, prepared, gt = _toy_setup(root, spec, machines, split)
    df = _toy_scan(root, prepared, year, gt, strict)
    _toy_counts(df, spec, prepared, root)
    df, note = admit(df, root, _toy_expect(spec), None, skip_bad, progress)
    if note:
        log.warning("toy: %s", note)
    return write_index(df, data_dir, "toy")


def _toy_spec(root: Path, spec):
    """The spec to generate: ``spec``, else the remembered one, else the default; a changed spec clears the set."""
    from asd.data.toy import ToySpec, parse_spec

    spec_file = root / "toy_spec.json"
    old = ToySpec(**json.loads(spec_file.read_text())) if spec_file.exists() else None
    spec = (parse_spec(spec) if isinstance(spec, str) else spec) or old or ToySpec()
    if old is not None and old != spec:
        log.warning("toy spec changed (%s -> %s): regenerating %s", old, spec, root)
        for sub in ("dev_data", "eval_data"):
            shutil.rmtree(root / sub, ignore_errors=True)
    for sub in ("dev_data", "eval_data"):  # files a killed generator left (we hold the lock: nobody writes)
        for p in (root / sub).rglob(".*.tmp"):
            if is_tmp(p.name):
                p.unlink()
    write_text(spec_file, json.dumps(dataclasses.asdict(spec)))
    return spec


def check_toy(data_dir: Path, strict: bool = False, progress: bool = True) -> list[str]:
    """``prepare --check`` of the toy set: the index against the files on disk, the spec and the audio."""
    from asd.data.scan import compare_disk
    from asd.data.toy import ToySpec
    from asd.data.verify import recheck

    root, path = data_dir / "toy", index_path(data_dir, "toy")
    rows = read_rows(path)
    spec_file = root / "toy_spec.json"
    if not spec_file.is_file():
        raise ClipIndexError(f"{spec_file} is missing: the toy set cannot be checked; run `asd prepare --dataset toy`")
    spec = ToySpec(**json.loads(spec_file.read_text()))
    year, _, gt = _toy_setup(root, spec, None)
    prepared = {s: set(rows.loc[rows["split"] == s, "machine"]) for s in ("dev", "eval")}
    disk = _toy_scan(root, prepared, year, gt, strict)
    compare_disk(rows, disk, path, f"run `asd prepare --dataset toy --data-dir {data_dir}`")
    _toy_counts(rows, spec, prepared, root)  # the index holds the whole set, not a part of it
    return recheck(rows, root, _toy_expect(spec), None, progress)
