"""Oxford Flowers 102: ``oxford_flowers/jpg/image_<00001>.jpg``, labels in ``imagelabels.mat``.

Class names come from CoOp's ``cat_to_name.json``; the split is CoOp's per-class 50/20/30 one,
classes taken in order of first appearance in the label file.
"""
from __future__ import annotations

import json
import os

from clip_adapter.data.build import GROUPS_PROCEDURE, load_mat, split_groups
from clip_adapter.data.dataset_base import DatasetBase
from clip_adapter.data.download import Resource, gdrive_file
from clip_adapter.errors import DatasetError
from clip_adapter.registry import DATASETS


@DATASETS.register()
class OxfordFlowers(DatasetBase):
    dataset_dir = "oxford_flowers"
    image_dir = "jpg"
    split_file = "split_zhou_OxfordFlowers.json"
    split_procedure = GROUPS_PROCEDURE
    resources = (
        Resource(
            "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/102flowers.tgz",
            "102flowers.tgz",
            members=(("jpg", "jpg"),),
            md5="52808999861908f626f3c1f4e79d11fa",
        ),
        Resource(
            "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/imagelabels.mat",
            "imagelabels.mat",
            dest="imagelabels.mat",
            md5="e0620be6f572b9609742df49c70aed4d",
        ),
        gdrive_file("1AkcxCXeK_RCGCEC_GvmWxjcjaNhu-at0", "cat_to_name.json"),
        gdrive_file("1Pp0sRXzZFZq15zVOzKjKBu4A9i01nozT", "split_zhou_OxfordFlowers.json"),
    )

    def build_split(self):
        labels = load_mat(os.path.join(self.dataset_dir, "imagelabels.mat"), "labels")[0]
        names_file = os.path.join(self.dataset_dir, "cat_to_name.json")
        if not os.path.isfile(names_file):
            raise DatasetError(f"class-name file not found: {names_file}; fetch it with clip-adapter download OxfordFlowers --root {self.root}")
        with open(names_file, encoding="utf-8") as f:
            lab2cname = json.load(f)
        groups = {}
        for i, label in enumerate(labels):
            groups.setdefault(int(label), []).append(os.path.join(self.image_dir, f"image_{i + 1:05d}.jpg"))
        missing = [str(y) for y in groups if str(y) not in lab2cname]
        if missing:
            raise DatasetError(f"{names_file} has no name for label(s) {', '.join(missing[:5])}; re-download it")
        return split_groups((y - 1, lab2cname[str(y)], paths) for y, paths in groups.items())
