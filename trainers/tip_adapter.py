"""Tip-Adapter (training-free cache model) and Tip-Adapter-F (fine-tuned cache keys), ECCV 2022.

Reference: gaopengcuhk/Tip-Adapter (read at commit d0e2d6f), ``main.py`` and ``utils.py``.

Cache model (``utils.build_cache_model``): the keys are the few-shot training images' features,
averaged over ``augment_epoch`` = 10 augmented passes (RandomResizedCrop scale (0.5, 1), flip) of the
*raw* encoder output and then L2-normalised; the values are the one-hot training labels.

Logits (``main.run_tip_adapter``), with f the L2-normalised image feature, W the prompt classifier:

    logits = 100 * f W^T + alpha * exp(-beta * (1 - f K^T)) V

(here ``self.logit_scale``, which is CLIP's 100). alpha and beta (``utils.search_hp``): a grid of
``search_step`` = (200, 20) values ``i * (scale - 0.1) / steps + 0.1`` up to the per-dataset
``search_scale`` (beta, alpha), beta outer, alpha inner, the first best kept (strict ``>``); without a
search the per-dataset ``init_beta`` = 1 and ``init_alpha``. Those per-dataset values are the
reference's ``configs/<dataset>.yaml``, in ``TRAINER.TIP_ADAPTER.PER_DATASET``.

Tip-Adapter-F (``main.run_tip_adapter_F``): the keys become a learnable ``Linear`` (initialised at
the cache keys, not renormalised afterwards) trained with the same logits at the init alpha/beta,
cross-entropy, AdamW (lr 1e-3, eps 1e-4, torch's default weight decay 0.01), batch 256, a cosine
schedule stepped every *iteration* over ``train_epoch`` (20; EuroSAT 100) epochs; then alpha/beta are
searched again with the fine-tuned keys. The reference keeps the epoch with the best *test*
accuracy (and reports max(best-epoch, searched) test accuracy); here the epoch is chosen by
``TEST.FINAL_MODEL best_val`` on the ``SELECTION.PROTOCOL`` split (``test`` reproduces the reference)
and the search too (engine/selection.py).

Deliberate differences (each logged once per run):

* the augmented passes are this project's cached views (``train_view_features``: K =
  ``FEATURES.TRAIN_VIEWS`` = 10 in the configs, the reference's ``augment_epoch``), seeded per
  (image, view) instead of drawn afresh; Tip-Adapter-F's epoch e trains on view ``e mod K`` (so its
  20 epochs see each of the 10 views twice) instead of a fresh crop per epoch;
* fp32 everywhere (the reference keeps the cache and the adapter in CLIP's fp16 on CUDA);
* under ``--engine dassl`` Dassl's scheduler steps once per epoch, not per iteration.

The cache values are the training classes' one-hot labels, so neither can score other classes
(``transfer_blocker``). With SigLIP's sigmoid scoring ``self.logit_scale`` is SigLIP's scale (its
bias, a per-image constant, does not change the ranking) and the cache term is added to those
logits unchanged; alpha is then searched on that scale.
"""
from __future__ import annotations

import logging
import math
import os
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from yacs.config import CfgNode as CN

from clip_adapter.engine.checkpoint import BEST_NAME, epoch_name
from clip_adapter.engine.clip_trainer import ClipTrainer
from clip_adapter.engine.optim import set_up_optimizer
from clip_adapter.engine.selection import accuracy, linear_grid
from clip_adapter.errors import ConfigError
from clip_adapter.registry import TRAINERS
from clip_adapter.trainers.frozen import reference_template_mode, unit

log = logging.getLogger(__name__)

MODULE = "tip_cache"
KNOB = "TRAINER.TIP_ADAPTER (BETA, ALPHA)"
ADAMW_EPS = 1e-4  # the reference's torch.optim.AdamW(..., eps=1e-4)
# Below this many affinity entries the search keeps f K^T in memory; above, it recomputes per beta.
AFFINITY_IN_MEMORY = 1 << 27


