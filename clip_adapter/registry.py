"""Name -> class registries for trainers, datasets and backbone families, as in Dassl, with helpful misses."""
from __future__ import annotations

import difflib
from typing import Callable, Dict, Iterator, Optional, TypeVar

from clip_adapter.config import add_config_node
from clip_adapter.errors import UserError

T = TypeVar("T")


class RegistryError(UserError):
    """An unknown or duplicate name."""


class Registry:
    """Maps names to classes; refuses duplicates so two plugins can never silently shadow each other."""

    def __init__(self, kind: str, on_register: Optional[Callable[[str, type], None]] = None) -> None:
        self.kind = kind
        self._entries: Dict[str, type] = {}
        self._on_register = on_register

    def register(self, obj: type | None = None, name: str | None = None) -> Callable[[T], T] | type:
        """Use as ``@TRAINERS.register()`` or ``TRAINERS.register(cls)``."""

        def _do(cls):
            key = name or cls.__name__
            if key in self._entries and self._entries[key] is not cls:
                raise RegistryError(f"{self.kind} {key!r} is already registered (by {self._entries[key].__module__})")
            if self._on_register is not None and key not in self._entries:
                self._on_register(key, cls)
            self._entries[key] = cls
            return cls

        return _do(obj) if obj is not None else _do

    def get(self, name: str) -> type:
        if name in self._entries:
            return self._entries[name]
        known = sorted(self._entries)
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
        lowered = {k.lower(): k for k in known}
        hint = close[0] if close else lowered.get(name.lower())
        suggestion = f"; did you mean {hint!r}?" if hint else ""
        raise RegistryError(f"unknown {self.kind} {name!r}{suggestion} Known: {', '.join(known)}")

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))


def _add_trainer_config(name: str, cls: type) -> None:
    """A trainer's own config node joins the defaults when it registers (CoOp's ``extend_cfg`` habit)."""
    declare = getattr(cls, "config_defaults", None)
    for path, node in (declare() if callable(declare) else {}).items():
        add_config_node(path, node, owner=f"trainer {name} ({cls.__module__})")


TRAINERS = Registry("trainer", on_register=_add_trainer_config)
DATASETS = Registry("dataset")
# MODEL.BACKBONE.FAMILY -> a clip_adapter.backbones.base.Backbone subclass (openai, open_clip; plugins may add more)
BACKBONES = Registry("backbone family")
