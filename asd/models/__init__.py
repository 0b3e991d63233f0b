"""Models by name: ``@register("ae")`` on a class, ``build_model("ae", **args)`` to make one."""

from __future__ import annotations

from asd.registry import Registry

REGISTRY = Registry("model", ("asd.models.autoencoder", "asd.models.cnn"))
register = REGISTRY.register
available = REGISTRY.available


def build_model(name: str, **kwargs):
    return REGISTRY.get(name)(**kwargs)
