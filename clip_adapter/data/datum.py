"""One labelled image: the unit every split, sampler and loader passes around."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Datum:
    """An image path with its integer label and class name (Dassl's Datum, as a dataclass)."""

    impath: str
    label: int
    classname: str = ""
    domain: int = 0
