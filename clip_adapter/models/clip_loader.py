"""Load a frozen CLIP by name, by file path, or the offline ``tiny`` stand-in, through ``clip.load``.

``tiny`` is a small ``clip.model.CLIP`` with random weights created deterministically, saved as a
state dict and then loaded through exactly the same ``clip.load`` call as real weights, so the
offline demo and the tests exercise the real loading path.
"""
from __future__ import annotations

import hashlib
import logging
import os
import urllib.error
import warnings
from dataclasses import dataclass
from functools import lru_cache

import torch

from clip_adapter.errors import UserError
from clip_adapter.utils import atomic_torch_save

log = logging.getLogger(__name__)

TINY_NAME = "tiny"
TINY_VERSION = 1
# A ViT so small that a forward pass on CPU costs milliseconds; vocabulary must match the tokenizer.
TINY_ARCH = dict(
    embed_dim=64,
    image_resolution=32,
    vision_layers=2,
    vision_width=64,
    vision_patch_size=8,
    context_length=77,
    vocab_size=49408,
    transformer_width=64,
    transformer_heads=4,
    transformer_layers=2,
)


@dataclass(frozen=True)
class ClipInfo:
    """What identifies the numbers a backbone produces: its name and its weights' checksum."""

    name: str
    weights_path: str
    sha256: str
    embed_dim: int
    input_resolution: int

    @property
    def encoder_id(self) -> str:
        return f"{self.name}@{self.sha256[:16]}"


def default_cache_dir() -> str:
    return os.path.expanduser(os.environ.get("CLIP_ADAPTER_WEIGHTS", "~/.cache/clip"))


def _clip():
    """Import the openai ``clip`` package (clip-anytorch distribution), quieting its import-time warning.

    It imports ``pkg_resources``, which setuptools < 81 still ships (pinned in setup.py) but warns
    about; the warning is about the package, not something a user can act on.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        import clip

    return clip


def tiny_weights_path(cache_dir: str) -> str:
    return os.path.join(cache_dir, f"clip-tiny-v{TINY_VERSION}.pt")


def ensure_tiny_weights(cache_dir: str) -> str:
    """Create the tiny model's state dict once; the same seed gives the same bytes on every machine."""
    path = tiny_weights_path(cache_dir)
    if os.path.isfile(path):
        return path
    clip = _clip()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(20211009)
        model = clip.model.CLIP(**TINY_ARCH)
    state = {k: v.detach().clone().float() for k, v in model.state_dict().items()}
    atomic_torch_save(state, path)
    log.info("Created the tiny random CLIP (offline pipeline check, accuracies mean nothing) at %s", path)
    return path


@lru_cache(maxsize=None)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_sha256(path: str) -> str:
    st = os.stat(path)
    return _sha256(os.path.abspath(path), st.st_size, st.st_mtime_ns)


def resolve_weights(name: str, cache_dir: str = "") -> str:
    """Name -> a local weights file, downloading through the clip package when it is a known name."""
    cache_dir = cache_dir or default_cache_dir()
    if name == TINY_NAME:
        return ensure_tiny_weights(cache_dir)
    if os.path.isfile(os.path.expanduser(name)):
        return os.path.expanduser(name)
    clip = _clip()
    models = getattr(clip.clip, "_MODELS", {})
    if name not in models:
        raise UserError(
            f"unknown CLIP backbone {name!r}: use one of {', '.join(clip.available_models())}, '{TINY_NAME}', or a path to a weights file"
        )
    target = os.path.join(cache_dir, os.path.basename(models[name]))
    if os.path.isfile(target):
        return target
    try:
        return clip.clip._download(models[name], cache_dir)
    except (urllib.error.URLError, OSError, RuntimeError) as exc:
        raise UserError(
            f"cannot download CLIP weights for {name} ({type(exc).__name__}); put the file at {target} "
            f"(from {models[name]}) or pass its path as MODEL.BACKBONE.NAME"
        ) from None


def load_clip(name: str, device: torch.device | str = "cpu", cache_dir: str = "", precision: str = "fp32"):
    """Return (frozen CLIP in eval mode, ClipInfo). fp16 weights only when asked for on CUDA."""
    path = resolve_weights(name, cache_dir)
    clip = _clip()
    try:
        with warnings.catch_warnings():
            # clip.load first tries the file as a TorchScript archive; torch warns that jit is deprecated.
            warnings.simplefilter("ignore", FutureWarning)
            model, _ = clip.load(path, device="cpu", jit=False)
    except (RuntimeError, KeyError, EOFError) as exc:
        raise UserError(f"cannot load CLIP weights from {path} ({type(exc).__name__}: {exc}); the file may be truncated: delete it and retry") from None
    model = model.float()
    if precision == "fp16" and torch.device(device).type == "cuda":
        clip.model.convert_weights(model)
    model = model.to(device).eval()
    model.requires_grad_(False)
    info = ClipInfo(
        name=name if name == TINY_NAME or not os.path.isfile(os.path.expanduser(name)) else os.path.basename(name),
        weights_path=path,
        sha256=file_sha256(path),
        embed_dim=int(model.text_projection.shape[1]),
        input_resolution=int(model.visual.input_resolution),
    )
    log.info("Loaded CLIP %s from %s (frozen, %s)", info.name, path, precision)
    return model, info
