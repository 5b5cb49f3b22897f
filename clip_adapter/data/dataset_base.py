"""The one dataset base class: a subclass states only where its files are and what is particular.

Reading the split file, building it when it is missing, few-shot sampling and base/new
subsampling all happen here, once, for every dataset.
"""
from __future__ import annotations

import inspect
import logging
import os
from typing import Dict, List, Optional

from clip_adapter.data.build import drop_unreadable
from clip_adapter.data.datum import Datum
from clip_adapter.data.fewshot import load_or_sample_fewshot
from clip_adapter.data.splits import check_images_exist, read_split, write_split
from clip_adapter.data.subsample import subsample_classes
from clip_adapter.data.templates import get_templates
from clip_adapter.errors import DatasetError

log = logging.getLogger(__name__)


class DatasetBase:
    """Subclasses set ``dataset_dir``, ``image_dir``, ``split_file`` and may override ``build_split``.

    ``test_only`` datasets (distribution-shift targets) have no train split of their own.
    """

    dataset_dir: str = ""
    image_dir: str = "images"
    split_file: str = ""
    # Key into the templates.json next to the subclass's module; defaults to the class name.
    template_key: str = ""
    test_only: bool = False
    # ImageNet (as in CoOp): no val split of its own; the test set (ImageNet's val) serves as val,
    # and few-shot sampling draws train only.
    val_is_test: bool = False
    # Printed when the folder is missing: how to get the data.
    download_hint: str = ""
    # What `download()` fetches (clip_adapter.data.download.Resource entries) and, for data that
    # must be fetched by hand (licence, dead links), the instructions printed instead.
    resources: tuple = ()
    manual_download: str = ""
    # Paths (under the dataset folder) the manual steps must provide; default: the image folder.
    manual_paths: tuple = ()

    def __init__(self, cfg) -> None:
        self.cfg = cfg
        root = os.path.abspath(os.path.expanduser(cfg.DATASET.ROOT or ""))
        if not cfg.DATASET.ROOT:
            raise DatasetError(f"DATASET.ROOT is empty: pass --root /path/to/datasets (or set DATA in the scripts) for {type(self).__name__}")
        self.root = root
        self.dataset_dir = os.path.join(root, type(self).dataset_dir)
        self.image_dir = os.path.join(self.dataset_dir, type(self).image_dir)
        self.split_path = os.path.join(self.dataset_dir, self.split_file) if self.split_file else ""
        self.split_fewshot_dir = os.path.join(self.dataset_dir, "split_fewshot")
        self.prepare()
        splits = self.load_splits()
        train, val, test = splits["train"], splits["val"], splits["test"]
        if self.val_is_test:
            val = test

        num_shots = int(cfg.DATASET.NUM_SHOTS)
        if num_shots >= 1 and not self.test_only:
            subset = load_or_sample_fewshot(
                train, None if self.val_is_test else val, num_shots, int(cfg.SEED), self.split_fewshot_dir, self.image_dir
            )
            train = subset["train"]
            val = test if self.val_is_test else subset["val"]
        if self.test_only:
            train, val, test = subsample_classes(test, test, test, subsample=cfg.DATASET.SUBSAMPLE_CLASSES)
        else:
            train, val, test = subsample_classes(train, val, test, subsample=cfg.DATASET.SUBSAMPLE_CLASSES)
        if getattr(cfg.DATASET, "SKIP_BAD_IMAGES", False):
            train, val, test = drop_unreadable(train, val, test)
        self.train_x: List[Datum] = train
        self.val: List[Datum] = val
        self.test: List[Datum] = test
        self._lab2cname = self._build_lab2cname(test if self.test_only else train)

    # -------------------------------------------------------------- hooks
    def prepare(self) -> None:
        """Make sure the files are there (downloading first when DATASET.DOWNLOAD), else fail naming the path."""
        if getattr(self.cfg.DATASET, "DOWNLOAD", False):
            self.download()
        for folder in (self.dataset_dir, self.image_dir):
            if not os.path.isdir(folder):
                hint = self.download_hint or f"python -m clip_adapter.data.download {type(self).__name__} --root {self.root}"
                raise DatasetError(
                    f"dataset folder not found: {folder}; get it with: {hint} (or set DATASET.DOWNLOAD True), "
                    f"or point --root at the folder that holds {type(self).dataset_dir}/"
                )

    def download(self) -> None:
        """Fetch what ``resources`` lists (idempotent: present parts are skipped; partial files resume)."""
        from clip_adapter.data.download import download_dataset

        download_dataset(type(self), self.root)

    def load_splits(self) -> Dict[str, List[Datum]]:
        if self.split_path and os.path.isfile(self.split_path):
            return read_split(self.split_path, self.image_dir)
        splits = self.build_split()
        check_images_exist(f"the {type(self).__name__} annotations", splits)
        if self.split_path:
            write_split(splits, self.split_path, self.image_dir)
            log.info("Saved split to %s", self.split_path)
        return splits

    def build_split(self) -> Dict[str, List[Datum]]:
        raise DatasetError(f"split file not found: {self.split_path}; download CoOp's split_zhou file into {self.dataset_dir}")

    # --------------------------------------------------------- properties
    @staticmethod
    def _build_lab2cname(items: List[Datum]) -> Dict[int, str]:
        return {label: name for label, name in sorted({(d.label, d.classname) for d in items})}

    @property
    def lab2cname(self) -> Dict[int, str]:
        return dict(self._lab2cname)

    @property
    def classnames(self) -> List[str]:
        return [self._lab2cname[k] for k in sorted(self._lab2cname)]

    @property
    def num_classes(self) -> int:
        return (max(self._lab2cname) + 1) if self._lab2cname else 0

    @classmethod
    def templates_file(cls) -> str:
        return os.path.join(os.path.dirname(inspect.getfile(cls)), "templates.json")

    def templates(self, mode: str = "single") -> List[str]:
        return get_templates(self.templates_file(), self.template_key or type(self).__name__, mode)

    def splits(self) -> Dict[str, List[Datum]]:
        return {"train": self.train_x, "val": self.val, "test": self.test}
