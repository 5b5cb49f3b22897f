"""CLAP (class-adaptive linear probe) and ZS-LP (zero-shot-initialised linear probe), CVPR 2024.

Reference: jusiro/CLAP (Silva-Rodriguez et al., "A Closer Look at the Few-Shot Adaptation of Large
Vision-Language Models"), ``trainers/adapters.py`` (``AdapterMethod``, ``CustomCLIP.forward_lp``,
``TrainerXCostume.run_epoch``, ``ADAPTER.train``/``forward_backward``), ``train.py``,
``configs/trainers/SGD_lr1e-1_B256_ep300.yaml``, ``scripts/adapt.sh``: ZS-LP is ``INIT ZS`` with
``CONSTRAINT none``, CLAP is ``INIT ZS`` with ``CONSTRAINT l2``; both are registered here.

Model: class prototypes w_c initialised at the zero-shot text classifier t_c; ``logits =
logit_scale * norm(f) . norm(w)^T``. Loss: cross-entropy, plus for CLAP the class-adaptive penalty

    mean_c lambda_c * ||w_c - t_c||^2        (``zero_shot_constraint``; ``cosine``: 1 - cos(w_c, t_c))

with the multipliers lambda_c fixed before training (``init_lagrangian_multipliers``) to the zero-shot
model's mean softmax probability of class c over class c's training samples (``balanced``: 1;
``corrected``: rescaled to sum to C; ``constant``: their mean). The reference's augmented-Lagrangian
outer step (``outer_step``, PHR: lambda <- max(0, lambda + rho h), rho <- h with h the current
squared distance, after every epoch) belongs to its ``adaptative`` constraints; here ``ADAPTIVE True``.

Training data (``ADAPTER.train``, ``run_epoch``): the training images' features over
``epochs_aumentation`` = 20 augmented passes (Dassl's RandomResizedCrop (0.08, 1), flip) form one pool;
each epoch shuffles the pool and takes ``len(train_loader_x)`` batches of 256 from it (so an epoch sees
about N of the 20N samples). SGD lr 0.1, momentum 0.9, no weight decay, cosine over 300 epochs after
one constant warm-up epoch at 1e-5. No validation: the last epoch is deployed and nothing is
searched, so ``SELECTION.PROTOCOL`` never reads a split here (CLAP's validation-free setting).

Deliberate differences (logged): the pool is the K = ``FEATURES.TRAIN_VIEWS`` cached views (20 in
the configs, the reference's count), seeded per (image, view); the prototypes start at this project's
unit-norm text classifier (the reference starts at the raw, unnormalised text embedding averaged over
its templates; the logits normalise the prototypes, so only the step size along the sphere and the
penalty's scale differ, by the raw norm: a backbone-independent start, as the backbone seam serves
unit rows); ImageNet's prompts are this project's 7-template ensemble (the reference: those 7 plus
"a photo of a {}."). The prototypes are one per training class, so they cannot score other classes
(``transfer_blocker``). With SigLIP's sigmoid scoring the softmax cross-entropy (and the softmax of the
multipliers) runs on ``self.logit_scale`` times the cosine, as for CLIP.
"""
from __future__ import annotations

import logging
from typing import Dict, Iterator, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from yacs.config import CfgNode as CN

from clip_adapter.engine.clip_trainer import ClipTrainer
from clip_adapter.errors import ConfigError
from clip_adapter.registry import TRAINERS
from clip_adapter.trainers.frozen import reference_template_mode, unit

log = logging.getLogger(__name__)

MODULE = "clap_prototypes"
CONSTRAINTS = ("none", "l2", "cosine")
MULTIPLIERS = ("zero_shot", "balanced", "corrected", "constant")


