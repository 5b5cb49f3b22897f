"""LP++: a linear probe blended with the text classifier by learned class-wise multipliers (CVPR 2024).

Reference: FereshteShakeri/FewShot-CLIP-Strong-Baseline, ``methods/linear_probe_p2.py``
(``LinearProbe_P2.forward``, ``calculate_lr_w``, ``calculate_init_alpha``, ``calculate_lr_alpha``),
``methods/utils.py`` (``compute_centroids``, ``compute_centroids_alpha``), ``main.py``, ``configs/base.yaml``.

Model: for an L2-normalised feature f, ``logits = f V^T + b + alpha ⊙ (f T^T)`` with V, b a linear
head, T the prompt classifier (unscaled cosines) and alpha one multiplier per class.

Fit (full batch on the training features F [N, D], one augmented view per image as the reference's
single pass over its training loader, RandomResizedCrop scale (0.5, 1)):

* init: V = the per-class *sums* of F (``compute_centroids``; its division is commented out), b as
  ``nn.Linear`` initialises it, every alpha_c = mean over classes c of 250 * mean_{i in c} f_i.t_c;
* step sizes: ``lr_w = 4 N / lambda_max(F^T F)`` (``scipy.linalg.eigh``) and ``lr_alpha = N / (4 *
  max_c sum_i (f_i.t_c)^2)``;
* ``STEPS`` = 300 epochs of one full-batch cross-entropy step: SGD (momentum 0.9, lr_w) on V, b, and
  every ``ALPHA_EVERY`` = 10 epochs a plain gradient step ``alpha -= lr_alpha * grad`` (block
  coordinate descent). The reference never zeroes alpha's gradient, so that step uses the gradient
  *accumulated since the start*; reproduced as is.
* the deployed epoch: the reference keeps the last epoch with the best accuracy on its few-shot val
  (``>=``: ties go to the later epoch); here the same rule on the ``SELECTION.PROTOCOL`` split
  (recorded as the search of knob ``epoch``), or the last epoch under ``none``.

Deliberate differences (logged): the single augmented view is cached view 0 of each training image
(seeded per image); the reference's few-shot val has ``shots`` images per class, this project's
``fewshot_val`` CoOp's min(shots, 4); fp32 (the reference: CLIP's fp16 on CUDA); the bias is
initialised from a generator seeded by ``SEED`` (the reference: the global RNG).

V, b and alpha hold one row/entry per training class, so the head cannot score other classes
(``transfer_blocker``). Its text term is the plain cosine f.t, so SigLIP's sigmoid scoring (scale,
bias) does not enter the formula; the softmax cross-entropy is the reference's.
"""
from __future__ import annotations

import copy
import logging
import math
import time
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn
from yacs.config import CfgNode as CN

from clip_adapter.engine.clip_trainer import ClipTrainer
from clip_adapter.engine.selection import accuracy
from clip_adapter.errors import ConfigError
from clip_adapter.registry import TRAINERS
from clip_adapter.trainers.frozen import reference_template_mode, unit

log = logging.getLogger(__name__)

MODULE = "lpp_head"
KNOB = "epoch"
INIT_ALPHA_SCALE = 250.0  # calculate_init_alpha: alpha_init = 250 / shots * (shots * mean)


def lpp_step_sizes(feats: torch.Tensor, text_logits: torch.Tensor) -> tuple:
    """(lr_w, lr_alpha) of the reference from unit training features [N, D] and f.t [N, C]."""
    n = feats.shape[0]
    # lambda_max(F^T F) = lambda_max(F F^T): the smaller of the two Gram matrices gives it
    gram = (feats.t() @ feats if feats.shape[1] <= n else feats @ feats.t()).double()
    lr_w = 4.0 * n / float(torch.linalg.eigvalsh(gram).max())
    lr_alpha = n / (4.0 * float((text_logits.double() ** 2).sum(dim=0).max()))
    return lr_w, lr_alpha


