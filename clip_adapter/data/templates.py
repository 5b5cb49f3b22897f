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
# "single": the dataset's hand-crafted template(s). "ensemble": ImageNet's seven selected templates
# alone (Tip-Adapter's ImageNet prompts). "coop_ensemble": CoOp's ZeroshotCLIP2, those seven plus
# the dataset's own template for every dataset but ImageNet (CoOp's trainers/zsclip.py).
MODES = ("single", "ensemble", "coop_ensemble")


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
    """The prompts of ``mode`` (see MODES) for the dataset whose key in ``templates_file`` is ``dataset_key``."""
    table = _load(os.path.abspath(templates_file))
    if mode not in MODES:
        raise ConfigError(f"template mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "ensemble":
        return list(table[ENSEMBLE_KEY])
    own = list(table.get(dataset_key, [DEFAULT_TEMPLATE]))
    return coop_ensemble(table[ENSEMBLE_KEY], own, dataset_key) if mode == "coop_ensemble" else own


def coop_ensemble(imagenet_seven: List[str], own: List[str], dataset_name: str) -> List[str]:
    """CoOp's ZeroshotCLIP2 prompts: ImageNet's seven, then the dataset's own unless it is ImageNet.

    CoOp appends its one CUSTOM_TEMPLATES entry for every DATASET.NAME other than "ImageNet", the
    ImageNet variants (V2, Sketch, A, R) included, so those get eight prompts and ImageNet seven.
    A custom dataset with several templates gets all of them after the seven.
    """
    return list(imagenet_seven) + ([] if dataset_name == "ImageNet" else list(own))
