"""open_clip models (LAION, DataComp, SigLIP, ... and OpenAI's weights in open_clip's code): ``MODEL.BACKBONE.FAMILY open_clip``.

``MODEL.BACKBONE.NAME`` is an open_clip architecture (``ViT-B-32``, ``ViT-B-16-SigLIP``; ``list_models()``),
``local-dir:<folder>`` (a folder with ``open_clip_config.json`` and weights) or ``hf-hub:<org/repo>``;
the offline stand-ins ``tiny-vit`` and ``tiny-sigmoid`` are created once (random weights from a small
architecture config, written as a ``local-dir`` folder) and loaded through the same ``create_model``.
``MODEL.BACKBONE.WEIGHTS`` is a pretrained tag of that architecture (``laion2b_s34b_b79k``, ``webli``;
``list_pretrained_tags_by_model``) or a weights file; never empty for a built-in architecture
(open_clip would silently build it with random weights).

Where a tag's file is looked for, in order: the weights folder (``<folder>/<hub repo id>/<file>`` for
tags hosted on the Hugging Face hub, ``<folder>/<file name of the URL>`` for URL-hosted ones), the
Hugging Face cache (no network), then open_clip's own download. Offline, a missing file ends with one
line naming where to put it. A file given by path is named as a tag's weights when its checksum is the
tag's: the sha256 embedded in OpenAI's URLs, the sha256 prefix in open_clip's release file names, or
the file the tag resolves to locally (the hub's cache names files by their sha256; open_clip's table
has no checksum for hub-only tags).

The text tower is read the model's own way: its attention mask (causal for CLIP/LAION, none for
SigLIP, plus a padding mask where the config asks for one), its pooling (``argmax``: the end token,
``last``: the last position, ``eos``: the first end-of-sequence id) and its context length.
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
import warnings
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from clip_adapter.backbones.base import RANDOM_WEIGHTS, Backbone, BackboneIdentity, BackboneSpec, Preprocess, short_sha
from clip_adapter.backbones.weights import WeightsError, check_file, default_weights_dir, file_sha256, load_failure
from clip_adapter.errors import ConfigError
from clip_adapter.registry import BACKBONES
from clip_adapter.utils import atomic_torch_save, atomic_write_json

log = logging.getLogger(__name__)

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
TINY_VERSION = 1
TINY_SEED = 20211009
TINY_WEIGHTS_FILE = "open_clip_pytorch_model.bin"
# The offline stand-ins: open_clip configs at a size whose forward pass costs milliseconds on CPU.
TINY_MODELS: Dict[str, dict] = {
    # An open_clip CLIP as LAION's are built: GELU, causal text mask, features read at the end token.
    "tiny-vit": {
        "model_cfg": {
            "embed_dim": 64,
            "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 16, "patch_size": 8},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 2},
        },
        "preprocess_cfg": {"mean": list(OPENAI_MEAN), "std": list(OPENAI_STD), "interpolation": "bicubic", "resize_mode": "shortest"},
    },
    # SigLIP's text side (ViT-B-16-SigLIP.json): a separate text tower without causal mask, features read
    # at the last position, a projection with bias, a learned logit bias (sigmoid loss), 0.5/0.5 statistics.
    # Its tokenizer is CLIP's (SigLIP's own is a Hugging Face download) at a shorter context.
    "tiny-sigmoid": {
        "model_cfg": {
            "embed_dim": 48,
            "init_logit_scale": math.log(10.0),
            "init_logit_bias": -10.0,
            "custom_text": True,
            "vision_cfg": {"image_size": 32, "layers": 2, "width": 48, "head_width": 16, "patch_size": 8},
            "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 48, "heads": 4, "layers": 2,
                         "no_causal_mask": True, "pool_type": "last", "proj_bias": True, "norm_kwargs": {"eps": 1e-6}},
        },
        "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "interpolation": "bicubic", "resize_mode": "squash"},
    },
}
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def _oc():
    """Import open_clip (the ``open-clip-torch`` distribution)."""
    import open_clip

    return open_clip


# ------------------------------------------------------------------ tiny models
def tiny_dir(folder: str, name: str) -> str:
    return os.path.join(folder, f"open_clip-{name}-v{TINY_VERSION}")


def ensure_tiny(folder: str, name: str) -> str:
    """The tiny model's ``local-dir`` folder, created once: open_clip builds the architecture from the
    config with random weights (seeded, so every machine gets the same bytes) and they are saved there."""
    target = tiny_dir(folder, name)
    weights = os.path.join(target, TINY_WEIGHTS_FILE)
    if os.path.isfile(weights):
        return target
    atomic_write_json(os.path.join(target, "open_clip_config.json"), TINY_MODELS[name])
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings(), _quiet_open_clip(logging.ERROR):
        warnings.simplefilter("ignore")
        torch.manual_seed(TINY_SEED)
        model = _oc().create_model("local-dir:" + target, load_weights=False)
    atomic_torch_save({k: v.detach().clone().float() for k, v in model.state_dict().items()}, weights)
    log.info("Created the tiny random open_clip model %s (offline pipeline check, accuracies mean nothing) at %s", name, target)
    return target


class _quiet_open_clip:
    """open_clip reports every loading step on the root logger; keep those below ``level`` out of the log."""

    def __init__(self, level: int = logging.WARNING) -> None:
        self.quiet = level

    def __enter__(self):
        self.root = logging.getLogger()
        self.level = self.root.level
        if self.level < self.quiet:
            self.root.setLevel(self.quiet)

    def __exit__(self, *exc):
        self.root.setLevel(self.level)


# ------------------------------------------------------------------ tags and files
def _size(value) -> Tuple[int, int]:
    if isinstance(value, (list, tuple)):
        return int(value[0]), int(value[-1])
    return int(value), int(value)


def _preprocess(cfg: dict, size) -> Preprocess:
    """A Preprocess from open_clip's preprocess dict (missing keys: open_clip's defaults, OpenAI's statistics)."""
    return Preprocess(
        _size(size),
        tuple(float(x) for x in cfg.get("mean") or OPENAI_MEAN),
        tuple(float(x) for x in cfg.get("std") or OPENAI_STD),
        str(cfg.get("interpolation") or "bicubic"),
        str(cfg.get("resize_mode") or "shortest"),
    )


