"""MaPLe: coupled prompts inside both of CLIP's towers (the image encoder is on the gradient path).

Khattak et al., CVPR'23 (muzairkhattak/multimodal-prompt-learning trainers/maple.py). The text
context and J-1 deeper text prompts are learned; the vision tower gets their images through the
coupling functions (clip_adapter/models/deep_prompts.py says exactly where). Because the image
features depend on the prompts, MaPLe takes images (``input_kind = "images"``): it trains on a
freshly augmented crop of every image each epoch (the exact-mode loader), and evaluates by running
every val/test image through the prompted vision tower; no image feature is cached for it.

Defaults (its train.py and configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml): N_CTX 2,
CTX_INIT "a photo of a" (the first N_CTX of its tokens learnable, the rest fixed text), PROMPT_DEPTH
9, PREC fp16; SGD lr 0.0035, batch 4, 5 epochs (cross-dataset: lr 0.0026, 2 epochs, depth 3).
ViT backbones of OpenAI CLIP only (MaPLe has no ResNet path). On CPU it runs in fp32.
"""
from __future__ import annotations

import logging
import time
from typing import Dict, Optional

import torch
from yacs.config import CfgNode as CN

from clip_adapter.engine.clip_trainer import ClipTrainer
from clip_adapter.models.deep_prompts import MaPLeModule, MultiModalPromptLearner, vision_tower_deep
from clip_adapter.models.prompt_learner import PromptTextEncoder
from clip_adapter.registry import TRAINERS

log = logging.getLogger(__name__)

MODULE = "MultiModalPromptLearner"  # MaPLe's module name (and its keys under prompt_learner.)


@TRAINERS.register()
class MaPLe(ClipTrainer):
    """Multi-modal Prompt Learning (TRAINER.MAPLE.{N_CTX, CTX_INIT, PREC, PROMPT_DEPTH})."""

    input_kind = "images"
    prec_node = "MAPLE"
    backbone_families = ("openai",)  # deep prompts inside OpenAI's ViT towers (models/deep_prompts.py)

    @classmethod
    def config_defaults(cls) -> Dict[str, CN]:
        node = CN()  # names and defaults as in MaPLe's train.py
        node.N_CTX = 2
        # the first N_CTX tokens of this phrase are learnable (random init when N_CTX exceeds its length)
        node.CTX_INIT = "a photo of a"
        # fp16 (MaPLe's default) | fp32 | amp; fp32 off CUDA
        node.PREC = "fp16"
        # J: prompts in layers 0 .. J-1 of both towers (1 = shallow MaPLe); at most the towers' depth
        node.PROMPT_DEPTH = 9
        return {"TRAINER.MAPLE": node}

    @classmethod
    def transfer_blocker(cls, cfg) -> Optional[str]:
        return None  # its prompts do not depend on the class names

    def build_head(self) -> None:
        node = self.cfg.TRAINER.MAPLE
        self.prompt_learner = MultiModalPromptLearner(
            self.clip_model, self.classnames, n_ctx=int(node.N_CTX), ctx_init=node.CTX_INIT, depth=int(node.PROMPT_DEPTH)
        ).to(self.device)
        self.text_encoder = PromptTextEncoder(self.backbone, trim=True)
        self.register_model(MODULE, MaPLeModule(self.prompt_learner))
        self.scaler = torch.amp.GradScaler(self.device.type) if self.precision == "amp" else None
        pl = self.prompt_learner
        log.info("MaPLe: %d context tokens (init %r), prompt depth %d, %s; images in (no image-feature cache)",
                 pl.n_ctx, pl.init_phrase, pl.depth, self.precision)

    def result_fields(self) -> dict:
        return {"n_ctx": self.prompt_learner.n_ctx, "prompt_depth": self.prompt_learner.depth}

    def _amp(self):
        return torch.autocast(self.device.type, dtype=torch.float16, enabled=self.precision == "amp")

    def class_text_features(self) -> torch.Tensor:
        """[C, D] unit rows from the text tower with the current (deep) prompts."""
        pl = self.prompt_learner
        with self._amp():
            prompts, _shallow, deep_text, _deep_vision = pl()
            txt = self.text_encoder(prompts, pl.tokenized_prompts, deep=deep_text)
        txt = txt.float()
        return txt / txt.norm(dim=-1, keepdim=True)

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """[B, D] raw features from the vision tower with the current coupled prompts (counted in encoder_stats)."""
        t0 = time.perf_counter()
        with self._amp():
            _prompts, shallow, _deep_text, deep_vision = self.prompt_learner()
            feats = vision_tower_deep(self.clip_model.visual, images.to(self.device), shallow, deep_vision)
        self.encoder_stats["images"] += int(images.shape[0])
        self.encoder_stats["seconds"] += time.perf_counter() - t0
        return feats.float()

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """[B, C] from image tensors (not features: the image side is prompted too)."""
        return self.cosine_logits(self.image_features(images), self.current_text_features())
