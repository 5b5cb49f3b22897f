"""UCF101 (CoOp's middle frames): ``ucf101/UCF-101-midframes/<Action_Name>/<video>.jpg``.

Labels come from ``ucfTrainTestlist/classInd.txt``; action names are split at capitals
(``ApplyEyeMakeup`` -> ``Apply_Eye_Makeup``), which is also the frame folder's name. The split
lists (``UCF101TrainTestSplits-RecognitionTask.zip`` from crcv.ucf.edu) are only needed to rebuild
the split file.
"""
from __future__ import annotations

import os
import re

from clip_adapter.data.build import TRAINVAL_PROCEDURE, bad_line, read_lines, split_trainval
from clip_adapter.data.dataset_base import DatasetBase
from clip_adapter.data.datum import Datum
from clip_adapter.data.download import GDRIVE, Resource, gdrive_file
from clip_adapter.errors import DatasetError
from clip_adapter.registry import DATASETS

LISTS = "ucfTrainTestlist"
LISTS_URL = "https://www.crcv.ucf.edu/data/UCF101/UCF101TrainTestSplits-RecognitionTask.zip"


@DATASETS.register()
class UCF101(DatasetBase):
    dataset_dir = "ucf101"
    image_dir = "UCF-101-midframes"
    split_file = "split_zhou_UCF101.json"
    split_procedure = TRAINVAL_PROCEDURE
    resources = (
        Resource(GDRIVE + "10Jqome3vtUA2keJkNanAiFpgbyC9Hc2O", "UCF-101-midframes.zip", members=(("UCF-101-midframes", "UCF-101-midframes"),)),
        gdrive_file("1I0S0q91hJfsV9Gf4xDIjgDq4AqBNJb1y", "split_zhou_UCF101.json"),
    )

    def read_list(self, cname2lab, fname: str):
        path = os.path.join(self.dataset_dir, LISTS, fname)
        items = []
        for lineno, line in enumerate(read_lines(path), 1):
            video = line.split(" ")[0]  # trainlist lines carry a label after the name
            action, _, filename = video.partition("/")
            if action not in cname2lab or not filename:
                raise bad_line(path, lineno, line, "'<Action>/<video>.avi' with an action listed in classInd.txt")
            folder = "_".join(re.findall("[A-Z][^A-Z]*", action))
            items.append(Datum(os.path.join(self.image_dir, folder, filename.replace(".avi", ".jpg")), cname2lab[action], folder))
        return items

    def build_split(self):
        if not os.path.isdir(os.path.join(self.dataset_dir, LISTS)):
            raise DatasetError(
                f"{self.split_path} is missing and so is {os.path.join(self.dataset_dir, LISTS)} to rebuild it: fetch the split file "
                f"with clip-adapter download UCF101 --root {self.root}, or extract {LISTS_URL} into {self.dataset_dir}"
            )
        index = os.path.join(self.dataset_dir, LISTS, "classInd.txt")
        cname2lab = {}
        for lineno, line in enumerate(read_lines(index), 1):
            parts = line.split(" ")
            if len(parts) != 2 or not parts[0].isdigit():
                raise bad_line(index, lineno, line, "'<class id> <Action>'")
            cname2lab[parts[1]] = int(parts[0]) - 1
        train, val = split_trainval(self.read_list(cname2lab, "trainlist01.txt"))
        return {"train": train, "val": val, "test": self.read_list(cname2lab, "testlist01.txt")}
