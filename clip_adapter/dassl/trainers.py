"""Project trainers as Dassl ``TrainerX`` classes: Dassl's loop around the project's own model parts.

Each registered Dassl trainer holds the project trainer of the same name (``self.core``), built
without the project's engine: the core loads CLIP, builds the text classifier (from the feature
cache's text store) and registers its head (adapter, prompt learner, linear probe) exactly as in the
own engine, and its ``logits``/``forward_backward``/``fit`` are the ones that run. What changes,
through the ``Hosted`` mix-in, is what Dassl supplies instead: the optimiser and LR scheduler
(``dassl.optim``; the scheduler is stepped once per epoch, as CoOp's trainers do), the images (Dassl's
data manager and transforms, encoded batch by batch; the own engine's image-feature cache does not
apply to them), checkpoints and the evaluator (Dassl's ``* accuracy:`` lines).

A trainer that fits in one step instead of epochs (the linear probe's ``fit()``) fits on features of
Dassl's loaders: the training images through Dassl's test transform, as CoOp's linear-probe protocol
uses them, with C chosen on Dassl's validation loader.
"""
from __future__ import annotations

import functools
import logging
import time
from typing import Dict, Optional, Tuple

import torch
from dassl.data.data_manager import build_data_loader
from dassl.data.transforms import build_transform as dassl_transform
from dassl.engine import TrainerX
from dassl.optim import build_lr_scheduler, build_optimizer

from clip_adapter.dassl.datasets import PLUGIN_MARK, project_view, to_dassl
from clip_adapter.engine.evaluator import classification_metrics
from clip_adapter.engine.logging_setup import setup_logging
from clip_adapter.engine.optim import lr_at_epoch
from clip_adapter.errors import ConfigError

log = logging.getLogger(__name__)


def ensure_logging(verbose: bool) -> None:
    """In a CoOp checkout nothing configures ``logging``: send the project's log lines to stdout,
    which Dassl's ``setup_logger`` copies into log.txt. A configured process is left alone, except
    that the ``logging.disable(WARNING)`` Dassl's import leaves behind (to quiet WILDS) is lifted, or
    the project's INFO lines (alpha, encoder passes, C search) would never be seen."""
    if logging.root.manager.disable == logging.WARNING:
        logging.disable(logging.NOTSET)
    if not logging.getLogger().handlers and not logging.getLogger("clip_adapter").handlers:
        setup_logging(None, verbose)


def build_scheduler(optimizer: torch.optim.Optimizer, optim_cfg):
    """Dassl's ``build_lr_scheduler``. Dassl 0.6.3's warm-up wrappers pass an argument that newer torch
    removed from ``LRScheduler`` (a TypeError); then the same per-epoch schedule comes from the project's
    ``lr_at_epoch`` (which follows Dassl's warm-up rules) as a ``LambdaLR``, stepped the same way."""
    try:
        return build_lr_scheduler(optimizer, optim_cfg)
    except TypeError as exc:
        if int(optim_cfg.WARMUP_EPOCH) <= 0:
            raise
        _warn_warmup_fallback(str(exc))
    for group in optimizer.param_groups:  # undo what the half-built Dassl scheduler set
        group["lr"] = group.get("initial_lr", group["lr"])
    base = float(optim_cfg.LR)
    if base <= 0:
        raise ConfigError(f"OPTIM.LR must be > 0 for a warm-up schedule, got {optim_cfg.LR}")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: lr_at_epoch(epoch, optim_cfg) / base)


@functools.lru_cache(maxsize=None)
def _warn_warmup_fallback(reason: str) -> None:
    log.info("Dassl's warm-up LR scheduler cannot be built with torch %s (%s); using the same schedule "
             "from clip_adapter.engine.optim.lr_at_epoch, stepped once per epoch", torch.__version__, reason)


def _describe(transform) -> str:
    """A one-line account of a Dassl transform (results.json's ``transform``)."""
    ops = getattr(transform, "transforms", [transform])
    return "dassl;" + ";".join(" ".join(repr(op).split()) for op in ops)


def refuse_own_engine_only(project_cls: type, cfg) -> None:
    """A setting only the own engine's loop implements (CLIP-Adapter's alpha search) is refused, never ignored."""
    blocker = getattr(project_cls, "needs_own_engine", lambda _cfg: None)(cfg)
    if blocker:
        raise ConfigError(f"{project_cls.__name__} with {blocker} runs only on this project's own engine (train.py without --engine dassl)")