def _pp_dict(cfg: dict) -> dict:
    return {k: cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if cfg.get(k) is not None}


def _hub_files(hf_hub: str) -> Tuple[str, List[str]]:
    """(repo id, candidate file names) of a tag's ``hf_hub`` entry ('org/repo/' or 'org/repo/file')."""
    repo, filename = (hf_hub.rstrip("/"), "") if hf_hub.endswith("/") else os.path.split(hf_hub)
    names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
    return repo, names


def _url_sha(url: str) -> Tuple[str, bool]:
    """(sha256 or its prefix embedded in a release URL, whether it is the full checksum)."""
    if "openaipublic" in url:
        return url.rstrip("/").split("/")[-2], True
    if "mlfoundations" in url:
        return os.path.splitext(os.path.basename(url))[0].split("-")[-1], False
    return "", False


def _local_files(tag_cfg: dict, folder: str) -> List[str]:
    """Where a tag's file may sit in the weights folder (first: the name the offline message gives)."""
    out = []
    if tag_cfg.get("hf_hub"):
        repo, names = _hub_files(tag_cfg["hf_hub"])
        out += [os.path.join(folder, repo, n) for n in names]
    elif tag_cfg.get("url"):  # (open_clip downloads from the hub when it can; OpenAI's URLs hold TorchScript)
        out.append(os.path.join(folder, os.path.basename(tag_cfg["url"])))
    return out


