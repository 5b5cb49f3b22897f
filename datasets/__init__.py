"""Registered datasets (installed as ``clip_adapter.datasets``); importing this registers them all."""
from clip_adapter.datasets import smoke  # noqa: F401
