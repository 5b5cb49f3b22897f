"""The backbone seam: everything a method needs from a frozen vision-language model, and nothing else.

Trainers, the prompt learners, the text classifier and the feature cache talk to a ``Backbone``; only
the family files (``openai.py``, ``open_clip.py``, or a plugin's) know a library's internals. The
reason is correctness, not tidiness: CLIP-style text towers differ in the attention mask (causal, or
none for SigLIP), where the sentence feature is read (the end token, the last position), the
tokenizer's special tokens and the context length; code that reaches into one library's modules runs
another library's model *without error* and produces wrong numbers.

What a backbone provides:

- images: ``encode_image`` (raw features), ``preprocess`` (size, mean, std, interpolation of the
  weights), ``set_image_precision``;
- text: ``tokenize``, ``token_ids``, ``encode_text``, and ``encode_text_embeddings``: the text tower on
  token *embeddings* (CoOp's learned prompts) with the model's own mask, layout, pooling and length;
  ``token_embedding``, ``text_dtype``, ``prefix_tokens`` (tokens before the text: 1 for CLIP's start
  token, 0 for tokenizers without one), ``context_length``;
- scoring: ``logit_scale`` and ``logit_bias`` (0 for softmax CLIP; SigLIP's learned bias), ``sigmoid``;
- identity: ``identity`` (family + architecture + weights, with the weights file's sha256), which
  names the backbone in results.json, in the feature cache's key and in the tables.

A family registers its ``Backbone`` subclass in ``clip_adapter.registry.BACKBONES`` under its name
(``MODEL.BACKBONE.FAMILY``); plugins may register more.
"""
from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, ClassVar, List, Optional, Sequence, Tuple

from clip_adapter.errors import ConfigError

if TYPE_CHECKING:  # torch is imported by the families when a model is loaded
    import torch
    from torch import nn

#: the ``weights`` of a random stand-in model (the offline ``tiny`` backbones)
RANDOM_WEIGHTS = "random"


@dataclass(frozen=True)
class Preprocess:
    """How the weights expect their input: what the transforms must match for the features to mean anything.

    ``resize_mode`` is what the weights' own evaluation does (``shortest``: resize the short side and
    centre-crop, INPUT.PRESET clip; ``squash``: resize both sides, INPUT.PRESET coop); it is recorded,
    not applied: INPUT.PRESET chooses the resize rule.
    """

    size: Tuple[int, int]
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"


@dataclass(frozen=True)
class BackboneSpec:
    """What a config asks for: MODEL.BACKBONE.{FAMILY, NAME, WEIGHTS, CACHE_DIR}."""

    family: str = "openai"
    name: str = "RN50"
    weights: str = ""
    cache_dir: str = ""

    @classmethod
    def from_cfg(cls, cfg) -> "BackboneSpec":
        node = cfg.MODEL.BACKBONE
        return cls(
            family=str(getattr(node, "FAMILY", "openai") or "openai"),
            name=str(node.NAME),
            weights=str(getattr(node, "WEIGHTS", "") or ""),
            cache_dir=str(getattr(node, "CACHE_DIR", "") or ""),
        )

    def describe(self) -> str:
        weights = f" WEIGHTS {self.weights}" if self.weights else ""
        return f"MODEL.BACKBONE FAMILY {self.family} NAME {self.name}{weights}"


# Readable names of the pretraining data behind open_clip's weight tags (the label's middle part).
_DATA_NAMES = (
    ("laion2b", "LAION-2B"), ("laion400m", "LAION-400M"), ("laion5b", "LAION-5B"), ("laion_aesthetic", "LAION-Aesthetic"),
    ("webli", "WebLI"), ("openai", "OpenAI"), ("datacomp_xl", "DataComp-XL"), ("datacomp_l", "DataComp-L"),
    ("datacomp_m", "DataComp-M"), ("datacomp_s", "DataComp-S"), ("commonpool", "CommonPool"), ("dfn2b", "DFN-2B"),
    ("dfn5b", "DFN-5B"), ("metaclip", "MetaCLIP"), ("yfcc15m", "YFCC-15M"), ("cc12m", "CC12M"), ("mergedfull", "Merged"),
)


def data_name(tag: str) -> str:
    """``laion2b_s34b_b79k`` -> ``LAION-2B``; an unknown tag is returned as it is."""
    low = tag.lower()
    for prefix, name in _DATA_NAMES:
        if low.startswith(prefix):
            return name
    return tag


