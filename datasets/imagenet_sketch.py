"""ImageNet-Sketch, test only: ``imagenet-sketch/images/<wnid>/`` for ImageNet's 1000 classes."""
from __future__ import annotations

from clip_adapter.data.build import LISTING_PROCEDURE, wnid_test_split
from clip_adapter.data.dataset_base import DatasetBase
from clip_adapter.data.download import IMAGENET_CLASSNAMES, Resource
from clip_adapter.registry import DATASETS


@DATASETS.register()
class ImageNetSketch(DatasetBase):
    dataset_dir = "imagenet-sketch"
    split_procedure = LISTING_PROCEDURE
    save_built_split = False
    image_dir = "images"
    test_only = True
    resources = (
        Resource(
            "https://huggingface.co/datasets/songweig/imagenet_sketch/resolve/main/data/ImageNet-Sketch.zip",
            "ImageNet-Sketch.zip",
            members=(("sketch", "images"),),
        ),
        IMAGENET_CLASSNAMES,
    )

    def build_split(self):
        splits, self.imagenet_labels = wnid_test_split(self.image_dir, self.dataset_dir, self.root)
        return splits