def cache_logits(feats: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, beta: float) -> torch.Tensor:
    """exp(-beta * (1 - f K^T)) V for unit image features f: Tip-Adapter's cache term."""
    return torch.exp(-beta * (1.0 - feats @ keys.t())) @ values


def build_cache_keys(views: torch.Tensor) -> torch.Tensor:
    """[N, D] cache keys from [K, N, D] raw augmented views: the mean of the raw features over the
    views, then L2-normalised (the reference's ``build_cache_model``)."""
    return unit(views.float().mean(dim=0))


class TipCache(nn.Module):
    """Keys (learnable in Tip-Adapter-F), one-hot values, and the alpha/beta in use (saved with the
    weights, so ``--eval-only`` scores with the searched values)."""

    def __init__(self, num_keys: int, dim: int, num_classes: int) -> None:
        super().__init__()
        self.keys = nn.Parameter(torch.zeros(num_keys, dim))
        self.register_buffer("values", torch.zeros(num_keys, num_classes))
        self.register_buffer("alpha", torch.tensor(1.0, dtype=torch.float64))
        self.register_buffer("beta", torch.tensor(1.0, dtype=torch.float64))
        self.register_buffer("ready", torch.tensor(False))  # keys filled from the training data

    def resize(self, num_keys: int) -> None:
        """Another cache size (a checkpoint of another training set, e.g. a transfer evaluation)."""
        dim, num_classes = self.keys.shape[1], self.values.shape[1]
        self.keys = nn.Parameter(torch.zeros(num_keys, dim, device=self.keys.device))
        self.values = torch.zeros(num_keys, num_classes, device=self.values.device)

    def fill(self, keys: torch.Tensor, labels: torch.Tensor, alpha: float, beta: float) -> None:
        with torch.no_grad():
            self.keys.copy_(keys)
            self.values.copy_(F.one_hot(labels.long(), self.values.shape[1]).float())
            self.set_hp(alpha, beta)
            self.ready.fill_(True)

    def set_hp(self, alpha: float, beta: float) -> None:
        self.alpha.fill_(float(alpha))
        self.beta.fill_(float(beta))


def tip_settings(cfg) -> Dict[str, object]:
    """init alpha/beta and the search grid for DATASET.NAME: the node's values, overridden by the
    dataset's entry in PER_DATASET (the reference's per-dataset configs)."""
    node = cfg.TRAINER.TIP_ADAPTER
    out = {"INIT_ALPHA": float(node.INIT_ALPHA), "INIT_BETA": float(node.INIT_BETA),
           "SEARCH_SCALE": tuple(float(v) for v in node.SEARCH_SCALE), "SEARCH_STEP": tuple(int(v) for v in node.SEARCH_STEP)}
    entry = node.PER_DATASET.get(cfg.DATASET.NAME) if cfg.DATASET.NAME in node.PER_DATASET else None
    if entry is not None:
        for key, value in entry.items():
            if key not in out:
                raise ConfigError(f"TRAINER.TIP_ADAPTER.PER_DATASET.{cfg.DATASET.NAME}.{key} is not a per-dataset setting; "
                                  f"use one of {', '.join(out)}")
            out[key] = tuple(type(out[key][0])(v) for v in value) if isinstance(out[key], tuple) else float(value)
    for key in ("SEARCH_SCALE", "SEARCH_STEP"):
        if len(out[key]) != 2:
            raise ConfigError(f"TRAINER.TIP_ADAPTER.{key} must be [beta, alpha], got {list(out[key])}")
    return out


