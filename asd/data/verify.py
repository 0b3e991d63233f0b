"""Clips verified at the door: every clip decoded and checked once at ``prepare``, its content hash recorded.

:func:`verify` decodes every clip of an index (in parallel threads: hashing and decoding release the
GIL) through :func:`asd.data.audio.decode`, which checks the header, sample rate, channels, the frame
count against the file's length, the duration against the year's range and that float samples are
finite. It adds four index columns:

- ``sha256``: the hash of the file's bytes, which keys the waveform cache and the embedding store;
- ``frames``: the clip's length in samples;
- ``stamp``: ``size-mtime_ns-ctime_ns-inode`` of the file as verified;
- ``bad``: empty for a good clip, else why it cannot be used (``prepare --skip-bad`` keeps such rows
  so later stages can count and list what they leave out).

Later stages never trust a path alone: :func:`fresh_hashes` compares each file's stamp with the one
recorded and re-hashes any file whose stamp changed. ``ctime`` is the part that cannot be forged
from user space: ``cp -p``, ``rsync -a`` or re-unzipping keep size and mtime but always set ctime, so
a replaced clip is never served from a cache made for the old one. (A copied or moved data folder
changes every stamp: its clips are re-hashed, found unchanged, and served from the same cache.)
"""

from __future__ import annotations

import hashlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from asd.data.audio import AudioError, Expect, decode

log = logging.getLogger(__name__)
COLUMNS = ["sha256", "frames", "stamp", "bad"]


def stamp(path: str | Path) -> str:
    """``size-mtime_ns-ctime_ns-inode``: changes whenever the file's bytes may have changed."""
    st = os.stat(path)
    return f"{st.st_size}-{st.st_mtime_ns}-{st.st_ctime_ns}-{st.st_ino}"


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@dataclass(frozen=True)
class Checked:
    sha256: str = ""
    frames: int = 0
    stamp: str = ""
    bad: str = ""  # why the clip cannot be used ('' = good)


def check_clip(path: str | Path, expect: Expect, channel: int | None = None) -> Checked:
    """Decode and check one clip; a problem is returned in ``bad`` (without the path), not raised."""
    try:
        st = stamp(path)
        data = Path(path).read_bytes()
        frames = len(decode(data, path, expect, channel))
    except FileNotFoundError:
        return Checked(bad="file not found")
    except OSError as e:
        return Checked(bad=f"cannot read the file ({e.strerror})")
    except AudioError as e:
        return Checked(stamp=st, bad=str(e).removeprefix(f"{path}: "))
    return Checked(hashlib.sha256(data).hexdigest(), frames, st)


def workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def verify(df: pd.DataFrame, root: Path, expect: Expect, channel: int | None = None,
           previous: pd.DataFrame | None = None, progress: bool = True) -> pd.DataFrame:
    """``df`` (index rows, ``path`` relative to ``root``) with :data:`COLUMNS` filled in.

    A good clip of ``previous`` (the index being replaced) whose file still has the recorded stamp
    is not decoded again; every other clip is.
    """
    from tqdm import tqdm

    known = {}
    if previous is not None and set(COLUMNS) <= set(previous.columns):
        good = previous[(previous["bad"] == "") & (previous["sha256"] != "")]
        known = {p: Checked(h, int(f), s) for p, h, f, s in zip(good["path"], good["sha256"], good["frames"], good["stamp"])}
    paths = [root / p for p in df["path"]]
    results: list[Checked | None] = [None] * len(paths)
    todo = []
    for i, (rel, p) in enumerate(zip(df["path"], paths)):
        old = known.get(rel)
        if old is not None and _stamp_or_none(p) == old.stamp:
            results[i] = old
        else:
            todo.append(i)
    with ThreadPoolExecutor(workers()) as pool:
        done = pool.map(lambda i: check_clip(paths[i], expect, channel), todo)
        for i, r in zip(todo, tqdm(done, total=len(todo), desc="verifying clips", unit="clip", leave=False,
                                   disable=not progress or len(todo) < 50)):
            results[i] = r
    out = df.copy()
    for col in COLUMNS:
        out[col] = [getattr(r, col) for r in results]
    return out


def _stamp_or_none(path: Path) -> str | None:
    try:
        return stamp(path)
    except OSError:
        return None