class Hosted:
    """Mixed in before a project trainer class: that trainer as the model part of a Dassl trainer.

    Overrides only the seams where Dassl supplies the piece: optimisers/schedulers at
    ``register_model``, transforms, and the image features a one-step fit reads.
    """

    host: "DasslTrainer"

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self.schedulers: Dict[str, object] = {}
        self.dassl_features: Dict[str, Tuple[torch.Tensor, torch.Tensor]] = {}

    def make_optimizer(self, name: str, module: torch.nn.Module):
        optim = build_optimizer(module, self.cfg.OPTIM)
        self.schedulers[name] = build_scheduler(optim, self.cfg.OPTIM)
        return optim

    def build_transforms(self) -> None:
        self.tfm_train = self.tfm_test = None  # Dassl's data manager transforms the images
        self.spec_train = _describe(self.host.train_loader_x.dataset.transform)
        self.spec_test = _describe(self.host.test_loader.dataset.transform)

    def train_view_features(self) -> torch.Tensor:
        """[K, N, D] raw features of K augmented passes over the training images in order, through
        Dassl's training transform (Dassl has no view cache: K = FEATURES.TRAIN_VIEWS fresh passes)."""
        if self._train_views is None:
            k = self.num_train_views()
            passes = []
            for _ in range(k):
                feats = [self.encode_images(b["img"]).cpu().clone() for b in self.host.feature_loader("train_aug")]
                passes.append(torch.cat(feats))
            log.info("Dassl engine: %d augmented pass(es) of the training images through Dassl's transform (no view cache)", k)
            self._train_views = torch.stack(passes)
        return self._train_views

    def split_features(self, split: str) -> Tuple[torch.Tensor, torch.Tensor]:
        """Raw image features of a split from Dassl's loaders (deterministic test transform)."""
        if split not in self.dassl_features:
            feats, labels = [], []
            loader = self.host.feature_loader(split)
            for batch in loader or []:
                # clone() outside inference mode: a plain tensor that autograd and numpy may use
                feats.append(self.encode_images(batch["img"]).cpu().clone())
                labels.append(batch["label"].long())
            if not feats:
                self.dassl_features[split] = (torch.empty(0, self.clip_info.embed_dim), torch.empty(0, dtype=torch.long))
            else:
                self.dassl_features[split] = (torch.cat(feats), torch.cat(labels))
        return self.dassl_features[split]


@functools.lru_cache(maxsize=None)
def hosted_class(project_cls: type) -> type:
    return type(project_cls.__name__, (Hosted, project_cls), {"__module__": __name__})