@TRAINERS.register()
class TipAdapter(ClipTrainer):
    """Training-free Tip-Adapter: the cache is built in one step (``fit``), alpha/beta selected."""

    trains_in_epochs = False
    fine_tune = False

    @classmethod
    def config_defaults(cls) -> Dict[str, CN]:
        node = CN()
        # init_beta / init_alpha of the reference (configs/imagenet.yaml; PER_DATASET overrides).
        node.INIT_BETA = 1.0
        node.INIT_ALPHA = 1.17
        # search_scale [beta, alpha] and search_step [beta, alpha] of the reference's grid.
        node.SEARCH_SCALE = (7.0, 3.0)
        node.SEARCH_STEP = (200, 20)
        # {DATASET.NAME: {INIT_ALPHA, INIT_BETA, SEARCH_SCALE, SEARCH_STEP}}: the reference's per-dataset configs.
        node.PER_DATASET = CN(new_allowed=True)
        return {"TRAINER.TIP_ADAPTER": node}

    @classmethod
    def transfer_blocker(cls, cfg) -> Optional[str]:
        return "its cache values are the training images' one-hot labels (one column per training class)"

    # ---------------------------------------------------------------- build
    def build_model(self) -> None:
        self.template_mode = reference_template_mode(self.cfg.DATASET.NAME)
        super().build_model()

    def build_head(self) -> None:
        self.settings = tip_settings(self.cfg)
        n = len(self.dm.dataset.train_x)
        self.tip = TipCache(n, int(self.clip_info.embed_dim), len(self.classnames)).to(self.device)
        self.register_model(MODULE, self.tip)

    def load_module_state(self, name: str, state: Dict[str, torch.Tensor], source: str) -> None:
        keys = state.get("keys")
        if name == MODULE and keys is not None and keys.shape[0] != self.tip.keys.shape[0]:
            self.tip.resize(int(keys.shape[0]))  # the cache size of the checkpoint's training set
        super().load_module_state(name, state, source)

    def init_cache(self) -> None:
        """Keys from the K cached augmented views of the training images, values their labels."""
        views = self.train_view_features()
        labels = torch.tensor([d.label for d in self.dm.dataset.train_x], dtype=torch.long)
        s = self.settings
        self.tip.fill(build_cache_keys(views).to(self.device), labels.to(self.device), s["INIT_ALPHA"], s["INIT_BETA"])
        log.info("%s cache: %d keys from the mean of %d cached augmented view(s) each (the reference: 10 fresh passes; "
                 "FEATURES.TRAIN_VIEWS sets K)", type(self).__name__, views.shape[1], views.shape[0])

    # --------------------------------------------------------------- logits
    def logits(self, image_feats: torch.Tensor) -> torch.Tensor:
        f = unit(image_feats.float())
        c = self.tip
        return self.logit_scale * f @ self.current_text_features().t() + c.alpha.float() * cache_logits(f, c.keys, c.values, float(c.beta))

    def forward_backward(self, batch) -> Dict[str, float]:
        if not bool(self.tip.ready):
            self.init_cache()
        return super().forward_backward(batch)

    # ------------------------------------------------------------ selection
    def search_hp(self) -> None:
        """alpha/beta on the protocol's split (the reference's ``search_hp``), or the init values."""
        s = self.settings
        (scale_b, scale_a), (steps_b, steps_a) = s["SEARCH_SCALE"], s["SEARCH_STEP"]
        grid = [{"beta": b, "alpha": a} for b in linear_grid(0.1, scale_b, steps_b) for a in linear_grid(0.1, scale_a, steps_a)]
        scorer = _GridScorer(self)
        chosen = self.select(KNOB, grid, scorer, default={"beta": s["INIT_BETA"], "alpha": s["INIT_ALPHA"]},
                             fix="set SELECTION.PROTOCOL none to use TRAINER.TIP_ADAPTER.INIT_ALPHA/INIT_BETA (or test, only to "
                                 "reproduce a published figure)")
        self.tip.set_hp(chosen["alpha"], chosen["beta"])
        log.info("%s: alpha %.4g, beta %.4g", type(self).__name__, chosen["alpha"], chosen["beta"])

    def fit(self) -> None:
        self.init_cache()
        self.search_hp()

    def result_fields(self) -> dict:
        return {"alpha": float(self.tip.alpha), "beta": float(self.tip.beta)}


