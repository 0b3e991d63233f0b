"""Resumable HTTP downloads with retries, size checks and atomic completion (standard library only).

A file is fetched into ``<name>.part`` and renamed to ``<name>`` only once its size equals what the
server announced, so a file under its final name is always complete. An interrupted download resumes
from the ``.part`` file with an HTTP ``Range`` request; a server that ignores ``Range`` (answers 200)
restarts the file from zero.
"""

from __future__ import annotations

import http.client
import logging
import os
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from asd.errors import AsdError

log = logging.getLogger(__name__)

RETRIES = 5  # attempts after the first one
BACKOFF_S = 2.0  # wait before retry n: BACKOFF_S * 2**(n-1), capped at 60 s
TIMEOUT_S = 60.0  # socket timeout per read
CHUNK = 1 << 20
USER_AGENT = "asd-toolkit/0.1 (+https://github.com/; urllib)"


class DownloadError(AsdError):
    """A file could not be fetched (not found, or still failing after every retry)."""


class _Retry(Exception):
    """A transient failure: try again (resuming where possible)."""


@dataclass
class FetchSummary:
    downloaded: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    local: list[str] = field(default_factory=list)
    bytes: int = 0
    seconds: float = 0.0
    resumed: int = 0

    def line(self) -> str:
        mb = self.bytes / 1e6
        rate = f", {mb / self.seconds:.1f} MB/s" if self.seconds > 0 and self.bytes else ""
        return (f"{len(self.downloaded)} downloaded ({mb:.1f} MB in {self.seconds:.1f} s{rate}"
                f"{f', {self.resumed} resumed' if self.resumed else ''}), {len(self.present)} already present, "
                f"{len(self.local)} taken from --archives")


def source_url(name: str, url: str, mirror: str | None) -> str:
    """The URL to fetch ``name`` from: ``<mirror>/<name>`` with ``--mirror``, else the official ``url``."""
    return f"{mirror.rstrip('/')}/{name}" if mirror else url


def download(url: str, dest: Path, progress: bool = True, desc: str | None = None,
             retries: int | None = None, backoff_s: float | None = None) -> tuple[int, bool]:
    """Fetch ``url`` to ``dest`` unless ``dest`` exists; returns ``(bytes fetched, resumed)``.

    Retries transient failures (connection errors, timeouts, short reads, HTTP 408/429/5xx) with
    exponential backoff, resuming from ``dest.part`` each time.

    Raises:
        DownloadError: HTTP 4xx (e.g. 404), or still failing after the last retry. The ``.part``
            file is kept so the next run resumes.
    """
    dest = Path(dest)
    if dest.exists():
        return 0, False
    retries = RETRIES if retries is None else retries
    backoff_s = BACKOFF_S if backoff_s is None else backoff_s
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    resumed = part.exists() and part.stat().st_size > 0
    fetched = 0
    last: Exception | None = None
    for attempt in range(retries + 1):
        if attempt:
            wait = min(backoff_s * 2 ** (attempt - 1), 60.0)
            have = part.stat().st_size if part.exists() else 0
            log.warning("%s: %s; retry %d/%d in %.1f s (resuming at %d bytes)", dest.name, last, attempt,
                        retries, wait, have)
            time.sleep(wait)
            resumed = resumed or have > 0
        try:
            fetched += _fetch_once(url, part, progress, desc or dest.name)
            os.replace(part, dest)
            return fetched, resumed
        except _Retry as e:
            last = e
    have = part.stat().st_size if part.exists() else 0
    raise DownloadError(f"could not download {dest.name} from {url} after {retries + 1} attempts ({last}); "
                        f"{have} bytes kept in {part}: run the same command again to resume")


def _copy_body(resp, part: Path, mode: str, have: int, bar) -> int:
    """Append (``ab``) or write (``wb``) the response body to ``part``; returns the bytes received."""
    got = 0
    try:
        with open(part, mode) as f:
            while True:
                try:
                    chunk = resp.read(CHUNK)
                except (OSError, http.client.HTTPException) as e:  # reset, timeout, IncompleteRead
                    raise _Retry(f"connection lost after {have + got} bytes ({type(e).__name__})") from None
                if not chunk:
                    return got
                f.write(chunk)
                got += len(chunk)
                if bar is not None:
                    bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()


