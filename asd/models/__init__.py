"""Models by name: ``@register("ae")`` on a class, ``build_model("ae", **args)`` to make one."""

from __future__ import annotations

import importlib

_REGISTRY: dict[str, type] = {}
# Modules that register models; imported on first use so `import asd.models` stays cheap.
_MODULES = ("asd.models.autoencoder", "asd.models.cnn")


def register(name: str):
    def deco(cls):
        _REGISTRY[name] = cls
        cls.registry_name = name
        return cls

    return deco


def _load() -> None:
    for mod in _MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod:
                raise


def available() -> list[str]:
    _load()
    return sorted(_REGISTRY)


def build_model(name: str, **kwargs):
    _load()
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name](**kwargs)
