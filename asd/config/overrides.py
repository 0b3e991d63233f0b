"""The one ``--set key=value`` parser, used by the CLI, the MLproject entry points and the search.

A value is coerced to the type of the field it sets (``train.epochs=5`` -> int, ``model.stft_sizes=256,1024``
-> list of int, ``loss.trainable=off`` -> bool). Several overrides may share one string, separated by
spaces or semicolons (``"train.epochs=20 backend.k=3"``), which is how MLflow passes ``-P set=...``.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import re
from typing import Any, Iterable

from asd.config import Config, ConfigError, validate


def known_keys() -> list[str]:
    return sorted(Config().flat())


def split_kv(text: str) -> tuple[str, str]:
    """``"train.epochs=5"`` -> ``("train.epochs", "5")``."""
    if "=" not in text:
        raise ConfigError(f"--set expects key=value, got {text!r} (e.g. --set train.epochs=5)")
    k, v = text.split("=", 1)
    return k.strip(), v.strip()


def parse_sets(values: Iterable[str] | str | None) -> list[str]:
    """Every ``key=value`` in ``values``: strings of one or several overrides split on spaces and ``;``.

    A ``;``-separated piece without ``=`` continues the previous value (a list: ``model.stft_sizes=256;1024``).
    """
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    out: list[str] = []
    for text in values:
        for piece in re.split(r"[\s;]+", text or ""):
            if not piece:
                continue
            if "=" in piece or not out:
                split_kv(piece)  # a piece with no '=' and nothing before it is an error
                out.append(piece)
            else:
                out[-1] += "," + piece
    return out


def cli_overrides(dataset: str | None = None, machines: str | list[str] | None = None, device: str | None = None,
                  seed: int | None = None, sets: Iterable[str] | str | None = None) -> list[str]:
    """The overrides of a command's options followed by its ``--set`` values (which win)."""
    out = [f"data.dataset={dataset}"] if dataset else []
    if machines:
        out.append(f"data.machines={machines if isinstance(machines, str) else ','.join(machines)}")
    if device:
        out.append(f"train.device={device}")
    if seed is not None:
        out.append(f"train.seed={int(seed)}")
    return out + parse_sets(sets)


def coerce(text: Any, current: Any, key: str) -> Any:
    """Turn a ``--set`` string into the type of the field's current value."""
    if not isinstance(text, str):
        return text
    try:
        if isinstance(current, bool):
            low = text.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if isinstance(current, int):
            return int(float(text)) if float(text).is_integer() else int(text)
        if isinstance(current, float):
            return float(text)
        if isinstance(current, list):
            items = [x for x in text.replace(";", ",").split(",") if x.strip()]
            if current and isinstance(current[0], int):
                return [int(x) for x in items]
            return [x.strip() for x in items]
    except (ValueError, OverflowError):  # OverflowError: int("inf")
        raise ConfigError(f"--set {key}={text}: expected a {type(current).__name__}") from None
    return text


def set_value(cfg: Config, key: str, value: Any, strict: bool = True) -> None:
    """Set a dotted field (``loss.margin``) on ``cfg``, coercing strings to the field's type."""
    obj: Any = cfg
    parts = key.split(".")
    for p in parts:
        if not dataclasses.is_dataclass(obj) or p not in {f.name for f in dataclasses.fields(obj)}:
            if strict:
                close = difflib.get_close_matches(key, known_keys(), n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                raise ConfigError(f"unknown config key {key!r}{hint}; known keys: {', '.join(known_keys())}")
            return
        if p != parts[-1]:
            obj = getattr(obj, p)
    setattr(obj, parts[-1], coerce(value, getattr(obj, parts[-1]), key))


def apply_overrides(cfg: Config, overrides: Iterable[str] | dict[str, Any] | None, where: str = "--set ") -> Config:
    """Apply ``["train.epochs=3", ...]`` or ``{"train.epochs": 3}``; returns a new, validated Config.

    Raises:
        ConfigError: an unknown key, a value of the wrong type, or one outside the field's rule.
    """
    cfg = copy.deepcopy(cfg)
    if not overrides:
        return cfg
    items = overrides.items() if isinstance(overrides, dict) else (split_kv(o) for o in parse_sets(overrides))
    for k, v in items:
        set_value(cfg, k, v)
    return validate(cfg, where)
