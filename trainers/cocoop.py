"""CoCoOp: CoOp's context shifted per image by a meta-net of that image's feature.

Zhou et al., CVPR'22 (KaiyangZhou/CoOp trainers/cocoop.py). For image i with feature f_i:
``ctx_i = ctx + meta_net(norm(f_i))`` and ``logits_i = scale * norm(f_i) . norm(text(ctx_i, c))^T``
over the classes c, so the text tower runs once per image and class: B x C prompts per step. Both
encoders stay frozen, so the image features come from the shared cache (or fresh views in
``FEATURES.MODE exact``), exactly as CoOp's.

The B x C prompts of a step go through the text tower in calls of at most TRAINER.COCOOP.TEXT_CHUNK
prompts, and training back-propagates group by group (as many images per group as fit into
TEXT_CHUNK prompts, at least one): the gradient is the batch's (losses weighted by group size) while
the activations held for backward are one group's. docs/prompt-methods.md gives the memory per batch.
"""
from __future__ import annotations

import logging
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from yacs.config import CfgNode as CN

from clip_adapter.engine.clip_trainer import ClipTrainer
from clip_adapter.errors import ConfigError
from clip_adapter.models.prompt_learner import ConditionalPromptLearner, PromptTextEncoder
from clip_adapter.registry import TRAINERS

log = logging.getLogger(__name__)

MODULE = "prompt_learner"  # CoCoOp's module name (context + meta-net)


@TRAINERS.register()
class CoCoOp(ClipTrainer):
    """Conditional Context Optimization (TRAINER.COCOOP.{N_CTX, CTX_INIT, PREC, TEXT_CHUNK})."""

    prec_node = "COCOOP"

    @classmethod
    def config_defaults(cls) -> Dict[str, CN]:
        node = CN()  # names and defaults as in CoOp's train.py (TRAINER.COCOOP)
        node.N_CTX = 16
        # initialisation phrase ("a photo of a" in CoCoOp's base-to-novel config); sets N_CTX to its length
        node.CTX_INIT = ""
        # fp16 (CoCoOp's default: CLIP, context and meta-net in half precision) | fp32 | amp; fp32 off CUDA.
        node.PREC = "fp16"
        # Most prompts per text-tower call, and per backward group (this project's; no effect on the
        # numbers): bounds memory, see docs/prompt-methods.md.
        node.TEXT_CHUNK = 1024
        return {"TRAINER.COCOOP": node}

    @classmethod
    def transfer_blocker(cls, cfg) -> Optional[str]:
        return None  # one context and one meta-net for any class names

    def build_head(self) -> None:
        node = self.cfg.TRAINER.COCOOP
        self.text_chunk = int(node.TEXT_CHUNK)
        if self.text_chunk < 1:
            raise ConfigError(f"TRAINER.COCOOP.TEXT_CHUNK must be >= 1 (prompts per text-tower call), got {node.TEXT_CHUNK}")
        self.prompt_learner = ConditionalPromptLearner(
            self.clip_model,
            self.classnames,
            embed_dim=self.clip_info.embed_dim,
            n_ctx=int(node.N_CTX),
            ctx_init=node.CTX_INIT,
            node="TRAINER.COCOOP",
        ).to(self.device)
        self.text_encoder = PromptTextEncoder(self.backbone, trim=True)
        self.register_model(MODULE, self.prompt_learner)
        self.scaler = torch.amp.GradScaler(self.device.type) if self.precision == "amp" else None
        pl = self.prompt_learner
        log.info("CoCoOp: %d context tokens (init %r), meta-net %d -> %d -> %d, %s, <= %d prompts per text-tower call",
                 pl.n_ctx, node.CTX_INIT or "random", self.clip_info.embed_dim, self.clip_info.embed_dim // 16,
                 pl.width, self.precision, self.text_chunk)

    def logits(self, image_feats: torch.Tensor) -> torch.Tensor:
        """[B, C]: each image against the class prompts conditioned on that image."""
        pl = self.prompt_learner
        img = image_feats.float()
        img = img / img.norm(dim=-1, keepdim=True)
        b, c = img.shape[0], pl.n_cls
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.precision == "amp"):
            prompts = pl(img)  # [B, C, L, w]
            tokens = pl.tokenized_prompts.repeat(b, 1)
            txt = self.text_encoder.encode_chunked(prompts.flatten(0, 1), tokens, self.text_chunk)
        txt = txt.float().reshape(b, c, -1)
        txt = txt / txt.norm(dim=-1, keepdim=True)
        return self.logit_scale * torch.einsum("bd,bcd->bc", img, txt)

    def forward_backward(self, batch) -> Dict[str, float]:
        """Cross-entropy over the batch, back-propagated in groups of images (see the module docstring)."""
        feats, labels = batch
        n = feats.shape[0]
        per_group = max(1, self.text_chunk // self.prompt_learner.n_cls)
        self.zero_grads()
        total = 0.0
        for start in range(0, n, per_group):
            f, y = feats[start : start + per_group], labels[start : start + per_group]
            loss = F.cross_entropy(self.logits(f), y) * (f.shape[0] / n)
            self.backward(loss)
            total += float(loss.item())
        self.apply_grads()
        return {"loss": total}