def zero_shot_multipliers(zs_logits: torch.Tensor, labels: torch.Tensor, num_classes: int, kind: str = "zero_shot") -> torch.Tensor:
    """lambda_c: class c's mean zero-shot softmax probability over its samples (``init_lagrangian_multipliers``)."""
    if kind == "balanced":
        return torch.ones(num_classes)
    probs = torch.softmax(zs_logits.float(), dim=-1)
    onehot = F.one_hot(labels, num_classes).float()
    perf = torch.diag(probs.t() @ onehot) / onehot.sum(0)
    if kind == "corrected":
        perf = perf * (num_classes / perf.sum())
    elif kind == "constant":
        perf = torch.full((num_classes,), float(perf.mean()))
    return perf


def penalty(prototypes: torch.Tensor, base: torch.Tensor, multipliers: torch.Tensor, kind: str) -> torch.Tensor:
    """CLAP's constraint term: mean_c lambda_c * d(w_c, t_c) (``zero_shot_constraint``)."""
    if kind == "l2":
        dist = (prototypes - base).pow(2).sum(-1)
    elif kind == "cosine":
        dist = 1 - F.cosine_similarity(prototypes, base)
    else:
        raise ValueError(kind)
    return torch.mean(multipliers * dist)


def phr_outer_step(prototypes: torch.Tensor, base: torch.Tensor, multipliers: torch.Tensor, rho: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """The reference's ``outer_step``: PHR gradient lambda <- max(0, lambda + rho h), then rho <- h."""
    h = (prototypes - base).pow(2).sum(-1)
    x = multipliers + rho * h
    return torch.where(x >= 0, x, torch.zeros_like(x)), h.clone()


class Prototypes(nn.Module):
    """The learned class prototypes, and the multipliers/penalty parameters (saved with them)."""

    def __init__(self, num_classes: int, dim: int) -> None:
        super().__init__()
        self.prototypes = nn.Parameter(torch.zeros(num_classes, dim))
        self.register_buffer("multipliers", torch.zeros(num_classes))
        self.register_buffer("rho", torch.zeros(num_classes))
        self.register_buffer("ready", torch.tensor(False))


@TRAINERS.register()
class CLAP(ClipTrainer):
    """Zero-shot-initialised linear probe with the class-adaptive penalty (TRAINER.CLAP.*)."""

    #: the penalty of this registered configuration; None: TRAINER.CLAP.CONSTRAINT
    fixed_constraint: Optional[str] = None

    @classmethod
    def config_defaults(cls) -> Dict[str, CN]:
        node = CN()
        # Distance of the penalty: l2 (CLAP) | cosine | none (= ZS-LP). ZSLP ignores this key.
        node.CONSTRAINT = "l2"
        # Multipliers lambda_c: zero_shot (CLAP) | balanced | corrected | constant (the reference's variants).
        node.MULTIPLIERS = "zero_shot"
        # The reference's "adaptative" constraints: a PHR outer step on lambda after every epoch.
        node.ADAPTIVE = False
        return {"TRAINER.CLAP": node}

    @classmethod
    def transfer_blocker(cls, cfg) -> Optional[str]:
        return "its prototypes are one learned row per training class"

    @classmethod
    def needs_own_engine(cls, cfg) -> Optional[str]:
        if bool(cfg.TRAINER.CLAP.ADAPTIVE) and cls.fixed_constraint is None:
            return "TRAINER.CLAP.ADAPTIVE (the outer step after each epoch); set it False"
        return super().needs_own_engine(cfg)

    def constraint(self) -> str:
        kind = self.fixed_constraint or str(self.cfg.TRAINER.CLAP.CONSTRAINT)
        if kind not in CONSTRAINTS:
            raise ConfigError(f"TRAINER.CLAP.CONSTRAINT must be one of {', '.join(CONSTRAINTS)}, got {kind!r}")
        return kind

    # ---------------------------------------------------------------- build
    def build_model(self) -> None:
        node = self.cfg.TRAINER.CLAP
        self.constraint()
        if node.MULTIPLIERS not in MULTIPLIERS:
            raise ConfigError(f"TRAINER.CLAP.MULTIPLIERS must be one of {', '.join(MULTIPLIERS)}, got {node.MULTIPLIERS!r}")
        self.template_mode = reference_template_mode(self.cfg.DATASET.NAME)
        super().build_model()

    def build_head(self) -> None:
        self.proto = Prototypes(len(self.classnames), int(self.clip_info.embed_dim)).to(self.device)
        with torch.no_grad():
            self.proto.prototypes.copy_(self.text_weights)
        self.register_model(MODULE, self.proto)
        log.info("%s: prototypes start at the unit-norm zero-shot classifier (the reference: the raw text embedding); "
                 "penalty %s", type(self).__name__, self.constraint())

    def prepare(self) -> None:
        """The multipliers from the zero-shot model on the training pool (once; saved with the weights)."""
        feats, labels = self.pool()
        if self.constraint() != "none":
            with torch.no_grad():
                zs = self.logit_scale * unit(feats.to(self.device)) @ unit(self.text_weights).t()
            lam = zero_shot_multipliers(zs.cpu(), labels, len(self.classnames), str(self.cfg.TRAINER.CLAP.MULTIPLIERS))
            self.proto.multipliers.copy_(lam.to(self.device))
            log.info("%s: multipliers lambda from zero-shot (%s): mean %.3f", type(self).__name__, self.cfg.TRAINER.CLAP.MULTIPLIERS, float(lam.mean()))
        self.proto.ready.fill_(True)

    def pool(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """[K*N, D] raw features of every cached view of every training image, and their labels."""
        views = self.train_view_features()
        k, n, dim = views.shape
        labels = torch.tensor([d.label for d in self.dm.dataset.train_x], dtype=torch.long)
        return views.reshape(k * n, dim), labels.repeat(k)

    # --------------------------------------------------------------- train
    def train(self) -> None:
        if self.start_epoch == 0:
            log.info("%s: each epoch draws len(loader) batches from a shuffled pool of %d cached view(s) per image (the "
                     "reference: 20 fresh passes)", type(self).__name__, self.num_train_views())
        super().train()

    def train_batches(self, epoch: int) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        """The reference's ``run_epoch``: shuffle the pool, then ``len(train_loader_x)`` batches from its start
        (N // bs with Dassl's drop_last when N >= bs, else one batch)."""
        feats, labels = self.pool()
        n = len(self.dm.dataset.train_x)
        bs = int(self.cfg.DATALOADER.TRAIN_X.BATCH_SIZE)
        batches = n // bs if n >= bs else 1
        g = torch.Generator().manual_seed(int(self.cfg.SEED) * 1_000_003 + epoch)
        order = torch.randperm(len(labels), generator=g)
        for b in range(batches):
            idx = order[b * bs : (b + 1) * bs]
            yield feats[idx].to(self.device), labels[idx].to(self.device)

    def forward_backward(self, batch) -> Dict[str, float]:
        if not bool(self.proto.ready):
            self.prepare()
        feats, labels = batch
        loss = F.cross_entropy(self.logits(feats), labels)
        kind = self.constraint()
        if kind != "none":
            loss = loss + penalty(self.proto.prototypes, self.text_weights, self.proto.multipliers, kind)
        self.step(loss)
        return {"loss": float(loss.item())}

    def after_epoch(self, epoch: int) -> None:
        if bool(self.cfg.TRAINER.CLAP.ADAPTIVE) and self.constraint() != "none":
            with torch.no_grad():
                lam, rho = phr_outer_step(self.proto.prototypes, self.text_weights, self.proto.multipliers, self.proto.rho)
                self.proto.multipliers.copy_(lam)
                self.proto.rho.copy_(rho)
        super().after_epoch(epoch)

    # --------------------------------------------------------------- logits
    def class_text_features(self) -> torch.Tensor:
        return unit(self.proto.prototypes)

    def result_fields(self) -> dict:
        return {"constraint": self.constraint(), "multipliers": str(self.cfg.TRAINER.CLAP.MULTIPLIERS)}


@TRAINERS.register()
class ZSLP(CLAP):
    """ZS-LP: CLAP's linear probe without the penalty (the reference's ``CONSTRAINT none``)."""

    fixed_constraint = "none"

    def result_fields(self) -> dict:
        return {"constraint": "none"}
