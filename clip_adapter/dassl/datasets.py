"""Project datasets as Dassl datasets, and any Dassl dataset as the project's trainers read one.

The project's ``DatasetBase`` already does everything from the config keys Dassl and CoOp share
(split file, few-shot subset for ``DATASET.NUM_SHOTS``/``SEED``, ``SUBSAMPLE_CLASSES``), so the Dassl
class only builds it and converts its items to Dassl's ``Datum``: the same seed gives the same images
under both engines.
"""
from __future__ import annotations

import os
from typing import Dict, List, Sequence

from dassl.data.datasets import DatasetBase as DasslDatasetBase
from dassl.data.datasets import Datum as DasslDatum

from clip_adapter.data.dataset_base import DatasetBase as ProjectDatasetBase
from clip_adapter.data.templates import get_templates
from clip_adapter.registry import DATASETS

PLUGIN_MARK = "_clip_adapter_plugin"


def to_dassl(items: Sequence) -> List[DasslDatum]:
    return [DasslDatum(impath=d.impath, label=int(d.label), domain=int(d.domain), classname=d.classname) for d in items]


class ProjectDataset(DasslDatasetBase):
    """Base of the registered wrappers; ``project_cls`` is the project's dataset class."""

    project_cls: type = None  # set per registered subclass

    def __init__(self, cfg) -> None:
        self.project = self.project_cls(cfg)
        p = self.project
        super().__init__(train_x=to_dassl(p.train_x), val=to_dassl(p.val), test=to_dassl(p.test))


def dataset_class(project_cls: type) -> type:
    """A Dassl dataset class named like ``project_cls`` (Dassl's registry keys on ``__name__``)."""
    return type(project_cls.__name__, (ProjectDataset,), {
        "project_cls": project_cls,
        PLUGIN_MARK: True,
        "__module__": __name__,
        "__doc__": f"clip_adapter's {project_cls.__name__} as a Dassl dataset (see clip_adapter.dassl).",
    })


class ForeignDataset:
    """A dataset another Dassl plugin registered (a CoOp checkout's ``Caltech101``), seen through the
    attributes the project's trainers read. Prompt templates come from the project's dataset of the
    same name when there is one, else the generic ``a photo of a {}.``."""

    test_only = False
    val_is_test = False

    def __init__(self, dataset, name: str) -> None:
        self.name = name
        self.train_x = list(dataset.train_x or [])
        self.val = list(dataset.val or [])
        self.test = list(dataset.test or [])
        self._lab2cname: Dict[int, str] = dict(dataset.lab2cname)

    # The project's dataset accessors, reused as they are (they read only ``_lab2cname``).
    lab2cname = ProjectDatasetBase.lab2cname
    classnames = ProjectDatasetBase.classnames
    num_classes = ProjectDatasetBase.num_classes

    def templates(self, mode: str = "single") -> List[str]:
        if self.name in DATASETS:
            cls = DATASETS.get(self.name)
            return get_templates(cls.templates_file(), cls.template_key or cls.__name__, mode)
        import clip_adapter.datasets

        return get_templates(os.path.join(os.path.dirname(clip_adapter.datasets.__file__), "templates.json"), self.name, mode)


def project_view(dataset, name: str):
    """The project dataset behind a Dassl dataset (ours), or a ``ForeignDataset`` view of another's."""
    project = getattr(dataset, "project", None)
    return project if project is not None else ForeignDataset(dataset, name)