def _torchscript(path: str) -> bool:
    """A TorchScript archive (OpenAI's release format), which open_clip's safe loader refuses."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            return any(n.split("/", 2)[1:2] == ["code"] for n in z.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def _hf_cached(tag_cfg: dict) -> List[str]:
    """The tag's files already in the Hugging Face cache (no network)."""
    if not tag_cfg.get("hf_hub"):
        return []
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return []
    repo, names = _hub_files(tag_cfg["hf_hub"])
    found = []
    for n in names:
        try:
            path = try_to_load_from_cache(repo, n)
        except Exception:  # noqa: BLE001 - a malformed cache is a miss, not an error
            path = None
        if isinstance(path, str) and os.path.isfile(path):
            found.append(path)
    return found


def _sha_of(path: str) -> str:
    """A file's sha256; the Hugging Face cache stores hub files under their sha256, so those need no hashing."""
    blob = os.path.basename(os.path.realpath(path))
    return blob if _HEX64.match(blob) else file_sha256(path)


def _matches(tag_cfg: dict, sha: str, folder: str) -> bool:
    embedded, full = _url_sha(tag_cfg.get("url", ""))
    if embedded and (sha == embedded if full else sha.startswith(embedded)):
        return True
    return any(_sha_of(p) == sha for p in _local_files(tag_cfg, folder) + _hf_cached(tag_cfg) if os.path.isfile(p))


def known_tag(arch: str, sha: str, folder: str) -> Optional[str]:
    """The pretrained tag of ``arch`` whose weights file has checksum ``sha``, if one is known."""
    pretrained = _oc().pretrained
    for tag in pretrained.list_pretrained_tags_by_model(arch):
        if _matches(pretrained.get_pretrained_cfg(arch, tag), sha, folder):
            return tag
    return None


def _other_arch(sha: str) -> Optional[Tuple[str, str]]:
    """(architecture, tag) of released weights with this checksum in open_clip's table (URL checksums only)."""
    pretrained = _oc().pretrained
    for arch, tag in pretrained.list_pretrained():
        embedded, full = _url_sha(pretrained.get_pretrained_cfg(arch, tag).get("url", ""))
        if embedded and (sha == embedded if full else sha.startswith(embedded)):
            return arch, tag
    return None


def _agreed_preprocess(arch: str) -> Optional[dict]:
    """The preprocessing every pretrained tag of ``arch`` shares (a file of unknown weights of that
    architecture gets it); None when the tags disagree or there are none (open_clip's defaults apply)."""
    pretrained = _oc().pretrained
    found = {json.dumps(_pp_dict(pretrained.get_pretrained_cfg(arch, t)), sort_keys=True)
             for t in pretrained.list_pretrained_tags_by_model(arch)}
    return json.loads(found.pop()) if len(found) == 1 else None


def _model_cfg(name: str) -> dict:
    cfg = _oc().get_model_config(name)
    if cfg is None:
        models = _oc().list_models()
        close = [m for m in models if m.lower().startswith(name.lower()[:5])][:8]
        raise ConfigError(
            f"unknown open_clip architecture {name!r} (MODEL.BACKBONE.NAME); e.g. {', '.join(close or models[:8])} "
            f"(open_clip.list_models() has all), 'local-dir:<folder>', 'hf-hub:<org/repo>', or {', '.join(TINY_MODELS)}"
        )
    return cfg


def _check_gelu(arch: str, tag: str, model_cfg: dict, tag_cfg: dict) -> None:
    """A tag trained with QuickGELU (OpenAI's, some LAION-400M) on a GELU config gives wrong features
    without an error (open_clip only warns): refuse and name the right architecture."""
    want, have = bool(tag_cfg.get("quick_gelu", False)), bool(model_cfg.get("quick_gelu", False))
    if want == have:
        return
    other = f"{arch}-quickgelu" if want else arch[: -len("-quickgelu")] if arch.endswith("-quickgelu") else ""
    fix = f"set MODEL.BACKBONE.NAME {other}" if other else "use an architecture with the weights' activation"
    raise ConfigError(f"open_clip weights {tag} of {arch} were trained with{'' if want else 'out'} QuickGELU, "
                      f"which {arch} does{' not' if want else ''} use; {fix}")


