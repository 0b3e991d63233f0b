"""Models by name: ``@register("ae")`` on an ``nn.Module`` class, ``build_model("ae", **args)`` to make one.

Each model class says how it is trained with its ``family`` attribute (``asd.training.<family>``):
``"ae"`` for the per-machine autoencoder, ``"classifier"`` (the default) for a shared embedding
model trained on meta-information. Every module of this package is discovered on the first look-up,
so a new model is one file.
"""

from __future__ import annotations

from asd.registry import Registry

REGISTRY = Registry("model", __name__)
register = REGISTRY.register
available = REGISTRY.available
build_model = REGISTRY.build
