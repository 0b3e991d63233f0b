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
from collections import Counter, defaultdict
from pathlib import Path

import pandas as pd

from asd.config import ConfigError
from asd.data.archives import ArchiveError, marker_path, unpack
from asd.data.download import fetch_all
from asd.data.groundtruth import GroundTruth, load_ground_truth
from asd.data.index import COLUMNS, ClipIndexError, format_attributes, index_path, read_index, write_index
from asd.data.names import PHASE_FOLDERS, NameError_, parse_clip, parse_truth
from asd.data.years import Remote, Year, expected_counts, get_year

log = logging.getLogger(__name__)
MANIFEST = "prepared.json"
SPLITS = ("dev", "eval")


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
                  progress: bool = True) -> Path:
    """Download, unpack and index ``dataset`` (e.g. ``'dcase2023'``); returns the path of ``index.csv``.

    Only what ``split`` and ``machines`` need is fetched. Files come from ``archives`` (a local
    folder) when there, else from ``mirror`` (``<mirror>/<file name>``) or the official URLs.
    Ends with :func:`check_index`'s checks on the new index.

    Raises:
        ClipIndexError: eval test clips without ground truth or ground truth without clips (named),
            or, with ``strict``, any count that differs from the official numbers or unknown file names.
        DownloadError, ArchiveError: a file cannot be fetched, or an archive is corrupt/unsafe/too big.
    """
    t0 = time.monotonic()
    year = get_year(dataset)
    if not year.files:
        raise ConfigError(f"{dataset} has no archives to download")
    root = Path(data_dir) / dataset
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

    _unpack_all(dataset, root, files, paths, gone, progress)

    manifest = _update_manifest(root, chosen, files, paths)
    prepared = {s: set(manifest["machines"].get(s, [])) for s in SPLITS}
    gt = load_ground_truth(year.year, _gt_files(manifest))
    for note in gt.notes:
        _say(f"{dataset}: {note}", progress)
    df, unknown, notes = build_index(year, root, prepared, gt)
    for note in notes:
        _say(f"{dataset}: {note}", progress)
    warnings = _problems(year, df, gt, prepared, unknown, strict)
    for w in warnings:
        log.warning("%s", w)
    out = write_index(df, data_dir, dataset)
    counts = df.groupby("split").size().to_dict()
    _say(f"{dataset}: index of {len(df)} clips ({', '.join(f'{k} {v}' for k, v in counts.items())}; "
         f"{df['machine'].nunique()} machine types) written to {out} in {time.monotonic() - t0:.1f} s"
         + (f"; {len(warnings)} warning(s)" if warnings else ""), progress)
    return out


def _unpack_all(dataset: str, root: Path, files: list[Remote], paths: dict[str, Path], gone: set[str],
                progress: bool) -> None:
    """Unpack every fetched archive; a corrupted download is moved aside so the next run fetches it again."""
    n_new = 0
    for f in files:
        if not f.is_archive or f.name in gone:
            continue
        try:
            n_new += unpack(paths[f.name], _dest(root, f), progress=progress)
        except ArchiveError as e:
            path = paths[f.name]
            if "corrupted" in str(e) and path.parent == root / "archives":
                bad = path.with_name(path.name + ".corrupt")
                os.replace(path, bad)
                raise ArchiveError(f"{e} [moved to {bad.name}; the next run downloads it again]") from None
            raise
    n_arch = sum(f.is_archive for f in files)
    _say(f"{dataset}: archives: {n_new} extracted, {n_arch - n_new} already extracted", progress)


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
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, path)
    return manifest


def _gt_files(manifest: dict) -> dict[str, tuple[str, str, str, Path]]:
    return {name: (k, s, m, Path(p)) for name, (k, s, m, p) in manifest.get("files", {}).items()}


