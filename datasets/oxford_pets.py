"""Oxford-IIIT Pets: ``oxford_pets/images/<Breed>_<n>.jpg`` with ``annotations/{trainval,test}.txt``.

The breed (class name) is the lower-cased file name without its index; trainval is cut into
train/val with CoOp's 80/20 per-class split.
"""
from __future__ import annotations

import os

from clip_adapter.data.build import TRAINVAL_PROCEDURE, bad_line, read_lines, split_trainval
from clip_adapter.data.dataset_base import DatasetBase
from clip_adapter.data.datum import Datum
from clip_adapter.data.download import Resource, gdrive_file
from clip_adapter.registry import DATASETS


@DATASETS.register()
class OxfordPets(DatasetBase):
    dataset_dir = "oxford_pets"
    image_dir = "images"
    split_file = "split_zhou_OxfordPets.json"
    split_procedure = TRAINVAL_PROCEDURE
    resources = (
        Resource(
            "https://www.robots.ox.ac.uk/~vgg/data/pets/data/images.tar.gz",
            "images.tar.gz",
            members=(("images", "images"),),
            md5="5c4f3ee8e5d25df40f4fd59a7f44e54c",
        ),
        Resource(
            "https://www.robots.ox.ac.uk/~vgg/data/pets/data/annotations.tar.gz",
            "annotations.tar.gz",
            members=(("annotations", "annotations"),),
            md5="95a8c909bbe2e81eed6a22bccdf3f68f",
        ),
        gdrive_file("1501r8Ber4nNKvmlFVQZ8SeUHTcdTTEqs", "split_zhou_OxfordPets.json"),
    )

    def read_list(self, name: str):
        path = os.path.join(self.dataset_dir, "annotations", name)
        items = []
        for lineno, line in enumerate(read_lines(path), 1):
            parts = line.split(" ")
            if len(parts) != 4 or not parts[1].isdigit():
                raise bad_line(path, lineno, line, "'<image name> <class id> <species> <breed id>'")
            imname, label = parts[0], int(parts[1]) - 1
            breed = "_".join(imname.split("_")[:-1]).lower()
            items.append(Datum(os.path.join(self.image_dir, imname + ".jpg"), label, breed))
        return items

    def build_split(self):
        train, val = split_trainval(self.read_list("trainval.txt"))
        return {"train": train, "val": val, "test": self.read_list("test.txt")}
