"""Models by name: ``@register("ae")`` on a class, ``build_model("ae", **args)`` to make one."""

from __future__ import annotations

from asd.registry import Registry

REGISTRY = Registry("model", ("asd.models.autoencoder", "asd.models.cnn"))
register = REGISTRY.register
available = REGISTRY.available


def build_model(name: str, **kwargs):
    return REGISTRY.get(name)(**kwargs)


# How a model is trained: one autoencoder per machine type ("ae"), nothing to learn ("none"), or one
# shared classifier for every machine type ("classifier", the default). Kept here, away from torch,
# so that recording a training-free run does not pay for importing it.
FAMILIES = {"ae": "ae", "raw_spec": "none"}


def family_of(model_name: str) -> str:
    return FAMILIES.get(model_name, "classifier")
