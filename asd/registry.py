"""Components by name (models, losses, backends): ``@REG.register("knn")`` on a class, ``REG.get("knn")``.

The modules that register are imported on the first look-up, so importing a package stays cheap.
"""

from __future__ import annotations

import importlib


class Registry:
    def __init__(self, kind: str, modules: tuple[str, ...]):
        self.kind = kind
        self.modules = modules
        self._classes: dict[str, type] = {}

    def register(self, name: str):
        def deco(cls):
            self._classes[name] = cls
            cls.registry_name = name
            return cls

        return deco

    def available(self) -> list[str]:
        for mod in self.modules:  # cheap after the first time: modules are cached by Python
            importlib.import_module(mod)
        return sorted(self._classes)

    def get(self, name: str) -> type:
        """The class registered as ``name``; an unknown name lists the available ones."""
        names = self.available()
        if name not in self._classes:
            raise ValueError(f"unknown {self.kind} {name!r}; available: {', '.join(names)}")
        return self._classes[name]
