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
"""
from __future__ import annotations

import logging
import time
from typing import Dict, Iterator, List, Optional, Tuple

import torch
import torch.nn.functional as F

from clip_adapter.data.loader import build_loader
from clip_adapter.data.transforms import build_transform, transform_spec
from clip_adapter.engine.trainer import TrainerBase
from clip_adapter.errors import CheckpointError, ConfigError
from clip_adapter.features import FeatureCache, ViewSeeds, cached_text_classifier, default_cache_dir
from clip_adapter.models.clip_loader import load_clip
from clip_adapter.models.text import encode_text_classifier
from clip_adapter.utils import resolve_precision

log = logging.getLogger(__name__)

MODES = ("cached", "exact")


class ClipTrainer(TrainerBase):
    """Base for trainers over frozen CLIP; subclasses add a head and implement ``logits``."""

    #: "single" (the dataset's hand-crafted template) or "ensemble" (ImageNet's templates)
    template_mode: str = "single"
    #: config node whose PREC applies ("" = fp16 on CUDA as CLIP ships, fp32 elsewhere)
    prec_node: str = ""

    # ---------------------------------------------------------------- build
    def build_model(self) -> None:
        cfg = self.cfg
        if cfg.FEATURES.MODE not in MODES:
            raise ConfigError(f"FEATURES.MODE must be one of {', '.join(MODES)}, got {cfg.FEATURES.MODE!r}")
        requested = getattr(cfg.TRAINER, self.prec_node).PREC if self.prec_node else "fp16"
        self.precision = resolve_precision(requested, self.device)
        if self.prec_node and self.precision != requested.lower():
            log.info("Precision %s needs CUDA; using %s on %s", requested, self.precision, self.device.type)
        t0 = time.perf_counter()
        self.clip_model, self.clip_info = load_clip(
            cfg.MODEL.BACKBONE.NAME, self.device, cfg.MODEL.BACKBONE.CACHE_DIR, "fp16" if self.precision == "fp16" else "fp32"
        )
        self.clip_load_seconds = time.perf_counter() - t0
        self._set_image_encoder_precision(cfg.FEATURES.PREC)
        if self.clip_info.name == "tiny" or cfg.DATASET.NAME == "Smoke":
            log.info("NOTE: offline pipeline check (tiny random CLIP and/or synthetic smoke data): accuracies mean nothing")
        self.logit_scale = float(self.clip_model.logit_scale.exp().item())
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
        self.tfm_train = build_transform(self.cfg, is_train=True)
        self.tfm_test = build_transform(self.cfg, is_train=False)
        self.spec_train = transform_spec(self.cfg, is_train=True)
        self.spec_test = transform_spec(self.cfg, is_train=False)

    @classmethod
    def needs_own_engine(cls, cfg) -> Optional[str]:
        """What in ``cfg`` only this project's own training loop implements (named for the error
        another engine raises), or None. A trainer whose ``train()`` adds more than epochs overrides it."""
        return None

    def _set_image_encoder_precision(self, requested: str) -> None:
        """FEATURES.PREC for the frozen image tower, whatever the trainer's PREC did to the rest.

        One precision for every trainer is what lets CLIP-Adapter (PREC fp32) and CoOp (PREC fp16)
        share cached features on CUDA; the conversion is CLIP's own (fp16 conv/linear weights).
        """
        try:
            self.feature_precision = resolve_precision(requested, self.device)
        except ValueError as exc:
            raise ConfigError(f"FEATURES.PREC: {exc}") from None
        visual = self.clip_model.visual
        want = torch.float16 if self.feature_precision == "fp16" else torch.float32
        if visual.conv1.weight.dtype != want:
            if want == torch.float16:
                from clip_adapter.models.clip_loader import clip_model_module

                clip_model_module().convert_weights(visual)
            else:
                visual.float()

    # ------------------------------------------------------------- encoders
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """The frozen image encoder: the only call that runs it, so ``encoder_stats`` sees every pass."""
        t0 = time.perf_counter()
        dtype = self.clip_model.visual.conv1.weight.dtype
        # FEATURES.PREC amp (CUDA only, see resolve_precision): fp32 weights, fp16 autocast for the pass.
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.float16, enabled=self.feature_precision == "amp"):
            feats = self.clip_model.encode_image(images.to(self.device, dtype, non_blocking=True)).float()
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
        weights = encode_text_classifier(self.clip_model, classnames, templates, self.device)
        self.encoder_stats["text_prompts"] += len(classnames) * len(templates)
        self.encoder_stats["text_seconds"] += time.perf_counter() - t0
        return weights

    # ------------------------------------------------------------ features
    def split_features(self, split: str) -> Tuple[torch.Tensor, torch.Tensor]:
        """Raw image features of a split through the deterministic (test) transform, and the labels.

        ``"train"`` gives the centre view of each training image (what a linear probe fits on).
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

    def _encode_stream(self, items, views: List[Optional[int]], transform, batch_size: int) -> Iterator[Tuple[torch.Tensor, List[int]]]:
        """Encode ``items`` in order, batch by batch (exact mode): decoding in DataLoader workers,
        view v of an item cropped with the seed of (item, v); yields (fp32 CPU features, positions)."""
        seed_for = None
        if any(v is not None for v in views):
            seed_for = ViewSeeds([d.impath for d in items], views)
        workers = int(self.cfg.DATALOADER.NUM_WORKERS) if len(items) > batch_size else 0
        loader = build_loader(items, transform, batch_size, shuffle=False, num_workers=workers, seed_for=seed_for,
                              pin_memory=self.device.type == "cuda")
        for batch in loader:
            # clone() outside inference mode: a plain tensor that autograd may save for backward
            yield self.encode_images(batch["img"]).cpu().clone(), batch["index"].tolist()

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
        K epochs see exactly the paper's fresh crops), ``epoch`` in exact mode (never reused).
        """
        n = len(self.dm.dataset.train_x)
        g = torch.Generator().manual_seed(int(self.cfg.SEED) * 1_000_003 + epoch)
        order = torch.randperm(n, generator=g)
        bs = int(self.cfg.DATALOADER.TRAIN_X.BATCH_SIZE)
        if n >= bs:
            order = order[: n - n % bs]
        view = epoch if self.cfg.FEATURES.MODE == "exact" else epoch % self.num_train_views()
        return order, torch.full((len(order),), view, dtype=torch.long)

    def train_batches(self, epoch: int) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        """Batches of (raw image features, labels) for one epoch, from the cache or the encoder."""
        items = self.dm.dataset.train_x
        labels = torch.tensor([d.label for d in items], dtype=torch.long)
        order, views = self.epoch_plan(epoch)
        bs = int(self.cfg.DATALOADER.TRAIN_X.BATCH_SIZE)
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

    def require_validation(self, what: str, fix: str) -> None:
        """Refuse a hyperparameter search without a held-out split: test is never used to choose.

        ``what`` names the knob, ``fix`` says how to set it without a search (for the error message).
        """
        dataset = self.dm.dataset
        name = type(dataset).__name__
        if getattr(dataset, "val_is_test", False):
            raise ConfigError(f"{name}'s validation split is its test set, so {what} cannot be chosen on it; {fix}")
        if len(dataset.val) == 0:
            raise ConfigError(f"{name} has no validation images to choose {what} on; {fix}")

    # --------------------------------------------------------------- heads
    def logits(self, image_feats: torch.Tensor) -> torch.Tensor:
        """Zero-shot logits: logit_scale * norm(image) . norm(text)^T. Heads override this."""
        img = image_feats / image_feats.norm(dim=-1, keepdim=True)
        return self.logit_scale * img @ self.text_weights.t()

    def forward_backward(self, batch) -> Dict[str, float]:
        feats, labels = batch
        loss = F.cross_entropy(self.logits(feats), labels)
        self.step(loss)
        return {"loss": float(loss.item())}

    @torch.no_grad()
    def predict_batches(self, split: str) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        feats, labels = self.split_features(split)
        bs = int(self.cfg.DATALOADER.TEST.BATCH_SIZE)
        for i in range(0, len(feats), bs):
            yield self.logits(feats[i : i + bs].to(self.device)).float(), labels[i : i + bs]
