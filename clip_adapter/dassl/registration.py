"""Register every project trainer and dataset into Dassl's registries, leaving other plugins' names alone.

A CoOp checkout registers its own ``CoOp``, ``ZeroshotCLIP``, ``Caltech101``, ... before importing this
plugin: those names stay theirs (Dassl's registry refuses duplicates, and replacing them would change
what the checkout's scripts run) and are reported as skipped. Registering again, or importing the
plugin twice, finds its own classes already there and changes nothing.
"""
from __future__ import annotations

import logging
from typing import Callable, Dict, List

from dassl.data.datasets import DATASET_REGISTRY
from dassl.engine import TRAINER_REGISTRY

from clip_adapter.dassl.datasets import PLUGIN_MARK, dataset_class
from clip_adapter.dassl.trainers import trainer_class
from clip_adapter.registry import DATASETS, TRAINERS

log = logging.getLogger(__name__)

#: what the last ``register_all`` found: names registered by this plugin, and names skipped because
#: another plugin had registered them first (the log says which)
REPORT: Dict[str, List[str]] = {"trainers": [], "datasets": [], "skipped_trainers": [], "skipped_datasets": []}


def _register(registry, names: List[str], make: Callable[[str], type]) -> tuple:
    ours, skipped = [], []
    known = set(registry.registered_names())
    for name in names:
        if name in known:
            (ours if getattr(registry.get(name), PLUGIN_MARK, False) else skipped).append(name)
            continue
        registry.register(make(name))
        ours.append(name)
    return ours, skipped


def register_all() -> Dict[str, List[str]]:
    """Register every project trainer (as a ``TrainerX``) and dataset; idempotent. Returns ``REPORT``."""
    from clip_adapter.plugins import load_all

    load_all()  # the project's trainers and datasets, and every installed plugin's

    REPORT["trainers"], REPORT["skipped_trainers"] = _register(TRAINER_REGISTRY, TRAINERS.names(), lambda n: trainer_class(TRAINERS.get(n)))
    REPORT["datasets"], REPORT["skipped_datasets"] = _register(DATASET_REGISTRY, DATASETS.names(), lambda n: dataset_class(DATASETS.get(n)))
    log_summary()
    return REPORT


def log_summary() -> None:
    """One line of what is registered, one of what was skipped (logged again when a trainer is built,
    because in a CoOp checkout logging is set up only after the import)."""
    log.info("clip_adapter.dassl: registered into Dassl: trainers %s; %d datasets",
             ", ".join(REPORT["trainers"]) or "none", len(REPORT["datasets"]))
    skipped = REPORT["skipped_trainers"] + REPORT["skipped_datasets"]
    if skipped:
        log.info("clip_adapter.dassl: skipped (already registered in Dassl by another plugin, left as they are): %s",
                 ", ".join(f"trainer {n}" for n in REPORT["skipped_trainers"]) + ("; " if REPORT["skipped_trainers"] and REPORT["skipped_datasets"] else "")
                 + ", ".join(f"dataset {n}" for n in REPORT["skipped_datasets"]))
