"""Image transforms built from ``INPUT.*`` with Dassl's names, plus a spec string for cache keys.

The spec string lists every parameter that changes pixels; the feature cache keys on it, so two
runs with different preprocessing can never share features by accident.

Size, interpolation and pixel statistics (``InputSpec``) are the backbone's: a trainer resolves them
from its loaded weights (``clip_adapter.backbones.preprocess.resolve_input``; an empty INPUT.SIZE /
PIXEL_MEAN / PIXEL_STD / INTERPOLATION means "the backbone's") and passes them here. Without a spec
they are read from the config, which must then state them.

A transform is a ``ViewTransform``: torchvision's operations, called with an optional
``torch.Generator`` that the random ones (crop, flip) draw from. Why not ``T.Compose`` plus a seeded
global RNG: seeding torch's global generator for every image (``torch.manual_seed`` also seeds the
lazy CUDA/XPU/MTIA generators) cost as much as the decoding, and a per-image generator makes a
view's crop a function of its seed alone, in any process, thread or order. The random operations
draw their parameters exactly as torchvision's ``RandomResizedCrop``/``RandomCrop``/
``RandomHorizontalFlip`` do (same calls, same order), so a view seeded with ``s`` is the crop those
classes give after ``torch.manual_seed(s)`` (tests/test_transforms.py holds them to it).

torchvision itself is imported on the first image, not with this module: its import pulls in
torch's compiler stack (about a second) and a run whose features are all cached never decodes one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from clip_adapter.errors import ConfigError

INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
SUPPORTED = ("random_resized_crop", "random_flip", "random_crop", "center_crop", "normalize")
PRESETS = ("clip", "coop")
RRC_RATIO = (3.0 / 4.0, 4.0 / 3.0)  # torchvision's default aspect-ratio range (Dassl does not change it)


@lru_cache(maxsize=None)
def _tv():
    """(torchvision.transforms, its functional module, InterpolationMode), imported on first use."""
    import torchvision.transforms as T
    import torchvision.transforms.functional as F

    return T, F, T.InterpolationMode


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


# --------------------------------------------------------------- random operations
class RandomResizedCropOp:
    """torchvision's ``RandomResizedCrop`` drawing from ``generator`` (None: torch's global generator)."""

    def __init__(self, size: Tuple[int, int], scale: Sequence[float], interpolation: str, ratio: Sequence[float] = RRC_RATIO) -> None:
        self.size, self.scale, self.ratio, self.interpolation = tuple(size), tuple(scale), tuple(ratio), interpolation

    def params(self, height: int, width: int, generator: Optional[torch.Generator]) -> Tuple[int, int, int, int]:
        """(top, left, height, width) of the crop: up to 10 tries of a random area and aspect ratio,
        else the largest centred crop within the ratio range (torchvision's rule and draw order)."""
        area = height * width
        log_lo, log_hi = torch.log(torch.tensor(self.ratio))  # float32, as torchvision computes them
        for _ in range(10):
            target = area * torch.empty(1).uniform_(self.scale[0], self.scale[1], generator=generator).item()
            aspect = torch.exp(torch.empty(1).uniform_(log_lo, log_hi, generator=generator)).item()
            w, h = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
            if 0 < w <= width and 0 < h <= height:
                top = torch.randint(0, height - h + 1, size=(1,), generator=generator).item()
                left = torch.randint(0, width - w + 1, size=(1,), generator=generator).item()
                return top, left, h, w
        aspect = width / height
        if aspect < min(self.ratio):
            w, h = width, int(round(width / min(self.ratio)))
        elif aspect > max(self.ratio):
            w, h = int(round(height * max(self.ratio))), height
        else:
            w, h = width, height
        return (height - h) // 2, (width - w) // 2, h, w

    def __call__(self, img, generator: Optional[torch.Generator] = None):
        _, F, modes = _tv()
        _, height, width = F.get_dimensions(img)
        top, left, h, w = self.params(height, width, generator)
        return F.resized_crop(img, top, left, h, w, list(self.size), modes(self.interpolation), antialias=True)


class RandomCropOp:
    """torchvision's ``RandomCrop(size, padding)`` drawing from ``generator``."""

    def __init__(self, size: Tuple[int, int], padding: int) -> None:
        self.size, self.padding = tuple(size), int(padding)

    def __call__(self, img, generator: Optional[torch.Generator] = None):
        _, F, _ = _tv()
        if self.padding:
            img = F.pad(img, self.padding)
        _, height, width = F.get_dimensions(img)
        th, tw = self.size
        if height < th or width < tw:
            raise ValueError(f"random_crop: crop size {(th, tw)} is larger than the (padded) image {(height, width)}")
        if (height, width) == (th, tw):
            return img
        top = torch.randint(0, height - th + 1, size=(1,), generator=generator).item()
        left = torch.randint(0, width - tw + 1, size=(1,), generator=generator).item()
        return F.crop(img, top, left, th, tw)


class RandomFlipOp:
    """torchvision's ``RandomHorizontalFlip(0.5)`` drawing from ``generator``."""

    def __call__(self, img, generator: Optional[torch.Generator] = None):
        if torch.rand(1, generator=generator) < 0.5:
            return _tv()[1].hflip(img)
        return img


RANDOM_OPS = {"random_resized_crop": RandomResizedCropOp, "random_crop": RandomCropOp, "random_flip": RandomFlipOp}


def _deterministic_op(name: str, kw: Dict[str, Any]):
    T, _, modes = _tv()
    if name == "resize":
        return T.Resize(kw["size"], interpolation=modes(kw["interpolation"]))
    if name == "center_crop":
        return T.CenterCrop(kw["size"])
    if name == "to_tensor":
        return T.ToTensor()
    if name == "normalize":
        return T.Normalize(mean=kw["mean"], std=kw["std"])
    raise ValueError(f"unknown transform step {name!r}")


class ViewTransform:
    """A list of (operation, arguments) steps applied in order: ``tfm(img, generator=None)``.

    Picklable as its steps (DataLoader workers rebuild the operations); ``accepts_generator`` tells
    the loader it can pass each image its own seeded generator.
    """

    accepts_generator = True

    def __init__(self, steps: List[Tuple[str, Dict[str, Any]]]) -> None:
        self.steps = steps
        self._ops: Optional[list] = None

    def _build(self) -> list:
        ops = []
        for name, kw in self.steps:
            ops.append((RANDOM_OPS[name](**kw), True) if name in RANDOM_OPS else (_deterministic_op(name, kw), False))
        return ops

    def __call__(self, img, generator: Optional[torch.Generator] = None):
        if self._ops is None:
            self._ops = self._build()
        for op, random in self._ops:
            img = op(img, generator) if random else op(img)
        return img

    def __getstate__(self) -> dict:
        return {"steps": self.steps, "_ops": None}

    def __repr__(self) -> str:
        return "ViewTransform(" + ", ".join(f"{name}{kw or ''}" for name, kw in self.steps) + ")"


def _resize_steps(cfg, size, interp) -> list:
    """The preset's deterministic resize: CLIP-style (short side + centre crop) or CoOp-style (both sides)."""
    if preset(cfg) == "coop":
        return [("resize", {"size": list(size), "interpolation": interp})]
    return [("resize", {"size": max(size), "interpolation": interp}), ("center_crop", {"size": list(size)})]


def build_transform(cfg, is_train: bool, spec: Optional[InputSpec] = None) -> ViewTransform:
    """Training: the augmentations listed in INPUT.TRANSFORMS; test: the preset's resize.

    ``spec``: the backbone's size, interpolation and statistics (default: the config's own values)."""
    spec = spec or input_spec(cfg)
    size, interp = spec.size, check_interpolation(spec.interpolation)
    choices = _check_choices(cfg)
    steps: list = []
    if is_train:
        if "random_resized_crop" in choices:
            steps.append(("random_resized_crop", {"size": size, "scale": tuple(float(s) for s in cfg.INPUT.RRCROP_SCALE), "interpolation": interp}))
        else:
            steps += _resize_steps(cfg, size, interp)
            if "random_crop" in choices:
                steps.append(("random_crop", {"size": size, "padding": int(cfg.INPUT.CROP_PADDING)}))
        if "random_flip" in choices:
            steps.append(("random_flip", {}))
    else:
        steps += _resize_steps(cfg, size, interp)
    steps.append(("to_tensor", {}))
    if "normalize" in choices:
        steps.append(("normalize", {"mean": [float(x) for x in spec.mean], "std": [float(x) for x in spec.std]}))
    return ViewTransform(steps)


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
