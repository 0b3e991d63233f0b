"""Backends: turn embeddings into anomaly scores, scikit-learn/PyOD style (:mod:`asd.backends.base`).

``build_backend(name, **backend_section)`` makes one by name. Every module of this package is
discovered on the first look-up, so a new backend is one file with its ``@register`` line.
"""

from __future__ import annotations

from asd.registry import Registry

REGISTRY = Registry("backend", __name__)
register = REGISTRY.register
available = REGISTRY.available
backend_class = REGISTRY.get
build_backend = REGISTRY.build
