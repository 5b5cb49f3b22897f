"""Registered datasets (installed as ``clip_adapter.datasets``); importing this registers them all."""
from clip_adapter.datasets import custom, smoke  # noqa: F401  (your own data; the offline check)
from clip_adapter.datasets import smoke_variants  # noqa: F401  (the offline transfer targets)
from clip_adapter.datasets import (  # noqa: F401  (the CoOp benchmark and its ImageNet variants)
    caltech101,
    dtd,
    eurosat,
    fgvc_aircraft,
    food101,
    imagenet,
    imagenet_a,
    imagenet_r,
    imagenet_sketch,
    imagenetv2,
    oxford_flowers,
    oxford_pets,
    stanford_cars,
    sun397,
    ucf101,
)
