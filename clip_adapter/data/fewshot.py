"""Few-shot subsets with CoOp's exact procedure, cached as JSON (never pickle).

CoOp walks the labels in order of first appearance and draws ``random.sample(items, K)`` from
the global ``random`` module (seeded once by the run), first for train with K shots, then for
val with ``min(K, 4)``. Reproducing that order is what makes "seed 1" select CoOp's images.
"""
from __future__ import annotations

import json
import logging
import os
import random
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence

from clip_adapter.data.datum import Datum
from clip_adapter.errors import DatasetError
from clip_adapter.utils import atomic_write_json

log = logging.getLogger(__name__)


def group_by_label(items: Sequence[Datum]) -> "OrderedDict[int, List[Datum]]":
    groups: "OrderedDict[int, List[Datum]]" = OrderedDict()
    for item in items:
        groups.setdefault(item.label, []).append(item)
    return groups


def sample_fewshot(items: Sequence[Datum], num_shots: int, repeat: bool = False, rng=random, what: str = "") -> List[Datum]:
    """K items per label; a class with fewer than K keeps all of them (as CoOp), and says so.

    ``what`` names the draw in that message (which split, and why K is what it is): the val draw
    takes ``min(shots, 4)``, so without it a warning about 4 images reads as one about the shots.
    """
    if num_shots < 1:
        return list(items)
    out: List[Datum] = []
    short = []
    for label, group in group_by_label(items).items():
        if len(group) >= num_shots:
            out.extend(rng.sample(group, num_shots))
        elif repeat:
            out.extend(rng.choices(group, k=num_shots))
        else:
            short.append(f"{group[0].classname or label} ({len(group)})")
            out.extend(group)
    if short:
        log.warning(
            "%s%d class(es) have fewer than %d images, so all of theirs are used (as CoOp does): %s",
            f"{what}: " if what else "", len(short), num_shots, ", ".join(short[:10]) + (" ..." if len(short) > 10 else ""),
        )
    return out


def fewshot_path(split_fewshot_dir: str, num_shots: int, seed: int) -> str:
    return os.path.join(split_fewshot_dir, f"shot_{num_shots}-seed_{seed}.json")


def read_fewshot(path: str, names: Sequence[str], path_prefix: str) -> Dict[str, List[Datum]]:
    """A stored few-shot subset (the ``names`` splits of it); an unreadable file names itself."""
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
        return {name: [Datum(os.path.join(path_prefix, p), int(lab), cname) for p, lab, cname in raw[name]] for name in names}
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, KeyError, ValueError, TypeError) as exc:
        raise DatasetError(f"few-shot file {path} is unreadable ({type(exc).__name__}: {exc}); delete it to resample") from None


def stale_fewshot(subset: Dict[str, List[Datum]], train: Sequence[Datum], val: Optional[Sequence[Datum]]) -> List[str]:
    """Images of a stored subset that the current split does not hold (with that label): it was made from another split."""
    known = {(d.impath, d.label) for d in train} | {(d.impath, d.label) for d in (val or [])}
    return [d.impath for items in subset.values() for d in items if (d.impath, d.label) not in known]


def load_or_sample_fewshot(
    train: List[Datum], val: Optional[List[Datum]], num_shots: int, seed: int, split_fewshot_dir: str, path_prefix: str
) -> Dict[str, List[Datum]]:
    """Return the (train, val) subset for (K, seed), reusing the JSON file when it exists.

    ``val=None`` (ImageNet, whose val is its test set) samples and stores train only, as CoOp does.
    """
    from clip_adapter.data.splits import to_relative

    names = ("train", "val") if val is not None else ("train",)
    path = fewshot_path(split_fewshot_dir, num_shots, seed)
    if os.path.isfile(path):
        subset = read_fewshot(path, names, path_prefix)
        stale = stale_fewshot(subset, train, val)
        if stale:
            raise DatasetError(
                f"few-shot file {path} lists {len(stale)} image(s) not in the current split (e.g. {stale[0]}); "
                "it is stale: delete it to resample"
            )
        log.info("Loading preprocessed few-shot data from %s", path)
        return subset
    log.info("Creating a %d-shot dataset", num_shots)
    subset = {"train": sample_fewshot(train, num_shots, what=f"few-shot train draw ({num_shots} per class from the train split)")}
    if val is not None:
        k_val = min(num_shots, 4)
        subset["val"] = sample_fewshot(
            val, k_val, what=f"few-shot val draw ({k_val} per class from the val split: CoOp draws min(shots, 4) for validation)"
        )
    log.info("Saving preprocessed few-shot data to %s", path)
    atomic_write_json(
        path, {name: [[to_relative(d.impath, path_prefix), d.label, d.classname] for d in items] for name, items in subset.items()}
    )
    return subset
