"""ImageNetV2 (matched frequency), test only: ``imagenetv2/imagenetv2-matched-frequency-format-val/<0..999>/``.

Folders are numbered by ImageNet label; class names come from ImageNet's ``classnames.txt``
(the dataset's own copy, else ``$DATA/imagenet/classnames.txt``).
"""
from __future__ import annotations

import os

from clip_adapter.data.build import LISTING_PROCEDURE, find_classnames_file, listdir_nohidden, read_imagenet_classnames
from clip_adapter.data.dataset_base import DatasetBase
from clip_adapter.data.datum import Datum
from clip_adapter.data.download import IMAGENET_CLASSNAMES, Resource
from clip_adapter.registry import DATASETS

FOLDER = "imagenetv2-matched-frequency-format-val"


@DATASETS.register()
class ImageNetV2(DatasetBase):
    dataset_dir = "imagenetv2"
    split_procedure = LISTING_PROCEDURE
    save_built_split = False
    image_dir = FOLDER
    test_only = True
    resources = (
        Resource(
            "https://huggingface.co/datasets/vaishaal/ImageNetV2/resolve/main/imagenetv2-matched-frequency.tar.gz",
            "imagenetv2-matched-frequency.tar.gz",
            members=((FOLDER, FOLDER),),
        ),
        IMAGENET_CLASSNAMES,
    )

    def build_split(self):
        classnames = list(read_imagenet_classnames(find_classnames_file(self.dataset_dir, self.root)).values())
        items = []
        for label, classname in enumerate(classnames):
            folder = os.path.join(self.image_dir, str(label))
            items.extend(Datum(os.path.join(folder, name), label, classname) for name in listdir_nohidden(folder))
        return {"train": [], "val": [], "test": items}
