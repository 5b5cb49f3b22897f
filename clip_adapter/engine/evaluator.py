"""Classification metrics with Dassl's printout (the ``* accuracy: X%`` lines CoOp's parser reads)."""
from __future__ import annotations

import logging
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

log = logging.getLogger(__name__)


def classification_metrics(
    logits: torch.Tensor, labels: torch.Tensor, classnames: Optional[Sequence[str]] = None, per_class: bool = False
) -> Dict:
    """Accuracy, error and macro-F1 in percent (and per-class accuracy when asked)."""
    pred = logits.argmax(dim=1).cpu().numpy()
    gt = labels.cpu().numpy()
    total = int(gt.shape[0])
    correct = int((pred == gt).sum())
    acc = 100.0 * correct / max(total, 1)
    classes = np.unique(np.concatenate([gt, pred])) if total else np.array([], dtype=int)
    f1s: List[float] = []
    for c in np.unique(gt):
        tp = np.sum((pred == c) & (gt == c))
        fp = np.sum((pred == c) & (gt != c))
        fn = np.sum((pred != c) & (gt == c))
        denom = 2 * tp + fp + fn
        f1s.append(0.0 if denom == 0 else 2.0 * tp / denom)
    out = {
        "total": total,
        "correct": correct,
        "accuracy": acc,
        "error": 100.0 - acc,
        "macro_f1": 100.0 * float(np.mean(f1s)) if f1s else 0.0,
    }
    if per_class:
        rows = {}
        for c in np.unique(gt):
            mask = gt == c
            name = classnames[c] if classnames is not None and c < len(classnames) else str(int(c))
            rows[name if name not in rows else f"{name}#{int(c)}"] = 100.0 * float((pred[mask] == c).mean())
        out["per_class_accuracy"] = rows
    del classes
    return out


def log_metrics(metrics: Dict, split: str = "test") -> None:
    log.info("=> result (%s)", split)
    log.info("* total: %s", f"{metrics['total']:,}")
    log.info("* correct: %s", f"{metrics['correct']:,}")
    log.info("* accuracy: %.2f%%", metrics["accuracy"])
    log.info("* error: %.2f%%", metrics["error"])
    log.info("* macro_f1: %.2f%%", metrics["macro_f1"])
    for name, acc in (metrics.get("per_class_accuracy") or {}).items():
        log.info("* class: %s\taccuracy: %.1f%%", name, acc)
