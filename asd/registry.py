"""Components by name (models, losses, backends): ``@REGISTRY.register("knn")`` on a class,
``REGISTRY.get("knn")`` for the class, ``REGISTRY.build("knn", **section)`` for an instance.

A registry discovers its components: every module of its package is imported on the first look-up,
so a new component is one new file with its ``@register`` line and nothing else to edit. Importing
the package itself stays cheap (nothing is imported until a name is looked up).
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from typing import Any

from asd.errors import AsdError


class UnknownComponentError(AsdError, KeyError):
    """A component name that is not registered; the message lists the available ones."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def init_params(cls: type) -> list[str]:
    """The named constructor parameters of ``cls`` and of the classes it extends, in MRO order."""
    names: list[str] = []
    for klass in cls.__mro__[:-1]:  # not object's
        init = vars(klass).get("__init__")
        if init is not None:
            names += [n for n, p in inspect.signature(init).parameters.items()
                      if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    return list(dict.fromkeys(names))


def accepted_kwargs(cls: type, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The items of ``kwargs`` that ``cls``'s constructor (or one it passes them on to) takes by name."""
    names = set(init_params(cls))
    return {k: v for k, v in kwargs.items() if k in names}


class Registry:
    """Named classes of one kind, discovered from the modules of ``package``."""

    def __init__(self, kind: str, package: str):
        self.kind = kind
        self.package = package
        self._classes: dict[str, type] = {}
        self._discovered = False

    def register(self, name: str):
        """Class decorator: ``@REGISTRY.register("knn")``; the class gets ``registry_name``."""

        def deco(cls):
            self._classes[name] = cls
            cls.registry_name = name
            return cls

        return deco

    def _discover(self) -> None:
        if self._discovered:
            return
        pkg = importlib.import_module(self.package)
        for info in pkgutil.iter_modules(pkg.__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{self.package}.{info.name}")
        self._discovered = True

    def available(self) -> list[str]:
        self._discover()
        return sorted(self._classes)

    def get(self, name: str) -> type:
        """The class registered as ``name``; an unknown name lists the available ones."""
        names = self.available()
        if name not in self._classes:
            import difflib

            close = difflib.get_close_matches(str(name), names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UnknownComponentError(f"unknown {self.kind} {name!r}{hint}; available: {', '.join(names)}")
        return self._classes[name]

    def build(self, name: str, /, *args, **kwargs):
        """An instance of ``name``; keyword arguments its constructor does not take are dropped.

        So one config section (e.g. every ``backend.*`` field) can be passed whole to any component.
        """
        cls = self.get(name)
        return cls(*args, **accepted_kwargs(cls, kwargs))