class DasslTrainer(TrainerX):
    """Base of the registered trainers; ``project_cls`` is the project's trainer class."""

    project_cls: type = None  # set per registered subclass

    def __init__(self, cfg) -> None:
        ensure_logging(bool(cfg.VERBOSE))
        refuse_own_engine_only(self.project_cls, cfg)
        from clip_adapter.dassl.registration import log_summary

        log_summary()
        self.metrics: Dict[str, dict] = {}
        self._outputs: Optional[Tuple[list, list]] = None
        super().__init__(cfg)

    # ---------------------------------------------------------------- build
    def build_model(self) -> None:
        """The project trainer's own build (CLIP, text classifier, head), its modules registered with Dassl."""
        core = hosted_class(self.project_cls)(self.cfg)
        core.host = self
        core.dm = _DataView(project_view(self.dm.dataset, self.cfg.DATASET.NAME))
        self.core = core
        core.build_model()
        for name, module in core.models().items():
            self.register_model(name, module, core.optimizer(name), core.schedulers.get(name))
        log.info("Dassl trainer %s: %s", type(self).__name__,
                 ", ".join(f"{n} ({sum(p.numel() for p in m.parameters()):,} parameters)" for n, m in core.models().items()) or "nothing to train")

    def feature_loader(self, split: str):
        """Dassl loaders of the features a project trainer reads: train images through the test
        transform ("train") or the training transform ("train_aug", in order), val (the few-shot
        val), the whole val split ("val_full", selection protocol full_val), test."""
        if split in ("train", "train_aug", "val_full"):
            items = self.dm.dataset.train_x if split != "val_full" else to_dassl(self.core.dm.dataset.val_full)
            return build_data_loader(
                self.cfg,
                sampler_type="SequentialSampler",
                data_source=items,
                batch_size=self.cfg.DATALOADER.TEST.BATCH_SIZE,
                tfm=dassl_transform(self.cfg, is_train=split == "train_aug"),
                is_train=False,
            )
        if split not in ("val", "test"):
            raise ValueError(f"no Dassl loader for split {split!r}")
        return self.val_loader if split == "val" else self.test_loader

    # ---------------------------------------------------------------- train
    def train(self) -> None:
        core = self.core
        if not core.uses_training_data or not core.trainable_modules():
            log.info("%s has nothing to train: evaluating", type(self).__name__)
            self.time_start = time.time()
            self.after_train()
            return
        if not core.trains_in_epochs:
            self.before_train()  # Dassl's resume from OUTPUT_DIR/RESUME, tensorboard writer, timer
            if self.start_epoch >= 1:
                log.info("%s already fitted (resumed)", type(self).__name__)
            else:
                core.fit()
                self.save_model(0, self.output_dir)
            self.after_train()
            return
        super().train()

    def core_inputs(self, images: torch.Tensor) -> torch.Tensor:
        """What the project trainer's ``forward_backward``/``logits`` take: the frozen encoder's
        features, or the images themselves for a trainer whose gradient passes through the image
        tower (``input_kind = "images"``, e.g. MaPLe)."""
        if self.core.input_kind == "images":
            return images
        return self.core.encode_images(images).clone()  # clone(): out of inference mode, for autograd

    def forward_backward(self, batch) -> Dict[str, float]:
        images, labels, _ = self.parse_batch_train(batch)
        return self.core.forward_backward((self.core_inputs(images), labels))

    def after_epoch(self) -> None:
        self.update_lr()  # once per epoch, before Dassl saves, as CoOp's trainers do
        super().after_epoch()

    def after_train(self) -> None:
        """Before Dassl deploys and tests: the project trainer's work on the deployed weights after
        the last epoch (``after_training``, e.g. Tip-Adapter-F's alpha/beta search)."""
        core = self.core
        if core.uses_training_data and core.trains_in_epochs and core.trainable_modules():
            if self.cfg.TEST.FINAL_MODEL == "best_val" and not self.cfg.TEST.NO_TEST:
                self.load_model(self.output_dir)
            core.after_training()
        super().after_train()

    # ---------------------------------------------------------- checkpoints
    def load_model(self, directory: str, epoch: Optional[int] = None) -> None:
        """Through the project trainer: best, else newest epoch; checks the keys; CLIP-Adapter's alpha."""
        if not directory:
            log.info("load_model() skipped: no model folder given")
            return
        if self.core.trainable_modules():
            self.core.load_model(directory, epoch=epoch)

    # ------------------------------------------------------------- evaluate
    def model_inference(self, input: torch.Tensor) -> torch.Tensor:
        logits = self.core.logits(self.core_inputs(input)).float()
        if self._outputs is not None:
            self._outputs[0].append(logits.cpu())
        return logits

    def parse_batch_test(self, batch):
        input, label = super().parse_batch_test(batch)
        if self._outputs is not None:
            self._outputs[1].append(label.cpu())
        return input, label

    @torch.no_grad()
    def test(self, split: Optional[str] = None):
        """Dassl's test (its evaluator prints the ``* accuracy:`` lines); the same outputs also give
        the project's metrics for results.json (``self.metrics[split]``)."""
        self._outputs = ([], [])
        try:
            result = super().test(split)
        finally:
            outputs, self._outputs = self._outputs, None
        name = "val" if (split or self.cfg.TEST.SPLIT) == "val" and self.val_loader is not None else "test"
        self.metrics[name] = self._metrics(outputs, per_class=bool(self.cfg.TEST.PER_CLASS_RESULT))
        return result

    @torch.no_grad()
    def quiet_metrics(self, split: str) -> Optional[dict]:
        """The project's metrics of a split without printing (results.json's val accuracy)."""
        loader = self.val_loader if split == "val" else self.test_loader
        if loader is None:
            return None
        self.set_model_mode("eval")
        self._outputs = ([], [])
        try:
            for batch in loader:
                self.model_inference(self.parse_batch_test(batch)[0])
        finally:
            outputs, self._outputs = self._outputs, None
        return self._metrics(outputs, per_class=False)

    def _metrics(self, outputs: Tuple[list, list], per_class: bool) -> dict:
        logits, labels = outputs
        logits = torch.cat(logits) if logits else torch.empty(0, self.num_classes)
        labels = torch.cat(labels) if labels else torch.empty(0, dtype=torch.long)
        return classification_metrics(logits, labels, self.core.dm.dataset.classnames, per_class=per_class)


class _DataView:
    """What the project trainer reads of its data manager: the dataset."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset


def trainer_class(project_cls: type) -> type:
    """A Dassl trainer class named like ``project_cls`` (Dassl's registry keys on ``__name__``)."""
    return type(project_cls.__name__, (DasslTrainer,), {
        "project_cls": project_cls,
        PLUGIN_MARK: True,
        "__module__": __name__,
        "__doc__": f"clip_adapter's {project_cls.__name__} as a Dassl TrainerX (see clip_adapter.dassl).",
    })