def _fetch_once(url: str, part: Path, progress: bool, desc: str) -> int:
    """One request; appends to ``part`` (or restarts it); returns bytes received. Raises _Retry."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:
            total = _total_from_content_range(e.headers.get("Content-Range", ""))
            if total == have:  # the .part file is already complete
                return 0
            part.unlink()
            raise _Retry(f"server refused to resume at byte {have} (HTTP 416); restarting from zero") from None
        if e.code in (408, 425, 429) or e.code >= 500:
            raise _Retry(f"HTTP {e.code} {e.reason}") from None
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}; check the URL (or --mirror: it must serve every "
                            f"file flat as <mirror>/{part.name[:-5]})") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        reason = getattr(e, "reason", e)
        raise _Retry(f"cannot connect: {reason}") from None

    with resp:
        length = resp.headers.get("Content-Length")
        length = int(length) if length is not None else None
        if have and resp.status == 206:
            start, total = _parse_content_range(resp.headers.get("Content-Range", ""))
            if start != have:
                part.unlink()
                raise _Retry(f"server resumed at byte {start}, not {have}; restarting from zero")
            mode = "ab"
        else:
            if have:
                log.info("%s: server ignored the Range request; restarting from zero", part.name[:-5])
            have, mode = 0, "wb"
            total = length
        got = _copy_body(resp, part, mode, have, _bar(progress, desc, total, have))
    size = part.stat().st_size
    if total is None:
        log.warning("%s: the server sent no Content-Length; size %d bytes cannot be verified", part.name[:-5], size)
    elif size != total:
        if size > total:
            part.unlink()
        raise _Retry(f"received {size} of {total} bytes")
    return got


def _parse_content_range(value: str) -> tuple[int, int | None]:
    m = re.match(r"bytes (\d+)-(\d+)/(\d+|\*)", value.strip())
    if not m:
        raise _Retry(f"bad Content-Range {value!r}")
    return int(m[1]), (int(m[3]) if m[3] != "*" else None)


def _total_from_content_range(value: str) -> int | None:
    m = re.search(r"/(\d+)\s*$", value or "")
    return int(m[1]) if m else None


def _bar(progress: bool, desc: str, total: int | None, initial: int):
    if not progress:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                leave=False, mininterval=0.5)


def fetch_all(files: list[tuple[str, str]], out_dir: Path, mirror: str | None = None,
              local_dir: Path | None = None, progress: bool = True) -> tuple[dict[str, Path], FetchSummary]:
    """Make every ``(name, official url)`` available locally; returns ``{name: path}`` and a summary.

    Order of preference: ``local_dir/<name>`` (``--archives``), ``out_dir/<name>`` (downloaded before),
    then a download into ``out_dir`` from ``--mirror`` or the official URL.
    """
    out_dir = Path(out_dir)
    summary = FetchSummary()
    paths: dict[str, Path] = {}
    todo = []
    for name, url in files:
        if local_dir is not None and (Path(local_dir) / name).is_file():
            paths[name] = Path(local_dir) / name
            summary.local.append(name)
        elif (out_dir / name).is_file():
            paths[name] = out_dir / name
            summary.present.append(name)
        else:
            todo.append((name, url))
    if local_dir is not None and todo:
        log.info("%d file(s) not in --archives %s; downloading them: %s", len(todo), local_dir,
                 ", ".join(n for n, _ in todo[:5]) + (" ..." if len(todo) > 5 else ""))
    t0 = time.monotonic()
    for i, (name, url) in enumerate(todo, 1):
        got, resumed = download(source_url(name, url, mirror), out_dir / name, progress=progress,
                                desc=f"[{i}/{len(todo)}] {name}")
        paths[name] = out_dir / name
        summary.downloaded.append(name)
        summary.bytes += got
        summary.resumed += int(resumed)
    summary.seconds = time.monotonic() - t0
    return paths, summary
