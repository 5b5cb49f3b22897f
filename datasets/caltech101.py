"""Caltech101: ``caltech-101/101_ObjectCategories/<class>/*.jpg``, 100 object classes.

The background class and the duplicate ``Faces_easy`` are left out, and four plural or
capitalised folder names get CoOp's class names; the split is the per-class 50/20/30 one.
"""
from __future__ import annotations

from clip_adapter.data.build import CLASS_FOLDERS_PROCEDURE, split_class_folders
from clip_adapter.data.dataset_base import DatasetBase
from clip_adapter.data.download import Resource, gdrive_file
from clip_adapter.registry import DATASETS

IGNORED = ("BACKGROUND_Google", "Faces_easy")
NEW_CNAMES = {"airplanes": "airplane", "Faces": "face", "Leopards": "leopard", "Motorbikes": "motorbike"}


@DATASETS.register()
class Caltech101(DatasetBase):
    dataset_dir = "caltech-101"
    image_dir = "101_ObjectCategories"
    split_file = "split_zhou_Caltech101.json"
    split_procedure = CLASS_FOLDERS_PROCEDURE
    resources = (
        Resource(
            "https://data.caltech.edu/records/mzrjq-6wc02/files/caltech-101.zip",
            "caltech-101.zip",
            members=(("101_ObjectCategories", "101_ObjectCategories"),),
            inner="caltech-101/101_ObjectCategories.tar.gz",
            md5="3138e1922a9193bfa496528edbbc45d0",
        ),
        gdrive_file("1hyarUivQE36mY6jSomru6Fjd-JzwcCzN", "split_zhou_Caltech101.json"),
    )

    def build_split(self):
        return split_class_folders(self.image_dir, ignored=IGNORED, new_cnames=NEW_CNAMES)
