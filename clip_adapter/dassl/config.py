"""The project's config nodes added to a Dassl config, from the one place its defaults live.

``extend_cfg`` walks ``clip_adapter.config.get_cfg_default()`` and adds every node and key that the
Dassl (or CoOp) config lacks, with the project's default; keys already there keep their values, so a
CoOp checkout's own ``TRAINER.COOP`` and Dassl's ``INPUT``/``OPTIM`` defaults stay as they are.
"""
from __future__ import annotations

import copy
from typing import Dict, List, Tuple

from yacs.config import CfgNode as CN

from clip_adapter.config import get_cfg_default
from clip_adapter.errors import ConfigError


def _add_missing(target: CN, source: CN, prefix: str, added: List[str]) -> None:
    for key, value in source.items():
        name = prefix + key
        if key not in target:
            target[key] = copy.deepcopy(value)  # a whole node keeps its flags (RATIO_TABLE: new keys allowed)
            added.append(name)
        elif isinstance(value, CN):
            if not isinstance(target[key], CN):
                raise ConfigError(f"{name} is a value in this config but a node in clip_adapter's defaults; rename the key that shadows it")
            _add_missing(target[key], value, name + ".", added)


def extend_cfg(cfg: CN) -> List[str]:
    """Add what this project's trainers and datasets read (``TRAINER.CLIP_ADAPTER``, ``FEATURES``,
    ``INPUT.PRESET``, ``DATASET.SUBSAMPLE_CLASSES`` ...) to ``cfg`` in place; returns the added keys.

    Call it where CoOp's ``train.py`` extends its config, before the config files are merged.
    """
    if cfg.is_frozen():
        raise ConfigError("extend_cfg needs the config before it is frozen: call it inside extend_cfg(cfg), before cfg.freeze()")
    added: List[str] = []
    _add_missing(cfg, get_cfg_default(), "", added)
    return added


def dassl_cfg() -> CN:
    """Dassl's defaults extended with this project's: the base of ``train.py --engine dassl``."""
    from dassl.config import get_cfg_default as dassl_defaults

    cfg = dassl_defaults()
    extend_cfg(cfg)
    return cfg


def _flatten(node: CN, prefix: str = "") -> Dict[str, object]:
    out: Dict[str, object] = {}
    for key, value in node.items():
        if isinstance(value, CN):
            out.update(_flatten(value, prefix + key + "."))
        else:
            out[prefix + key] = value
    return out


def dassl_defaults_in_effect(cfg: CN) -> List[Tuple[str, object, object]]:
    """(key, Dassl's default, the project's default) for each key where the two defaults differ and
    ``cfg`` still holds Dassl's, i.e. no config file or option chose (say, INPUT.PIXEL_MEAN: ImageNet's
    statistics in Dassl, CLIP's in this project). Logged by ``--engine dassl`` so the difference is seen."""
    from dassl.config import get_cfg_default as dassl_defaults

    theirs, ours, run = _flatten(dassl_defaults()), _flatten(get_cfg_default()), _flatten(cfg)
    return [(k, theirs[k], ours[k]) for k in sorted(theirs) if k in ours and k in run and theirs[k] != ours[k] and run[k] == theirs[k]]
