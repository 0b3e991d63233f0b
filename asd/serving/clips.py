"""One request row -> its machine type and a clip at evaluation's length, or an error naming the row.

A row has a ``machine``, an optional ``section`` and exactly one of ``path`` (a WAV file on the
server's disk) or ``audio`` (the WAV file's bytes, base64-encoded as a JSON client sends them; raw
``bytes`` from Python also work). The audio goes through evaluation's own reader: the waveform
store (:class:`asd.data.waves.WaveStore`: :func:`asd.data.audio.read_wav` with its sample-rate and
channel checks, 16-bit quantisation as in the waveform cache) and :func:`asd.data.audio.fix_length`
(tiled, or cropped from sample 0) at the bundle's clip length. A wrong sample rate is refused, not
resampled: evaluation refuses it too, and a resampled clip would not score as the detector was
evaluated. Rows are counted from 0, as in the request's ``data`` list.
"""

from __future__ import annotations

import base64
import binascii
import math
from pathlib import Path

import numpy as np
import pandas as pd

from asd.data.audio import AudioError
from asd.errors import AsdError
from asd.serving.bundle import ServingInfo

SOURCES = ("path", "audio")


class RowError(AsdError):
    """A request row that cannot be scored; the message names the row, what is wrong and what to do."""


def missing(value) -> bool:
    """None, NaN, pandas NA or an empty string: the column has no value in this row."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # arrays and other non-scalars are values
        return False


def row_machine(row: dict, i: int, info: ServingInfo) -> str:
    """The row's machine type, checked against the detector's machines and their sections."""
    machine = row.get("machine")
    if missing(machine):
        raise RowError(f"row {i}: no `machine`; name the clip's machine type ({', '.join(info.machines)})")
    machine = str(machine)
    if machine not in info.thresholds:
        raise RowError(f"row {i}: machine {machine!r} is not one this detector was fitted for "
                       f"({', '.join(info.machines)}); send one of those, or register a detector trained on it")
    _check_section(row.get("section"), i, machine, info.sections.get(machine, []))
    return machine


def _check_section(value, i: int, machine: str, known: list[int]) -> None:
    names = ", ".join(f"{s:02d}" for s in known)
    if missing(value):
        if len(known) > 1:
            raise RowError(f"row {i}: machine {machine!r} has sections {names} in this detector; "
                           "add a `section` column with the clip's section")
        return
    try:
        section = int(float(value)) if not isinstance(value, str) else int(value.strip().removeprefix("section_"))
    except (TypeError, ValueError, OverflowError):
        raise RowError(f"row {i}: section {value!r} is not a section number (e.g. 0 or \"00\")") from None
    if isinstance(value, float) and not math.isclose(value, section):
        raise RowError(f"row {i}: section {value!r} is not a section number (e.g. 0 or \"00\")")
    if section not in known:
        raise RowError(f"row {i}: section {section:02d} of {machine!r} is not among the sections this detector "
                       f"was fitted on ({names})")


def read_clip(row: dict, i: int, info: ServingInfo, tmp: Path) -> np.ndarray:
    """``(info.clip_samples,)`` float32: the row's clip read and tiled/cropped exactly as in evaluation.

    ``tmp``: a folder for the decoded bytes of an ``audio`` row (the WAV reader reads files).
    """
    given = [k for k in SOURCES if not missing(row.get(k))]
    if len(given) != 1:
        what = "both `path` and `audio`" if given else "neither `path` nor `audio`"
        raise RowError(f"row {i}: {what}; give exactly one: `path` (a WAV file on the server's disk) or "
                       "`audio` (the WAV file's bytes, base64-encoded)")
    if given[0] == "path":
        path = Path(str(row["path"])).expanduser()
        if not path.is_file():
            raise RowError(f"row {i}: path {str(path)!r} is not a file on the server's disk; send the clip "
                           "itself as `audio` (base64) when it lives on the client")
        return _decode(path, row, i, info, str(path))
    path = tmp / f"row-{i}.wav"
    path.write_bytes(_audio_bytes(row["audio"], i))
    try:
        return _decode(path, row, i, info, "audio")
    finally:
        path.unlink(missing_ok=True)


def _audio_bytes(value, i: int) -> bytes:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if not isinstance(value, str):
        raise RowError(f"row {i}: `audio` is a {type(value).__name__}; send the WAV file's bytes base64-encoded")
    try:
        return base64.b64decode("".join(value.split()), validate=True)  # line breaks are allowed
    except (binascii.Error, ValueError) as e:
        raise RowError(f"row {i}: `audio` is not valid base64 ({e}); send the WAV file's bytes "
                       "base64-encoded, e.g. `base64 -w0 clip.wav`") from None


def _decode(path: Path, row: dict, i: int, info: ServingInfo, name: str) -> np.ndarray:
    from asd.data.waves import WaveStore

    rows = pd.DataFrame({"abspath": [str(path)], "machine": [str(row["machine"])], "split": ["serve"],
                         "phase": ["serve"]})
    try:
        store = WaveStore(rows, info.sample_rate, info.channel)  # decoded in memory, no cache
    except AudioError as e:
        raise RowError(f"row {i}: {str(e).replace(str(path), name, 1)}") from None
    return store.batch([0], info.clip_samples)[0]
