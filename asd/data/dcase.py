"""``asd prepare --dataset dcase20XX``: download, unpack, label and index one DCASE Task 2 year.

Layout under ``<data_dir>/<dataset>/``::

    archives/                      downloaded archives and ground-truth files (``--archives DIR`` is read in place)
    dev_data/raw/<machine>/<phase folder>/*.wav      dev archives, unpacked as distributed
    eval_data/raw/<machine>/<phase folder>/*.wav     eval train and eval test archives
    {dev,eval}_data/raw/.done/<archive>.json         extraction markers (written last)
    prepared.json                  what has been prepared (machines per split, ground-truth files)
    index.csv                      the clip index (asd.data.index)

Phase folders are ``train``, ``test``, 2021's ``source_test``/``target_test`` and 2025's ``supplemental``.
Running prepare again for other machines or splits adds them to the same index.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path

import pandas as pd

from asd.config import ConfigError
from asd.data.archives import ArchiveError, Limits, marker_path, unpack
from asd.data.download import fetch_all
from asd.data.groundtruth import load_ground_truth
from asd.data.index import ClipIndexError, index_path, read_rows, write_index
from asd.data.scan import SPLITS, build_index, compare_disk, count_warnings, problems
from asd.data.verify import admit, recheck
from asd.data.years import Remote, Year, get_year
from asd.files import write_text

log = logging.getLogger(__name__)
MANIFEST = "prepared.json"


def _say(msg: str, progress: bool) -> None:
    log.info(msg)
    if progress:
        print(msg, file=sys.stderr, flush=True)


def select(year: Year, split: str = "all", machines: list[str] | None = None) -> dict[str, list[str]]:
    """Machines to prepare per split. Raises ValueError for an unknown split or machine."""
    if split not in ("dev", "eval", "all"):
        raise ConfigError(f"--split must be dev, eval or all, not {split!r}")
    splits = SPLITS if split == "all" else (split,)
    known = set(year.dev_machines) | set(year.eval_machines)
    if machines:
        unknown = [m for m in machines if m not in known]
        if unknown:
            raise ConfigError(f"unknown machine type(s) {', '.join(unknown)} for {year.name}; available: "
                             f"dev {', '.join(year.dev_machines)}; eval {', '.join(year.eval_machines)}")
    out = {s: [m for m in year.machines(s) if not machines or m in machines] for s in splits}
    if not any(out.values()):
        raise ConfigError(f"none of {', '.join(machines or [])} is a {split} machine type of {year.name}")
    return out


def needed_files(year: Year, chosen: dict[str, list[str]]) -> list[Remote]:
    """Archives and ground-truth files that ``chosen`` needs, in the year's order."""
    return [f for f in year.files
            if chosen.get(f.split) and (not f.machine or f.machine in chosen[f.split])]