@dataclass(frozen=True)
class BackboneIdentity:
    """Family + architecture + weights: what the numbers a backbone produces depend on.

    ``weights`` is the weights' published name (``openai``, an open_clip tag such as
    ``laion2b_s34b_b79k``, ``random`` for the offline stand-ins) or, for a file that matches no known
    weights, ``sha256:<first 16 hex digits>``. A file whose checksum matches known weights gets those
    weights' name, so it shares their table row and feature cache. ``sha256`` is always the file's.
    """

    family: str
    arch: str
    weights: str
    sha256: str = ""
    path: str = ""

    @property
    def offline(self) -> bool:
        """A random stand-in: an offline pipeline check whose accuracies mean nothing."""
        return self.weights == RANDOM_WEIGHTS

    @property
    def name(self) -> str:
        """The short unique name (results.json ``backbone``, table rows). OpenAI's own weights through the
        OpenAI family keep the bare names this project always recorded (``RN50``, ``ViT-B/16``, ``tiny``)."""
        if self.family == "openai" and self.weights in ("openai", RANDOM_WEIGHTS):
            return self.arch
        return f"{self.family}:{self.arch}:{self.weights}"

    @property
    def encoder_id(self) -> str:
        """The feature cache's key: the unique name and the weights file's checksum (a damaged or
        replaced file can never reuse features computed from other bytes). For OpenAI's weights through
        the OpenAI family it is the key this project always used (``RN50@<sha>``), so caches stay valid."""
        return f"{self.name}@{self.sha256[:16]}"

    @property
    def label(self) -> str:
        """A readable name for tables and logs: ``CLIP RN50 (OpenAI)``, ``ViT-B-32 LAION-2B (open_clip laion2b_s34b_b79k)``."""
        if self.offline:
            return f"{self.arch} (random {self.family} model, offline check)"
        if self.weights.startswith("sha256:"):
            return f"{self.arch} with weights sha256 {self.sha256[:12]} ({self.family})"
        if self.family == "openai":
            return f"CLIP {self.arch} (OpenAI)"
        if self.weights == "hf-hub":
            return f"{self.arch} ({self.family})"
        return f"{self.arch} {data_name(self.weights)} ({self.family} {self.weights})"

    def record(self) -> dict:
        """The ``backbone_*`` fields of results.json."""
        return {
            "backbone": self.name,
            "backbone_label": self.label,
            "backbone_family": self.family,
            "backbone_arch": self.arch,
            "backbone_weights": self.weights,
            "backbone_sha256": self.sha256,
        }


class PromptTooLong(ConfigError):
    """A text longer than the text tower's context."""


