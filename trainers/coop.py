"""CoOp: learn the prompt's context vectors; CLIP's text tower runs every step, its image tower never.

Image features come from the shared cache (or fresh views in ``FEATURES.MODE exact``); the class
text features are recomputed from the learnable prompts at each step, because that is the path the
gradient takes. ``TRAINER.COOP.PREC``: fp16 (CoOp's default: CLIP and the context in half
precision), fp32, or amp (fp32 weights, fp16 autocast, a gradient scaler); fp16/amp need CUDA and
fall back to fp32 elsewhere (``resolve_precision``).
"""
from __future__ import annotations

import logging
from typing import Dict, Optional

import torch
import torch.nn.functional as F

from clip_adapter.models.prompt_learner import PromptLearner, PromptTextEncoder
from clip_adapter.registry import TRAINERS
from clip_adapter.trainers.clip_base import ClipTrainer

log = logging.getLogger(__name__)

MODULE = "prompt_learner"  # CoOp's module name: checkpoints live in <out>/prompt_learner/


@TRAINERS.register()
class CoOp(ClipTrainer):
    """Context Optimization (TRAINER.COOP.{N_CTX, CTX_INIT, CSC, CLASS_TOKEN_POSITION, PREC})."""

    prec_node = "COOP"

    @classmethod
    def transfer_blocker(cls, cfg) -> Optional[str]:
        """A shared context transfers to any class names; a class-specific one (CSC) is one per training class."""
        if bool(cfg.TRAINER.COOP.CSC):
            return ("its prompt context is learned per training class (TRAINER.COOP.CSC True; train with "
                    "TRAINER.COOP.CSC False for one shared context that transfers)")
        return None

    def build_head(self) -> None:
        node = self.cfg.TRAINER.COOP
        self.prompt_learner = PromptLearner(
            self.clip_model,
            self.classnames,
            n_ctx=int(node.N_CTX),
            ctx_init=node.CTX_INIT,
            csc=bool(node.CSC),
            class_token_position=node.CLASS_TOKEN_POSITION,
        ).to(self.device)
        self.text_encoder = PromptTextEncoder(self.clip_model)
        self.register_model(MODULE, self.prompt_learner)
        self.scaler = torch.amp.GradScaler(self.device.type) if self.precision == "amp" else None
        pl = self.prompt_learner
        log.info("CoOp: %d context tokens (%s, init %r), class token at the %s, %s",
                 pl.n_ctx, "class-specific" if pl.csc else "shared", node.CTX_INIT or "random", pl.position, self.precision)

    def class_text_features(self) -> torch.Tensor:
        """[C, D] unit rows from the current prompts (differentiable in the context)."""
        pl = self.prompt_learner
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.precision == "amp"):
            txt = self.text_encoder(pl(), pl.tokenized_prompts)
        txt = txt.float()
        return txt / txt.norm(dim=-1, keepdim=True)

    def logits(self, image_feats: torch.Tensor, text: Optional[torch.Tensor] = None) -> torch.Tensor:
        txt = self.class_text_features() if text is None else text
        img = image_feats.float()
        img = img / img.norm(dim=-1, keepdim=True)
        return self.logit_scale * img @ txt.t()

    def forward_backward(self, batch) -> Dict[str, float]:
        if self.scaler is None:
            return super().forward_backward(batch)
        feats, labels = batch
        loss = F.cross_entropy(self.logits(feats), labels)
        opt = self._optims[MODULE]
        opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(opt)
        self.scaler.update()
        return {"loss": float(loss.item())}

    @torch.no_grad()
    def predict_batches(self, split: str):
        feats, labels = self.split_features(split)
        txt = self.class_text_features()  # the text tower once per evaluation, not per batch
        bs = int(self.cfg.DATALOADER.TEST.BATCH_SIZE)
        for i in range(0, len(feats), bs):
            yield self.logits(feats[i : i + bs].to(self.device), txt), labels[i : i + bs]
