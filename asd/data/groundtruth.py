"""Official evaluation ground truth: eval lists, 2022 domain files, hidden-attribute correspondences.

- ``eval_data_list_<year>.csv`` (official baseline repository; 2022: ASDKit's label-corrected copy):
  header-less; a line with one field starts a machine block, other lines are
  ``<anonymised name>,<true name>[,<0|1>]`` (2020 adds the label, 1 = anomaly).
- 2022 ``ground_truth_<machine>_section_<SS>_test.csv`` from the official 2022 evaluator's
  ``ground_truth_domain/``: ``<anonymised name>,<0|1>`` (1 = target). These override the list's domain,
  which is wrong for about half of the ToyCar/ToyTrain clips.
- 2024/2025 ``attributes_00_{train,test}_correspondence.csv`` (header ``source_file_name,target_file_name``):
  true name with attributes -> released name (``..._noAttribute.wav``, or for 2025 eval test the
  anonymised ``section_00_NNNN.wav``).
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

from asd.data.index import ClipIndexError
from asd.data.names import NameError_, parse_truth


@dataclass(frozen=True)
class Truth:
    """What the organisers published about one eval test clip."""

    label: str
    domain: str
    attributes: list[tuple[str, str]]
    true_name: str
    hidden: bool = False


@dataclass
class GroundTruth:
    """``eval_test[machine][anonymised name]`` and ``resolved[(split, machine)][released name] = true name``."""

    eval_test: dict[str, dict[str, Truth]] = field(default_factory=dict)
    resolved: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _lines(path: Path) -> list[list[str]]:
    text = Path(path).read_text(encoding="utf-8-sig")
    return [[c.strip() for c in row] for row in csv.reader(text.splitlines()) if any(c.strip() for c in row)]


def read_eval_list(path: Path, year: int) -> dict[str, dict[str, Truth]]:
    """Official eval list -> ``{machine: {anonymised name: Truth}}``.

    Raises:
        ClipIndexError: a row before any machine line, or a true name that fits no scheme.
    """
    out: dict[str, dict[str, Truth]] = {}
    machine = None
    for n, row in enumerate(_lines(path), 1):
        row = [c for c in row if c]
        if len(row) == 1:
            machine = row[0]
            out.setdefault(machine, {})
            continue
        if machine is None:
            raise ClipIndexError(f"{path}:{n}: ground-truth row {row} before any machine line; is this an "
                                 "official eval_data_list file?")
        try:
            t = parse_truth(row[1], year)
        except NameError_ as e:
            raise ClipIndexError(f"{path}:{n}: {e}") from None
        label = t.label
        if year == 2020 and len(row) > 2 and row[2] in ("0", "1"):
            label = "anomaly" if row[2] == "1" else "normal"  # the explicit column wins
        out[machine][row[0]] = Truth(label, t.domain, t.attributes, row[1], t.hidden)
    return out


_DOMAIN_FILE = re.compile(r"^ground_truth_(?P<m>.+)_section_(?P<s>\d+)_test\.csv$")


def read_domain_file(path: Path) -> tuple[str, dict[str, str]]:
    """2022 evaluator ``ground_truth_domain`` file -> ``(machine, {anonymised name: domain})``."""
    m = _DOMAIN_FILE.match(Path(path).name)
    if not m:
        raise ClipIndexError(f"{path}: not a ground_truth_<machine>_section_<SS>_test.csv file")
    out = {}
    for n, row in enumerate(_lines(path), 1):
        if len(row) < 2 or row[1] not in ("0", "1"):
            raise ClipIndexError(f"{path}:{n}: expected '<file>,<0|1>', got {row}")
        out[row[0]] = "target" if row[1] == "1" else "source"
    return m["m"], out


def read_correspondence(path: Path) -> dict[str, str]:
    """Hidden-attribute correspondence file -> ``{released name: true name}``."""
    rows = _lines(path)
    if not rows or rows[0][:2] != ["source_file_name", "target_file_name"]:
        raise ClipIndexError(f"{path}: expected header 'source_file_name,target_file_name'")
    return {r[1]: r[0] for r in rows[1:] if len(r) >= 2}


def load_ground_truth(year: int, files: dict[str, tuple[str, str, str, Path]]) -> GroundTruth:
    """Read every ground-truth file of a year.

    Args:
        files: ``{name: (kind, split, machine, path)}`` with kind ``gt_list`` | ``gt_domain`` | ``gt_attributes``.
    """
    gt = GroundTruth()
    for name, (kind, split, machine, path) in sorted(files.items()):
        if kind == "gt_list":
            gt.eval_test.update(read_eval_list(path, year))
        elif kind == "gt_attributes":
            gt.resolved.setdefault((split, machine), {}).update(read_correspondence(path))
    domains = [read_domain_file(p) for k, _s, _m, p in files.values() if k == "gt_domain"]
    changed: dict[str, int] = {}
    for machine, table in domains:
        clips = gt.eval_test.get(machine, {})
        for anon, dom in table.items():
            t = clips.get(anon)
            if t is None:
                continue  # reported by the check as ground truth without list row
            if t.domain != dom:
                changed[machine] = changed.get(machine, 0) + 1
                clips[anon] = Truth(t.label, dom, t.attributes, t.true_name, t.hidden)
    if changed:
        gt.notes.append("eval domains taken from the official evaluator differ from the eval list for "
                        + ", ".join(f"{m}: {n}" for m, n in sorted(changed.items())) + " clip(s)")
    # Attributes hidden in the eval list: resolve through the correspondence files.
    for machine, clips in gt.eval_test.items():
        table = gt.resolved.get(("eval", machine), {})
        if not table:
            continue
        for anon, t in clips.items():
            true = table.get(anon) or (table.get(t.true_name) if t.hidden else None)
            if true:
                full = parse_truth(true, year)
                clips[anon] = Truth(t.label, t.domain, full.attributes, t.true_name, False)
    return gt
