"""Offline stand-ins for the transfer experiments' targets, so that they run without data or GPU.

Distribution shift (as ImageNet -> ImageNet-V2/-Sketch/-A/-R): test-only datasets whose images are
``Smoke``'s own test images rendered differently. Three keep Smoke's ten classes (``SmokeGray``,
``SmokeInvert``, ``SmokeBlur``); ``SmokeSubset`` keeps five of them, relabelled 0..4, and maps each
label back to Smoke's (``smoke_labels``), as ImageNet-A/-R map their 200 classes into ImageNet's 1000
(``imagenet_labels``). Cross-dataset transfer (as ImageNet -> Caltech101, ...): ``SmokeOther``, a
complete dataset drawn by the same generator with ten other class names.

Everything is generated on first use under DATASET.ROOT (Smoke first, when it is not there yet),
atomically, and read through the same split-file machinery as the real datasets.
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence

from PIL import Image, ImageFilter, ImageOps

from clip_adapter.data.dataset_base import DatasetBase
from clip_adapter.data.datum import Datum
from clip_adapter.datasets.smoke import Smoke, generate, write_once
from clip_adapter.registry import DATASETS

OTHER_CLASSES = ["kite", "lantern", "mushroom", "necklace", "owl", "pumpkin", "quilt", "rocket", "sailboat", "teapot"]


@DATASETS.register()
class SmokeOther(Smoke):
    """Ten classes Smoke does not have, other images (another generator seed): a cross-dataset target."""

    dataset_dir = "smoke_other"
    classes = OTHER_CLASSES
    seed = 1


class SmokeShifted(DatasetBase):
    """Smoke's test images, re-rendered by ``render``; ``keep`` (Smoke labels) selects a class subset.

    Subclasses set ``dataset_dir``, ``render`` and optionally ``keep``.
    """

    test_only = True
    template_key = "Smoke"  # the same classes, so the same prompt
    split_procedure = "Smoke's test images re-rendered, listed per class (no random draw)"
    image_dir = "images"
    keep: Optional[Sequence[int]] = None  # None: all of Smoke's classes, in Smoke's order

    @staticmethod
    def render(img: Image.Image) -> Image.Image:  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def kept_labels(cls) -> List[int]:
        return list(range(len(Smoke.classes))) if cls.keep is None else list(cls.keep)

    @property
    def smoke_labels(self) -> List[int]:
        """Label i of this dataset is Smoke's label ``smoke_labels[i]`` (see clip_adapter.engine.transfer)."""
        return self.kept_labels()

    def prepare(self) -> None:
        source = os.path.join(self.root, Smoke.dataset_dir)
        generate(source, Smoke.classes, Smoke.seed)
        render = type(self).render
        names = [Smoke.classes[i] for i in self.kept_labels()]

        def fill(tmp: str) -> None:
            for name in names:
                src = os.path.join(source, "images", "test", name)
                out = os.path.join(tmp, "images", "test", name)
                os.makedirs(out)
                for fname in sorted(os.listdir(src)):
                    with Image.open(os.path.join(src, fname)) as img:
                        render(img.convert("RGB")).convert("RGB").save(os.path.join(out, fname))

        write_once(self.dataset_dir, fill)

    def build_split(self) -> Dict[str, List[Datum]]:
        items = []
        for label, smoke_label in enumerate(self.kept_labels()):
            name = Smoke.classes[smoke_label]
            folder = os.path.join(self.image_dir, "test", name)
            items += [Datum(os.path.join(folder, f), label, name) for f in sorted(os.listdir(folder))]
        return {"train": [], "val": [], "test": items}


@DATASETS.register()
class SmokeGray(SmokeShifted):
    """Smoke's test set in greyscale (all ten classes)."""

    dataset_dir = "smoke_gray"
    render = staticmethod(ImageOps.grayscale)


@DATASETS.register()
class SmokeInvert(SmokeShifted):
    """Smoke's test set with inverted colours (all ten classes)."""

    dataset_dir = "smoke_invert"
    render = staticmethod(ImageOps.invert)


@DATASETS.register()
class SmokeBlur(SmokeShifted):
    """Smoke's test set, blurred (all ten classes)."""

    dataset_dir = "smoke_blur"
    render = staticmethod(lambda img: img.filter(ImageFilter.GaussianBlur(2)))


@DATASETS.register()
class SmokeSubset(SmokeShifted):
    """Five of Smoke's classes (its odd labels), mirrored and posterized: a rendition of a class
    subset, labelled 0..4 and mapped back to Smoke's labels by ``smoke_labels``, as ImageNet-R's
    200 classes map into ImageNet's 1000."""

    dataset_dir = "smoke_subset"
    render = staticmethod(lambda img: ImageOps.posterize(ImageOps.mirror(img), 2))
    keep = (1, 3, 5, 7, 9)
