"""Evaluating a trained model on another dataset's classes: distribution shift, cross-dataset, base-to-novel.

Every checkpoint records what it was trained on (``trained_on``: dataset, class names, shots,
seed, class subsample). ``--eval-only --model-dir`` compares that class list with the evaluation
dataset's and finds one of three relations:

``same classes``
    (ImageNet -> ImageNet-V2/-Sketch, Smoke -> SmokeGray): load and evaluate.
``class subset``
    every evaluation class is one of the training classes (ImageNet -> ImageNet-A/-R, whose labels
    map into ImageNet's by ``imagenet_labels``; Smoke -> SmokeSubset by ``smoke_labels``; else by
    unique class name).
``other classes``
    (ImageNet -> Caltech101, base -> new classes).

A trainer whose learned part does not depend on the class set (a visual adapter, a shared prompt
context) is rebuilt on the evaluation dataset's class names in every case: only the text side
changes. A trainer whose weights are one per training class (a linear probe, a class-specific
context) says why through ``transfer_blocker``; it is evaluated over its training classes restricted
to the mapped ones for a class subset, and refused with one line for other classes, rather than
loading its rows into classes they were never trained on.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Dict, List, Optional

from clip_adapter.engine.checkpoint import find_model_file, load_checkpoint
from clip_adapter.errors import CheckpointError, TransferError

log = logging.getLogger(__name__)

SAME = "same classes"
SUBSET = "class subset"
OTHER = "other classes"
UNKNOWN = "unknown"  # a checkpoint that records no class list (e.g. one written elsewhere)
ORIGIN_KEY = "trained_on"


@dataclass(frozen=True)
class Origin:
    """What a checkpoint was trained on (``trained_on`` in its file)."""

    dataset: str
    classnames: List[str]
    subsample: str = "all"
    shots: Optional[int] = None
    seed: Optional[int] = None

    @classmethod
    def from_record(cls, record: Dict) -> "Origin":
        return cls(
            dataset=str(record.get("dataset", "")),
            classnames=[str(c) for c in record.get("classnames", [])],
            subsample=str(record.get("subsample", "all")),
            shots=None if record.get("shots") is None else int(record["shots"]),
            seed=None if record.get("seed") is None else int(record["seed"]),
        )


def origin_record(cfg, classnames: List[str]) -> Dict:
    """The ``trained_on`` entry a trainer stores with every module's weights."""
    return {
        "dataset": cfg.DATASET.NAME,
        "classnames": list(classnames),
        "subsample": cfg.DATASET.SUBSAMPLE_CLASSES,
        "shots": int(cfg.DATASET.NUM_SHOTS),
        "seed": int(cfg.SEED),
    }


@dataclass(frozen=True)
class ClassSpace:
    """Evaluate over the training classes, then keep ``columns`` (one per evaluation label)."""

    classnames: List[str]
    columns: List[int]


@dataclass(frozen=True)
class Transfer:
    relation: str
    origin: Optional[Origin]
    class_space: Optional[ClassSpace] = None

    def record(self, target_classes: int) -> Dict:
        """The ``source`` entry of the evaluation's results.json."""
        o = self.origin
        return {
            "dataset": o.dataset if o else "",
            "subsample": o.subsample if o else "",
            "shots": o.shots if o else None,
            "seed": o.seed if o else None,
            "num_classes": len(o.classnames) if o else None,
            "relation": self.relation,
            "mapped_to_source_classes": self.class_space is not None,
            "target_classes": target_classes,
        }


def read_origin(model_dir: str, epoch: Optional[int] = None) -> Optional[Origin]:
    """``trained_on`` of the checkpoint that ``--model-dir``/``--load-epoch`` select (None when unrecorded)."""
    modules = sorted(d for d in os.listdir(model_dir) if os.path.isdir(os.path.join(model_dir, d))) if os.path.isdir(model_dir) else []
    for module in modules:
        try:
            path = find_model_file(model_dir, module, epoch)
        except CheckpointError:
            continue
        record = load_checkpoint(path).get(ORIGIN_KEY)
        return Origin.from_record(record) if isinstance(record, dict) else None
    return None


def label_map(dataset, origin: Origin) -> Optional[List[int]]:
    """For each of ``dataset``'s labels, its index among ``origin``'s classes; None when some class is not there.

    A dataset that is a class subset of another says so with ``<source>_labels`` (ImageNet-A's
    ``imagenet_labels``), which also tells apart classes that share a name (ImageNet has two
    "missile" and two "sunglasses"); otherwise classes are matched by unique name.
    """
    target = list(dataset.classnames)
    source = origin.classnames
    explicit = getattr(dataset, f"{origin.dataset.lower()}_labels", None) if origin.dataset else None
    if explicit is not None and origin.subsample == "all":
        cols = [int(c) for c in explicit]
        if len(cols) == len(target) and all(0 <= c < len(source) and source[c] == name for c, name in zip(cols, target)):
            return cols
    where: Dict[str, List[int]] = {}
    for i, name in enumerate(source):
        where.setdefault(name, []).append(i)
    if target and all(len(where.get(name, ())) == 1 for name in target):
        return [where[name][0] for name in target]
    return None


def plan_transfer(trainer_cls, cfg, dataset, model_dir: str, epoch: Optional[int] = None) -> Transfer:
    """How to evaluate the model in ``model_dir`` on ``dataset``; TransferError when it cannot be done right."""
    origin = read_origin(model_dir, epoch)
    blocker = trainer_cls.transfer_blocker(cfg)
    target_name = cfg.DATASET.NAME + ("" if cfg.DATASET.SUBSAMPLE_CLASSES == "all" else f" ({cfg.DATASET.SUBSAMPLE_CLASSES} classes)")
    if origin is None:
        if blocker is not None:
            log.warning("The checkpoint in %s records no class list, so it cannot be checked that %s's weights "
                        "were trained on %s's classes", model_dir, trainer_cls.__name__, target_name)
        return Transfer(UNKNOWN, None)
    source_name = origin.dataset + ("" if origin.subsample == "all" else f" ({origin.subsample} classes)")
    target = list(dataset.classnames)
    if origin.classnames == target:
        return Transfer(SAME, origin)
    columns = label_map(dataset, origin)
    relation = SUBSET if columns is not None else OTHER
    if blocker is None:
        log.info("Transfer %s -> %s (%s): %s's learned part does not depend on the classes; the text side is "
                 "rebuilt for %d class names", source_name, target_name, relation, trainer_cls.__name__, len(target))
        return Transfer(relation, origin)
    if columns is not None:
        log.info("Transfer %s -> %s (%s): %s is evaluated over its %d training classes, restricted to the %d mapped ones",
                 source_name, target_name, relation, trainer_cls.__name__, len(origin.classnames), len(columns))
        return Transfer(SUBSET, origin, ClassSpace(list(origin.classnames), columns))
    raise TransferError(
        f"{trainer_cls.__name__} trained on {source_name} (--model-dir {model_dir}) cannot classify {target_name}'s "
        f"{len(target)} classes, which are not among its {len(origin.classnames)} training classes: {blocker}. Evaluate it "
        "on its training classes (or a subset mapped to them), or use a trainer whose learned part does not depend on the classes"
    )