def lpp_init_alpha(text_logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> float:
    """mean over classes c of 250 * (mean over class-c images of f.t_c)."""
    own = text_logits[torch.arange(len(labels)), labels].double()
    counts = torch.bincount(labels, minlength=num_classes).double()
    per_class = torch.zeros(num_classes, dtype=torch.float64).index_add_(0, labels, own) / counts.clamp(min=1)
    return float((INIT_ALPHA_SCALE * per_class).mean())


class LPPHead(nn.Module):
    """The visual linear head (V, b) and the class-wise text multipliers alpha."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, num_classes)
        self.alpha = nn.Parameter(torch.zeros(num_classes))

    def forward(self, unit_feats: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        return self.linear(unit_feats) + self.alpha * (unit_feats @ text.t())


@TRAINERS.register()
class LPpp(ClipTrainer):
    """LP++ (TRAINER.LPPP.*): full-batch block coordinate descent in one ``fit``."""

    trains_in_epochs = False

    @classmethod
    def config_defaults(cls) -> Dict[str, CN]:
        node = CN()
        # Full-batch epochs (the reference's train_epoch for LinearProbe_P2, configs/base.yaml).
        node.STEPS = 300
        # alpha is updated every this many epochs (linear_probe_p2.py: (epoch + 1) % 10 == 0).
        node.ALPHA_EVERY = 10
        # Momentum of the SGD on the linear head (the reference's torch.optim.SGD(..., momentum=0.9)).
        node.MOMENTUM = 0.9
        return {"TRAINER.LPPP": node}

    @classmethod
    def transfer_blocker(cls, cfg) -> Optional[str]:
        return "its linear head and text multipliers are one row/entry per training class"

    def build_model(self) -> None:
        self.template_mode = reference_template_mode(self.cfg.DATASET.NAME)
        super().build_model()

    def build_head(self) -> None:
        self.head = LPPHead(int(self.clip_info.embed_dim), len(self.classnames)).to(self.device)
        self.register_model(MODULE, self.head)

    def logits(self, image_feats: torch.Tensor) -> torch.Tensor:
        return self.head(unit(image_feats.float()), self.current_text_features())

    # ----------------------------------------------------------------- fit
    def fit(self) -> None:
        node = self.cfg.TRAINER.LPPP
        steps, every = int(node.STEPS), int(node.ALPHA_EVERY)
        if steps < 1 or every < 1:
            raise ConfigError(f"TRAINER.LPPP.STEPS and ALPHA_EVERY must be >= 1, got {steps} and {every}")
        t0 = time.time()
        feats = unit(self.train_view_features()[0].float()).to(self.device)
        labels = torch.tensor([d.label for d in self.dm.dataset.train_x], dtype=torch.long, device=self.device)
        log.info("LP++: %d training features from cached augmented view 0 (the reference: one fresh augmented pass)", len(labels))
        head, text, c = self.head, self.text_weights, len(self.classnames)
        text_logits = feats @ text.t()
        lr_w, lr_alpha = lpp_step_sizes(feats, text_logits)
        alpha0 = lpp_init_alpha(text_logits, labels, c)
        g = torch.Generator().manual_seed(int(self.cfg.SEED))
        bound = 1.0 / math.sqrt(feats.shape[1])  # nn.Linear's default bias init, from a seeded generator
        with torch.no_grad():
            head.linear.weight.copy_(F.one_hot(labels, c).float().t() @ feats)
            head.linear.bias.copy_((torch.rand(c, generator=g) * 2 - 1) * bound)
            head.alpha.fill_(alpha0)
            head.alpha.grad = None
        opt = torch.optim.SGD(head.linear.parameters(), lr=lr_w, momentum=float(node.MOMENTUM))
        log.info("LP++: lr_w %.4g, lr_alpha %.4g, initial alpha %.4g, %d full-batch epochs", lr_w, lr_alpha, alpha0, steps)
        self._lpp = {"done": 0, "best": -1.0, "state": None}

        def step() -> None:
            logits = head(feats, text)
            loss = F.cross_entropy(logits, labels)
            opt.zero_grad()  # the linear head only: alpha's gradient accumulates (the reference's)
            loss.backward()
            opt.step()
            self._lpp["done"] += 1
            if self._lpp["done"] % every == 0:
                with torch.no_grad():
                    head.alpha -= lr_alpha * head.alpha.grad

        def score(epoch: int, split: str) -> float:
            while self._lpp["done"] < epoch:
                step()
            x, y = self.split_features(split)
            with torch.no_grad():
                acc = accuracy(head(unit(x.float().to(self.device)), text), y)
            if acc >= self._lpp["best"]:  # ties to the later epoch, as the reference's >=
                self._lpp["best"], self._lpp["state"] = acc, copy.deepcopy(head.state_dict())
            return acc

        chosen = self.select(KNOB, range(1, steps + 1), score, default=steps, ties="last",
                             fix="set SELECTION.PROTOCOL none to deploy the last epoch (or test, only to reproduce a published figure)")
        while self._lpp["done"] < steps:  # SELECTION.PROTOCOL none: no epoch was scored
            step()
        if self._lpp["state"] is not None:  # the snapshot of the chosen (last best) epoch
            head.load_state_dict(self._lpp["state"])
        head.alpha.grad = None
        self.lpp_epoch = int(chosen)
        self.train_time = time.time() - t0
        log.info("LP++: deployed epoch %d of %d (%.1fs)", chosen, steps, self.train_time)

    def result_fields(self) -> dict:
        epoch = getattr(self, "lpp_epoch", None)
        return {"epoch": epoch} if epoch is not None else {}
