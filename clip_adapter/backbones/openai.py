"""OpenAI's CLIP through the ``clip`` package's own model code, as ``clip.load`` loads it: ``MODEL.BACKBONE.FAMILY openai``.

Weights: a name OpenAI published (``RN50``, ``ViT-B/16``, ...; downloaded by the clip package, or
found in the weights folder under the file name of its URL), a file path (``MODEL.BACKBONE.WEIGHTS``,
or ``MODEL.BACKBONE.NAME`` as before), or ``tiny``: a small ``clip.model.CLIP`` with random weights
created deterministically once, saved as a state dict and then loaded through exactly the same
loading path as real weights, so the offline demo and the tests exercise the real loading path.

Loading runs the package's own ``clip/model.py`` (the architecture, ``build_model``) and ``clip.load``'s
steps for ``jit=False`` (a TorchScript archive's state dict, else a plain state dict), but not the
package's ``__init__``: that imports torchvision, which pulls in torch's compiler stack (about a
second), and builds the BPE tokenizer, neither of which a run on cached features needs. The package
is imported in full where its tokenizer or downloader is used.

OpenAI's URLs embed each file's sha256, so a file given by path whose checksum is one of them is
named as those weights (``RN50``), shares their feature cache and their table rows.

Everything that knows the clip package's internals (``_MODELS``, ``_download``, ``_tokenizer``,
``convert_weights``, the text transformer's sequence-first layout, ``visual.conv1``) is in this file.
"""
from __future__ import annotations

import ast
import importlib.abc
import importlib.util
import logging
import os
import sys
import urllib.error
import warnings
from functools import lru_cache
from typing import Dict, List, Optional, Tuple

import torch

from clip_adapter.backbones.base import RANDOM_WEIGHTS, Backbone, BackboneIdentity, BackboneSpec, Preprocess, short_sha
from clip_adapter.backbones.weights import WeightsError, check_file, default_weights_dir, file_sha256, load_failure
from clip_adapter.errors import ConfigError
from clip_adapter.registry import BACKBONES
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
# clip's own preprocessing (clip.clip._transform): bicubic resize of the short side, centre crop, these statistics
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
# Input resolution and embedding width of OpenAI's released models: what a run checks INPUT.SIZE
# against before loading anything; the loaded weights are checked against it too.
KNOWN_ARCH: Dict[str, Tuple[int, int]] = {
    "RN50": (224, 1024),
    "RN101": (224, 512),
    "RN50x4": (288, 640),
    "RN50x16": (384, 768),
    "RN50x64": (448, 1024),
    "ViT-B/32": (224, 512),
    "ViT-B/16": (224, 512),
    "ViT-L/14": (224, 768),
    "ViT-L/14@336px": (336, 768),
}


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
        raise ConfigError("the openai clip package is not installed: pip install clip-anytorch")
    return os.path.dirname(spec.origin)


class _BindModelOnImport(importlib.abc.MetaPathFinder):
    """Finds the ``clip`` package as usual and, once its ``__init__`` has run, binds ``clip.model``
    to the module already in ``sys.modules`` (an import that finds a submodule there does not bind
    it on the package, so ``import clip; clip.model`` would fail). Removes itself on first use."""

    def find_spec(self, name, path=None, target=None):
        if name != "clip":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec("clip")
        if spec is None or spec.loader is None:
            return spec
        run_init = spec.loader.exec_module

        def exec_module(module) -> None:
            run_init(module)
            if "clip.model" in sys.modules and "model" not in vars(module):
                module.model = sys.modules["clip.model"]

        spec.loader.exec_module = exec_module  # this spec's own loader instance
        return spec


