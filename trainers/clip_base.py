"""The one feature pipeline every CLIP trainer shares.

It loads the frozen CLIP once, builds the fixed-prompt text classifier, and serves image features:
from the feature cache by default (each training image's K augmented views and every val/test
image encoded once, ever), or, with ``FEATURES.MODE exact``, by running the image encoder on a
fresh augmentation every iteration as the paper's code does. Both modes visit the same images in
the same order with the same (image, view) crops, so they train to the same weights.
"""
from __future__ import annotations

import logging
from typing import Dict, Iterator, List, Optional, Tuple

import torch
import torch.nn.functional as F

from clip_adapter.data.loader import build_loader
from clip_adapter.data.transforms import build_transform, transform_spec
from clip_adapter.engine.trainer import TrainerBase
from clip_adapter.errors import ConfigError
from clip_adapter.features import FeatureCache, cached_text_classifier, default_cache_dir, view_seed
from clip_adapter.models.clip_loader import load_clip
from clip_adapter.models.text import encode_text_classifier
from clip_adapter.utils import resolve_precision

log = logging.getLogger(__name__)

MODES = ("cached", "exact")
# In exact mode a training image gets a new view every epoch: view ids past any cache's K.
EXACT_VIEW_OFFSET = 0


class ClipTrainer(TrainerBase):
    """Base for trainers over frozen CLIP; subclasses add a head and implement ``logits``."""

    #: "single" (the dataset's hand-crafted template) or "ensemble" (ImageNet's templates)
    template_mode: str = "single"
    #: config node whose PREC applies ("" = fp32 unless on CUDA)
    prec_node: str = ""

    # ---------------------------------------------------------------- build
    def build_model(self) -> None:
        cfg = self.cfg
        if cfg.FEATURES.MODE not in MODES:
            raise ConfigError(f"FEATURES.MODE must be one of {', '.join(MODES)}, got {cfg.FEATURES.MODE!r}")
        requested = getattr(cfg.TRAINER, self.prec_node).PREC if self.prec_node else "fp32"
        self.precision = resolve_precision(requested, self.device)
        if self.precision != requested.lower():
            log.info("Precision %s needs CUDA; using %s on %s", requested, self.precision, self.device.type)
        self.clip_model, self.clip_info = load_clip(
            cfg.MODEL.BACKBONE.NAME, self.device, cfg.MODEL.BACKBONE.CACHE_DIR, "fp16" if self.precision == "fp16" else "fp32"
        )
        if self.clip_info.name == "tiny" or cfg.DATASET.NAME == "Smoke":
            log.info("NOTE: offline pipeline check (tiny random CLIP and/or synthetic smoke data): accuracies mean nothing")
        self.logit_scale = float(self.clip_model.logit_scale.exp().item())
        dataset = self.dm.dataset
        self.classnames: List[str] = dataset.classnames
        self.templates: List[str] = dataset.templates(self.template_mode)
        self.cache = FeatureCache(
            default_cache_dir(cfg),
            self.clip_info.encoder_id,
            self.encode_images,
            self.device,
            self.precision,
            batch_size=int(cfg.FEATURES.BATCH_SIZE),
            num_workers=int(cfg.DATALOADER.NUM_WORKERS),
        )
        self.text_weights = self.text_classifier(self.classnames, self.templates).to(self.device)
        self.tfm_train = build_transform(cfg, is_train=True)
        self.tfm_test = build_transform(cfg, is_train=False)
        self.spec_train = transform_spec(cfg, is_train=True)
        self.spec_test = transform_spec(cfg, is_train=False)
        self._split_feats: Dict[str, Tuple[torch.Tensor, torch.Tensor]] = {}
        self._train_views: Optional[torch.Tensor] = None
        self.build_head()
        if cfg.MODEL.INIT_WEIGHTS:
            self.init_weights(cfg.MODEL.INIT_WEIGHTS)

    def build_head(self) -> None:
        """Create and ``register_model`` the trainable parts (none for zero-shot)."""

    # ------------------------------------------------------------- encoders
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """The frozen image encoder: the only call that runs it (counted by the cache in cached mode)."""
        dtype = self.clip_model.visual.conv1.weight.dtype
        return self.clip_model.encode_image(images.to(self.device, dtype)).float()

    def text_classifier(self, classnames: List[str], templates: List[str]) -> torch.Tensor:
        return cached_text_classifier(
            self.cache.root,
            self.clip_info.encoder_id,
            classnames,
            templates,
            lambda: encode_text_classifier(self.clip_model, classnames, templates, self.device),
        )

    # ------------------------------------------------------------ features
    def split_features(self, split: str) -> Tuple[torch.Tensor, torch.Tensor]:
        """Raw image features of val/test (deterministic view) and their labels."""
        if split not in self._split_feats:
            items = getattr(self.dm.dataset, "train_x" if split == "train" else split)
            labels = torch.tensor([d.label for d in items], dtype=torch.long)
            if self.cfg.FEATURES.MODE == "exact":
                feats = self._encode_now(items, self.tfm_test, None)
            else:
                feats = self.cache.features(items, self.tfm_test, self.spec_test, None, desc=f"{split} images")
            self._split_feats[split] = (feats, labels)
        return self._split_feats[split]

    def _encode_now(self, items, transform, seed_for) -> torch.Tensor:
        loader = build_loader(items, transform, int(self.cfg.FEATURES.BATCH_SIZE), shuffle=False, seed_for=seed_for)
        out = []
        with torch.inference_mode():
            for batch in loader:
                out.append(self.encode_images(batch["img"]).cpu())
        self.exact_encoded = getattr(self, "exact_encoded", 0) + sum(o.shape[0] for o in out)
        return torch.cat(out) if out else torch.empty(0, 0)

    def train_view_features(self) -> torch.Tensor:
        """[K, N, D] features of the K cached augmented views of every training image."""
        if self._train_views is None:
            items = self.dm.dataset.train_x
            k = int(self.cfg.FEATURES.TRAIN_VIEWS)
            if k < 1:
                raise ConfigError(f"FEATURES.TRAIN_VIEWS must be >= 1, got {k}")
            views = [self.cache.features(items, self.tfm_train, self.spec_train, v, desc=f"train view {v + 1}/{k}") for v in range(k)]
            self._train_views = torch.stack(views)
        return self._train_views

    def epoch_plan(self, epoch: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """(order, view ids) for one epoch: a seeded shuffle and one view per image.

        Cached mode draws a view in [0, K); exact mode gives each epoch a fresh view id, which is
        the paper's "new augmentation every iteration", made reproducible.
        """
        n = len(self.dm.dataset.train_x)
        g = torch.Generator().manual_seed(int(self.cfg.SEED) * 1_000_003 + epoch)
        order = torch.randperm(n, generator=g)
        if self.cfg.FEATURES.MODE == "exact":
            views = torch.full((n,), EXACT_VIEW_OFFSET + epoch, dtype=torch.long)
        else:
            views = torch.randint(int(self.cfg.FEATURES.TRAIN_VIEWS), (n,), generator=g)
        return order, views

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
                yield bank[views[idx], idx].to(self.device), labels[idx].to(self.device)
            return
        for start in range(0, len(order), bs):
            idx = order[start : start + bs].tolist()
            chunk = [items[i] for i in idx]
            vids = [int(views[i]) for i in idx]
            feats = self._encode_now(chunk, self.tfm_train, lambda j, c=chunk, v=vids: view_seed(c[j].impath, v[j]))
            yield feats.to(self.device), labels[idx].to(self.device)

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
    def predict(self, split: str) -> Tuple[torch.Tensor, torch.Tensor]:
        feats, labels = self.split_features(split)
        bs = int(self.cfg.DATALOADER.TEST.BATCH_SIZE)
        out = [self.logits(feats[i : i + bs].to(self.device)).float().cpu() for i in range(0, len(feats), bs)]
        return (torch.cat(out) if out else torch.empty(0, len(self.classnames))), labels