class Backbone(ABC):
    """A loaded, frozen vision-language model behind the seam (see the module docstring).

    The attributes that the trainer contract names ``clip_info`` (``embed_dim``, ``encoder_id``,
    ``name``, ``sha256``, ``weights_path``, ``input_resolution``) are properties here, so a trainer's
    ``self.clip_info`` is its backbone.
    """

    #: the MODEL.BACKBONE.FAMILY value this class is registered under
    family: ClassVar[str] = ""

    def __init__(self, model: "nn.Module", identity: BackboneIdentity, preprocess: Preprocess, embed_dim: int,
                 context_length: int, logit_scale: float, logit_bias: float = 0.0, sigmoid: bool = False) -> None:
        self.model = model
        self.identity = identity
        self.preprocess = preprocess
        self.embed_dim = int(embed_dim)
        self.context_length = int(context_length)
        self.logit_scale = float(logit_scale)
        #: added to every logit (SigLIP's learned bias; 0 for softmax CLIP)
        self.logit_bias = float(logit_bias)
        #: trained with a sigmoid (SigLIP) loss instead of CLIP's softmax contrastive loss
        self.sigmoid = bool(sigmoid)
        model.requires_grad_(False)
        model.eval()
        # lets the model layer accept ``trainer.clip_model`` where a backbone is expected (as_backbone)
        object.__setattr__(model, "_clip_adapter_backbone", self)

    # ------------------------------------------------------------ loading
    @classmethod
    @abstractmethod
    def load(cls, spec: BackboneSpec, device="cpu", precision: str = "fp32") -> "Backbone":
        """Resolve the weights (names, tags, files; download when possible), load them frozen in eval
        mode on ``device``; ``precision`` fp16 converts the model the family's own way (CUDA only)."""

    @classmethod
    def expected_preprocess(cls, spec: BackboneSpec) -> Optional[Preprocess]:
        """The preprocessing of ``spec``'s weights when it is known without loading them (a run checks
        INPUT.* against it before it writes anything); None when only loading can tell."""
        return None

    # ------------------------------------------------------ contract names
    @property
    def encoder_id(self) -> str:
        return self.identity.encoder_id

    @property
    def name(self) -> str:
        return self.identity.name

    @property
    def sha256(self) -> str:
        return self.identity.sha256

    @property
    def weights_path(self) -> str:
        return self.identity.path

    @property
    def input_resolution(self) -> int:
        return int(self.preprocess.size[0])

    # --------------------------------------------------------------- images
    @property
    @abstractmethod
    def image_dtype(self) -> "torch.dtype":
        """The dtype the image tower takes (its weights' precision)."""

    @abstractmethod
    def set_image_precision(self, precision: str) -> None:
        """``fp16`` or ``fp32`` for the image tower only (FEATURES.PREC), whatever the rest is in."""

    @abstractmethod
    def encode_image(self, images: "torch.Tensor") -> "torch.Tensor":
        """Raw (not normalised) image features [N, embed_dim] of preprocessed images."""

    # ----------------------------------------------------------------- text
    @property
    @abstractmethod
    def token_embedding(self) -> "nn.Embedding":
        """The token embedding table (frozen) that prompts are built from."""

    @property
    @abstractmethod
    def text_dtype(self) -> "torch.dtype":
        """The dtype the text transformer computes in (prompt embeddings are cast to it)."""

    @abstractmethod
    def token_ids(self, text: str) -> List[int]:
        """The tokens of ``text`` without special tokens (start, end, padding)."""

    @abstractmethod
    def _tokenize(self, texts: List[str]) -> "torch.Tensor":
        """The family tokenizer on texts known to fit: [N, context_length] token ids."""

    @abstractmethod
    def encode_text(self, tokens: "torch.Tensor") -> "torch.Tensor":
        """Raw text features [N, embed_dim] of token ids from ``tokenize``."""

    @abstractmethod
    def encode_text_embeddings(self, embeddings: "torch.Tensor", tokens: "torch.Tensor") -> "torch.Tensor":
        """The text tower after its embedding lookup: ``embeddings`` [N, context_length, width] in place
        of ``token_embedding(tokens)``, with the model's own attention mask, positional embedding,
        pooling (read from ``tokens``: their end token, or the last position) and projection.
        ``encode_text_embeddings(token_embedding(t), t)`` equals ``encode_text(t)``."""

    def tokenize(self, texts: Sequence[str]) -> "torch.Tensor":
        """[N, context_length] token ids; a text that does not fit raises ``PromptTooLong`` (never truncated)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        room = self.context_length - self.prefix_tokens - 1  # the start token(s) and the end token
        for text in texts:
            n = len(self.token_ids(text))
            if n > room:
                raise PromptTooLong(
                    f"the text {text!r} has {n} tokens, more than the {room} that fit in {self.identity.label}'s "
                    f"{self.context_length}-token context; shorten it"
                )
        return self._tokenize(texts)

    @cached_property
    def prefix_tokens(self) -> int:
        """How many special tokens precede the text (1: CLIP's start token; 0: e.g. SigLIP's T5 tokenizer),
        found by where a word's tokens appear in its tokenized form."""
        word = self.token_ids("photo")
        row = self._tokenize(["photo"])[0].tolist()
        for i in range(len(row) - len(word) + 1):
            if row[i : i + len(word)] == word:
                return i
        raise RuntimeError(f"{self.identity.label}: the tokenizer's output does not contain the word's tokens")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.identity.label} [{self.encoder_id}]>"


def as_backbone(obj) -> Backbone:
    """``obj`` itself when it is a ``Backbone``, or the backbone a frozen model (``trainer.clip_model``)
    was loaded by; lets code written against the model keep working through the seam."""
    if isinstance(obj, Backbone):
        return obj
    found = getattr(obj, "_clip_adapter_backbone", None)
    if isinstance(found, Backbone):
        return found
    raise TypeError(f"expected a clip_adapter Backbone (trainer.backbone), got {type(obj).__name__}")


def short_sha(sha: str) -> str:
    return f"sha256:{sha[:16]}"


_ARCH_SAFE = re.compile(r"[^A-Za-z0-9._@/+-]+")


def clean_arch(name: str) -> str:
    """An architecture name as it may appear in identities (no spaces or separators of ours)."""
    return _ARCH_SAFE.sub("-", name).strip("-") or "unknown"

