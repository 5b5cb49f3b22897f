"""The dataset doctor: everything that can be wrong with a dataset on disk, in one table, with the fix.

::

    python -m clip_adapter.app.doctor [NAME ...] --root $DATA [--opts KEY VALUE ...]
    python -m clip_adapter.app.doctor --sort-imagenet-val $DATA/imagenet/images/val --devkit ILSVRC2012_devkit_t12.tar.gz

NAME is a registered dataset (``Caltech101``), a dataset config name (``caltech101``, or your
``configs/datasets/my_data.yaml`` as ``my_data``) or a dataset YAML path; without names every
registered dataset is checked. Per dataset it reports: found / missing / incomplete; image counts per
split against what the split file lists; unreadable images (each is decoded exactly as a run decodes
it); ImageNet's validation folder left flat (and the command that sorts it); the class-name file and
class names shared by several labels; stale few-shot files. Then the feature cache: shards that fail
their checksum, namespaces of an old cache format, rows for images that changed. Every problem comes
with what to delete or rebuild; ``--fix`` deletes what is safe to delete (it is all rebuilt on the next
run). Nothing else is ever written: missing split files are built in memory, not saved.

Exit status: 0 when every dataset asked about is usable, 1 when one is not (without names, only
datasets whose folder exists count), 2 on a usage error. Runs print this command with every dataset
error. This is an entry point (like ``download``): it imports the config and the registered datasets.

One job per module: ``findings`` (what a problem is), ``datasets`` (the dataset checks),
``imagenet_val`` (ImageNet's flat validation folder, and sorting it), ``cache`` (the feature-cache
checks), ``cli`` (the command: ``main(argv)``; ``clip-adapter doctor`` dispatches to it).
"""
from clip_adapter.app.doctor.cli import main

__all__ = ["main"]