def prepare_dcase(dataset: str, data_dir: Path, split: str = "all", machines: list[str] | None = None,
                  mirror: str | None = None, archives: Path | None = None, strict: bool = False,
                  progress: bool = True, skip_bad: bool = False, limits: Limits | None = None) -> Path:
    """Download, unpack, verify and index ``dataset`` (e.g. ``'dcase2023'``); returns the path of ``index.csv``.

    Only what ``split`` and ``machines`` need is fetched. Files come from ``archives`` (a local
    folder) when there, else from ``mirror`` (``<mirror>/<file name>``) or the official URLs.
    Every clip is decoded and checked (:func:`asd.data.verify.admit`); ``skip_bad`` indexes the
    others when some are bad. ``limits`` raises the unpacking and clip-length limits.

    Raises:
        ClipIndexError: eval test clips without ground truth or ground truth without clips (named),
            a bad clip (without ``skip_bad``), or, with ``strict``, any count that differs from the
            official numbers or unknown file names.
        DownloadError, ArchiveError: a file cannot be fetched, or an archive is corrupt/unsafe/too big.
    """
    t0 = time.monotonic()
    year = get_year(dataset)
    if not year.files:
        raise ConfigError(f"{dataset} has no archives to download")
    root = Path(data_dir) / dataset
    limits = limits or Limits()
    chosen = select(year, split, machines)
    if chosen.get("eval") and not year.eval_test_published:
        log.warning("%s: the eval test archives and their ground truth are not published; fetching eval train "
                    "only (eval test clips, if you add them, are indexed with label 'unknown')", dataset)
    files = needed_files(year, chosen)
    # An archive already unpacked whose file was deleted afterwards (to save space) is not fetched again.
    gone = {f.name for f in files if f.is_archive and marker_path(f.name, _dest(root, f)).is_file()
            and not (root / "archives" / f.name).is_file() and not (archives and (Path(archives) / f.name).is_file())}
    paths, summary = fetch_all([(f.name, f.url) for f in files if f.name not in gone], root / "archives",
                               mirror=mirror, local_dir=archives, progress=progress)
    _say(f"{dataset}: files: {summary.line()}"
         + (f", {len(gone)} unpacked earlier (archive deleted since)" if gone else ""), progress)
    _unpack_all(year, root, files, paths, gone, limits, progress)
    manifest = _update_manifest(root, chosen, files, paths)
    out, df, warnings = _index_year(year, root, manifest, strict, skip_bad, limits, progress)
    counts = df[df["bad"] == ""].groupby("split").size().to_dict()
    _say(f"{dataset}: index of {sum(counts.values())} clips ({', '.join(f'{k} {v}' for k, v in counts.items())}; "
         f"{df['machine'].nunique()} machine types) written to {out} in {time.monotonic() - t0:.1f} s"
         + (f"; {len(warnings)} warning(s)" if warnings else ""), progress)
    return out


def _index_year(year: Year, root: Path, manifest: dict, strict: bool, skip_bad: bool, limits: Limits,
                progress: bool) -> tuple[Path, pd.DataFrame, list[str]]:
    """Scan, label, check and verify the prepared machines; write the index. Returns (path, rows, warnings)."""
    prepared = {s: set(manifest["machines"].get(s, [])) for s in SPLITS}
    gt = load_ground_truth(year.year, _gt_files(manifest))
    for note in gt.notes:
        _say(f"{year.name}: {note}", progress)
    df, unknown, notes = build_index(year, root, prepared, gt)
    for note in notes:
        _say(f"{year.name}: {note}", progress)
    empty = sorted(f"{s}/{m}" for s in SPLITS for m in prepared[s] if not ((df["split"] == s) & (df["machine"] == m)).any())
    if empty:
        raise ClipIndexError(f"no clip found for {', '.join(empty)} under {root}; its archive holds none in the "
                             "expected layout: delete the archive and its marker under .done/ and re-run prepare")
    warnings = problems(year, df, gt, prepared, unknown, strict)
    df, note = admit(df, root, year.expect(limits.max_clip_seconds), year.channel if year.channels > 1 else None,
                     skip_bad, progress)
    warnings += [note] if note else []
    for w in warnings:
        log.warning("%s", w)
    return write_index(df, root.parent, year.name), df, warnings


def _unpack_all(year: Year, root: Path, files: list[Remote], paths: dict[str, Path], gone: set[str],
                limits: Limits, progress: bool) -> None:
    """Unpack every fetched archive; a corrupted download is moved aside so the next run fetches it again."""
    n_new = 0
    for f in files:
        if not f.is_archive or f.name in gone:
            continue
        try:
            n_new += unpack(paths[f.name], _dest(root, f), progress=progress, top=f.machine or None,
                            limits=limits.resolve(year))
        except ArchiveError as e:
            path = paths[f.name]
            if "corrupted" in str(e) and path.parent == root / "archives":
                bad = path.with_name(path.name + ".corrupt")
                os.replace(path, bad)
                raise ArchiveError(f"{e} [moved to {bad.name}; the next run downloads it again]") from None
            raise
    n_arch = sum(f.is_archive for f in files)
    _say(f"{year.name}: archives: {n_new} extracted, {n_arch - n_new} already extracted", progress)


