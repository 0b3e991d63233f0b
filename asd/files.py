"""Files shared by processes: an exclusive lock, and temporary names no other process can pick.

Every file ``asd`` writes for others to read (the clip index, manifests, markers, caches, generated
clips, checkpoints) is written under a temporary name unique to this process and renamed into place
(:func:`atomic`), so a reader never sees half a file and two writers never share a temporary file.
The temporary name is hidden (``.<name>.<pid>-<random>.tmp``): folder scanners skip it, and a file
left by a killed process can never be taken for a clip.

:func:`locked` serialises processes that must not overlap (two ``asd prepare`` of one data folder,
two processes creating a fresh MLflow SQLite store) with ``flock``: the kernel releases the lock when
its holder dies, so a SIGKILLed holder never leaves a stale lock behind. POSIX only (Linux, macOS);
on NFS it relies on the server's lock support.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
import uuid
from pathlib import Path

from asd.errors import AsdError


class LockedError(AsdError):
    """Another process holds the lock and the caller asked not to wait."""


def tmp_name(dest: str | Path) -> Path:
    """A hidden temporary path next to ``dest``, unique to this process and call."""
    dest = Path(dest)
    return dest.with_name(f".{dest.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")


def is_tmp(name: str) -> bool:
    """True for names made by :func:`tmp_name` (left behind only by a killed process)."""
    return name.startswith(".") and name.endswith(".tmp")


@contextlib.contextmanager
def atomic(dest: str | Path):
    """Yield a temporary path; on success it replaces ``dest`` atomically, on error it is removed."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(dest)
    try:
        yield tmp
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(dest: str | Path, text: str) -> Path:
    """Write ``text`` to ``dest`` atomically; returns ``dest``."""
    with atomic(dest) as tmp:
        tmp.write_text(text)
    return Path(dest)


def _holder() -> str:
    return json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%H:%M:%S"),
                       "command": " ".join(Path(a).name if i == 0 else a for i, a in enumerate(sys.argv))[:200]})


def _describe(text: str) -> str:
    try:
        h = json.loads(text)
        return f"pid {h['pid']} on {h['host']} since {h['since']} ({h['command']})"
    except (ValueError, KeyError, TypeError):
        return "another process"


@contextlib.contextmanager
def locked(path: str | Path, what: str, wait: bool = True, say=None):
    """Hold an exclusive lock on the file ``path`` (created if missing) for the ``with`` block.

    Args:
        what: what the lock protects, for messages (e.g. ``"data folder data/toy"``).
        wait: when another process holds it, wait (saying so through ``say``) instead of raising.
        say: called with one line when waiting (default: print to stderr).

    Raises:
        LockedError: ``wait`` is False and another process holds the lock (names it).
    """
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(path.read_text(errors="replace"))
            if not wait:
                raise LockedError(f"{what} is in use by {holder}; wait for it to finish, or run again without "
                                  "--no-wait to wait for it") from None
            (say or (lambda m: print(m, file=sys.stderr, flush=True)))(
                f"waiting for {holder} to release {what} ...")
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, _holder().encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
