"""The one feature pipeline every CLIP trainer shares.

It loads the frozen CLIP once, builds the fixed-prompt text classifier, and serves image features:
from the feature cache by default (each training image's K = FEATURES.TRAIN_VIEWS augmented views
and every val/test image encoded once, ever), or, with ``FEATURES.MODE exact``, by running the
image encoder on a freshly augmented batch every iteration as the paper's code does.

Both modes follow one plan (``epoch_plan``): the same seeded shuffle per epoch and, for image i in
epoch e, augmented view ``e mod K`` (cached) or view ``e`` (exact: a new crop every epoch, never
reused), where view v of an image is the crop/flip seeded by (image, v). With K >= MAX_EPOCH the
two modes therefore see identical inputs and train to the same weights (tests/test_features.py);
with the default K < MAX_EPOCH cached mode cycles through its K views, each used equally often.

Trainers whose gradient passes through the image encoder (``input_kind = "images"``, e.g. MaPLe's
prompts inside the vision tower) cannot use stored features: ``train_batches`` then yields
``(images, labels)`` from the same plan and loader as exact mode (view ``e`` in epoch e, a fresh
crop every epoch), ``logits`` receives the image tensors, and ``predict`` streams each split's
images through the test transform. Nothing image-side is cached for them; the fixed-prompt text
classifier still comes from the cache.
"""
from __future__ import annotations

import logging
import time
from typing import Dict, Iterator, List, Optional, Tuple

import torch
import torch.nn.functional as F

from clip_adapter.backbones import BackboneSpec, load_backbone
from clip_adapter.backbones.preprocess import resolve_input
from clip_adapter.data.loader import build_loader
from clip_adapter.data.transforms import build_transform, transform_spec
from clip_adapter.engine.trainer import TrainerBase
from clip_adapter.errors import CheckpointError, ConfigError
from clip_adapter.features import FeatureCache, ViewSeeds, cached_text_classifier, default_cache_dir
from clip_adapter.models.text import encode_text_classifier
from clip_adapter.utils import resolve_precision

log = logging.getLogger(__name__)

MODES = ("cached", "exact")