def fresh_hashes(rows: pd.DataFrame) -> list[str]:
    """The content hash of each row's file now (``abspath``): recorded by ``prepare``, or computed again
    for files whose stamp changed since (or for an index made before hashes were recorded)."""
    recorded = "sha256" in rows and "stamp" in rows
    sha = list(rows["sha256"]) if recorded else [""] * len(rows)
    stamps = list(rows["stamp"]) if recorded else [""] * len(rows)
    paths = list(rows["abspath"])
    todo = [i for i, p in enumerate(paths) if not sha[i] or _stamp_or_none(Path(p)) != stamps[i]]
    if not todo:
        return sha
    missing = [paths[i] for i in todo if not Path(paths[i]).is_file()]
    if missing:
        raise AudioError(f"{missing[0]}: file not found ({len(missing)} clip(s) of the index are missing); re-run "
                         "`asd prepare` to restore or re-index them")
    with ThreadPoolExecutor(workers()) as pool:
        new = list(pool.map(lambda i: file_sha256(paths[i]), todo))
    changed = [paths[i] for i, h in zip(todo, new) if sha[i] and h != sha[i]]
    for i, h in zip(todo, new):
        sha[i] = h
    if not recorded:
        log.warning("the clip index has no content hashes (made by an older asd): %d clips hashed now; re-run "
                    "`asd prepare` once to record them", len(todo))
    elif changed:
        log.warning("%d clip(s) changed on disk since `asd prepare` (first: %s); they are decoded and checked afresh; "
                    "re-run `asd prepare` to verify them and record their hashes", len(changed), changed[0])
    else:
        log.info("%d clip(s) re-hashed: their file stamps changed (a copied or touched folder) but not their content; "
                 "`asd prepare` records the new stamps", len(todo))
    return sha


def content_digest(rows: pd.DataFrame, columns: list[str]) -> str:
    """One hash of the rows' ``columns`` and each clip's current content hash: keys what is computed from them."""
    h = hashlib.sha256()
    for values in zip(*(rows[c].astype(str) for c in columns), fresh_hashes(rows)):
        h.update("\x1f".join(values).encode() + b"\x1e")
    return h.hexdigest()


def admit(df: pd.DataFrame, root: Path, expect: Expect, channel: int | None, skip_bad: bool,
          progress: bool = True) -> tuple[pd.DataFrame, str | None]:
    """Verify the clips of a new index for ``root``; returns (rows with :data:`COLUMNS`, a note on bad clips).

    Clips of the index being replaced that kept their stamp are not decoded again. Every bad clip is
    listed in ``<root>/bad_clips.csv`` (path, split, machine, phase, label, reason).

    Raises:
        ClipIndexError: some clip is bad and ``skip_bad`` is False (names the first and the list).
    """
    from asd.data.index import ClipIndexError, index_path, read_rows
    from asd.files import atomic

    old = index_path(root.parent, root.name)
    try:
        previous = read_rows(old) if old.is_file() else None
    except ClipIndexError:
        previous = None
    out = verify(df, root, expect, channel, previous, progress)
    bad = out[out["bad"] != ""]
    listing = root / "bad_clips.csv"
    if bad.empty:
        listing.unlink(missing_ok=True)
        return out, None
    with atomic(listing) as tmp:
        bad[["path", "split", "machine", "phase", "label", "bad"]].rename(columns={"bad": "reason"}).to_csv(tmp, index=False)
    first = f"{bad['path'].iloc[0]}: {bad['bad'].iloc[0]}"
    if not skip_bad:
        raise ClipIndexError(f"{len(bad)} bad clip(s) (first: {first}); all are listed in {listing}. Replace them "
                             "with the original files and re-run, or pass --skip-bad to index the others "
                             "(training and evaluation then leave the bad ones out and say so)")
    return out, (f"--skip-bad: {len(bad)} bad clip(s) left out of training and evaluation (first: {first}); "
                 f"listed in {listing}")


def recheck(rows: pd.DataFrame, root: Path, expect: Expect, channel: int | None = None,
            progress: bool = True) -> list[str]:
    """``prepare --check``: decode every clip of the index (``rows``, bad ones included) again.

    Returns warnings (clips left out as bad, an index without hashes). Raises ClipIndexError for a
    clip that fails its checks now or whose content differs from the hash ``prepare`` recorded.
    """
    from asd.data.index import ClipIndexError

    rows = rows.reset_index(drop=True)
    fresh = verify(rows.drop(columns=[c for c in COLUMNS if c in rows]), root, expect, channel, None, progress)
    was_bad = rows["bad"] != "" if "bad" in rows else pd.Series(False, index=rows.index)
    now_bad = fresh["bad"] != ""
    broken = fresh[now_bad & ~was_bad]
    if len(broken):
        raise ClipIndexError(f"{len(broken)} clip(s) of the index fail verification now (first: {broken['path'].iloc[0]}: "
                             f"{broken['bad'].iloc[0]}); replace them and re-run `asd prepare` (or pass --skip-bad)")
    warnings = []
    if "sha256" in rows:
        changed = fresh[~now_bad & ~was_bad & (fresh["sha256"] != rows["sha256"])]
        if len(changed):
            raise ClipIndexError(f"{len(changed)} clip(s) changed on disk since `asd prepare` (first: "
                                 f"{changed['path'].iloc[0]}); re-run `asd prepare` to verify and re-index them")
    else:
        warnings.append("the index records no content hashes (made by an older asd); re-run `asd prepare` once")
    if was_bad.any():
        fixed = int((was_bad & ~now_bad).sum())
        warnings.append(f"{int(was_bad.sum())} clip(s) are left out as bad (bad_clips.csv)"
                        + (f"; {fixed} of them are fine now: re-run `asd prepare` to index them" if fixed else ""))
    return warnings
