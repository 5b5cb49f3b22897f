"""Build the configured dataset through the registry and describe it in the log."""
from __future__ import annotations

import logging

from clip_adapter.registry import DATASETS

log = logging.getLogger(__name__)


class DataManager:
    """Holds the dataset object; trainers decide how its items become tensors (cache or loader)."""

    def __init__(self, cfg) -> None:
        cls = DATASETS.get(cfg.DATASET.NAME)
        self.dataset = cls(cfg)
        d = self.dataset
        log.info(
            "Dataset %s: %d classes | train %d | val %d | test %d | shots %s | classes %s",
            cfg.DATASET.NAME,
            d.num_classes,
            len(d.train_x),
            len(d.val),
            len(d.test),
            cfg.DATASET.NUM_SHOTS,
            cfg.DATASET.SUBSAMPLE_CLASSES,
        )

    @property
    def num_classes(self) -> int:
        return self.dataset.num_classes

    @property
    def classnames(self):
        return self.dataset.classnames
