"""Classification metrics with Dassl's printout (the ``* accuracy: X%`` lines CoOp's parser reads).

Metrics come from a confusion matrix updated chunk by chunk (``MetricStream``), so evaluating 50,000
images over 1,000 classes never holds the 50,000 x 1,000 logits, and every metric (accuracy,
macro-F1, per-class accuracy) is a vectorised read of one C x C table.
"""
from __future__ import annotations

import logging
from typing import Dict, Optional, Sequence

import numpy as np
import torch

log = logging.getLogger(__name__)


class MetricStream:
    """Accumulates (prediction, label) counts; ``update`` per chunk of logits, ``result`` at the end."""

    def __init__(self, num_classes: int = 0) -> None:
        self.confusion = np.zeros((num_classes, num_classes), dtype=np.int64)  # [label, prediction]

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Count one chunk; the argmax runs where the logits are (only predictions leave the device)."""
        if logits.shape[0] != labels.shape[0]:
            raise ValueError(f"{logits.shape[0]} rows of logits for {labels.shape[0]} labels")
        if not labels.shape[0]:
            return
        pred = logits.argmax(dim=1).cpu().numpy().astype(np.int64)
        gt = labels.cpu().numpy().astype(np.int64)
        n = max(self.confusion.shape[0], logits.shape[1], int(gt.max()) + 1)
        if n > self.confusion.shape[0]:
            grown = np.zeros((n, n), dtype=np.int64)
            grown[: self.confusion.shape[0], : self.confusion.shape[1]] = self.confusion
            self.confusion = grown
        self.confusion += np.bincount(gt * n + pred, minlength=n * n).reshape(n, n)

    def result(self, classnames: Optional[Sequence[str]] = None, per_class: bool = False) -> Dict:
        """Accuracy, error and macro-F1 in percent (and per-class accuracy when asked).

        Macro-F1 averages F1 = 2TP / (2TP + FP + FN) over the classes that occur among the labels.
        """
        cm = self.confusion
        tp = np.diag(cm)
        support = cm.sum(axis=1)
        total, correct = int(support.sum()), int(tp.sum())
        acc = 100.0 * correct / max(total, 1)
        present = np.flatnonzero(support)
        fp = cm.sum(axis=0) - tp
        f1 = 2.0 * tp[present] / (2 * tp[present] + fp[present] + (support - tp)[present])
        out = {
            "total": total,
            "correct": correct,
            "accuracy": acc,
            "error": 100.0 - acc,
            "macro_f1": 100.0 * float(np.mean(f1)) if len(present) else 0.0,
        }
        if per_class:
            rows = {}
            for c in present.tolist():
                name = classnames[c] if classnames is not None and c < len(classnames) else str(c)
                rows[name if name not in rows else f"{name}#{c}"] = 100.0 * float(tp[c] / support[c])
            out["per_class_accuracy"] = rows
        return out


def classification_metrics(
    logits: torch.Tensor, labels: torch.Tensor, classnames: Optional[Sequence[str]] = None, per_class: bool = False
) -> Dict:
    """The metrics of one whole logits matrix (a stream of one chunk)."""
    stream = MetricStream(int(logits.shape[1]) if logits.ndim == 2 else 0)
    stream.update(logits, labels)
    return stream.result(classnames, per_class)


def log_metrics(metrics: Dict, split: str = "test") -> None:
    log.info("=> result (%s)", split)
    log.info("* total: %s", f"{metrics['total']:,}")
    log.info("* correct: %s", f"{metrics['correct']:,}")
    log.info("* accuracy: %.2f%%", metrics["accuracy"])
    log.info("* error: %.2f%%", metrics["error"])
    log.info("* macro_f1: %.2f%%", metrics["macro_f1"])
    for name, acc in (metrics.get("per_class_accuracy") or {}).items():
        log.info("* class: %s\taccuracy: %.1f%%", name, acc)
