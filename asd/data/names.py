"""File names -> clip facts, for every naming scheme of DCASE Task 2 (docs/data.md, file names).

- 2020: ``{normal|anomaly}_id_{II}_{NNNNNNNN}.wav`` (section = machine ID, one domain: source);
  eval test anonymised as ``id_{II}_{NNNNNNNN}.wav``.
- 2021: ``section_{SS}_{source|target}_{train|test}_{normal|anomaly}_{NNNN}[_attrs].wav`` (test names carry
  no attributes; test clips live in ``source_test/`` and ``target_test/``); eval test anonymised as
  ``section_{SS}_{source|target}_test_{NNNN}.wav`` (the domain stays visible).
- 2022-2026 (and the built-in toy set): ``section_{SS}_{source|target}_{train|test}_{normal|anomaly}_{NNNN}_{k1}_{v1}....wav``;
  eval test anonymised as ``section_{SS}_{NNNN}.wav``. 2024 counts from 1. Hidden attributes are the
  literal suffix ``noAttribute`` (:attr:`ClipName.hidden`); 2025 also has an empty suffix (``_0000_.wav``).
- 2025 ``supplemental/``: ``section_{SS}_{kind}_{NNNN}[_attrs].wav`` (e.g. ``section_00_machine_0001_.wav``).

The extension matches in any case (``.wav``, ``.WAV``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass


class NameError_(ValueError):
    """A file name that fits none of the known schemes."""


class FolderMismatch(NameError_):
    """A clip name that says another phase than the folder it lies in (e.g. a test clip in ``train/``)."""


@dataclass(frozen=True)
class ClipName:
    section: int
    domain: str | None  # None when hidden (anonymised eval test)
    phase: str | None
    label: str | None  # None when hidden
    index: int
    attributes: list[tuple[str, str]]
    hidden: bool = False  # attributes withheld by the organisers (``noAttribute``)

    @property
    def anonymous(self) -> bool:
        return self.label is None


_FULL = re.compile(
    r"^section_(?P<sec>\d+)_(?P<dom>source|target)_(?P<phase>train|test)_(?P<label>normal|anomaly)_(?P<idx>\d+)(?:_(?P<attr>.*))?\.(?i:wav)$"
)
# Ground-truth names of the 2024 eval list for RoboticArm lack the phase token.
_NO_PHASE = re.compile(r"^section_(?P<sec>\d+)_(?P<dom>source|target)_(?P<label>normal|anomaly)_(?P<idx>\d+)(?:_(?P<attr>.*))?\.(?i:wav)$")
_ANON = re.compile(r"^section_(?P<sec>\d+)_(?P<idx>\d+)\.(?i:wav)$")
_ANON_2021 = re.compile(r"^section_(?P<sec>\d+)_(?P<dom>source|target)_test_(?P<idx>\d+)\.(?i:wav)$")
_Y2020 = re.compile(r"^(?P<label>normal|anomaly)_id_(?P<sec>\d+)_(?P<idx>\d+)\.(?i:wav)$")
_ANON_2020 = re.compile(r"^id_(?P<sec>\d+)_(?P<idx>\d+)\.(?i:wav)$")
_SUPPLEMENTAL = re.compile(r"^section_(?P<sec>\d+)_(?P<kind>[A-Za-z]+)_(?P<idx>\d+)(?:_(?P<attr>.*))?\.(?i:wav)$")

#: folder name as distributed -> phase
PHASE_FOLDERS = {"train": "train", "test": "test", "source_test": "test", "target_test": "test",
                 "supplemental": "supplemental"}


def split_attributes(text: str | None) -> list[tuple[str, str]]:
    """``'car_A1_spd_28V'`` -> ``[('car','A1'), ('spd','28V')]``; hidden/empty -> ``[]``.

    An odd number of tokens (e.g. a bare value) keeps the last token under key ``attr``.
    """
    if not text or text == "noAttribute":
        return []
    tok = text.split("_")
    pairs = [(tok[i], tok[i + 1]) for i in range(0, len(tok) - 1, 2)]
    if len(tok) % 2:
        pairs.append(("attr", tok[-1]))
    return pairs


def _full(m: re.Match, phase: str | None = None) -> ClipName:
    return ClipName(section=int(m["sec"]), domain=m["dom"], phase=phase or m["phase"], label=m["label"],
                    index=int(m["idx"]), attributes=split_attributes(m["attr"]), hidden=m["attr"] == "noAttribute")


def parse_name(name: str) -> ClipName:
    """Parse a 2022+ style clip name; raise :class:`NameError_` for anything else."""
    m = _FULL.match(name)
    if m:
        return _full(m)
    m = _ANON.match(name)
    if m:
        return ClipName(section=int(m["sec"]), domain=None, phase="test", label=None, index=int(m["idx"]), attributes=[])
    raise NameError_(f"unrecognised clip file name {name!r} (expected section_SS_<domain>_<phase>_<label>_NNNN[_attrs].wav)")


def parse_clip(name: str, year: int, folder: str) -> ClipName:
    """Parse a distributed file ``name`` found in ``folder`` (``train``, ``test``, ``source_test``, ...).

    The phase comes from the folder; the name must agree with it. Raises :class:`NameError_`.
    """
    phase = PHASE_FOLDERS.get(folder)
    if phase is None:
        raise NameError_(f"unknown folder {folder!r} for {name!r} (expected one of {', '.join(PHASE_FOLDERS)})")
    if phase == "supplemental":
        m = _FULL.match(name)
        if m:
            return _full(m, phase="supplemental")
        m = _SUPPLEMENTAL.match(name)
        if not m:
            raise NameError_(f"unrecognised supplemental file name {name!r} (expected section_SS_<kind>_NNNN[_attrs].wav)")
        attrs = [("kind", m["kind"])] + split_attributes(m["attr"])
        # Supplemental clips are normal-condition recordings (machine alone or background noise) with no domain.
        return ClipName(int(m["sec"]), "source", "supplemental", "normal", int(m["idx"]), attrs)
    if year == 2020:
        m = _Y2020.match(name)
        if m:
            return ClipName(int(m["sec"]), "source", phase, m["label"], int(m["idx"]), [])
        m = _ANON_2020.match(name)
        if m and phase == "test":
            return ClipName(int(m["sec"]), "source", "test", None, int(m["idx"]), [])
        raise NameError_(f"unrecognised 2020 file name {name!r} (expected {{normal|anomaly}}_id_II_NNNNNNNN.wav)")
    m = _FULL.match(name)
    if m:
        if m["phase"] != phase:
            raise FolderMismatch(f"{name!r} says phase {m['phase']!r} but lies in folder {folder!r}")
        return _full(m)
    if phase == "test":
        m = _ANON_2021.match(name) if year == 2021 else _ANON.match(name)
        if m:
            dom = m["dom"] if year == 2021 else None
            return ClipName(int(m["sec"]), dom, "test", None, int(m["idx"]), [])
    raise NameError_(f"unrecognised {year} file name {name!r} in {folder}/ "
                     "(expected section_SS_<domain>_<phase>_<label>_NNNN[_attrs].wav)")


def parse_truth(name: str, year: int) -> ClipName:
    """Parse a ground-truth (true) name from an official eval list: always has label and domain."""
    if year == 2020:
        m = _Y2020.match(name)
        if m:
            return ClipName(int(m["sec"]), "source", "test", m["label"], int(m["idx"]), [])
    else:
        m = _FULL.match(name)
        if m:
            return _full(m)
        m = _NO_PHASE.match(name)
        if m:
            return _full(m, phase="test")
    raise NameError_(f"unrecognised ground-truth name {name!r} for {year}")
