"""Stanford Cars: ``stanford_cars/cars_{train,test}/*.jpg`` with the devkit's ``.mat`` annotations.

Split paths are relative to the dataset folder itself (``cars_train/00001.jpg``). Class names
put the year first (``2012 Tesla Model S``). The original host is gone: fetch the images by hand.
"""
from __future__ import annotations

import os

from clip_adapter.data.build import TRAINVAL_PROCEDURE, load_mat, split_trainval
from clip_adapter.data.dataset_base import DatasetBase
from clip_adapter.data.datum import Datum
from clip_adapter.data.download import gdrive_file
from clip_adapter.registry import DATASETS


@DATASETS.register()
class StanfordCars(DatasetBase):
    dataset_dir = "stanford_cars"
    image_dir = ""
    split_file = "split_zhou_StanfordCars.json"
    split_procedure = TRAINVAL_PROCEDURE
    resources = (gdrive_file("1ObCFbaAgVu0I-k_Au-gIUcefirdAuizT", "split_zhou_StanfordCars.json"),)
    manual_paths = ("cars_train", "cars_test")
    manual_download = """
The original host (ai.stanford.edu/~jkrause/cars) is offline and the data has no other official source.
Get the Stanford Cars release from a mirror you trust (it is on Kaggle and Hugging Face) and arrange it as
  {dataset_dir}/cars_train/00001.jpg ...            (8144 training images)
  {dataset_dir}/cars_test/00001.jpg ...             (8041 test images)
  {dataset_dir}/devkit/cars_train_annos.mat, cars_meta.mat
  {dataset_dir}/cars_test_annos_withlabels.mat
The split file split_zhou_StanfordCars.json is fetched automatically; the devkit and .mat files are only
needed to rebuild it.
"""

    def read_annotations(self, image_folder: str, anno_file: str):
        annos = load_mat(os.path.join(self.dataset_dir, anno_file), "annotations")[0]
        names = load_mat(os.path.join(self.dataset_dir, "devkit", "cars_meta.mat"), "class_names")[0]
        items = []
        for anno in annos:
            label = int(anno["class"][0, 0]) - 1
            words = str(names[label][0]).split(" ")
            classname = " ".join([words[-1]] + words[:-1])  # the year goes first
            items.append(Datum(os.path.join(self.dataset_dir, image_folder, str(anno["fname"][0])), label, classname))
        return items

    def build_split(self):
        trainval = self.read_annotations("cars_train", os.path.join("devkit", "cars_train_annos.mat"))
        test = self.read_annotations("cars_test", "cars_test_annos_withlabels.mat")
        train, val = split_trainval(trainval)
        return {"train": train, "val": val, "test": test}
