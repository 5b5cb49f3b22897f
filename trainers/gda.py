"""GDA: Gaussian discriminant analysis on frozen CLIP features, training-free (ICLR 2024).

Reference: mrflogs/ICLR24 (Wang et al., "A Hard-to-Beat Baseline for Training-free CLIP-Based
Adaptation"), ``main_few_shots.py`` ``run()`` and ``configs/few_shots/<dataset>.yaml``.

Closed form (``run()``): the training images' features over ``augment_epoch`` = 10 augmented passes
(RandomResizedCrop scale (0.5, 1), flip), each L2-normalised, pooled. With mu_c the class means, the
centred vectors x - mu_y (n of them, D-dimensional) and S their covariance (``torch.cov``: unbiased,
about their own mean), the shared precision is the "KS estimator"

    P = D * pinv((n - 1) * S + trace(S) * I)

and the linear discriminant with uniform priors is ``W = mu P`` ([C, D]), ``b_c = log(1/C) - mu_c P
mu_c^T / 2``. Logits of an L2-normalised feature f:

    logits = 100 * f T^T + alpha * (f W^T + b)

(``self.logit_scale`` for CLIP's 100). alpha: the first best of [1e-4, 1e-3, 1e-2, 0.1, 1, 10, 100] on the
``SELECTION.PROTOCOL`` split (the reference searches the whole val split, ImageNet's test set);
under ``none`` the configured ``ALPHA`` (default 0.1, the reference's value before its search).

Deliberate differences (logged): the augmented passes are the K = ``FEATURES.TRAIN_VIEWS`` cached views
(10 in the configs, the reference's augment_epoch), seeded per (image, view); the estimate is computed
in float64 (the reference: float32 on the GPU), then stored in float32, and P's pseudo-inverse, which is
an inverse for the positive definite shrunk matrix, is applied by a Cholesky solve.

W and b hold one row per training class (its mean), so the head cannot score other classes
(``transfer_blocker``; the reference's base-to-new variant synthesises novel-class means from text
with a k-NN over the training features, which is not implemented here). With SigLIP's sigmoid scoring
``self.logit_scale`` is SigLIP's scale (its bias does not change the ranking) and the GDA term is added
to those logits unchanged; alpha is searched on that scale.
"""
from __future__ import annotations

import logging
import math
from typing import Dict, Optional, Tuple

import torch
from torch import nn
from yacs.config import CfgNode as CN

from clip_adapter.engine.clip_trainer import ClipTrainer
from clip_adapter.engine.selection import accuracy, as_candidates
from clip_adapter.errors import ConfigError, DatasetError
from clip_adapter.registry import TRAINERS
from clip_adapter.trainers.frozen import reference_template_mode, unit

log = logging.getLogger(__name__)

MODULE = "gda_head"
KNOB = "TRAINER.GDA.ALPHA"


