"""The one folder scanner: unpacked DCASE folders (and the toy set, laid out the same way) -> index rows.

Rules, the same for every dataset: a clip is a ``.wav`` file (any case) in
``<split>_data/raw/<machine>/<phase folder>/``; its name must fit the year's scheme and agree with
its folder (a ``..._test_...`` name in ``train/`` is refused, not indexed as training data); hidden
and temporary files (``.name.<pid>-<id>.tmp``, ``*.tmp.wav``) are never clips. Every WAV that is not
indexed is counted and reported with its reason and a first example (an error with ``--strict``),
never dropped silently.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from pathlib import Path

import pandas as pd

from asd.data.groundtruth import GroundTruth
from asd.data.index import COLUMNS, ClipIndexError, format_attributes
from asd.data.names import PHASE_FOLDERS, FolderMismatch, NameError_, parse_clip, parse_truth
from asd.data.years import Year, expected_counts

SPLITS = ("dev", "eval")


def build_index(year: Year, root: Path, prepared: dict[str, set[str]], gt: GroundTruth
                ) -> tuple[pd.DataFrame, dict[str, list[str]], list[str]]:
    """Scan the unpacked folders of the prepared machines; returns (index, unknown files by reason, notes).

    Eval test clips get label, domain and attributes from ``gt``; clips released with hidden
    attributes get theirs from the correspondence files. Eval test clips without ground truth get
    label ``unknown`` (an error unless the year publishes none, which the checks decide).
    """
    rows = []
    unknown: dict[str, list[str]] = defaultdict(list)
    skipped = {"other": Counter(), "not_prepared": Counter()}
    hidden_left: Counter = Counter()
    for split in SPLITS:
        base = root / f"{split}_data" / "raw"
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))  # markers, staging
            here = Path(dirpath)
            for fn in sorted(filenames):
                rel = (here / fn).relative_to(root).as_posix()
                kind, why = _skip(year, prepared, split, base, here, fn)
                if kind:
                    if kind == "unknown":
                        unknown[why].append(rel)
                    else:
                        skipped[kind][why] += 1
                    continue
                try:
                    row, hidden = _clip_row(year, gt, split, here.parent.name, here.name, fn, rel)
                except FolderMismatch:
                    unknown["name disagrees with its folder (e.g. a test clip in train/)"].append(rel)
                    continue
                except NameError_:
                    unknown[f"unrecognised {year.year} file name"].append(rel)
                    continue
                if hidden:
                    hidden_left[f"{split}/{here.parent.name}"] += 1
                rows.append(row)
    other_files, not_prepared = skipped["other"], skipped["not_prepared"]
    df = pd.DataFrame(rows, columns=COLUMNS)
    notes = []
    if other_files:
        notes.append("ignored non-WAV files: " + ", ".join(f"{n} {ext}" for ext, n in sorted(other_files.items())))
    if not_prepared:
        notes.append("not indexed (unpacked but not prepared; add them with --machines): "
                     + ", ".join(f"{k} ({n})" for k, n in sorted(not_prepared.items())))
    if hidden_left:
        notes.append("attributes stay hidden (noAttribute, no published correspondence) for "
                     + ", ".join(f"{k} ({n} clips)" for k, n in sorted(hidden_left.items())))
    return df, dict(unknown), notes


def _skip(year: Year, prepared: dict[str, set[str]], split: str, base: Path, here: Path, fn: str
          ) -> tuple[str, str]:
    """Why the file ``here/fn`` is not a clip to index: ``("other", kind)`` (not audio, hidden),
    ``("unknown", reason)`` (a WAV that fits no rule), ``("not_prepared", split/machine)``, or ``("", "")``."""
    if fn.startswith("."):  # hidden: markers, or the temporary file of a write in progress
        return "other", "(hidden)"
    if not fn.lower().endswith(".wav"):
        return "other", "." + fn.rsplit(".", 1)[-1] if "." in fn else fn
    if fn[:-4].lower().endswith(".tmp"):
        return "unknown", "temporary file of an interrupted write (*.tmp.wav); delete it"
    folder, machine = here.name, here.parent.name
    if folder not in PHASE_FOLDERS or here.parent == base:
        return "unknown", "WAV outside <machine>/<train|test|source_test|target_test|supplemental>/"
    if machine not in year.machines(split):
        return "unknown", f"unknown {split} machine folder"
    if machine not in prepared.get(split, ()):
        return "not_prepared", f"{split}/{machine}"
    return "", ""


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


def problems(year: Year, df: pd.DataFrame, gt: GroundTruth, prepared: dict[str, set[str]],
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


def compare_disk(index: pd.DataFrame, disk: pd.DataFrame, index_file: Path, fix: str) -> None:
    """The index lists exactly the clips found on disk, with the same facts; else ClipIndexError naming the first
    difference and ``fix`` (the command that rebuilds the index)."""
    a = index.set_index("path")[COLUMNS[1:]].astype(str)
    b = disk.set_index("path")[COLUMNS[1:]].astype(str)
    missing, extra = sorted(set(a.index) - set(b.index)), sorted(set(b.index) - set(a.index))
    if missing:
        raise ClipIndexError(f"{len(missing)} clip(s) listed in {index_file} are not on disk as clips (first: "
                             f"{missing[0]}); {fix}")
    if extra:
        raise ClipIndexError(f"{len(extra)} clip(s) on disk are not in {index_file} (first: {extra[0]}); "
                             f"training would silently use a subset: {fix}")
    common = sorted(a.index)
    differs = (a.loc[common] != b.loc[common]).any(axis=1)
    if differs.any():
        path = differs[differs].index[0]
        cols = [c for c in a.columns if a.at[path, c] != b.at[path, c]]
        raise ClipIndexError(f"{int(differs.sum())} row(s) of {index_file} disagree with the files on disk (first: {path}: "
                             f"{', '.join(f'{c} {a.at[path, c]!r} in the index, {b.at[path, c]!r} on disk' for c in cols)}); {fix}")
