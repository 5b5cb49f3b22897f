"""Image transforms built from ``INPUT.*`` with Dassl's names, plus a spec string for cache keys.

The spec string lists every parameter that changes pixels; the feature cache keys on it, so two
runs with different preprocessing can never share features by accident.
"""
from __future__ import annotations

from typing import List, Tuple

import torchvision.transforms as T
from torchvision.transforms import InterpolationMode

from clip_adapter.errors import ConfigError

INTERPOLATIONS = {
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
    "nearest": InterpolationMode.NEAREST,
}
SUPPORTED = ("random_resized_crop", "random_flip", "random_crop", "center_crop", "normalize")
PRESETS = ("clip", "coop")


def _size(cfg) -> Tuple[int, int]:
    size = tuple(int(s) for s in cfg.INPUT.SIZE)
    if len(size) != 2:
        raise ConfigError(f"INPUT.SIZE must be (height, width), got {cfg.INPUT.SIZE!r}")
    return size


def _interp(cfg) -> InterpolationMode:
    name = cfg.INPUT.INTERPOLATION
    if name not in INTERPOLATIONS:
        raise ConfigError(f"INPUT.INTERPOLATION must be one of {', '.join(INTERPOLATIONS)}, got {name!r}")
    return INTERPOLATIONS[name]


def _check_choices(cfg) -> List[str]:
    choices = list(cfg.INPUT.TRANSFORMS)
    unknown = [c for c in choices if c not in SUPPORTED]
    if unknown:
        raise ConfigError(f"INPUT.TRANSFORMS has unsupported entries {unknown}; supported: {', '.join(SUPPORTED)}")
    return choices


def preset(cfg) -> str:
    name = getattr(cfg.INPUT, "PRESET", "clip")
    if name not in PRESETS:
        raise ConfigError(f"INPUT.PRESET must be one of {', '.join(PRESETS)}, got {name!r}")
    return name


def _resize_ops(cfg, size, interp) -> list:
    """The preset's deterministic resize: CLIP-style (short side + centre crop) or CoOp-style (both sides)."""
    if preset(cfg) == "coop":
        return [T.Resize(size, interpolation=interp)]
    return [T.Resize(max(size), interpolation=interp), T.CenterCrop(size)]


def build_transform(cfg, is_train: bool) -> T.Compose:
    """Training: the augmentations listed in INPUT.TRANSFORMS; test: the preset's resize."""
    size, interp = _size(cfg), _interp(cfg)
    choices = _check_choices(cfg)
    ops = []
    if is_train:
        if "random_resized_crop" in choices:
            ops.append(T.RandomResizedCrop(size, scale=tuple(cfg.INPUT.RRCROP_SCALE), interpolation=interp))
        else:
            ops += _resize_ops(cfg, size, interp)
            if "random_crop" in choices:
                ops.append(T.RandomCrop(size, padding=cfg.INPUT.CROP_PADDING))
        if "random_flip" in choices:
            ops.append(T.RandomHorizontalFlip())
    else:
        ops += _resize_ops(cfg, size, interp)
    ops.append(T.ToTensor())
    if "normalize" in choices:
        ops.append(T.Normalize(mean=list(cfg.INPUT.PIXEL_MEAN), std=list(cfg.INPUT.PIXEL_STD)))
    return T.Compose(ops)


def transform_spec(cfg, is_train: bool) -> str:
    """A stable text describing everything in the transform that changes the output pixels."""
    parts = [
        "train" if is_train else "test",
        f"preset={preset(cfg)}",
        f"size={tuple(int(s) for s in cfg.INPUT.SIZE)}",
        f"interp={cfg.INPUT.INTERPOLATION}",
        f"mean={[round(float(x), 8) for x in cfg.INPUT.PIXEL_MEAN]}",
        f"std={[round(float(x), 8) for x in cfg.INPUT.PIXEL_STD]}",
        f"normalize={'normalize' in cfg.INPUT.TRANSFORMS}",
    ]
    if is_train:
        parts += [f"ops={sorted(cfg.INPUT.TRANSFORMS)}", f"rrcrop={tuple(cfg.INPUT.RRCROP_SCALE)}", f"pad={cfg.INPUT.CROP_PADDING}"]
    return ";".join(parts)