def build_index(year: Year, root: Path, prepared: dict[str, set[str]], gt: GroundTruth
                ) -> tuple[pd.DataFrame, dict[str, list[str]], list[str]]:
    """Scan the unpacked folders of the prepared machines; returns (index, unknown files by reason, notes).

    Eval test clips get label, domain and attributes from ``gt``; clips released with hidden
    attributes get theirs from the correspondence files. Eval test clips without ground truth get
    label ``unknown`` (an error unless the year publishes none, which the checks decide).
    """
    rows = []
    unknown: dict[str, list[str]] = defaultdict(list)
    not_prepared: Counter = Counter()
    other_files: Counter = Counter()
    hidden_left: Counter = Counter()
    for split in SPLITS:
        base = root / f"{split}_data" / "raw"
        if not base.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))  # markers, staging
            here = Path(dirpath)
            for fn in sorted(filenames):
                rel = (here / fn).relative_to(root).as_posix()
                if not fn.lower().endswith(".wav"):
                    other_files[fn.rsplit(".", 1)[-1] if "." in fn else fn] += 1
                    continue
                folder, machine = here.name, here.parent.name
                if folder not in PHASE_FOLDERS or here.parent == base:
                    unknown["WAV outside <machine>/<train|test|source_test|target_test|supplemental>/"].append(rel)
                    continue
                if machine not in year.machines(split):
                    unknown[f"unknown {split} machine folder"].append(rel)
                    continue
                if machine not in prepared.get(split, ()):
                    not_prepared[f"{split}/{machine}"] += 1
                    continue
                try:
                    row, hidden = _clip_row(year, gt, split, machine, folder, fn, rel)
                except NameError_:
                    unknown[f"unrecognised {year.year} file name"].append(rel)
                    continue
                hidden_left[f"{split}/{machine}"] += hidden
                rows.append(row)
    df = pd.DataFrame(rows, columns=COLUMNS)
    notes = []
    if other_files:
        notes.append("ignored non-WAV files: " + ", ".join(f"{n} .{ext}" for ext, n in sorted(other_files.items())))
    if not_prepared:
        notes.append("not indexed (unpacked but not prepared; add them with --machines): "
                     + ", ".join(f"{k} ({n})" for k, n in sorted(not_prepared.items())))
    if hidden_left:
        notes.append("attributes stay hidden (noAttribute, no published correspondence) for "
                     + ", ".join(f"{k} ({n} clips)" for k, n in sorted(hidden_left.items())))
    return df, dict(unknown), notes


def _clip_row(year: Year, gt: GroundTruth, split: str, machine: str, folder: str, fn: str, rel: str
              ) -> tuple[tuple, bool]:
    """One index row (in :data:`COLUMNS` order) and whether its attributes stay hidden.

    Raises:
        NameError_: ``fn`` fits no naming scheme of the year.
    """
    c = parse_clip(fn, year.year, folder)
    label, domain, attrs, hidden = c.label, c.domain, c.attributes, c.hidden
    if c.anonymous:
        t = gt.eval_test.get(machine, {}).get(fn)
        if t is None:
            label, domain, attrs = "unknown", domain or "source", []
        else:
            label, domain, attrs, hidden = t.label, t.domain, t.attributes, t.hidden
    elif (true := gt.resolved.get((split, machine), {}).get(fn)) is not None:
        attrs, hidden = parse_truth(true, year.year).attributes, False
    return (rel, year.name, year.year, split, machine, c.section, domain, c.phase, label,
            format_attributes(attrs), fn), bool(hidden)


def _problems(year: Year, df: pd.DataFrame, gt: GroundTruth, prepared: dict[str, set[str]],
              unknown: dict[str, list[str]], strict: bool) -> list[str]:
    """Ground-truth errors raise; count mismatches and unknown names are returned (raised with ``strict``)."""
    errors: list[str] = []
    if year.eval_test_published:
        ev = df[(df["split"] == "eval") & (df["phase"] == "test")]
        for machine in sorted(prepared.get("eval", ())):
            mine = ev[ev["machine"] == machine]
            nolabel = sorted(mine.loc[mine["label"] == "unknown", "file"])
            truth = gt.eval_test.get(machine)
            if truth is None:
                if len(mine):
                    errors.append(f"no ground truth for eval machine '{machine}' in the eval list; check "
                                  f"eval_data_list_{year.year}.csv (or --mirror) and re-run prepare")
                continue
            if nolabel:
                errors.append(f"{len(nolabel)} eval test clip(s) of '{machine}' have no ground truth (first: "
                              f"{nolabel[0]}); check eval_data_list_{year.year}.csv (or --mirror) and re-run "
                              "prepare --split eval")
            noclip = sorted(set(truth) - set(mine["file"]))
            if noclip:
                errors.append(f"{len(noclip)} ground-truth row(s) of '{machine}' have no clip (first: {noclip[0]}); "
                              f"the eval test archive of '{machine}' is incomplete: delete it (and its marker under "
                              "eval_data/raw/.done/) and re-run prepare --split eval")
    if errors:
        raise ClipIndexError("; ".join(errors))

    warnings = [f"{len(files)} WAV file(s): {reason} (first: {files[0]}); they are not indexed"
                for reason, files in sorted(unknown.items())]
    warnings += count_warnings(year, df, prepared)
    if strict and warnings:
        raise ClipIndexError(f"--strict: {len(warnings)} problem(s): " + " | ".join(warnings))
    return warnings


