"""Dassl plugin mode: this project's trainers and datasets registered into an installed Dassl.

``import clip_adapter.dassl`` registers every project trainer into ``dassl.engine.TRAINER_REGISTRY``
(as a ``TrainerX``) and every project dataset into ``dassl.data.datasets.DATASET_REGISTRY``; names
another plugin registered first are left alone and logged as skipped. ``extend_cfg(cfg)`` adds the
project's config nodes to a Dassl config. A CoOp checkout needs two lines in its ``train.py``::

    import clip_adapter.dassl                 # with the other imports
    clip_adapter.dassl.extend_cfg(cfg)        # inside its extend_cfg(cfg)

This package is optional: nothing in the core imports it, and importing it without Dassl fails with
one line that says how to install Dassl. ``train.py --engine dassl`` runs through it.
"""
from clip_adapter.dassl._require import DasslMissingError, require_dassl

require_dassl()

from clip_adapter.dassl.config import dassl_cfg, extend_cfg  # noqa: E402
from clip_adapter.dassl.registration import REPORT, register_all  # noqa: E402

register_all()

__all__ = ["DasslMissingError", "REPORT", "dassl_cfg", "extend_cfg", "register_all"]