@dataclass
class _Plan:
    """What to hand to ``open_clip.create_model`` and how the result is named."""

    model_name: str
    pretrained: Optional[str]
    identity: BackboneIdentity
    preprocess: Optional[dict] = None  # forced preprocessing (a file: its tag's, or the architecture's)
    tokenizer: object = None  # built before any download (a missing package fails before gigabytes arrive)


def _tag_file(arch: str, tag: str, tag_cfg: dict, folder: str) -> str:
    """A tag's weights file: the weights folder, the Hugging Face cache, then open_clip's download."""
    local = _local_files(tag_cfg, folder)
    for path in local + _hf_cached(tag_cfg):
        if os.path.isfile(path):
            embedded, full = _url_sha(tag_cfg.get("url", ""))
            if embedded and path.endswith(os.path.basename(tag_cfg.get("url", ""))):
                sha = file_sha256(path)
                if not (sha == embedded if full else sha.startswith(embedded)):
                    check_file(path, f"delete it and download it again from {tag_cfg['url']}")
                    raise WeightsError(f"weights file {path} is not open_clip's {arch} {tag} (its sha256 does not match the "
                                       f"release); delete it and download it again from {tag_cfg['url']}")
            return path
    where = local[0] if local else os.path.join(folder, f"{arch}-{tag}.bin")
    source = (f"https://huggingface.co/{_hub_files(tag_cfg['hf_hub'])[0]}" if tag_cfg.get("hf_hub") else tag_cfg.get("url", ""))
    offline = _unreachable(tag_cfg)
    if offline:
        raise WeightsError(f"cannot download open_clip weights {arch} {tag} ({offline}); put the file at {where} "
                           f"(from {source}) or pass its path as MODEL.BACKBONE.WEIGHTS")
    try:
        with _quiet_open_clip():
            path = _oc().pretrained.download_pretrained(tag_cfg, cache_dir=folder if not tag_cfg.get("hf_hub") else None)
    except Exception as exc:  # noqa: BLE001 - offline, hub errors, interrupted downloads: one line either way
        raise WeightsError(f"cannot download open_clip weights {arch} {tag} ({type(exc).__name__}); put the file at {where} "
                           f"(from {source}) or pass its path as MODEL.BACKBONE.WEIGHTS") from None
    if not path or not os.path.isfile(path):
        raise WeightsError(f"open_clip has no download for {arch} {tag}; put the weights file at {where}")
    return path


def _unreachable(tag_cfg: dict) -> str:
    """Why a download cannot work ("" when it may): the hub's client retries for about a minute before
    it gives up on a machine without network, so an offline run is told at once instead."""
    import socket
    from urllib.parse import urlparse

    if tag_cfg.get("hf_hub"):
        if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on"):
            return "HF_HUB_OFFLINE is set"
        url = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    else:
        url = tag_cfg.get("url", "")
    host = urlparse(url).hostname
    if not host:
        return ""
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        return f"no network: {host} cannot be resolved"
    return ""