def _dest(root: Path, f: Remote) -> Path:
    return root / ("dev_data" if f.kind == "dev" else "eval_data") / "raw"


def _update_manifest(root: Path, chosen: dict[str, list[str]], files: list[Remote], paths: dict[str, Path]) -> dict:
    path = root / MANIFEST
    manifest = json.loads(path.read_text()) if path.is_file() else {"machines": {}, "files": {}}
    for s, ms in chosen.items():
        manifest["machines"][s] = sorted(set(manifest["machines"].get(s, [])) | set(ms))
    for f in files:
        if not f.is_archive:
            manifest["files"][f.name] = [f.kind, f.split, f.machine, str(Path(paths[f.name]).resolve())]
    write_text(path, json.dumps(manifest, indent=1))
    return manifest


def _gt_files(manifest: dict) -> dict[str, tuple[str, str, str, Path]]:
    return {name: (k, s, m, Path(p)) for name, (k, s, m, p) in manifest.get("files", {}).items()}


def check_index(dataset: str, data_dir: Path, strict: bool = False, progress: bool = True,
                limits: Limits | None = None) -> list[str]:
    """``asd prepare --check``: verify an existing index against the disk, the audio and the official ground truth.

    Every clip is decoded and checked again (:func:`asd.data.verify.recheck`). Returns warning lines
    (counts differing from the official numbers, clips left out as bad). Raises ClipIndexError when
    clips listed in the index are missing on disk, broken or changed since ``prepare``, eval test
    clips lack ground truth, ground-truth rows lack clips, or (``strict``) any warning.
    """
    year = get_year(dataset)
    root = Path(data_dir) / dataset
    rows = read_rows(index_path(data_dir, dataset))
    missing = [p for p in rows["path"] if not (root / p).is_file()]
    if missing:
        raise ClipIndexError(f"{len(missing)} clip(s) listed in {index_path(data_dir, dataset)} are missing on "
                             f"disk (first: {missing[0]}); re-run `asd prepare --dataset {dataset}` to unpack them "
                             "again (delete the archive's marker under .done/ if it was unpacked before)")
    warnings = recheck(rows, root, year.expect((limits or Limits()).max_clip_seconds),
                       year.channel if year.channels > 1 else None, progress)
    df = rows[rows["bad"] == ""] if "bad" in rows else rows
    mpath = root / MANIFEST
    if not mpath.is_file():  # an index made elsewhere: only counts and labels can be checked
        log.warning("%s has no %s; ground truth cannot be re-checked", root, MANIFEST)
        unknown_eval = df[(df["split"] == "eval") & (df["phase"] == "test") & (df["label"] == "unknown")]
        if len(unknown_eval) and year.eval_test_published:
            raise ClipIndexError(f"{len(unknown_eval)} eval test clip(s) have label 'unknown' (first: "
                                 f"{unknown_eval['file'].iloc[0]}); re-run `asd prepare --dataset {dataset}`")
        prepared = {s: set(df.loc[df["split"] == s, "machine"]) for s in SPLITS}
        warnings += count_warnings(year, df, prepared)
        if strict and warnings:
            raise ClipIndexError(f"--strict: {len(warnings)} problem(s): " + " | ".join(warnings))
        return warnings
    manifest = json.loads(mpath.read_text())
    prepared = {s: set(manifest["machines"].get(s, [])) for s in SPLITS}
    files = _gt_files(manifest)
    lost = [str(p) for _k, _s, _m, p in files.values() if not p.is_file()]
    if lost:
        raise ClipIndexError(f"ground-truth file(s) missing: {', '.join(lost[:3])}; re-run "
                             f"`asd prepare --dataset {dataset}` to fetch them again")
    gt = load_ground_truth(year.year, files)
    disk, _, _ = build_index(year, root, prepared, gt)
    compare_disk(rows, disk, index_path(data_dir, dataset), f"re-run `asd prepare --dataset {dataset}`")
    return warnings + problems(year, df, gt, prepared, {}, strict)
