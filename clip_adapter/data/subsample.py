"""Base/new class halves, identical to CoOp/CoCoOp's ``subsample_classes``."""
from __future__ import annotations

import math
from typing import List, Sequence

from clip_adapter.data.datum import Datum

CHOICES = ("all", "base", "new")


def subsample_classes(*splits: Sequence[Datum], subsample: str = "all") -> List[List[Datum]]:
    """Keep the first ceil(n/2) sorted labels (base) or the rest (new), relabelled from 0.

    The label set comes from the first split (train), as in CoOp, so val and test follow it.
    """
    if subsample not in CHOICES:
        from clip_adapter.errors import ConfigError

        raise ConfigError(f"DATASET.SUBSAMPLE_CLASSES must be one of {', '.join(CHOICES)}, got {subsample!r}")
    if subsample == "all":
        return [list(s) for s in splits]
    labels = sorted({d.label for d in splits[0]})
    m = math.ceil(len(labels) / 2)
    selected = labels[:m] if subsample == "base" else labels[m:]
    relabel = {y: i for i, y in enumerate(selected)}
    return [[Datum(d.impath, relabel[d.label], d.classname, d.domain) for d in s if d.label in relabel] for s in splits]
