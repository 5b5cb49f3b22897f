"""SUN397: ``sun397/SUN397/<letter>/<scene>[/<sub>]/*.jpg`` with the ``Training_01``/``Testing_01`` partition.

Class names drop the leading letter and put qualifiers first (``a/apartment_building/outdoor``
-> ``outdoor apartment_building``); trainval is cut 80/20 per class.
"""
from __future__ import annotations

import os

from clip_adapter.data.build import TRAINVAL_PROCEDURE, bad_line, read_lines, split_trainval
from clip_adapter.data.dataset_base import DatasetBase
from clip_adapter.data.datum import Datum
from clip_adapter.data.download import Resource, gdrive_file
from clip_adapter.registry import DATASETS


@DATASETS.register()
class SUN397(DatasetBase):
    dataset_dir = "sun397"
    image_dir = "SUN397"
    split_file = "split_zhou_SUN397.json"
    split_procedure = TRAINVAL_PROCEDURE
    resources = (
        Resource(
            "http://vision.princeton.edu/projects/2010/SUN/SUN397.tar.gz",
            "SUN397.tar.gz",
            members=(("SUN397", "SUN397"),),
            md5="8ca2778205c41d23104230ba66911c7a",
        ),
        Resource(
            "https://vision.princeton.edu/projects/2010/SUN/download/Partitions.zip",
            "Partitions.zip",
            members=tuple((name, name) for name in ("ClassName.txt", "Training_01.txt", "Testing_01.txt")),
        ),
        gdrive_file("1y2RD81BYuiyvebdN-JymPfyWYcd8_MUq", "split_zhou_SUN397.json"),
    )

    def read_list(self, cname2lab, fname: str):
        path = os.path.join(self.dataset_dir, fname)
        items = []
        for lineno, line in enumerate(read_lines(path), 1):
            imname = line[1:]  # drop the leading "/"
            folder = os.path.dirname(imname)
            if folder not in cname2lab:
                raise bad_line(path, lineno, line, "'/<letter>/<scene>/<image>' of a class in ClassName.txt")
            classname = " ".join(folder.split("/")[1:][::-1])
            items.append(Datum(os.path.join(self.image_dir, imname), cname2lab[folder], classname))
        return items

    def build_split(self):
        classes = [line[1:] for line in read_lines(os.path.join(self.dataset_dir, "ClassName.txt"))]
        cname2lab = {c: i for i, c in enumerate(classes)}
        train, val = split_trainval(self.read_list(cname2lab, "Training_01.txt"))
        return {"train": train, "val": val, "test": self.read_list(cname2lab, "Testing_01.txt")}