def clip_model_module():
    """The openai package's ``clip/model.py`` (CLIP's architecture, ``build_model``, ``convert_weights``)
    as ``clip.model``, without running the package's ``__init__``.

    The file is registered under its own name, ``clip.model``, so a later ``import clip`` (for the
    tokenizer, a download, or the user's own code) finds it there and uses it: there is only ever
    one ``CLIP`` and one ``VisionTransformer`` class, whichever was imported first, and ``clip.model``
    is bound on the package as a normal import binds it (``_BindModelOnImport``)."""
    if "clip.model" in sys.modules:
        return sys.modules["clip.model"]
    spec = importlib.util.spec_from_file_location("clip.model", os.path.join(_clip_package_dir(), "model.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules["clip.model"] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules["clip.model"]
        raise
    if "clip" not in sys.modules:
        sys.meta_path.insert(0, _BindModelOnImport())
    return module


@lru_cache(maxsize=1)
def published() -> Dict[str, str]:
    """Name -> download URL of every model OpenAI published: the clip package's ``_MODELS`` table, read
    from its source without running it (the imported table when the source cannot be parsed)."""
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


@lru_cache(maxsize=1)
def published_sha256() -> Dict[str, str]:
    """sha256 -> name: OpenAI's URLs are ``.../<sha256>/<file>``, the checksum the clip package verifies."""
    return {url.rstrip("/").split("/")[-2]: name for name, url in published().items()}


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


def describe_arch(model) -> str:
    """A name for an architecture that is none of OpenAI's: its vision tower's shape and input size."""
    visual = model.visual
    res = int(visual.input_resolution)
    if hasattr(visual, "transformer"):
        return f"ViT-p{visual.conv1.kernel_size[0]}-w{visual.conv1.out_channels}-L{visual.transformer.layers}-{res}px"
    blocks = ".".join(str(len(getattr(visual, f"layer{i}"))) for i in range(1, 5))
    return f"RN-{blocks}-{res}px"


def _is_vit(name: str) -> bool:
    return name.startswith("ViT")


class OpenAIBackbone(Backbone):
    """An OpenAI CLIP (``clip.model.CLIP``): causal text mask, features read at the end token (the largest id)."""

    family = "openai"

    # ------------------------------------------------------------ loading
    @classmethod
    def _resolve(cls, spec: BackboneSpec) -> Tuple[str, str, str]:
        """(weights file, the published name it must be or "", the download URL or "")."""
        folder = default_weights_dir(spec.cache_dir)
        name, weights = spec.name, spec.weights
        if weights and weights != "openai":
            path = os.path.expanduser(weights)
            if not os.path.isfile(path):
                raise WeightsError(f"MODEL.BACKBONE.WEIGHTS {weights}: no such file; give the path of an OpenAI-format CLIP "
                                   "checkpoint, or leave it empty to use the weights MODEL.BACKBONE.NAME names")
            return path, name if name in KNOWN_ARCH else "", ""
        if name == TINY_NAME:
            return ensure_tiny_weights(folder), "", ""
        if os.path.isfile(os.path.expanduser(name)):
            return os.path.expanduser(name), "", ""
        models = published()
        if name not in models:
            raise ConfigError(
                f"unknown OpenAI CLIP backbone {name!r}: use one of {', '.join(models)}, '{TINY_NAME}', or a weights file "
                "(for open_clip models set MODEL.BACKBONE.FAMILY open_clip)"
            )
        url = models[name]
        target = os.path.join(folder, os.path.basename(url))
        if os.path.isfile(target):
            return target, name, url
        try:
            return _clip().clip._download(url, folder), name, url
        except (urllib.error.URLError, OSError, RuntimeError) as exc:
            raise WeightsError(
                f"cannot download CLIP weights for {name} ({type(exc).__name__}); put the file at {target} "
                f"(named {os.path.basename(url)}, from {url}) or pass its path as MODEL.BACKBONE.WEIGHTS"
            ) from None

    @classmethod
    def _identity(cls, spec: BackboneSpec, path: str, expected: str, url: str) -> BackboneIdentity:
        sha = file_sha256(path)
        if spec.name == TINY_NAME and not spec.weights:
            return BackboneIdentity(cls.family, TINY_NAME, RANDOM_WEIGHTS, sha, path)
        known = published_sha256().get(sha)
        if url and known != expected:  # the file in the weights folder under the published name
            check_file(path, f"delete it and run again to download it (from {url})")
            raise WeightsError(
                f"weights file {path} is not OpenAI's {expected} (its sha256 {sha[:16]}... is not the published one): "
                f"an interrupted download or another file; delete it and run again, or download it from {url}"
            )
        if known:
            if expected and known != expected:
                raise WeightsError(f"weights file {path} holds OpenAI's {known} weights, not {expected}; "
                                   f"set MODEL.BACKBONE.NAME {known}")
            return BackboneIdentity(cls.family, known, "openai", sha, path)
        return BackboneIdentity(cls.family, "", short_sha(sha), sha, path)  # arch named once loaded

    @classmethod
    def load(cls, spec: BackboneSpec, device="cpu", precision: str = "fp32") -> "OpenAIBackbone":
        path, expected, url = cls._resolve(spec)
        identity = cls._identity(spec, path, expected, url)
        fix = (f"delete it and run again to download it (from {url})" if url else
               "pass an OpenAI-format CLIP checkpoint (for open_clip checkpoints set MODEL.BACKBONE.FAMILY open_clip)")
        check_file(path, fix)
        try:
            with warnings.catch_warnings():
                # the file is first tried as a TorchScript archive; torch warns that jit is deprecated.
                warnings.simplefilter("ignore", FutureWarning)
                model = _build_from_file(path)
        except Exception as exc:  # noqa: BLE001 - any failure to read the file is the file's problem
            raise load_failure(path, "an OpenAI CLIP model", exc, fix) from None
        res, width = int(model.visual.input_resolution), int(model.text_projection.shape[1])
        if not identity.arch:
            arch = describe_arch(model)
            if expected and (KNOWN_ARCH[expected] != (res, width) or _is_vit(expected) != hasattr(model.visual, "transformer")):
                raise WeightsError(f"weights file {path} does not hold a {expected} model (it builds {arch}, width {width}); "
                                   "set MODEL.BACKBONE.NAME to the file's architecture or pass the right file")
            identity = BackboneIdentity(identity.family, expected or arch, identity.weights, identity.sha256, identity.path)
        if precision == "fp16" and torch.device(device).type == "cuda":
            clip_model_module().convert_weights(model)
        model = model.to(device)
        backbone = cls(
            model,
            identity,
            Preprocess((res, res), OPENAI_MEAN, OPENAI_STD, "bicubic", "shortest"),
            embed_dim=width,
            context_length=int(model.context_length),
            logit_scale=float(model.logit_scale.exp().item()),
        )
        log.info("Loaded %s from %s (frozen, %s)", identity.label, path, precision)
        return backbone

    @classmethod
    def from_model(cls, model, name: str = "in-memory") -> "OpenAIBackbone":
        """A ``clip.model.CLIP`` built in code (tests, notebooks) behind the seam, frozen, fp32 as it is;
        its identity says it is no published weights (weights ``random``), so no cache entry is shared."""
        res, width = int(model.visual.input_resolution), int(model.text_projection.shape[1])
        identity = BackboneIdentity(cls.family, name, RANDOM_WEIGHTS)
        return cls(model, identity, Preprocess((res, res), OPENAI_MEAN, OPENAI_STD, "bicubic", "shortest"), embed_dim=width,
                   context_length=int(model.context_length), logit_scale=float(model.logit_scale.exp().item()))

    @classmethod
    def expected_preprocess(cls, spec: BackboneSpec) -> Optional[Preprocess]:
        name = spec.name
        if spec.weights and spec.weights != "openai":
            if name not in KNOWN_ARCH:
                return None  # the file's architecture is known once it is loaded
        elif name == TINY_NAME:
            res = TINY_ARCH["image_resolution"]
            return Preprocess((res, res), OPENAI_MEAN, OPENAI_STD, "bicubic", "shortest")
        elif os.path.isfile(os.path.expanduser(name)):
            name = published_sha256().get(file_sha256(os.path.expanduser(name)), "")
        if name not in KNOWN_ARCH:
            return None
        res = KNOWN_ARCH[name][0]
        return Preprocess((res, res), OPENAI_MEAN, OPENAI_STD, "bicubic", "shortest")

    # --------------------------------------------------------------- images
    @property
    def image_dtype(self) -> torch.dtype:
        return self.model.visual.conv1.weight.dtype

    def set_image_precision(self, precision: str) -> None:
        visual = self.model.visual
        want = torch.float16 if precision == "fp16" else torch.float32
        if visual.conv1.weight.dtype != want:
            if want == torch.float16:
                clip_model_module().convert_weights(visual)  # CLIP's own half precision (conv/linear/attention weights)
            else:
                visual.float()

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(images.to(self.image_dtype))

    # ----------------------------------------------------------------- text
    @property
    def token_embedding(self):
        return self.model.token_embedding

    @property
    def text_dtype(self) -> torch.dtype:
        # the text transformer's own precision (``CLIP.dtype`` is the *image* tower's conv1, which
        # FEATURES.PREC may have set differently)
        return self.model.text_projection.dtype

    def token_ids(self, text: str) -> List[int]:
        return list(_clip().clip._tokenizer.encode(text))

    def _tokenize(self, texts: List[str]) -> torch.Tensor:
        return _clip().tokenize(texts, context_length=self.context_length)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """``CLIP.encode_text`` (the same operations in the same order), in the text tower's own precision."""
        return self.encode_text_embeddings(self.model.token_embedding(tokens), tokens)

    def encode_text_embeddings(self, embeddings: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        m, dtype = self.model, self.text_dtype
        x = embeddings.type(dtype) + m.positional_embedding.type(dtype)
        x = x.permute(1, 0, 2)  # NLD -> LND: CLIP's transformer is sequence-first; its blocks hold the causal mask
        x = m.transformer(x)
        x = x.permute(1, 0, 2)
        x = m.ln_final(x).type(dtype)
        eot = tokens.argmax(dim=-1)  # the end token has the largest id
        return x[torch.arange(x.shape[0], device=x.device), eot] @ m.text_projection


BACKBONES.register(OpenAIBackbone, name=OpenAIBackbone.family)
