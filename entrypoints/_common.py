"""Shared argument helpers for the MLproject entry points (MLflow passes every parameter as text)."""

from __future__ import annotations

import sys
from pathlib import Path

# Entry points run as scripts from the project root: make `import asd` work without installing.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def csv(text: str) -> list[str]:
    return [x.strip() for x in (text or "").split(",") if x.strip()]


def sets(text: str) -> list[str]:
    """``"train.epochs=3 loss.name=adacos"`` or comma/semicolon separated -> ``["train.epochs=3", ...]``."""
    parts = (text or "").replace(";", " ").split()
    return [p for p in parts if "=" in p]
