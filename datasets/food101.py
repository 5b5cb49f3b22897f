"""Food101: ``food-101/images/<dish>/*.jpg``, 101 classes.

CoOp ignores the official train/test lists and uses its per-class 50/20/30 split.
"""
from __future__ import annotations

from clip_adapter.data.build import CLASS_FOLDERS_PROCEDURE, split_class_folders
from clip_adapter.data.dataset_base import DatasetBase
from clip_adapter.data.download import Resource, gdrive_file
from clip_adapter.registry import DATASETS


@DATASETS.register()
class Food101(DatasetBase):
    dataset_dir = "food-101"
    image_dir = "images"
    split_file = "split_zhou_Food101.json"
    split_procedure = CLASS_FOLDERS_PROCEDURE
    resources = (
        Resource(
            "http://data.vision.ee.ethz.ch/cvl/food-101.tar.gz",
            "food-101.tar.gz",
            members=(("food-101/images", "images"), ("food-101/meta", "meta")),
            md5="85eeb15f3717b99a5da872d97d918f87",
        ),
        gdrive_file("1QK0tGi096I0Ba6kggatX1ee6dJFIcEJl", "split_zhou_Food101.json"),
    )

    def build_split(self):
        return split_class_folders(self.image_dir)