def plan(spec: BackboneSpec) -> _Plan:
    """Resolve a spec to a weights file and an identity (downloads a tag's file when it is missing)."""
    folder = default_weights_dir(spec.cache_dir)
    name, weights = spec.name, spec.weights
    family = OpenClipBackbone.family
    if name in TINY_MODELS:
        if weights:
            raise ConfigError(f"{name} is an offline stand-in with its own random weights; leave MODEL.BACKBONE.WEIGHTS empty")
        target = ensure_tiny(folder, name)
        path = os.path.join(target, TINY_WEIGHTS_FILE)
        return _Plan("local-dir:" + target, None, BackboneIdentity(family, name, RANDOM_WEIGHTS, file_sha256(path), path))
    if name.startswith(("local-dir:", "hf-hub:")):
        if weights:
            raise ConfigError(f"MODEL.BACKBONE.NAME {name} brings its own weights; leave MODEL.BACKBONE.WEIGHTS empty")
        if name.startswith("local-dir:"):
            target = os.path.expanduser(name[len("local-dir:"):])
            if not os.path.isfile(os.path.join(target, "open_clip_config.json")):
                raise ConfigError(f"MODEL.BACKBONE.NAME {name}: {target} has no open_clip_config.json; "
                                  "a local-dir folder holds open_clip_config.json and the weights file")
            from pathlib import Path

            path = _oc().factory._find_checkpoint_in_dir(Path(target))
            if not path:
                raise WeightsError(f"{target} has no weights file (*.safetensors, *.bin, *.pth); put the model's weights there")
            arch = "local-dir:" + os.path.basename(os.path.normpath(target))
            return _Plan("local-dir:" + target, None, BackboneIdentity(family, arch, short_sha(file_sha256(path)), file_sha256(path), path))
        repo = name[len("hf-hub:"):]
        try:
            with _quiet_open_clip():
                path = _oc().pretrained.download_pretrained_from_hf(repo)
        except Exception as exc:  # noqa: BLE001
            raise WeightsError(f"cannot fetch {name} ({type(exc).__name__}); run once with network access (the Hugging Face cache "
                               "then holds it) or put the repository's files in a folder and use MODEL.BACKBONE.NAME local-dir:<folder>") from None
        return _Plan(name, None, BackboneIdentity(family, name, "hf-hub", _sha_of(path), path))

    model_cfg = _model_cfg(name)
    tokenizer = OpenClipBackbone._tokenizer(name, name)
    pretrained = _oc().pretrained
    tags = pretrained.list_pretrained_tags_by_model(name)
    if not weights:
        raise ConfigError(f"MODEL.BACKBONE.WEIGHTS is empty: open_clip would build {name} with random weights; set a pretrained "
                          f"tag ({', '.join(tags) or 'none published'}) or the path of a weights file")
    if pretrained.is_pretrained_cfg(name, weights):
        tag = weights.lower().replace("-", "_")  # open_clip's own tag normalisation
        tag_cfg = pretrained.get_pretrained_cfg(name, tag)
        _check_gelu(name, tag, model_cfg, tag_cfg)
        path = _tag_file(name, tag, tag_cfg, folder)
        return _Plan(name, path, BackboneIdentity(family, name, tag, _sha_of(path), path), _pp_dict(tag_cfg), tokenizer)
    path = os.path.expanduser(weights)
    if not os.path.isfile(path):
        raise ConfigError(f"MODEL.BACKBONE.WEIGHTS {weights!r} is neither a pretrained tag of {name} "
                          f"({', '.join(tags) or 'none published'}) nor a file")
    sha = file_sha256(path)
    tag = known_tag(name, sha, folder)
    if tag:
        tag_cfg = pretrained.get_pretrained_cfg(name, tag)
        _check_gelu(name, tag, model_cfg, tag_cfg)
        return _Plan(name, path, BackboneIdentity(family, name, tag, sha, path), _pp_dict(tag_cfg), tokenizer)
    return _Plan(name, path, BackboneIdentity(family, name, short_sha(sha), sha, path), _agreed_preprocess(name), tokenizer)


