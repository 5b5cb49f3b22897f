"""Backbones: frozen vision-language models behind one seam (``base.Backbone``), one file per family.

``MODEL.BACKBONE.FAMILY`` picks the family from ``clip_adapter.registry.BACKBONES``: ``openai``
(OpenAI's CLIP through the ``clip`` package, the default) and ``open_clip`` (LAION, DataComp, SigLIP,
...); plugins may register more. ``load_backbone(spec)`` is the one way a model is loaded.
Importing this package registers the built-in families without importing torch or the libraries.
"""
from __future__ import annotations

from clip_adapter.backbones.base import (  # noqa: F401
    Backbone,
    BackboneIdentity,
    BackboneSpec,
    Preprocess,
    PromptTooLong,
    as_backbone,
)
from clip_adapter.registry import BACKBONES

_BUILT_IN = {"openai": "clip_adapter.backbones.openai", "open_clip": "clip_adapter.backbones.open_clip"}


def family_of(spec: BackboneSpec) -> type:
    """The registered ``Backbone`` class of ``spec.family`` (the built-in families are imported on first use)."""
    if spec.family not in BACKBONES:
        import importlib

        for module in [_BUILT_IN[spec.family]] if spec.family in _BUILT_IN else _BUILT_IN.values():
            importlib.import_module(module)
    return BACKBONES.get(spec.family)


def load_backbone(spec: BackboneSpec, device="cpu", precision: str = "fp32") -> Backbone:
    """Load ``spec``'s weights, frozen and in eval mode, on ``device`` (``precision`` fp16: CUDA only)."""
    return family_of(spec).load(spec, device, precision)


def register_built_in() -> None:
    """Import every built-in family (so ``BACKBONES`` lists them all, e.g. for error messages and docs)."""
    import importlib

    for module in _BUILT_IN.values():
        importlib.import_module(module)
