"""Data layer: datums, split files, few-shot sampling, class subsampling, transforms, loaders.

It knows no model and no training loop (see docs/contributing.md, "Layering: who imports whom").
"""
from clip_adapter.data.datum import Datum
from clip_adapter.data.dataset_base import DatasetBase

__all__ = ["Datum", "DatasetBase"]
