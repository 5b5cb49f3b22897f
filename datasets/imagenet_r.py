"""ImageNet-R (renditions: art, cartoons, sketches, ...), test only: ``imagenet-rendition/imagenet-r/<wnid>/``, 200 of ImageNet's classes.

Labels are 0..199 in sorted folder order with ImageNet's class names, as in CoOp;
``imagenet_labels[i]`` is label i's index among ImageNet's 1000 classes, for heads trained on ImageNet.
"""
from __future__ import annotations

from clip_adapter.data.build import LISTING_PROCEDURE, wnid_test_split
from clip_adapter.data.dataset_base import DatasetBase
from clip_adapter.data.download import IMAGENET_CLASSNAMES, Resource
from clip_adapter.registry import DATASETS


@DATASETS.register()
class ImageNetR(DatasetBase):
    dataset_dir = "imagenet-rendition"
    split_procedure = LISTING_PROCEDURE
    save_built_split = False
    image_dir = "imagenet-r"
    test_only = True
    resources = (
        Resource("https://people.eecs.berkeley.edu/~hendrycks/imagenet-r.tar", "imagenet-r.tar", members=(("imagenet-r", "imagenet-r"),)),
        IMAGENET_CLASSNAMES,
    )

    def build_split(self):
        splits, self.imagenet_labels = wnid_test_split(self.image_dir, self.dataset_dir, self.root)
        return splits