class _GridScorer:
    """Accuracy of one (beta, alpha) on a split, with f W^T and f K^T computed once and the cache
    term once per beta (the grid runs beta outer, alpha inner): 200 exp-matmuls, not 4000."""

    def __init__(self, trainer: TipAdapter) -> None:
        self.t = trainer
        self.split: Optional[str] = None
        self._beta: Optional[float] = None
        self._cache: Optional[torch.Tensor] = None

    def _prepare(self, split: str) -> None:
        t = self.t
        feats, self.labels = t.split_features(split)
        with torch.no_grad():
            self.f = unit(feats.float().to(t.device))
            self.clip = t.logit_scale * self.f @ t.text_weights.t()
            keys = t.tip.keys.detach()
            self.affinity = self.f @ keys.t() if self.f.shape[0] * keys.shape[0] <= AFFINITY_IN_MEMORY else None
        self.split, self._beta = split, None

    def __call__(self, value: Dict[str, float], split: str) -> float:
        if split != self.split:
            self._prepare(split)
        beta, alpha = float(value["beta"]), float(value["alpha"])
        c = self.t.tip
        with torch.no_grad():
            if beta != self._beta:
                if self.affinity is not None:
                    self._cache = torch.exp(-beta * (1.0 - self.affinity)) @ c.values
                else:
                    self._cache = torch.cat([cache_logits(self.f[i : i + 4096], c.keys.detach(), c.values, beta)
                                             for i in range(0, self.f.shape[0], 4096)])
                self._beta = beta
            return accuracy(self.clip + alpha * self._cache, self.labels)


@TRAINERS.register()
class TipAdapterF(TipAdapter):
    """Tip-Adapter-F: the cache keys fine-tuned by AdamW over epochs, then alpha/beta selected."""

    trains_in_epochs = True
    fine_tune = True

    def make_optimizer(self, name: str, module: nn.Module) -> torch.optim.Optimizer:
        def reference_eps(opt: torch.optim.Optimizer) -> None:
            if isinstance(opt, torch.optim.AdamW):
                for group in opt.param_groups:
                    group["eps"] = ADAMW_EPS

        return set_up_optimizer(super().make_optimizer(name, module), reference_eps)

    def train(self) -> None:
        if self.start_epoch == 0 and not bool(self.tip.ready):
            self.init_cache()
        if self.start_epoch == 0:
            log.info("TipAdapterF: per-iteration cosine LR over %d epochs, epoch e on cached view e mod %d (the reference: "
                     "a fresh crop every epoch)", int(self.cfg.OPTIM.MAX_EPOCH), self.num_train_views())
        super().train()

    def train_batches(self, epoch: int):
        """The base's batches, noting the step so ``forward_backward`` sets the reference's per-iteration LR."""
        batches = list(super().train_batches(epoch))
        for i, batch in enumerate(batches):
            self._step = (epoch, i, len(batches))
            yield batch
        self._step = None

    def forward_backward(self, batch) -> Dict[str, float]:
        step = getattr(self, "_step", None)
        if step is not None and self.cfg.OPTIM.LR_SCHEDULER == "cosine" and int(self.cfg.OPTIM.WARMUP_EPOCH) <= 0:
            epoch, i, per_epoch = step  # torch's CosineAnnealingLR over train_epoch * len(loader) steps
            total = max(1, int(self.cfg.OPTIM.MAX_EPOCH) * per_epoch)
            lr = float(self.cfg.OPTIM.LR) * 0.5 * (1.0 + math.cos(math.pi * (epoch * per_epoch + i) / total))
            for group in self._optims[MODULE].param_groups:
                group["lr"] = lr
        return super().forward_backward(batch)

    def after_training(self) -> None:
        """alpha/beta searched again with the fine-tuned keys, then saved with the deployed weights."""
        self.search_hp()
        max_epoch = int(self.cfg.OPTIM.MAX_EPOCH)
        self.save_model(max_epoch - 1, epoch_name(max_epoch))
        if os.path.isfile(os.path.join(self.output_dir, MODULE, BEST_NAME)):  # what --eval-only and Dassl deploy
            self.save_model(max_epoch - 1, BEST_NAME)