def count_warnings(year: Year, df: pd.DataFrame, prepared: dict[str, set[str]]) -> list[str]:
    """Counts per machine x section x domain x phase x label against the official numbers (docs/data.md, official counts)."""
    have = df.groupby(["split", "machine", "section", "domain", "phase", "label"]).size().to_dict()
    out = []
    for split in SPLITS:
        for machine in sorted(prepared.get(split, ())):
            diffs = []
            secs = set(year.sections(split, machine))
            present = {k[2] for k in have if k[0] == split and k[1] == machine}
            for s in sorted(present - secs):
                diffs.append(f"unexpected section {s:02d}")
            for s in sorted(secs):
                exp = expected_counts(year, split, machine, s)
                if not exp:
                    continue
                known = {cell[1] for cell in exp}  # phases with official numbers (2020 train: none)
                cells = set(exp) | {k[3:] for k in have if k[:3] == (split, machine, s) and k[4] in known}
                for cell in sorted(cells):
                    n, e = have.get((split, machine, s, *cell), 0), exp.get(cell, 0)
                    if n != e:
                        diffs.append(f"section {s:02d} {' '.join(cell)}: {n} (official {e})")
            if diffs:
                more = f" ... and {len(diffs) - 4} more" if len(diffs) > 4 else ""
                out.append(f"counts of {split} '{machine}' differ from the official numbers: "
                           + "; ".join(diffs[:4]) + more)
    return out


def check_index(dataset: str, data_dir: Path, strict: bool = False) -> list[str]:
    """``asd prepare --check``: verify an existing index against the disk and the official ground truth.

    Returns warning lines (counts differing from the official numbers). Raises ClipIndexError when
    clips listed in the index are missing on disk, eval test clips lack ground truth, ground-truth rows
    lack clips, or (``strict``) any warning.
    """
    year = get_year(dataset)
    root = Path(data_dir) / dataset
    df = read_index(data_dir, dataset).drop(columns=["abspath"])
    missing = [p for p in df["path"] if not (root / p).is_file()]
    if missing:
        raise ClipIndexError(f"{len(missing)} clip(s) listed in {index_path(data_dir, dataset)} are missing on "
                             f"disk (first: {missing[0]}); re-run `asd prepare --dataset {dataset}` to unpack them "
                             "again (delete the archive's marker under .done/ if it was unpacked before)")
    mpath = root / MANIFEST
    if not mpath.is_file():  # an index made elsewhere: only counts and labels can be checked
        log.warning("%s has no %s; ground truth cannot be re-checked", root, MANIFEST)
        unknown_eval = df[(df["split"] == "eval") & (df["phase"] == "test") & (df["label"] == "unknown")]
        if len(unknown_eval) and year.eval_test_published:
            raise ClipIndexError(f"{len(unknown_eval)} eval test clip(s) have label 'unknown' (first: "
                                 f"{unknown_eval['file'].iloc[0]}); re-run `asd prepare --dataset {dataset}`")
        prepared = {s: set(df.loc[df["split"] == s, "machine"]) for s in SPLITS}
        warnings = count_warnings(year, df, prepared)
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
    return _problems(year, df, gt, prepared, {}, strict)
