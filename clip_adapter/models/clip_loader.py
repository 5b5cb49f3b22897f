"""Load a frozen CLIP by name, by file path, or the offline ``tiny`` stand-in, as ``clip.load`` does.

``tiny`` is a small ``clip.model.CLIP`` with random weights created deterministically, saved as a
state dict and then loaded through exactly the same path as real weights, so the offline demo and
the tests exercise the real loading path.

Loading uses the openai package's own ``clip/model.py`` (the architecture and ``build_model``) and
``clip.load``'s steps for ``jit=False`` (a TorchScript archive's state dict, else a plain state dict),
but not the package's ``__init__``: that imports torchvision, which pulls in torch's compiler stack
(about a second), and builds the BPE tokenizer, neither of which a run with cached features needs.
The package is imported in full where its tokenizer or downloader is used.
"""
from __future__ import annotations

import ast
import hashlib
import importlib.util
import logging
import os
import sys
import urllib.error
import warnings
from dataclasses import dataclass
from functools import lru_cache
from typing import Dict

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


def _clip_package_dir() -> str:
    spec = importlib.util.find_spec("clip")  # locates the package without running its __init__
    if spec is None or not spec.origin:
        raise UserError("the openai clip package is not installed: pip install clip-anytorch")
    return os.path.dirname(spec.origin)


_MODEL_MODULE = "clip_adapter.models._clip_model"


def clip_model_module():
    """The openai package's ``clip/model.py`` (CLIP's architecture, ``build_model``, ``convert_weights``):
    ``clip.model`` itself once the package is imported, else that file run on its own under a private
    name (so a later ``import clip`` still builds its package normally)."""
    for name in ("clip.model", _MODEL_MODULE):
        if name in sys.modules:
            return sys.modules[name]
    spec = importlib.util.spec_from_file_location(_MODEL_MODULE, os.path.join(_clip_package_dir(), "model.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[_MODEL_MODULE] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[_MODEL_MODULE]
        raise
    return module


@lru_cache(maxsize=None)
def _released_weights() -> Dict[str, str]:
    """clip's table of released weights (name -> URL), read from the package's source without running
    it; the imported table when the source cannot be parsed."""
    try:
        with open(os.path.join(_clip_package_dir(), "clip.py"), encoding="utf-8") as f:
            tree = ast.parse(f.read())
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "_MODELS" for t in node.targets):
                return dict(ast.literal_eval(node.value))
    except (OSError, SyntaxError, ValueError):
        pass
    return dict(getattr(_clip().clip, "_MODELS", {}))


def _build_from_file(path: str):
    """``clip.load(path, device="cpu", jit=False)``'s model: the state dict of a TorchScript archive
    (the released files) or of a plain state-dict file, through ``clip.model.build_model``, in fp32."""
    try:
        state = torch.jit.load(path, map_location="cpu").eval().state_dict()
    except RuntimeError:
        state = torch.load(path, map_location="cpu")
    return clip_model_module().build_model(state).float()


def tiny_weights_path(cache_dir: str) -> str:
    return os.path.join(cache_dir, f"clip-tiny-v{TINY_VERSION}.pt")


def ensure_tiny_weights(cache_dir: str) -> str:
    """Create the tiny model's state dict once; the same seed gives the same bytes on every machine."""
    path = tiny_weights_path(cache_dir)
    if os.path.isfile(path):
        return path
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(20211009)
        model = clip_model_module().CLIP(**TINY_ARCH)
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
    models = _released_weights()
    if name not in models:
        raise UserError(
            f"unknown CLIP backbone {name!r}: use one of {', '.join(models)}, '{TINY_NAME}', or a path to a weights file"
        )
    target = os.path.join(cache_dir, os.path.basename(models[name]))
    if os.path.isfile(target):
        return target
    try:
        return _clip().clip._download(models[name], cache_dir)
    except (urllib.error.URLError, OSError, RuntimeError) as exc:
        raise UserError(
            f"cannot download CLIP weights for {name} ({type(exc).__name__}); put the file at {target} "
            f"(from {models[name]}) or pass its path as MODEL.BACKBONE.NAME"
        ) from None


def load_clip(name: str, device: torch.device | str = "cpu", cache_dir: str = "", precision: str = "fp32"):
    """Return (frozen CLIP in eval mode, ClipInfo). fp16 weights only when asked for on CUDA."""
    path = resolve_weights(name, cache_dir)
    try:
        with warnings.catch_warnings():
            # the file is first tried as a TorchScript archive; torch warns that jit is deprecated.
            warnings.simplefilter("ignore", FutureWarning)
            model = _build_from_file(path)
    except (RuntimeError, KeyError, EOFError) as exc:
        raise UserError(f"cannot load CLIP weights from {path} ({type(exc).__name__}: {exc}); the file may be truncated: delete it and retry") from None
    if precision == "fp16" and torch.device(device).type == "cuda":
        clip_model_module().convert_weights(model)
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
