"""ImageNet (ILSVRC-2012): ``imagenet/images/{train,val}/<wnid>/*`` and CLIP's ``classnames.txt``.

As in CoOp, ImageNet's val set is the test set and also serves as val (so few-shot sampling
draws train images only). The folder listing is cached as ``split_built_ImageNet.json`` (CoOp
caches it in a pickle and publishes no split file for ImageNet). The licence needs an account, so
the images are fetched by hand.
"""
from __future__ import annotations

import os

from clip_adapter.data.build import find_classnames_file, read_imagenet_classnames, read_wnid_folders
from clip_adapter.data.dataset_base import DatasetBase
from clip_adapter.data.download import IMAGENET_CLASSNAMES
from clip_adapter.errors import DatasetError
from clip_adapter.registry import DATASETS


@DATASETS.register()
class ImageNet(DatasetBase):
    dataset_dir = "imagenet"
    image_dir = "images"
    split_file = ""  # CoOp publishes none: the listing is built here (split_built_ImageNet.json)
    split_procedure = "the class folders of images/train (train) and images/val (test, also val), sorted (no random draw)"
    val_is_test = True
    resources = (IMAGENET_CLASSNAMES,)
    manual_paths = ("images/train", "images/val")
    manual_download = """
ImageNet's licence requires an account, so it is not downloaded automatically.
1. Sign in at https://image-net.org/download-images.php and download ILSVRC2012_img_train.tar and
   ILSVRC2012_img_val.tar (ILSVRC 2012, 1000 classes).
2. Extract the training set to {dataset_dir}/images/train/ (1000 folders n01440764, n01443537, ...; each
   class arrives as its own .tar inside the main one: extract those too).
3. Extract the validation set to {dataset_dir}/images/val/ sorted into the same 1000 class folders (the
   tar is flat: move each image into its class folder, e.g. with the widely used valprep.sh script).
If you already have ImageNet elsewhere, symlink its train/ and val/ folders into {dataset_dir}/images/.
classnames.txt (CLIP's class names) is fetched automatically into {dataset_dir}/.
"""

    def build_split(self):
        names_file = find_classnames_file(self.dataset_dir, self.root)
        classnames = read_imagenet_classnames(names_file)
        train, train_folders = read_wnid_folders(os.path.join(self.image_dir, "train"), classnames, names_file)
        test, test_folders = read_wnid_folders(os.path.join(self.image_dir, "val"), classnames, names_file)
        if train_folders != test_folders:
            odd = sorted(set(train_folders) ^ set(test_folders))
            raise DatasetError(
                f"{self.image_dir}/train and {self.image_dir}/val hold different class folders (e.g. {', '.join(odd[:3])}); "
                "both need ImageNet's 1000 class folders"
            )
        return {"train": train, "val": [], "test": test}