class ClipTrainer(TrainerBase):
    """Base for trainers over a frozen backbone; subclasses add a head and implement ``logits``.

    ``self.backbone`` (clip_adapter.backbones) is the only way to the model: ``encode_image``,
    ``tokenize``/``encode_text``/``encode_text_embeddings``, ``preprocess``, ``identity``.
    ``self.clip_model`` (the frozen ``nn.Module``, for parameter checks) and ``self.clip_info`` (the
    backbone itself: ``embed_dim``, ``encoder_id``, ...) keep the trainer contract's names.

    Logits are ``logit_scale * norm(image) . norm(text)^T + logit_bias``: the bias is 0 for softmax
    CLIP and SigLIP's learned bias for sigmoid models. A constant added to every logit changes neither
    the softmax cross-entropy the methods train with nor the argmax they predict by, so the methods'
    losses stay as their papers define them on every backbone; the bias is applied so that logits
    are the model's own (a sigmoid of them is SigLIP's probability).
    """

    #: "single" (the dataset's hand-crafted template) or "ensemble" (ImageNet's templates)
    template_mode: str = "single"
    #: config node whose PREC applies ("" = fp16 on CUDA as CLIP ships, fp32 elsewhere)
    prec_node: str = ""

    # ---------------------------------------------------------------- build
    def build_model(self) -> None:
        cfg = self.cfg
        if cfg.FEATURES.MODE not in MODES:
            raise ConfigError(f"FEATURES.MODE must be one of {', '.join(MODES)}, got {cfg.FEATURES.MODE!r}")
        self.selection_protocol()  # an unknown SELECTION.PROTOCOL fails before CLIP loads
        requested = getattr(cfg.TRAINER, self.prec_node).PREC if self.prec_node else "fp16"
        self.precision = resolve_precision(requested, self.device)
        if self.prec_node and self.precision != requested.lower():
            log.info("Precision %s needs CUDA; using %s on %s", requested, self.precision, self.device.type)
        spec = BackboneSpec.from_cfg(cfg)
        if self.backbone_families and spec.family not in self.backbone_families:
            raise ConfigError(f"{type(self).__name__} runs on the {', '.join(self.backbone_families)} backbone family only "
                              f"(MODEL.BACKBONE.FAMILY is {spec.family!r}); pick a backbone of that family")
        t0 = time.perf_counter()
        self.backbone = load_backbone(BackboneSpec.from_cfg(cfg), self.device, "fp16" if self.precision == "fp16" else "fp32")
        self.clip_load_seconds = time.perf_counter() - t0
        self.clip_model, self.clip_info = self.backbone.model, self.backbone
        # Size and statistics are the weights' (an empty INPUT key takes them; a disagreeing one fails).
        self.input_spec, _ = resolve_input(cfg, self.backbone.preprocess, self.backbone.identity.label)
        if self.input_kind == "images":
            # The image tower is on the trainable path: it runs at the trainer's PREC, not FEATURES.PREC.
            self.feature_precision = "fp16" if self.backbone.image_dtype == torch.float16 else "fp32"
        else:
            self._set_image_encoder_precision(cfg.FEATURES.PREC)
        if self.backbone.identity.offline or cfg.DATASET.NAME == "Smoke":
            log.info("NOTE: offline pipeline check (tiny random backbone and/or synthetic smoke data): accuracies mean nothing")
        self.logit_scale = self.backbone.logit_scale
        self.logit_bias = self.backbone.logit_bias
        dataset = self.dm.dataset
        # The evaluation dataset's classes, or for a class-bound model evaluated on a mapped subset
        # of its training classes, those (evaluate() then keeps the mapped columns).
        self.classnames: List[str] = list(self.class_space.classnames) if self.class_space else dataset.classnames
        self.templates: List[str] = dataset.templates(self.template_mode)
        self.cache = FeatureCache(
            default_cache_dir(cfg),
            self.clip_info.encoder_id,
            self.encode_images,
            self.device,
            self.feature_precision,
            batch_size=int(cfg.FEATURES.BATCH_SIZE),
            num_workers=int(cfg.DATALOADER.NUM_WORKERS),
            dim=self.clip_info.embed_dim,
            seed_root=cfg.DATASET.ROOT,
        )
        # Every image-encoder pass of this trainer (cache fills and exact mode alike): counted and timed.
        self.encoder_stats = {"images": 0, "seconds": 0.0, "text_prompts": 0, "text_seconds": 0.0}
        self.text_weights = self.text_classifier(self.classnames, self.templates).to(self.device)
        self.build_transforms()
        self._split_feats: Dict[str, Tuple[torch.Tensor, torch.Tensor]] = {}
        self._train_views: Optional[torch.Tensor] = None
        self.build_head()
        if cfg.MODEL.INIT_WEIGHTS:
            self.init_weights(cfg.MODEL.INIT_WEIGHTS)

    def build_head(self) -> None:
        """Create and ``register_model`` the trainable parts (none for zero-shot)."""

    def build_transforms(self) -> None:
        """The image transforms (and their cache-key specs); a hook because another engine that
        brings its own transforms (the Dassl plugin) replaces it."""
        self.tfm_train = build_transform(self.cfg, is_train=True, spec=self.input_spec)
        self.tfm_test = build_transform(self.cfg, is_train=False, spec=self.input_spec)
        self.spec_train = transform_spec(self.cfg, is_train=True, spec=self.input_spec)
        self.spec_test = transform_spec(self.cfg, is_train=False, spec=self.input_spec)

    def _set_image_encoder_precision(self, requested: str) -> None:
        """FEATURES.PREC for the frozen image tower, whatever the trainer's PREC did to the rest.

        One precision for every trainer is what lets CLIP-Adapter (PREC fp32) and CoOp (PREC fp16)
        share cached features on CUDA; the conversion is the backbone family's own.
        """
        try:
            self.feature_precision = resolve_precision(requested, self.device)
        except ValueError as exc:
            raise ConfigError(f"FEATURES.PREC: {exc}") from None
        self.backbone.set_image_precision("fp16" if self.feature_precision == "fp16" else "fp32")

    # ------------------------------------------------------------- encoders
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """The frozen image encoder: the only call that runs it, so ``encoder_stats`` sees every pass."""
        t0 = time.perf_counter()
        # FEATURES.PREC amp (CUDA only, see resolve_precision): fp32 weights, fp16 autocast for the pass.
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.float16, enabled=self.feature_precision == "amp"):
            feats = self.backbone.encode_image(images.to(self.device, non_blocking=True)).float()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.encoder_stats["images"] += int(images.shape[0])
        self.encoder_stats["seconds"] += time.perf_counter() - t0
        return feats

    def text_classifier(self, classnames: List[str], templates: List[str]) -> torch.Tensor:
        return cached_text_classifier(
            self.cache.root,
            self.clip_info.encoder_id,
            classnames,
            templates,
            lambda: self._timed_text(classnames, templates),
            precision=self.precision,
        )

    def _timed_text(self, classnames: List[str], templates: List[str]) -> torch.Tensor:
        t0 = time.perf_counter()
        weights = encode_text_classifier(self.backbone, classnames, templates, self.device)
        self.encoder_stats["text_prompts"] += len(classnames) * len(templates)
        self.encoder_stats["text_seconds"] += time.perf_counter() - t0
        return weights

    # ------------------------------------------------------------ features
    def split_features(self, split: str) -> Tuple[torch.Tensor, torch.Tensor]:
        """Raw image features of a split through the deterministic (test) transform, and the labels.

        ``"train"`` gives the centre view of each training image (what a linear probe fits on);
        ``"val"`` is the few-shot val, ``"val_full"`` the whole val split (selection protocols).
        Cached mode reads/fills the cache; exact mode encodes now (once per trainer, as the paper's
        code evaluates once).
        """
        if split == "val" and self.val_same_as_test():
            return self.split_features("test")  # the same images (ImageNet's val is its test set): gathered once
        if split not in self._split_feats:
            items = getattr(self.dm.dataset, "train_x" if split == "train" else split)
            labels = torch.tensor([d.label for d in items], dtype=torch.long)
            if self.cfg.FEATURES.MODE == "exact":
                batches = self._encode_stream(items, [None] * len(items), self.tfm_test, int(self.cfg.FEATURES.BATCH_SIZE))
                feats = torch.cat([f for f, _ in batches] or [torch.empty(0, self.clip_info.embed_dim)])
            else:
                feats = self.cache.features(items, self.tfm_test, self.spec_test, None, desc=f"{split} images")
            self._split_feats[split] = (feats, labels)
        return self._split_feats[split]

    def image_stream(self, items, views: List[Optional[int]], transform, batch_size: int) -> Iterator[Tuple[torch.Tensor, List[int]]]:
        """``items`` as image tensors in order, batch by batch: decoding in DataLoader workers, view v
        of an item cropped with the seed of (item, v) (None: the transform as it is, e.g. the test
        one); yields (CPU image batch, positions in ``items``)."""
        seed_for = None
        if any(v is not None for v in views):
            seed_for = ViewSeeds([d.impath for d in items], views, self.cfg.DATASET.ROOT)
        workers = int(self.cfg.DATALOADER.NUM_WORKERS) if len(items) > batch_size else 0
        loader = build_loader(items, transform, batch_size, shuffle=False, num_workers=workers, seed_for=seed_for,
                              pin_memory=self.device.type == "cuda")
        for batch in loader:
            yield batch["img"], batch["index"].tolist()

    def _encode_stream(self, items, views: List[Optional[int]], transform, batch_size: int) -> Iterator[Tuple[torch.Tensor, List[int]]]:
        """``image_stream`` through the frozen encoder (exact mode); yields (fp32 CPU features, positions)."""
        for images, pos in self.image_stream(items, views, transform, batch_size):
            # clone() outside inference mode: a plain tensor that autograd may save for backward
            yield self.encode_images(images).cpu().clone(), pos

    def train_view_features(self) -> torch.Tensor:
        """[K, N, D] raw features of the K cached augmented views of every training image."""
        if self._train_views is None:
            items = self.dm.dataset.train_x
            k = self.num_train_views()
            bank = torch.empty(k, len(items), self.clip_info.embed_dim)
            for v in range(k):
                bank[v] = self.cache.features(items, self.tfm_train, self.spec_train, v, desc=f"train view {v + 1}/{k}")
            self._train_views = bank
        return self._train_views

    def num_train_views(self) -> int:
        k = int(self.cfg.FEATURES.TRAIN_VIEWS)
        if k < 1:
            raise ConfigError(f"FEATURES.TRAIN_VIEWS must be >= 1, got {k}; use FEATURES.MODE exact for a fresh view every epoch")
        return k

    def epoch_plan(self, epoch: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """(order, view ids) of one epoch, identical in both modes up to the view rule.

        order: a shuffle seeded by (SEED, epoch) (so resuming replays it), cut to whole batches
        when there is at least one, as Dassl's training loader does (drop_last).
        views: ``epoch mod K`` in cached mode (each of the K views used equally often; the first
        K epochs see exactly the paper's fresh crops), ``epoch`` in exact mode and for trainers that
        take images (never reused).
        """
        n = len(self.dm.dataset.train_x)
        g = torch.Generator().manual_seed(int(self.cfg.SEED) * 1_000_003 + epoch)
        order = torch.randperm(n, generator=g)
        bs = int(self.cfg.DATALOADER.TRAIN_X.BATCH_SIZE)
        if n >= bs:
            order = order[: n - n % bs]
        fresh = self.cfg.FEATURES.MODE == "exact" or self.input_kind == "images"
        view = epoch if fresh else epoch % self.num_train_views()
        return order, torch.full((len(order),), view, dtype=torch.long)

    def train_batches(self, epoch: int) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        """Batches of (raw image features, labels) for one epoch, from the cache or the encoder;
        (augmented images, labels) for a trainer with ``input_kind = "images"``."""
        items = self.dm.dataset.train_x
        labels = torch.tensor([d.label for d in items], dtype=torch.long)
        order, views = self.epoch_plan(epoch)
        bs = int(self.cfg.DATALOADER.TRAIN_X.BATCH_SIZE)
        if self.input_kind == "images":  # the exact-mode loader, without the frozen encoder
            chosen = [items[i] for i in order.tolist()]
            for images, pos in self.image_stream(chosen, views.tolist(), self.tfm_train, bs):
                yield images.to(self.device), labels[order[pos]].to(self.device)
            return
        if self.cfg.FEATURES.MODE == "cached":
            bank = self.train_view_features()
            for start in range(0, len(order), bs):
                idx = order[start : start + bs]
                yield bank[views[start : start + bs], idx].to(self.device), labels[idx].to(self.device)
            return
        # Exact: the paper's loop, a loader over this epoch's shuffled images, one encoder pass per batch.
        chosen = [items[i] for i in order.tolist()]
        for feats, pos in self._encode_stream(chosen, views.tolist(), self.tfm_train, bs):
            yield feats.to(self.device), labels[order[pos]].to(self.device)

    def load_module_state(self, name: str, state: Dict[str, torch.Tensor], source: str) -> None:
        """Refuse a checkpoint that lacks this module's weights (the base loads non-strictly, so a
        checkpoint of another trainer or adapter TYPE would otherwise load nothing, silently)."""
        missing = [k for k in self._modules[name].state_dict() if k not in state]
        if missing:
            raise CheckpointError(
                f"checkpoint {source} has no {', '.join(missing)} for {name!r}: it was written by another trainer or "
                "configuration; pass a checkpoint of this one"
            )
        super().load_module_state(name, state, source)

    def require_validation(self, what: str, fix: str) -> Optional[str]:
        """The split SELECTION.PROTOCOL chooses ``what`` on (``selection_split``): refuses, in one line,
        a validation protocol on a dataset without that split. ``fix`` says how to set ``what``
        without a search (for the error message). None under protocol ``none``."""
        return self.selection_split(what, fix)

    # --------------------------------------------------------------- heads
    def class_text_features(self) -> torch.Tensor:
        """[C, D] unit rows of the class text side: the fixed prompt classifier here; trainers that
        learn the text side (prompts, a text adapter) override it (differentiably)."""
        return self.text_weights

    def current_text_features(self) -> torch.Tensor:
        """``class_text_features()``, computed once per evaluation while ``predict`` runs."""
        frozen = getattr(self, "_frozen_text", None)
        return frozen if frozen is not None else self.class_text_features()

    def cosine_logits(self, image_feats: torch.Tensor, text_feats: torch.Tensor) -> torch.Tensor:
        """The backbone's logits: logit_scale * norm(image) . text^T + logit_bias (text rows already unit
        length; the bias is 0 for CLIP, SigLIP's learned bias otherwise), fp32."""
        img = image_feats.float()
        img = img / img.norm(dim=-1, keepdim=True)
        return self.logit_scale * img @ text_feats.float().t() + self.logit_bias

    def logits(self, image_feats: torch.Tensor) -> torch.Tensor:
        """Zero-shot logits: logit_scale * norm(image) . norm(text)^T + logit_bias. Heads override this."""
        return self.cosine_logits(image_feats, self.current_text_features())

    def forward_backward(self, batch) -> Dict[str, float]:
        feats, labels = batch
        loss = F.cross_entropy(self.logits(feats), labels)
        self.step(loss)
        return {"loss": float(loss.item())}

    def eval_batches(self, split: str) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        """(inputs on the device, labels) of a split in order, DATALOADER.TEST.BATCH_SIZE at a time:
        raw features (cached, or encoded once in exact mode), or for ``input_kind = "images"`` the
        images through the test transform (their features depend on what the trainer learned)."""
        bs = int(self.cfg.DATALOADER.TEST.BATCH_SIZE)
        if self.input_kind == "images":
            items = getattr(self.dm.dataset, "train_x" if split == "train" else split)
            labels = torch.tensor([d.label for d in items], dtype=torch.long)
            for images, pos in self.image_stream(items, [None] * len(items), self.tfm_test, bs):
                yield images.to(self.device, non_blocking=True), labels[pos]
            return
        feats, labels = self.split_features(split)
        for i in range(0, len(feats), bs):
            yield feats[i : i + bs].to(self.device), labels[i : i + bs]

    @torch.no_grad()
    def predict_batches(self, split: str) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        """(logits, labels) of a split chunk by chunk, in order: the one evaluation path of every
        trainer. The class text side is computed once, then ``logits`` runs batch by batch."""
        self._frozen_text = self.class_text_features()
        try:
            for inputs, y in self.eval_batches(split):
                yield self.logits(inputs).float(), y
        finally:
            self._frozen_text = None