def to_half(module: nn.Module) -> None:
    """open_clip's half precision, as ``create_model(precision="fp16")`` makes it: conv, linear and
    attention weights and the projection matrices in fp16, layer norms computing in fp32
    (``LayerNormFp32``), a timm tower cast whole. (open_clip's ``convert_weights_to_lp`` fails on a
    text tower whose projection is a Linear layer, as SigLIP-style towers with a projection bias have.)"""
    from open_clip.transformer import LayerNorm, LayerNormFp32

    half = torch.float16
    for m in module.modules():
        if type(m).__name__ == "TimmModel":
            m.to(half)
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            m.weight.data = m.weight.data.to(half)
            if m.bias is not None:
                m.bias.data = m.bias.data.to(half)
        for name in ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight", "in_proj_bias", "bias_k", "bias_v",
                     "text_projection", "proj"):
            p = m._parameters.get(name)
            if p is not None:
                p.data = p.data.to(half)
        if type(m) is LayerNorm:
            m.__class__ = LayerNormFp32


def _wrong_arch(path: str, arch: str, model_name: str) -> Optional[WeightsError]:
    """The one line for a readable state dict that does not fit the architecture (None: it fits, so
    something else is wrong). Only on the error path: builds the architecture without weights to compare."""
    oc = _oc()
    try:
        with warnings.catch_warnings(), _quiet_open_clip(logging.ERROR):
            warnings.simplefilter("ignore")
            state = oc.factory.load_state_dict(path)
            expected = oc.create_model(model_name, load_weights=False).state_dict()
    except Exception:  # noqa: BLE001 - unreadable: not an architecture question
        return None
    if "positional_embedding" in state and "positional_embedding" not in expected:  # as open_clip's load_checkpoint
        state = oc.model.convert_to_custom_text_state_dict(state)
    shapes = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    missing = [k for k in expected if k not in state and k != "logit_bias"]
    extra = [k for k in state if k not in expected]
    if shapes:
        k = shapes[0]
        detail = f"{k} is {tuple(state[k].shape)} in the file, {tuple(expected[k].shape)} in {arch}"
    elif missing or extra:
        detail = (f"the file lacks {len(missing)} of its tensors, e.g. {missing[0]}" if missing
                  else f"the file has {len(extra)} tensors it does not, e.g. {extra[0]}")
    else:
        return None
    other = _other_arch(file_sha256(path))
    fix = (f"the file holds open_clip's {other[0]} {other[1]}: set MODEL.BACKBONE.NAME {other[0]}" if other else
           "set MODEL.BACKBONE.NAME to the file's architecture or pass the right file")
    return WeightsError(f"weights file {path} does not fit open_clip's {arch} ({detail}); {fix}")


