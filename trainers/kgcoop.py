"""KgCoOp: CoOp with a pull of the learned prompts' text features toward the hand-crafted prompt's.

Yao et al., CVPR'23 (htyao89/KgCoOp trainers/kgcoop.py). With w_c the learned prompt's unit text
feature of class c and w0_c the hand-crafted prompt's (the dataset's template, CLIP's zero-shot
classifier), the loss is

    CE(logits, y) + W * (1 - mean_c cos(w_c, w0_c))

(the paper writes the term as the mean squared distance ||w_c - w0_c||^2 = 2 - 2 cos for unit
vectors; the code uses 1 - cos, half of it, which is what W = 8.0 is tuned for). Everything else is
CoOp's: the TRAINER.COOP node (N_CTX, CTX_INIT, CSC, CLASS_TOKEN_POSITION, PREC) plus its W, the
context module, frozen encoders (cached image features). KgCoOp's configs set CTX_INIT True, meaning
"a photo of a" (with N_CTX 4 from its scripts); here CTX_INIT is that phrase.
"""
from __future__ import annotations

from typing import Dict

import torch
import torch.nn.functional as F

from clip_adapter.registry import TRAINERS
from clip_adapter.trainers.coop import CoOp


def text_knowledge_distance(learned: torch.Tensor, handcrafted: torch.Tensor) -> torch.Tensor:
    """KgCoOp's term: 1 - mean over classes of cos(learned_c, handcrafted_c) ([C, D] each)."""
    return 1.0 - F.cosine_similarity(learned.float(), handcrafted.float(), dim=1, eps=1e-7).mean()


@TRAINERS.register()
class KgCoOp(CoOp):
    """Knowledge-guided Context Optimization (TRAINER.COOP plus TRAINER.COOP.W)."""

    def result_fields(self) -> dict:
        return {"W": float(self.cfg.TRAINER.COOP.W)}

    def forward_backward(self, batch) -> Dict[str, float]:
        feats, labels = batch
        txt = self.class_text_features()  # one text pass serves both terms
        ce = F.cross_entropy(self.cosine_logits(feats, txt), labels)
        kg = text_knowledge_distance(txt, self.text_weights)
        loss = ce + float(self.cfg.TRAINER.COOP.W) * kg
        self.step(loss)
        return {"loss": float(loss.item()), "ce": float(ce.item()), "kg": float(kg.item())}
