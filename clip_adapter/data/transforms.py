"""Image transforms built from ``INPUT.*`` with Dassl's names, plus a spec string for cache keys.

The spec string lists every parameter that changes pixels; the feature cache keys on it, so two
runs with different preprocessing can never share features by accident.

Size, interpolation and pixel statistics (``InputSpec``) are the backbone's: a trainer resolves them
from its loaded weights (``clip_adapter.backbones.preprocess.resolve_input``; an empty INPUT.SIZE /
PIXEL_MEAN / PIXEL_STD / INTERPOLATION means "the backbone's") and passes them here. Without a spec
they are read from the config, which must then state them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

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


@dataclass(frozen=True)
class InputSpec:
    """The pixels a backbone expects: input size (height, width), resize interpolation, normalisation."""

    size: Tuple[int, int]
    interpolation: str
    mean: Tuple[float, ...]
    std: Tuple[float, ...]


def config_size(value) -> Optional[Tuple[int, int]]:
    """INPUT.SIZE as (height, width); None when empty (= the backbone's)."""
    size = tuple(int(s) for s in value)
    if not size:
        return None
    if len(size) != 2:
        raise ConfigError(f"INPUT.SIZE must be (height, width) or empty (= the backbone's), got {tuple(value)!r}")
    return size


def check_interpolation(name: str) -> str:
    if name not in INTERPOLATIONS:
        raise ConfigError(f"INPUT.INTERPOLATION must be one of {', '.join(INTERPOLATIONS)} or empty (= the backbone's), got {name!r}")
    return name


def input_spec(cfg) -> InputSpec:
    """The INPUT.* values of a config that states them all (no backbone to fill the empty ones)."""
    size = config_size(cfg.INPUT.SIZE)
    empty = [k for k, v in (("SIZE", size), ("INTERPOLATION", cfg.INPUT.INTERPOLATION), ("PIXEL_MEAN", list(cfg.INPUT.PIXEL_MEAN)),
                            ("PIXEL_STD", list(cfg.INPUT.PIXEL_STD))) if not v]
    if empty:
        raise ConfigError(f"INPUT.{', INPUT.'.join(empty)} empty (= the backbone's) but no backbone is loaded here; set them")
    return InputSpec(size, check_interpolation(cfg.INPUT.INTERPOLATION), tuple(float(x) for x in cfg.INPUT.PIXEL_MEAN),
                     tuple(float(x) for x in cfg.INPUT.PIXEL_STD))


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


def build_transform(cfg, is_train: bool, spec: Optional[InputSpec] = None) -> T.Compose:
    """Training: the augmentations listed in INPUT.TRANSFORMS; test: the preset's resize.

    ``spec``: the backbone's size, interpolation and statistics (default: the config's own values)."""
    spec = spec or input_spec(cfg)
    size, interp = spec.size, INTERPOLATIONS[check_interpolation(spec.interpolation)]
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
        ops.append(T.Normalize(mean=list(spec.mean), std=list(spec.std)))
    return T.Compose(ops)


def transform_spec(cfg, is_train: bool, spec: Optional[InputSpec] = None) -> str:
    """A stable text describing everything in the transform that changes the output pixels."""
    spec = spec or input_spec(cfg)
    parts = [
        "train" if is_train else "test",
        f"preset={preset(cfg)}",
        f"size={tuple(int(s) for s in spec.size)}",
        f"interp={spec.interpolation}",
        f"mean={[round(float(x), 8) for x in spec.mean]}",
        f"std={[round(float(x), 8) for x in spec.std]}",
        f"normalize={'normalize' in cfg.INPUT.TRANSFORMS}",
    ]
    if is_train:
        parts += [f"ops={sorted(cfg.INPUT.TRANSFORMS)}", f"rrcrop={tuple(cfg.INPUT.RRCROP_SCALE)}", f"pad={cfg.INPUT.CROP_PADDING}"]
    return ";".join(parts)
