"""ProGrad: CoOp updated only along directions that do not fight zero-shot CLIP's prediction.

Zhu et al., ICCV'23 (BeierZhu/Prompt-align, ProGrad.public/trainers/prograd.py and the
``prograd_backward_and_update`` of its Dassl fork). Per step, with p_zs = softmax(zero-shot logits / T)
(CLIP with the hand-crafted prompt, on the same image features) and the CoOp student's logits z:

    L_ce = CE(z, y)                                    -> g_ce
    L_kl = T^2 * mean_i sum_c -p_zs[i, c] log softmax(z_i / T)[c]   -> g_kl
           (the cross-entropy form of KL(p_zs || p_student): same gradient)
    g = g_ce                                           if g_ce . g_kl >= 0
    g = g_ce - LAMBDA * (g_ce . g_kl / ||g_kl||^2) g_kl  otherwise

per learnable tensor (the context), then the optimiser steps on g. LOSS.NAME ``vertical_grad``
projects always; ``kd`` is the plain distillation baseline ``(1 - ALPHA) L_ce + ALPHA L_kl`` of the
same code base. Defaults (its configs/scripts): NAME prograd, T 1.0, LAMBDA 1.0 (0.8 for 8/16
shots on Flowers102, DTD and EuroSAT, per its README); N_CTX 16 with CTX_INIT filling the last
context slots (``pad`` rule). Config nodes as its code names them: TRAINER.COOP (CoOp's) and LOSS.

Its zero-shot teacher uses a template table of its own, which differs from CoOp's for five
datasets; it is used here for those datasets (``TEACHER_TEMPLATES``), the dataset's own template
otherwise. Both encoders are frozen: the teacher's logits come from the same cached features.
"""
from __future__ import annotations

from typing import Dict

import torch
import torch.nn.functional as F
from yacs.config import CfgNode as CN

from clip_adapter.errors import ConfigError
from clip_adapter.registry import TRAINERS
from clip_adapter.trainers.coop import CoOp

LOSSES = ("prograd", "vertical_grad", "kd")

# ProGrad's teacher templates where they differ from CoOp's (its CUSTOM_TEMPLATES; registered dataset names).
TEACHER_TEMPLATES = {
    "OxfordPets": "a type of pet, a photo of a {}.",
    "OxfordFlowers": "a type of flower, a photo of a {}.",
    "FGVCAircraft": "a type of aircraft, a photo of a {}.",
    "DescribableTextures": "a texture of {}.",
    "Food101": "a type of food, a photo of {}.",
}


def distill_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * mean over the batch of the cross-entropy of softmax(student/T) against softmax(teacher/T)."""
    target = F.softmax(teacher.float() / temperature, dim=-1)
    return -(target * F.log_softmax(student.float() / temperature, dim=-1)).sum(1).mean() * temperature ** 2


def project_gradient(g: torch.Tensor, ref: torch.Tensor, lam: float = 1.0, always: bool = False) -> torch.Tensor:
    """ProGrad's rule: ``g`` minus LAMBDA times its component along ``ref`` when the two conflict
    (negative dot product), else ``g`` unchanged; ``always`` projects regardless (vertical_grad)."""
    dot = torch.dot(g.flatten().float(), ref.flatten().float())
    if not always and dot >= 0:
        return g
    norm2 = ref.float().pow(2).sum()
    if norm2 == 0:
        return g
    return (g.float() - lam * (dot / norm2) * ref.float()).to(g.dtype)


@TRAINERS.register()
class ProGrad(CoOp):
    """Prompt-aligned gradient (TRAINER.COOP, LOSS.{NAME, T, LAMBDA, ALPHA})."""

    init_rule = "pad"

    @classmethod
    def config_defaults(cls) -> Dict[str, CN]:
        nodes = dict(super().config_defaults())  # TRAINER.COOP, shared with CoOp
        loss = CN()  # ProGrad's train.py node (its GM key is read nowhere and left out)
        # prograd (project g_ce off g_kl when they conflict) | vertical_grad (always) | kd (weighted sum)
        loss.NAME = "prograd"
        # distillation temperature T
        loss.T = 1.0
        # LAMBDA: how much of the conflicting component is removed (1.0: all of it)
        loss.LAMBDA = 1.0
        # kd only: weight of the distillation term
        loss.ALPHA = 0.0
        nodes["LOSS"] = loss
        return nodes

    def build_head(self) -> None:
        node = self.cfg.LOSS
        if node.NAME not in LOSSES:
            raise ConfigError(f"LOSS.NAME must be one of {', '.join(LOSSES)} for ProGrad, got {node.NAME!r}")
        if float(node.T) <= 0:
            raise ConfigError(f"LOSS.T (the distillation temperature) must be > 0, got {node.T}")
        super().build_head()
        template = TEACHER_TEMPLATES.get(self.cfg.DATASET.NAME)
        self.teacher_text = (self.text_classifier(self.classnames, [template]).to(self.device) if template
                             else self.text_weights)

    def result_fields(self) -> dict:
        node = self.cfg.LOSS
        return {"loss": node.NAME, "T": float(node.T), "lambda": float(node.LAMBDA), "alpha": float(node.ALPHA)}

    def forward_backward(self, batch) -> Dict[str, float]:
        feats, labels = batch
        node = self.cfg.LOSS
        student = self.logits(feats)
        with torch.no_grad():
            teacher = self.cosine_logits(feats, self.teacher_text)
        ce = F.cross_entropy(student, labels)
        kl = distill_loss(student, teacher, float(node.T))
        self.zero_grads()
        if node.NAME == "kd":
            self.backward((1 - float(node.ALPHA)) * ce + float(node.ALPHA) * kl)
        else:
            params = [p for m in self.trainable_modules().values() for p in m.parameters() if p.requires_grad]
            scale = (lambda x: self.scaler.scale(x)) if self.scaler is not None else (lambda x: x)
            g_kl = torch.autograd.grad(scale(kl), params, retain_graph=True)
            g_ce = torch.autograd.grad(scale(ce), params)
            for p, a, b in zip(params, g_ce, g_kl):
                p.grad = project_gradient(a, b, float(node.LAMBDA), always=node.NAME == "vertical_grad")
        self.apply_grads()
        return {"loss": float(ce.item()), "kl": float(kl.item())}
