"""Prompt templates are data: each dataset package ships ``templates.json`` with a ``{}`` slot.

Every trainer gets its prompts through :func:`get_templates`, so a template change is a data edit.
"""
from __future__ import annotations

import json
import os
from functools import lru_cache
from typing import Dict, List

from clip_adapter.errors import ConfigError

ENSEMBLE_KEY = "ImageNetEnsemble"
DEFAULT_TEMPLATE = "a photo of a {}."


@lru_cache(maxsize=None)
def _load(path: str) -> Dict[str, List[str]]:
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    for key, value in data.items():
        if key.startswith("_"):
            continue
        if not (isinstance(value, list) and all(isinstance(t, str) and "{}" in t for t in value)):
            raise ConfigError(f"{path}: templates for {key!r} must be a list of strings with a '{{}}' slot")
    return data


def get_templates(templates_file: str, dataset_key: str, mode: str = "single") -> List[str]:
    """``single``: the dataset's hand-crafted template; ``ensemble``: the ImageNet set CoOp/Tip-Adapter use."""
    table = _load(os.path.abspath(templates_file))
    if mode == "ensemble":
        return list(table[ENSEMBLE_KEY])
    if mode != "single":
        raise ConfigError(f"template mode must be 'single' or 'ensemble', got {mode!r}")
    return list(table.get(dataset_key, [DEFAULT_TEMPLATE]))
