"""``Smoke``: a synthetic dataset generated on first use, so the whole pipeline runs offline.

Ten classes of procedurally drawn images (a class colour and shape plus per-image noise), laid
out like a real dataset (``images/<split>/<class>/*.png``) and read through the same split-file
machinery. Accuracies on it measure nothing but the plumbing.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from typing import Callable, Dict, List

import numpy as np
from filelock import FileLock
from PIL import Image, ImageDraw

from clip_adapter.data.datum import Datum
from clip_adapter.data.dataset_base import DatasetBase
from clip_adapter.registry import DATASETS

CLASSES = ["apple", "boat", "cat", "daisy", "eagle", "fern", "guitar", "harbor", "igloo", "jellyfish"]
PER_SPLIT = {"train": 20, "val": 6, "test": 10}
SIZE = 48
GENERATOR_VERSION = 1


def _draw(label: int, index: int, seed: int) -> Image.Image:
    rng = np.random.RandomState(seed)
    hue = np.array([(label * 97) % 256, (label * 53 + 80) % 256, (label * 29 + 160) % 256], dtype=np.float32)
    base = hue + rng.normal(0, 18, size=(SIZE, SIZE, 3))
    img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    x0, y0 = rng.randint(2, SIZE // 2, size=2)
    w = rng.randint(SIZE // 4, SIZE // 2)
    fill = tuple(int(255 - c) for c in hue)
    if label % 3 == 0:
        draw.ellipse([x0, y0, x0 + w, y0 + w], fill=fill)
    elif label % 3 == 1:
        draw.rectangle([x0, y0, x0 + w, y0 + w // 2 + 2], fill=fill)
    else:
        draw.polygon([(x0, y0 + w), (x0 + w // 2, y0), (x0 + w, y0 + w)], fill=fill)
    return img


def write_once(folder: str, fill: Callable[[str], None]) -> None:
    """Create ``folder`` once, atomically: ``fill(tmp)`` writes into a temporary sibling that is
    renamed to ``folder`` when complete, so a crash never leaves a half-written dataset behind."""
    if os.path.isdir(folder):
        return
    parent = os.path.dirname(folder)
    os.makedirs(parent, exist_ok=True)
    with FileLock(folder + ".lock"):
        if os.path.isdir(folder):
            return
        tmp = tempfile.mkdtemp(prefix=".tmp-", dir=parent)
        try:
            fill(tmp)
            os.replace(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def generate(folder: str, classes: List[str] = CLASSES, seed: int = 0) -> None:
    """Write the images once, atomically (see ``write_once``)."""

    def fill(tmp: str) -> None:
        for split, count in PER_SPLIT.items():
            for label, name in enumerate(classes):
                out = os.path.join(tmp, "images", split, name)
                os.makedirs(out)
                for i in range(count):
                    s = (seed * 1_000_003 + GENERATOR_VERSION * 7919 + label * 1009 + i * 13 + len(split)) % (2**31)
                    _draw(label, i, s).save(os.path.join(out, f"{name}_{i:03d}.png"))

    write_once(folder, fill)


def split_from_class_folders(image_dir: str, classes: List[str]) -> Dict[str, List[Datum]]:
    out: Dict[str, List[Datum]] = {}
    for split in PER_SPLIT:
        items = []
        for label, name in enumerate(classes):
            folder = os.path.join(image_dir, split, name)
            for fname in sorted(os.listdir(folder)):
                items.append(Datum(os.path.join(folder, fname), label, name))
        out[split] = items
    return out


@DATASETS.register()
class Smoke(DatasetBase):
    dataset_dir = "smoke"
    image_dir = "images"
    split_file = ""  # not a CoOp dataset: the split is built here (split_built_Smoke.json)
    split_procedure = "the generated images/<split>/<class> folders (no random draw)"
    classes = CLASSES
    seed = 0

    def prepare(self) -> None:
        generate(self.dataset_dir, self.classes, self.seed)

    def build_split(self) -> Dict[str, List[Datum]]:
        return split_from_class_folders(self.image_dir, self.classes)