class OpenClipBackbone(Backbone):
    """An open_clip ``CLIP`` / ``CustomTextCLIP`` (CLIP, LAION, DataComp, SigLIP, ...)."""

    family = "open_clip"

    def __init__(self, model, identity, preprocess, tokenizer, **kw) -> None:
        self.tokenizer = tokenizer
        self._image_dtype = torch.float32
        super().__init__(model, identity, preprocess, **kw)

    # ------------------------------------------------------------ loading
    @classmethod
    def load(cls, spec: BackboneSpec, device="cpu", precision: str = "fp32") -> "OpenClipBackbone":
        p = plan(spec)
        path = p.identity.path
        fix = "pass an open_clip checkpoint of MODEL.BACKBONE.NAME's architecture (for OpenAI's clip package files set MODEL.BACKBONE.FAMILY openai)"
        if path:
            check_file(path, fix)
            if _torchscript(path):
                known = _other_arch(file_sha256(path))
                what = f"OpenAI's TorchScript release of {known[0]}" if known else "a TorchScript archive"
                raise WeightsError(f"weights file {path} is {what}, which open_clip does not load; use MODEL.BACKBONE.FAMILY "
                                   "openai for it, or open_clip's openai tag (a state dict from the Hugging Face hub)")
        half = precision == "fp16" and torch.device(device).type == "cuda"
        oc = _oc()
        try:
            with warnings.catch_warnings(), _quiet_open_clip():
                warnings.simplefilter("ignore", FutureWarning)
                model = oc.create_model(p.model_name, pretrained=p.pretrained, device=device, force_preprocess_cfg=p.preprocess or None)
        except ImportError as exc:
            raise ConfigError(f"{spec.name} needs the Python package {exc.name or exc}: pip install {exc.name or 'it'}") from None
        except Exception as exc:  # noqa: BLE001 - any failure to read the file is the file's problem
            wrong = _wrong_arch(path, spec.name, p.model_name) if path else None
            raise (wrong or load_failure(path or p.model_name, f"open_clip's {spec.name}", exc, fix)) from None
        if half:
            to_half(model)
        pp = dict(getattr(model.visual, "preprocess_cfg", {}) or {})
        tokenizer = p.tokenizer or cls._tokenizer(p.model_name, spec.name)
        bias = getattr(model, "logit_bias", None)
        backbone = cls(
            model,
            p.identity,
            _preprocess(pp, pp.get("size", getattr(model.visual, "image_size", 224))),
            tokenizer,
            embed_dim=0,  # set below from a forward pass (timm towers do not state it uniformly)
            context_length=int(model.context_length),
            logit_scale=float(model.logit_scale.exp().item()),
            logit_bias=float(bias.item()) if bias is not None else 0.0,
            sigmoid=bias is not None,
        )
        backbone._image_dtype = torch.float16 if half else torch.float32
        with torch.no_grad():
            backbone.embed_dim = int(backbone.encode_text(backbone.tokenize(["a"]).to(device)).shape[-1])
        log.info("Loaded %s from %s (frozen, %s)", p.identity.label, path or p.model_name, precision)
        return backbone

    @staticmethod
    def _tokenizer(model_name: str, shown: str):
        try:
            with _quiet_open_clip():
                return _oc().get_tokenizer(model_name)
        except ImportError as exc:
            raise ConfigError(f"{shown}'s tokenizer needs the Python package {exc.name or exc}: pip install transformers sentencepiece") from None
        except Exception as exc:  # noqa: BLE001 - a hub tokenizer offline
            raise WeightsError(f"cannot load {shown}'s tokenizer ({type(exc).__name__}); run once with network access "
                               "(the Hugging Face cache then holds it) or set HF_HUB_OFFLINE=1 with a filled cache") from None

    @classmethod
    def expected_preprocess(cls, spec: BackboneSpec) -> Optional[Preprocess]:
        name, weights = spec.name, spec.weights
        if name in TINY_MODELS:
            t = TINY_MODELS[name]
            return _preprocess(t["preprocess_cfg"], t["model_cfg"]["vision_cfg"]["image_size"])
        if name.startswith("hf-hub:"):
            return None
        if name.startswith("local-dir:"):
            config = os.path.join(os.path.expanduser(name[len("local-dir:"):]), "open_clip_config.json")
            try:
                with open(config, encoding="utf-8") as f:
                    data = json.load(f)
                return _preprocess(data.get("preprocess_cfg", {}), data["model_cfg"]["vision_cfg"].get("image_size", 224))
            except (OSError, ValueError, KeyError):
                return None  # the load names what is wrong
        cfg = _oc().get_model_config(name)
        if cfg is None or not weights:
            return None
        size = cfg.get("vision_cfg", {}).get("image_size", 224)
        pretrained = _oc().pretrained
        if pretrained.is_pretrained_cfg(name, weights):
            return _preprocess(pretrained.get_pretrained_cfg(name, weights), size)
        path = os.path.expanduser(weights)
        if not os.path.isfile(path):
            return None
        tag = known_tag(name, file_sha256(path), default_weights_dir(spec.cache_dir))
        return _preprocess(pretrained.get_pretrained_cfg(name, tag) if tag else (_agreed_preprocess(name) or {}), size)

    # --------------------------------------------------------------- images
    @property
    def image_dtype(self) -> torch.dtype:
        return self._image_dtype

    def set_image_precision(self, precision: str) -> None:
        want = torch.float16 if precision == "fp16" else torch.float32
        if want == self._image_dtype:
            return
        if want == torch.float32:
            self.model.visual.float()
        else:
            to_half(self.model.visual)
        self._image_dtype = want

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(images.to(self._image_dtype))

    # ----------------------------------------------------------------- text
    @property
    def _tower(self) -> "_TextTower":
        tower = getattr(self, "_tower_cache", None)
        if tower is None:
            tower = self._tower_cache = _TextTower.of(self.model, self.identity.label)
        return tower

    @property
    def token_embedding(self) -> nn.Embedding:
        return self._tower.token_embedding

    @property
    def text_dtype(self) -> torch.dtype:
        return self._tower.transformer.get_cast_dtype()

    def token_ids(self, text: str) -> List[int]:
        tok = self.tokenizer
        if hasattr(tok, "encode") and hasattr(tok, "bpe"):  # open_clip's SimpleTokenizer (CLIP's BPE)
            return list(tok.encode(text))
        from open_clip.tokenizer import basic_clean, canonicalize_text

        clean = getattr(tok, "clean_fn", None)
        text = clean(text) if clean else canonicalize_text(basic_clean(text))
        return list(tok.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _tokenize(self, texts: List[str]) -> torch.Tensor:
        return self.tokenizer(texts, context_length=self.context_length)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(tokens)

    def encode_text_embeddings(self, embeddings: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return self._tower.forward(embeddings, tokens)


@dataclass
class _TextTower:
    """The parts of an open_clip text tower that its ``encode_text`` uses after the embedding lookup."""

    token_embedding: nn.Embedding
    positional_embedding: torch.Tensor
    transformer: nn.Module
    ln_final: nn.Module
    projection: object
    attn_mask: Optional[torch.Tensor]
    pool_type: str
    eos_id: Optional[int]
    pad_masker: Optional[nn.Module] = None  # the TextTransformer that builds its padding mask

    @classmethod
    def of(cls, model: nn.Module, label: str) -> "_TextTower":
        from open_clip.transformer import TextTransformer

        if hasattr(model, "token_embedding") and hasattr(model, "transformer"):  # CLIP: the tower's parts on the model
            return cls(model.token_embedding, model.positional_embedding, model.transformer, model.ln_final, model.text_projection,
                       model.attn_mask, model.text_pool_type, getattr(model, "text_eos_id", None))
        text = getattr(model, "text", None)
        if isinstance(text, TextTransformer):  # CustomTextCLIP (SigLIP)
            if text.cls_emb is not None:
                raise ConfigError(f"{label}'s text tower appends a class token (CoCa); methods that learn prompt embeddings cannot run on it")
            return cls(text.token_embedding, text.positional_embedding, text.transformer, text.ln_final, text.text_projection,
                       text.attn_mask, text.pool_type, getattr(text, "eos_id", None), text if text.use_pad_mask else None)
        raise ConfigError(f"{label}'s text tower is {type(text).__name__}, not open_clip's TextTransformer; methods that learn "
                          "prompt embeddings (CoOp) cannot run on it")

    def forward(self, embeddings: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """open_clip's ``encode_text`` from the embeddings on (the same operations in the same order)."""
        from open_clip.transformer import text_global_pool

        cast = self.transformer.get_cast_dtype()
        seq = embeddings.shape[1]
        x = embeddings.to(cast) + self.positional_embedding[:seq].to(cast)
        mask = self.attn_mask
        if self.pad_masker is not None:
            pad = self.pad_masker._build_additive_mask(tokens, seq, x.dtype)
            mask = pad if mask is None else mask[:seq, :seq].unsqueeze(0) + pad
        x = self.transformer(x, attn_mask=mask)
        x = self.ln_final(x)
        x = text_global_pool(x, tokens, self.pool_type, eos_token_id=self.eos_id)
        if isinstance(self.projection, nn.Linear):
            return self.projection(x)
        return x @ self.projection if self.projection is not None else x


BACKBONES.register(OpenClipBackbone, name=OpenClipBackbone.family)
