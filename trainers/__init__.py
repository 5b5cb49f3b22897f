"""Registered trainers (installed as ``clip_adapter.trainers``); importing this registers them all."""
from clip_adapter.trainers import zeroshot_clip  # noqa: F401
