"""The embedding store shared by search trials: a frontend config is trained and embedded once.

Trials that differ only in the backend (``backend.*``) reuse the :class:`~asd.training.Embeddings` of an
identical frontend, so they cost a backend fit instead of a training run. The key hashes the resolved
config without ``backend.*`` and without settings that cannot change the embeddings (the recipe's name,
the device, the thread count), together with the clips' index rows and each clip's *content* hash
(:func:`asd.data.verify.content_digest`), so a replaced clip or a corrected label can never be served
from an entry computed before.
The files of a pretrained base are in the key too (names, sizes, times).

The seed stays in the key: two seeds give two different frontends, and a search that fixes the seed
(the default, 0) still shares every frontend across backends.

Concurrency: an entry is written into a private temporary folder and renamed into place, which is
atomic on one file system. A folder that exists is therefore complete; two workers computing the same
key both write, the second rename loses and its copy is deleted. Nothing is ever read half-written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

from asd.config import Config
from asd.training import Embeddings

log = logging.getLogger(__name__)
# Keys that do not change what a frontend computes.
NEUTRAL = ("recipe", "train.device", "train.num_threads")


def store_dir(data_dir: str | Path, dataset: str) -> Path:
    """``<data-dir>/<dataset>/cache/embeddings``: next to the data it was computed from."""
    return Path(data_dir) / dataset / "cache" / "embeddings"


def frontend_key(cfg: Config, rows: pd.DataFrame) -> str:
    """A 20-hex-digit key for ``cfg``'s frontend on the clips ``rows`` (index rows with ``abspath``), and on
    the files of its pretrained base, if it has one (a base replaced under the same name gets new entries)."""
    from asd.data.index import COLUMNS
    from asd.data.verify import content_digest

    flat = {k: v for k, v in cfg.flat().items() if not k.startswith("backend.") and k not in NEUTRAL}
    doc = {"config": flat, "clips": content_digest(rows, COLUMNS)}
    if cfg.model.checkpoint:
        doc["base"] = _base_stamp(cfg.model.checkpoint)
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:20]


def _base_stamp(checkpoint: str) -> list:
    """Name, size and modification time of each file of a base checkpoint (a file or a folder)."""
    from asd.errors import AsdError
    from asd.models.pretrained import resolve_checkpoint

    try:
        path = Path(resolve_checkpoint(checkpoint, folders_ok=True))
    except AsdError:  # not found: the trial's own check says so
        return []
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return [[str(f.relative_to(path)), f.stat().st_size, f.stat().st_mtime_ns] for f in files]


def load(root: Path, key: str) -> Embeddings | None:
    """The stored embeddings of ``key``, or None (missing or unreadable: treated as a miss)."""
    d = root / key
    if not d.is_dir():
        return None
    try:
        rows = pd.read_csv(d / "rows.csv", keep_default_na=False,
                           dtype={"attributes": str, "file": str, "path": str, "abspath": str})
        with np.load(d / "arrays.npz") as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        log.warning("embedding store entry %s is unreadable (%s); recomputing", d, e)
        return None
    return Embeddings(rows, arrays["embedding"], arrays.get("recon"), arrays.get("residual"), arrays.get("stats"))


def save(root: Path, key: str, emb: Embeddings) -> Path:
    """Store ``emb`` under ``key`` atomically; returns the entry folder (whoever's copy won)."""
    final = root / key
    if final.is_dir():
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{key}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        emb.rows.to_csv(tmp / "rows.csv", index=False)
        arrays = {"embedding": emb.embedding}
        if emb.recon is not None:
            arrays["recon"] = emb.recon
        for name in ("residual", "stats"):
            if getattr(emb, name) is not None:
                arrays[name] = getattr(emb, name)
        np.savez(tmp / "arrays.npz", **arrays)
        os.rename(tmp, final)  # atomic; fails if another worker got there first
    except OSError:
        if not final.is_dir():
            raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final
