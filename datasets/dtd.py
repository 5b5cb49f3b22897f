"""Describable Textures (DTD): ``dtd/images/<texture>/*.jpg``, 47 classes, per-class 50/20/30 split."""
from __future__ import annotations

from clip_adapter.data.build import CLASS_FOLDERS_PROCEDURE, split_class_folders
from clip_adapter.data.dataset_base import DatasetBase
from clip_adapter.data.download import Resource, gdrive_file
from clip_adapter.registry import DATASETS


@DATASETS.register()
class DescribableTextures(DatasetBase):
    dataset_dir = "dtd"
    image_dir = "images"
    split_file = "split_zhou_DescribableTextures.json"
    split_procedure = CLASS_FOLDERS_PROCEDURE
    resources = (
        Resource(
            "https://www.robots.ox.ac.uk/~vgg/data/dtd/download/dtd-r1.0.1.tar.gz",
            "dtd-r1.0.1.tar.gz",
            members=(("dtd/images", "images"), ("dtd/labels", "labels"), ("dtd/imdb", "imdb")),
            md5="fff73e5086ae6bdbea199a49dfb8a4c1",
        ),
        gdrive_file("1u3_QfB467jqHgNXC00UIzbLZRQCg2S7x", "split_zhou_DescribableTextures.json"),
    )

    def build_split(self):
        return split_class_folders(self.image_dir)
