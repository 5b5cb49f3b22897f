"""FGVC-Aircraft (2013b): ``fgvc_aircraft/images/<id>.jpg`` with the official variant-level lists.

As in CoOp there is no published split file: the official ``images_variant_{train,val,test}.txt``
lists are the split (read once, then kept as ``split_built_FGVCAircraft.json``), and ``variants.txt``
gives the 100 classes in label order.
"""
from __future__ import annotations

import os

from clip_adapter.data.build import bad_line, read_lines
from clip_adapter.data.dataset_base import DatasetBase
from clip_adapter.data.datum import Datum
from clip_adapter.data.download import Resource
from clip_adapter.registry import DATASETS

LISTS = {"train": "images_variant_train.txt", "val": "images_variant_val.txt", "test": "images_variant_test.txt"}


@DATASETS.register()
class FGVCAircraft(DatasetBase):
    dataset_dir = "fgvc_aircraft"
    image_dir = "images"
    split_file = ""
    split_procedure = "the official images_variant_{train,val,test}.txt lists, as CoOp reads them (no random draw)"
    save_built_split = False
    resources = (
        Resource(
            "https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/archives/fgvc-aircraft-2013b.tar.gz",
            "fgvc-aircraft-2013b.tar.gz",
            members=tuple(
                (f"fgvc-aircraft-2013b/data/{name}", name) for name in ("images", "variants.txt", *LISTS.values())
            ),
        ),
    )

    def build_split(self):
        variants = os.path.join(self.dataset_dir, "variants.txt")
        cname2lab = {name: i for i, name in enumerate(read_lines(variants))}
        out = {}
        for split, fname in LISTS.items():
            path = os.path.join(self.dataset_dir, fname)
            items = []
            for lineno, line in enumerate(read_lines(path), 1):
                parts = line.split(" ")
                classname = " ".join(parts[1:])
                if len(parts) < 2 or classname not in cname2lab:
                    raise bad_line(path, lineno, line, f"'<image id> <variant listed in {variants}>'")
                items.append(Datum(os.path.join(self.image_dir, parts[0] + ".jpg"), cname2lab[classname], classname))
            out[split] = items
        return out
