"""Linear-probe CLIP: L2-regularised logistic regression (scikit-learn) on frozen image features.

CoOp's linear-probe protocol (its ``lpclip/``): raw image features of the training images under the
deterministic test transform, scikit-learn's ``LogisticRegression(lbfgs, max_iter=1000)``, and the
inverse regularisation strength C chosen on the split ``SELECTION.PROTOCOL`` names (the few-shot val
by default; engine/selection.py): first over a coarse grid (1e6 .. 1e-6), then ``SEARCH_STEPS``
bisection steps in log space around the best value, each step keeping the better of its two ends, as
CoOp's script does (``selection.log_bisection``). Every C tried and its score is logged, written to
``<out>/c_search.json`` and recorded in results.json (``selection``). A one-value grid with no steps
is a fixed C (no search, any protocol); ``SELECTION.PROTOCOL none`` with a grid is refused (the probe
has no configured C to fall back on).

The fitted classifier is copied into a ``torch.nn.Linear`` registered as ``linear_probe``, so it is
saved and loaded like every other trainer's weights (``--eval-only --model-dir``, no pickle).

It uses no text side and no logit scale or bias of the backbone, so it is the same method on every
backbone, SigLIP included.
"""
from __future__ import annotations

import logging
import os
import time
import warnings
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import nn
from yacs.config import CfgNode as CN

from clip_adapter.engine.selection import log_bisection
from clip_adapter.errors import ConfigError
from clip_adapter.registry import TRAINERS
from clip_adapter.engine.clip_trainer import ClipTrainer
from clip_adapter.utils import atomic_write_json

log = logging.getLogger(__name__)

MODULE = "linear_probe"
SEARCH_FILE = "c_search.json"


def fit_logreg(x: np.ndarray, y: np.ndarray, c: float, max_iter: int):
    """One scikit-learn fit; convergence warnings are expected at extreme C and only counted."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        clf = LogisticRegression(C=c, solver="lbfgs", max_iter=max_iter).fit(x, y)
    if any(issubclass(w.category, ConvergenceWarning) for w in caught):
        log.debug("C=%g: lbfgs did not converge in %d iterations", c, max_iter)
    return clf


def as_linear(clf, num_classes: int, dim: int) -> nn.Linear:
    """A fitted classifier as ``Linear(dim, num_classes)`` with the same argmax as ``clf.predict``.

    Rows follow ``clf.classes_``; a binary problem (one coefficient row, class 1 iff w.x + b > 0)
    becomes the logits ``[0, w.x + b]``; a class absent from training can never be predicted.
    """
    weight = torch.zeros(num_classes, dim)
    bias = torch.full((num_classes,), float("-inf"))
    coef = torch.as_tensor(clf.coef_, dtype=torch.float32)
    intercept = torch.as_tensor(clf.intercept_, dtype=torch.float32)
    classes = [int(c) for c in clf.classes_]
    if len(classes) == 2 and coef.shape[0] == 1:
        bias[classes[0]] = 0.0
        weight[classes[1]], bias[classes[1]] = coef[0], intercept[0]
    else:
        for row, label in enumerate(classes):
            weight[label], bias[label] = coef[row], intercept[row]
    missing = sorted(set(range(num_classes)) - set(classes))
    if missing:
        log.warning("classes %s have no training images: the linear probe never predicts them", missing)
    head = nn.Linear(dim, num_classes)
    with torch.no_grad():
        head.weight.copy_(weight)
        head.bias.copy_(bias)
    return head


@TRAINERS.register()
class LinearProbeCLIP(ClipTrainer):
    """Logistic regression on frozen CLIP image features, C chosen on val (TRAINER.LINEAR_PROBE.*)."""

    trains_in_epochs = False  # one solver fit (fit()), saved as epoch 1

    @classmethod
    def config_defaults(cls) -> Dict[str, CN]:
        node = CN()
        # Coarse grid of C (inverse regularisation strength), scored on the validation split.
        node.C_GRID = (1e6, 1e4, 1e2, 1.0, 1e-2, 1e-4, 1e-6)
        # Then this many log-space bisection steps around the best coarse value (0: grid only).
        node.SEARCH_STEPS = 8
        node.MAX_ITER = 1000
        return {"TRAINER.LINEAR_PROBE": node}

    @classmethod
    def transfer_blocker(cls, cfg) -> Optional[str]:
        return "its weights are one classifier row per training class"

    def build_head(self) -> None:
        self.head = nn.Linear(int(self.clip_info.embed_dim), len(self.classnames)).to(self.device)
        self.register_model(MODULE, self.head)

    def logits(self, image_feats: torch.Tensor) -> torch.Tensor:
        return self.head(image_feats.float())

    # ----------------------------------------------------------------- fit
    def fit(self) -> None:
        """Fit the head on ``split_features("train")``, C chosen under SELECTION.PROTOCOL (the few-shot
        val by default); saves nothing but ``c_search.json`` (the engine that calls it writes the checkpoint)."""
        node = self.cfg.TRAINER.LINEAR_PROBE
        grid = [float(c) for c in node.C_GRID]
        if not grid or any(not c > 0 for c in grid):
            raise ConfigError(f"TRAINER.LINEAR_PROBE.C_GRID must list positive C values, got {list(node.C_GRID)}")
        steps = int(node.SEARCH_STEPS)
        max_iter = int(node.MAX_ITER)
        t0 = time.time()
        xtr, ytr = self._numpy("train")
        fits: Dict[float, object] = {}

        def fitted(c: float):
            if c not in fits:
                fits[c] = fit_logreg(xtr, ytr, c, max_iter)
            return fits[c]

        def score(c: float, split: str) -> float:
            x, y = self._numpy(split)
            acc = 100.0 * float(np.mean(fitted(c).predict(x) == y))
            log.info("C search: C=%-10.4g %s accuracy %.2f%%", c, split, acc)
            return acc

        if len(grid) == 1 and steps == 0:
            c_best = grid[0]
            log.info("Linear probe: fixed C=%g (no search)", c_best)
        else:
            # CoOp's search: the best of the coarse grid (first on ties, as np.argmax), then log-space bisection
            c_best = self.select("C", grid, score, fix='fix it with TRAINER.LINEAR_PROBE.C_GRID "[<C>]" TRAINER.LINEAR_PROBE.SEARCH_STEPS 0 (no search under any SELECTION.PROTOCOL)',
                                 refine=log_bisection(steps) if steps > 0 else None)
            atomic_write_json(os.path.join(self.output_dir, SEARCH_FILE), self.searches[-1].record())
        self.c_best = c_best
        self.head.load_state_dict(as_linear(fitted(c_best), len(self.classnames), xtr.shape[1]).state_dict())
        self.head.to(self.device)
        self.train_time = time.time() - t0
        log.info("Linear probe fitted with C=%g on %d images in %.1fs (%d fits)", c_best, len(ytr), self.train_time, len(fits))

    def result_fields(self) -> dict:
        c = getattr(self, "c_best", None)
        return {"C": c} if c is not None else {}

    def _numpy(self, split: str) -> Tuple[np.ndarray, np.ndarray]:
        feats, labels = self.split_features(split)  # deterministic view, raw features
        return feats.numpy().astype(np.float64), labels.numpy()
