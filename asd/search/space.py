"""The search space of ``asd search``: read from YAML, checked against the registries, sampled per trial.

The default space is ``asd/search/space.yaml`` (its header documents the format). A space samples
``--set``-style overrides, so the driver (asd.search) never needs to know what a loss or backend is.

Example:
    >>> space = load_space(None)                       # the shipped default
    >>> overrides, switches = sample(trial, space)     # {"loss.name": "adacos", ...}, {"mixup": "on"}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asd.config import Config, ConfigError

DEFAULT_SPACE = Path(__file__).with_name("space.yaml")
KINDS = ("choice", "int", "float")


@dataclass
class Param:
    name: str  # dotted config key, ``recipe``, or a plain switch name
    kind: str  # choice | int | float
    values: list  # choices, or [low, high]
    log: bool = False
    step: float | None = None
    when: dict[str, list] = field(default_factory=dict)
    otherwise: Any = None
    has_otherwise: bool = False

    @property
    def is_switch(self) -> bool:
        return "." not in self.name and self.name != "recipe"


@dataclass
class Space:
    recipe: str | None  # None when ``recipe`` is itself a parameter
    fixed: dict[str, Any]
    params: list[Param]
    source: str  # the YAML text, logged with the study

    def names(self) -> list[str]:
        return [p.name for p in self.params]


def load_space(path: str | Path | None, fixed_keys: set[str] | None = None) -> Space:
    """Read and validate a space file (``None``: the default); params named in ``fixed_keys`` are dropped.

    Raises:
        ConfigError: naming the file, the parameter and what is wrong.
    """
    import yaml

    path = Path(path) if path else DEFAULT_SPACE
    if not path.is_file():
        raise ConfigError(f"search space file '{path}' does not exist")
    text = path.read_text()
    return parse_space(yaml.safe_load(text) or {}, text, str(path), fixed_keys or set())


def parse_space(doc: dict, text: str, where: str, fixed_keys: set[str]) -> Space:
    unknown = set(doc) - {"recipe", "fixed", "params"}
    if unknown:
        raise ConfigError(f"{where}: unknown top-level key(s) {sorted(unknown)}; expected recipe, fixed, params")
    params, seen = [], set()
    for name, spec in (doc.get("params") or {}).items():
        p = _param(name, spec, where, seen)
        seen.add(name)
        if name not in fixed_keys:  # --set fixes a field: it is no longer searched
            params.append(p)
    recipe = doc.get("recipe")
    if recipe is None and "recipe" not in seen:
        raise ConfigError(f"{where}: give `recipe: NAME` or a `recipe` parameter")
    space = Space(recipe, dict(doc.get("fixed") or {}), params, text)
    validate(space, where)
    return space


def _param(name: str, spec: Any, where: str, seen: set[str]) -> Param:
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: parameter {name!r} must be a mapping like {{choice: [a, b]}}, got {spec!r}")
    kinds = [k for k in KINDS if k in spec]
    if len(kinds) != 1:
        raise ConfigError(f"{where}: parameter {name!r} needs exactly one of {', '.join(KINDS)}")
    kind = kinds[0]
    values = spec[kind]
    if not isinstance(values, list) or not values or (kind != "choice" and len(values) != 2):
        raise ConfigError(f"{where}: {name}.{kind} must be a list ({'values' if kind == 'choice' else '[low, high]'})")
    if kind != "choice" and not values[0] < values[1]:
        raise ConfigError(f"{where}: {name}.{kind} needs low < high, got {values}")
    when = spec.get("when") or {}
    for cond, allowed in when.items():
        if cond not in seen:
            raise ConfigError(f"{where}: {name}.when refers to {cond!r}, which is not an earlier parameter")
        if not isinstance(allowed, list):
            raise ConfigError(f"{where}: {name}.when.{cond} must be a list of values")
    extra = set(spec) - {kind, "log", "step", "when", "otherwise"}
    if extra:
        raise ConfigError(f"{where}: parameter {name!r} has unknown field(s) {sorted(extra)}")
    return Param(name, kind, values, bool(spec.get("log", False)), spec.get("step"), dict(when),
                 spec.get("otherwise"), "otherwise" in spec)


def validate(space: Space, where: str = "search space") -> None:
    """Every key is a config field and every named loss/backend/model/recipe is registered."""
    from asd.config.overrides import apply_overrides

    known = set(Config().flat())
    for p in space.params:
        if not p.is_switch and p.name != "recipe" and p.name not in known:
            raise ConfigError(f"{where}: {p.name!r} is not a config key; known keys: {', '.join(sorted(known))}")
    for key in space.fixed:
        if key not in known:
            raise ConfigError(f"{where}: fixed {key!r} is not a config key")
    apply_overrides(Config(), {k: v for k, v in space.fixed.items()})  # type and range errors surface here
    for p in space.params:
        if p.name in known:
            _check_values(p, where)
    registries = {"recipe": _recipes, "loss.name": _losses, "backend.name": _backends, "model.name": _models}
    for key, names in registries.items():
        wanted = set()
        if key == "recipe" and space.recipe:
            wanted.add(space.recipe)
        wanted |= {space.fixed[key]} if key in space.fixed else set()
        wanted |= {v for p in space.params if p.name == key for v in p.values}
        avail = names()
        missing = sorted(str(w) for w in wanted if w not in avail)
        if missing:
            raise ConfigError(f"{where}: {key} {', '.join(repr(m) for m in missing)} not available in this install; "
                              f"available: {', '.join(sorted(avail))}")


def check_recipes(space: Space, sets: dict[str, Any], where: str = "search space") -> None:
    """Every recipe the space can choose loads with its fixed overrides and ``--set`` ``sets``.

    So a pretrained recipe without a base checkpoint (``--set model.checkpoint=PATH``, a fixed value
    or a ``model.checkpoint`` parameter) is refused before the study exists, not in every trial.

    Raises:
        ConfigError: naming the space, the recipe and what load_recipe found wrong.
    """
    from asd.config.recipes import load_recipe

    recipes = [space.recipe] if space.recipe else next(p.values for p in space.params if p.name == "recipe")
    searched = next((p.values for p in space.params if p.name == "model.checkpoint"), None)
    variants = [{"model.checkpoint": c} for c in searched] if searched else [{}]
    for recipe in recipes:
        for variant in variants:
            try:
                load_recipe(recipe, {**space.fixed, **variant, **sets})
            except ConfigError as e:
                raise ConfigError(f"{where}: recipe {recipe}: {e}") from None


def _check_values(p: Param, where: str) -> None:
    """Every value a parameter can take (its choices, or both ends of its range) is allowed for its key."""
    from asd.config.overrides import apply_overrides

    for v in [*p.values, *([p.otherwise] if p.has_otherwise else [])]:
        apply_overrides(Config(), {p.name: v}, where=f"{where}: parameter {p.name} {p.kind} {p.values} can take ")


def _recipes() -> set[str]:
    from asd.config.recipes import RECIPES

    return set(RECIPES)


def _backends() -> set[str]:
    from asd.backends import available

    return set(available())


def _models() -> set[str]:
    from asd.models import available
    from asd.training import TRAINING_FREE

    return set(available()) | set(TRAINING_FREE)


def _losses() -> set[str]:
    """Losses the training code understands: the built-in ``mse``/``none`` plus the loss registry."""
    from asd.losses import available

    return {"mse", "none"} | set(available())


def sample(trial, space: Space) -> tuple[dict[str, Any], dict[str, Any]]:
    """Sample one trial: ``(config overrides incl. recipe, switches)``; inactive params get ``otherwise``."""
    chosen: dict[str, Any] = {}
    for p in space.params:
        active = all(c in chosen and chosen[c] in allowed for c, allowed in p.when.items())
        if active:
            chosen[p.name] = _suggest(trial, p)
        elif p.has_otherwise:
            chosen[p.name] = p.otherwise
    switches = {k: v for k, v in chosen.items() if "." not in k and k != "recipe"}
    overrides = {k: v for k, v in chosen.items() if k not in switches}
    return overrides, switches


def _suggest(trial, p: Param) -> Any:
    if p.kind == "choice":
        return trial.suggest_categorical(p.name, p.values)
    if p.kind == "int":
        return trial.suggest_int(p.name, int(p.values[0]), int(p.values[1]), step=int(p.step or 1), log=p.log)
    return trial.suggest_float(p.name, float(p.values[0]), float(p.values[1]), step=p.step, log=p.log)
