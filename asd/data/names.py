"""File names -> clip facts, for the naming schemes of DCASE Task 2 (SPEC.md §1.3).

2022-2026 (and the built-in toy set):
``section_{SS}_{source|target}_{train|test}_{normal|anomaly}_{NNNN}_{k1}_{v1}_{k2}_{v2}....wav``;
eval test clips are anonymised as ``section_{SS}_{NNNN}.wav``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


class NameError_(ValueError):
    """A file name that fits none of the known schemes."""


@dataclass(frozen=True)
class ClipName:
    section: int
    domain: str | None  # None when hidden (anonymised eval test)
    phase: str | None
    label: str | None  # None when hidden
    index: int
    attributes: list[tuple[str, str]]


_FULL = re.compile(
    r"^section_(?P<sec>\d+)_(?P<dom>source|target)_(?P<phase>train|test)_(?P<label>normal|anomaly)_(?P<idx>\d+)(?:_(?P<attr>.*))?\.wav$"
)
_ANON = re.compile(r"^section_(?P<sec>\d+)_(?P<idx>\d+)\.wav$")


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


def parse_name(name: str) -> ClipName:
    """Parse a 2022+ style clip name; raise :class:`NameError_` for anything else."""
    m = _FULL.match(name)
    if m:
        return ClipName(
            section=int(m["sec"]),
            domain=m["dom"],
            phase=m["phase"],
            label=m["label"],
            index=int(m["idx"]),
            attributes=split_attributes(m["attr"]),
        )
    m = _ANON.match(name)
    if m:
        return ClipName(section=int(m["sec"]), domain=None, phase="test", label=None, index=int(m["idx"]), attributes=[])
    raise NameError_(f"unrecognised clip file name {name!r} (expected section_SS_<domain>_<phase>_<label>_NNNN[_attrs].wav)")