def gda_weights(vecs: torch.Tensor, labels: torch.Tensor, num_classes: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """(W [C, D], b [C]) of the reference's closed form from unit feature vectors [n, D] and labels [n]."""
    vecs = vecs.double()
    counts = torch.bincount(labels, minlength=num_classes)
    if bool((counts == 0).any()):
        missing = torch.nonzero(counts == 0).flatten().tolist()
        raise DatasetError(f"GDA needs every class's mean, but class(es) {missing[:10]} have no training images; "
                           "give each class at least one readable training image")
    mus = torch.zeros(num_classes, vecs.shape[1], dtype=vecs.dtype).index_add_(0, labels, vecs) / counts[:, None]
    centred = vecs - mus[labels]
    cov = centred.t().cov()
    dim = vecs.shape[1]
    shrunk = (centred.shape[0] - 1) * cov + cov.trace() * torch.eye(dim, dtype=vecs.dtype)
    # P = D * pinv(shrunk). shrunk is symmetric positive definite whenever trace(S) > 0, and then its
    # pseudo-inverse is its inverse: W^T = D * shrunk^-1 mu^T by a Cholesky solve (several times faster
    # than pinv's SVD at D = 1024); pinv only for a degenerate S.
    chol, info = torch.linalg.cholesky_ex(shrunk)
    if int(info) == 0:
        weight = dim * torch.cholesky_solve(mus.t(), chol).t()
    else:
        weight = mus @ (dim * torch.linalg.pinv(shrunk))
    bias = math.log(1.0 / num_classes) - 0.5 * (weight * mus).sum(dim=1)
    return weight, bias


class GDAHead(nn.Module):
    """The discriminant (W, b) and its blend alpha (saved with the weights)."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, num_classes)
        self.register_buffer("alpha", torch.tensor(0.1, dtype=torch.float64))

    def forward(self, unit_feats: torch.Tensor) -> torch.Tensor:
        return self.linear(unit_feats)


@TRAINERS.register()
class GDA(ClipTrainer):
    """Training-free GDA head added to zero-shot CLIP; alpha selected (TRAINER.GDA.*)."""

    trains_in_epochs = False

    @classmethod
    def config_defaults(cls) -> Dict[str, CN]:
        node = CN()
        # The reference's alpha grid (main_few_shots.py), searched under SELECTION.PROTOCOL.
        node.ALPHA_GRID = (0.0001, 0.001, 0.01, 0.1, 1.0, 10.0, 100.0)
        # alpha without a search (SELECTION.PROTOCOL none): the reference's value before its search.
        node.ALPHA = 0.1
        return {"TRAINER.GDA": node}

    @classmethod
    def transfer_blocker(cls, cfg) -> Optional[str]:
        return "its discriminant is one mean (row) per training class"

    def build_model(self) -> None:
        self.template_mode = reference_template_mode(self.cfg.DATASET.NAME)
        super().build_model()

    def build_head(self) -> None:
        self.head = GDAHead(int(self.clip_info.embed_dim), len(self.classnames)).to(self.device)
        self.register_model(MODULE, self.head)

    def logits(self, image_feats: torch.Tensor) -> torch.Tensor:
        f = unit(image_feats.float())
        return self.logit_scale * f @ self.current_text_features().t() + self.head.alpha.float() * self.head(f)

    def fit(self) -> None:
        node = self.cfg.TRAINER.GDA
        grid = [float(a) for a in as_candidates(node.ALPHA_GRID, "TRAINER.GDA.ALPHA_GRID")]
        views = self.train_view_features()
        k, n, dim = views.shape
        labels = torch.tensor([d.label for d in self.dm.dataset.train_x], dtype=torch.long)
        weight, bias = gda_weights(unit(views.reshape(k * n, dim).float()), labels.repeat(k), len(self.classnames))
        with torch.no_grad():
            self.head.linear.weight.copy_(weight.float())
            self.head.linear.bias.copy_(bias.float())
        log.info("GDA: shared covariance of %d feature vectors (%d cached augmented view(s) of %d images; the reference: "
                 "10 fresh passes), estimated in float64", k * n, k, n)

        cache: Dict[str, Tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

        def score(alpha: float, split: str) -> float:
            if split not in cache:
                feats, y = self.split_features(split)
                f = unit(feats.float().to(self.device))
                with torch.no_grad():
                    cache[split] = (self.logit_scale * f @ self.text_weights.t(), self.head(f), y)
            zero_shot, gda, y = cache[split]
            return accuracy(zero_shot + alpha * gda, y)

        alpha = self.select(KNOB, grid, score, default=float(node.ALPHA), fix="set SELECTION.PROTOCOL none to use TRAINER.GDA.ALPHA (or test, only to reproduce a published figure)")
        if not alpha >= 0:
            raise ConfigError(f"TRAINER.GDA.ALPHA must be >= 0, got {alpha}")
        self.head.alpha.fill_(float(alpha))
        log.info("GDA: alpha %g", alpha)

    def result_fields(self) -> dict:
        return {"alpha": float(self.head.alpha)}
