"""Safe, idempotent extraction of the DCASE zip archives.

An archive is unpacked into a hidden staging folder next to its destination, moved into place file
by file, and only then marked done with ``<dest>/.done/<archive name>.json`` (written last). A second
call with the marker present and the same archive size does nothing. Refused before anything is
written: members with absolute paths, ``..`` components or link/device types; an archive whose
members lie outside the machine's folder or that holds no WAV; one that would unpack to more than
:class:`Limits` allows (a member larger than the year's longest clip, or more in all than the year's
largest archive). A truncated or corrupted archive (bad central directory or CRC) raises
:class:`ArchiveError` and leaves no marker.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import time
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from asd.errors import AsdError
from asd.files import write_text

MARKER_DIR = ".done"
SPACE_MARGIN = 1.05  # extra room asked for on top of the uncompressed size


@dataclass(frozen=True)
class Limits:
    """What ``prepare`` accepts (``None``: the year's default, :class:`asd.data.years.Year`).

    ``max_clip_seconds`` bounds each clip's duration and so each archive member's unpacked size (a
    float32 WAV of that length); ``max_archive_gb`` bounds an archive's total unpacked size.
    """

    max_clip_seconds: float | None = None
    max_archive_gb: float | None = None

    def resolve(self, year) -> tuple[int, int]:
        """``(max bytes per member, max bytes per archive)`` for ``year``."""
        total = int(self.max_archive_gb * 1e9) if self.max_archive_gb else year.max_archive_bytes()
        return year.max_member_bytes(self.max_clip_seconds), total


class ArchiveError(AsdError):
    """An archive is unreadable, unsafe or cannot be unpacked here."""


def marker_path(archive: Path, dest: Path) -> Path:
    return Path(dest) / MARKER_DIR / f"{Path(archive).name}.json"


def is_unpacked(archive: Path, dest: Path) -> bool:
    """True when ``archive`` (same size as when it was unpacked) is already unpacked into ``dest``."""
    m = marker_path(archive, dest)
    if not m.is_file():
        return False
    try:
        return json.loads(m.read_text())["size"] == Path(archive).stat().st_size
    except (ValueError, KeyError, OSError):
        return False


def _member_problem(info: zipfile.ZipInfo) -> str | None:
    name = info.filename
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "absolute path"
    if "\\" in name:
        return "backslash in path"
    if any(p == ".." for p in PurePosixPath(name).parts):
        return "'..' in path"
    fmt = stat.S_IFMT(info.external_attr >> 16)  # Unix file type, 0 when the archiver did not record one
    if fmt and fmt not in (stat.S_IFREG, stat.S_IFDIR):
        return "symbolic link" if fmt == stat.S_IFLNK else "special file"
    return None


def _copy_members(zf: zipfile.ZipFile, infos: list, archive: Path, staging: Path, dest: Path,
                  total: int | None) -> None:
    """Write every member into ``staging`` (a progress bar over ``total`` bytes when given)."""
    shutil.rmtree(staging, ignore_errors=True)
    bar = None
    if total is not None:
        from tqdm import tqdm

        bar = tqdm(total=total, desc=f"unpack {archive.name}", unit="B", unit_scale=True, leave=False,
                   mininterval=0.5)
    try:
        for info in infos:
            target = staging / info.filename
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)  # zipfile checks the CRC at the end
            if bar is not None:
                bar.update(info.file_size)
    except (zipfile.BadZipFile, EOFError, zlib.error, NotImplementedError) as e:
        shutil.rmtree(staging, ignore_errors=True)
        raise ArchiveError(f"{archive} is corrupted ({e}); delete it and run prepare again to download "
                           "it afresh") from None
    except OSError as e:  # disk full, permissions
        shutil.rmtree(staging, ignore_errors=True)
        raise ArchiveError(f"cannot extract {archive.name} into {dest}: {e}") from None
    finally:
        if bar is not None:
            bar.close()


def unpack(archive: Path, dest: Path, progress: bool = True, top: str | None = None,
           limits: tuple[int, int] | None = None) -> bool:
    """Unpack zip ``archive`` into ``dest``; returns False when it was already done.

    Args:
        top: the folder every member must lie in (the machine type of a DCASE archive), or None.
        limits: ``(max bytes per member, max bytes in all)`` unpacked (see :class:`Limits`), or None.

    Raises:
        ArchiveError: the archive is truncated/corrupted (names it and says to delete it), holds an
            unsafe member, no WAV, a member outside ``top``, more than ``limits`` allow, or ``dest``
            lacks the free space its uncompressed size needs. Nothing is marked done then.
    """
    archive, dest = Path(archive), Path(dest)
    if is_unpacked(archive, dest):
        return False
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, EOFError, OSError) as e:
        raise ArchiveError(f"{archive} is not a readable zip archive ({e}); it is probably truncated or "
                           "corrupted: delete it and run prepare again to download it afresh") from None
    with zf:
        infos = zf.infolist()
        _refuse(infos, archive, top, limits)
        need = sum(i.file_size for i in infos)
        dest.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(dest).free
        if need * SPACE_MARGIN > free:
            raise ArchiveError(f"not enough free space to extract {archive.name}: needs {need / 1e9:.2f} GB, "
                               f"{free / 1e9:.2f} GB free under {dest}; free some space or choose another "
                               "--data-dir")
        staging = dest / f".partial-{archive.name}"
        _copy_members(zf, infos, archive, staging, dest, need if progress else None)
    n = _merge(staging, dest)
    shutil.rmtree(staging, ignore_errors=True)
    write_text(marker_path(archive, dest), json.dumps({"archive": archive.name, "size": archive.stat().st_size,
                                                       "files": n, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}))
    return True


def _refuse(infos: list, archive: Path, top: str | None, limits: tuple[int, int] | None) -> None:
    """Raise before anything is written: unsafe members, a foreign layout, no WAV, or too much to unpack."""
    bad = [(i.filename, p) for i in infos if (p := _member_problem(i))]
    if bad:
        raise ArchiveError(f"{archive}: refusing to extract {len(bad)} unsafe member(s) (first: "
                           f"{bad[0][0]!r}: {bad[0][1]}); the archive is not a genuine DCASE archive")
    files = [i for i in infos if not i.is_dir()]
    if top:
        outside = [i.filename for i in files if PurePosixPath(i.filename).parts[0] != top]
        if outside:
            raise ArchiveError(f"{archive}: {len(outside)} member(s) outside {top}/ (first: {outside[0]!r}); this is "
                               f"not the DCASE archive of {top} (expected {top}/<train|test|...>/*.wav): delete it "
                               "and fetch the original")
    if not any(i.filename.lower().endswith(".wav") for i in files):
        raise ArchiveError(f"{archive}: holds no WAV clip ({len(files)} other file(s)); delete it and fetch the "
                           "original archive")
    if limits:
        member, total = limits
        big = max(files, key=lambda i: i.file_size)
        if big.file_size > member:
            raise ArchiveError(f"{archive}: member {big.filename!r} unpacks to {_size(big.file_size)}, more than "
                               f"the {_size(member)} a clip of this year can take; refusing to unpack it (raise "
                               "the limit with --max-clip-seconds if the clip is genuine)")
        need = sum(i.file_size for i in files)
        if need > total:
            raise ArchiveError(f"{archive}: unpacks to {_size(need)}, more than the {_size(total)} an archive of "
                               "this year can hold; refusing to unpack it (raise the limit with --max-archive-gb "
                               "if the archive is genuine)")


def _size(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def _merge(staging: Path, dest: Path) -> int:
    """Move every file of ``staging`` to the same relative place under ``dest``; returns the count."""
    n = 0
    for root, _dirs, files in os.walk(staging):
        rel = Path(root).relative_to(staging)
        (dest / rel).mkdir(parents=True, exist_ok=True)
        for f in files:
            os.replace(Path(root) / f, dest / rel / f)
            n += 1
    return n
