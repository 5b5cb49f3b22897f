"""``Custom``: your own images, described in the dataset YAML instead of code.

``DATASET.NAME "Custom"`` with ``DATASET.CUSTOM.PATH`` pointing at a folder of class folders
(optionally under ``train/ val/ test/``), a split file in CoOp's JSON layout or a CSV
(``path,label,classname[,split]``); missing val/test splits are generated once, seeded and
stratified, and saved next to the data. Every key: configs/datasets/custom_example.yaml. The
reading logic is shared library code (:mod:`clip_adapter.data.custom`).
"""
from __future__ import annotations

from clip_adapter.data.custom import CustomDataset
from clip_adapter.registry import DATASETS


@DATASETS.register()
class Custom(CustomDataset):
    pass
