"""CoOp: learn the prompt's context vectors; CLIP's text tower runs every step, its image tower never.

Image features come from the shared cache (or fresh views in ``FEATURES.MODE exact``); the class
text features are recomputed from the learnable prompts at each step, because that is the path the
gradient takes. ``TRAINER.COOP.PREC``: fp16 (CoOp's default: CLIP and the context in half
precision), fp32, or amp (fp32 weights, fp16 autocast, a gradient scaler); fp16/amp need CUDA and
fall back to fp32 elsewhere (``resolve_precision``).

The prompts run through the backbone's own text tower (``backbone.encode_text_embeddings``: its
attention mask, pooling and context length), so CoOp runs on open_clip's models as on OpenAI's.
SigLIP (sigmoid-trained backbones): the context trains with CoOp's softmax cross-entropy over the
classes on the backbone's scale and bias (the bias cancels in the softmax), not SigLIP's sigmoid loss.

KgCoOp and ProGrad are CoOp with another loss or update rule (trainers/kgcoop.py, prograd.py): they
read this same TRAINER.COOP node, as their code bases do, so it also carries KgCoOp's weight W.
"""
from __future__ import annotations

import logging
from typing import Dict, List, Optional

import torch
from yacs.config import CfgNode as CN

from clip_adapter.models.prompt_learner import PromptLearner, PromptTextEncoder
from clip_adapter.registry import TRAINERS
from clip_adapter.engine.clip_trainer import ClipTrainer

log = logging.getLogger(__name__)

MODULE = "prompt_learner"  # CoOp's module name: checkpoints live in <out>/prompt_learner/


@TRAINERS.register()
class CoOp(ClipTrainer):
    """Context Optimization (TRAINER.COOP.{N_CTX, CTX_INIT, CSC, CLASS_TOKEN_POSITION, PREC})."""

    prec_node = "COOP"

    @classmethod
    def config_defaults(cls) -> Dict[str, CN]:
        node = CN()  # names and defaults as in CoOp's train.py
        node.N_CTX = 16
        node.CSC = False
        node.CTX_INIT = ""
        # fp16 (CoOp's default: CLIP and the context in half precision) | fp32 | amp; fp32 off CUDA.
        node.PREC = "fp16"
        # end | middle | front
        node.CLASS_TOKEN_POSITION = "end"
        # KgCoOp's weight of its text-knowledge term (its scripts' 8.0; its train.py declares 1.0);
        # read by KgCoOp only, declared here because KgCoOp's code reads it from this node.
        node.W = 8.0
        return {"TRAINER.COOP": node}

    # CoOp's scripts name their folders by these (.../nctx16_cscFalse_ctpend/seed1).
    folder_keys = ("TRAINER.COOP.N_CTX", "TRAINER.COOP.CSC", "TRAINER.COOP.CLASS_TOKEN_POSITION")

    @classmethod
    def schedule_configs(cls, cfg_name: str, dataset: str, shots: int) -> List[str]:
        """CoOp's per-shot schedule, as in its README: ImageNet <cfg>_ep50 throughout; elsewhere 1 shot
        <cfg>_ep50, 2 and 4 shots <cfg>_ep100, 8 and 16 shots <cfg> (200 epochs). The tables show
        them as one method. <cfg> itself where a schedule's file does not exist (e.g. tiny)."""
        if dataset == "ImageNet" or shots <= 1:
            return [f"{cfg_name}_ep50", cfg_name]
        if shots <= 4:
            return [f"{cfg_name}_ep100", cfg_name]
        return [cfg_name]

    @classmethod
    def transfer_blocker(cls, cfg) -> Optional[str]:
        """A shared context transfers to any class names; a class-specific one (CSC) is one per training class.

        With CTX_INIT the context is shared whatever CSC says (CoOp's rule, see PromptLearner)."""
        if bool(cfg.TRAINER.COOP.CSC) and not str(cfg.TRAINER.COOP.CTX_INIT).replace("_", " ").strip():
            return ("its prompt context is learned per training class (TRAINER.COOP.CSC True; train with "
                    "TRAINER.COOP.CSC False for one shared context that transfers)")
        return None

    #: how CTX_INIT meets N_CTX (clip_adapter/models/prompt_learner.py): CoOp's rule is "phrase"
    init_rule = "phrase"

    def build_head(self) -> None:
        node = self.cfg.TRAINER.COOP
        self.prompt_learner = PromptLearner(
            self.backbone,
            self.classnames,
            n_ctx=int(node.N_CTX),
            ctx_init=node.CTX_INIT,
            csc=bool(node.CSC),
            class_token_position=node.CLASS_TOKEN_POSITION,
            init_rule=self.init_rule,
        ).to(self.device)
        self.text_encoder = PromptTextEncoder(self.backbone)
        self.register_model(MODULE, self.prompt_learner)
        self.scaler = torch.amp.GradScaler(self.device.type) if self.precision == "amp" else None
        pl = self.prompt_learner
        log.info("%s: %d context vectors (%s, init %r), class token at the %s, %s", type(self).__name__,
                 pl.n_ctx, "class-specific" if pl.csc else "shared", node.CTX_INIT or "random", pl.position, self.precision)

    def class_text_features(self) -> torch.Tensor:
        """[C, D] unit rows from the current prompts (differentiable in the context)."""
        pl = self.prompt_learner
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.precision == "amp"):
            txt = self.text_encoder(pl(), pl.tokenized_prompts)
        txt = txt.float()
        return txt / txt.norm(dim=-1, keepdim=True)
