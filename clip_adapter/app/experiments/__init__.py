"""Experiments planned in Python: (experiment, datasets, shots, seeds, trainers, config, opts) -> the
runs (folder, train.py arguments, the runs each needs) that every script and the sweep use.

``naming`` (variant folder names, shared with the tables), ``lookup`` (names -> config files and
classes), ``runs`` (planned runs, folder layout, the train.py arguments), ``plans`` (few-shot,
training-free, base-to-novel, transfer, ablation), ``reproduce`` (their combination and the tables),
``cli`` (``clip-adapter experiment NAME``, what scripts/*.sh run). This package's import is light:
the tables import ``naming`` from it.
"""
