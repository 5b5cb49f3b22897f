"""This project's own engine: the trainer's loop over cached features (``train.py``'s default)."""
from __future__ import annotations

import logging
from typing import Optional

from clip_adapter.engine.run import RunOutcome, RunRequest
from clip_adapter.engine.transfer import plan_transfer
from clip_adapter.errors import ConfigError

log = logging.getLogger("clip_adapter")


class OwnEngine:
    """Build the trainer, train or load it, evaluate val (when trained) and test."""

    name = "own"

    def base_config(self):
        return None

    def check(self, cfg) -> None:
        return None

    def run(self, cfg, request: RunRequest, trainer_cls, resume_dir: str) -> Optional[RunOutcome]:
        trainer = trainer_cls(cfg)
        trainer.build_data()
        transfer = None
        learned = trainer_cls.uses_training_data
        if request.eval_only and learned:
            # Before the model is built: a class-bound model on a mapped class subset is built over its
            # training classes; one that cannot classify these classes is refused here (TransferError).
            transfer = plan_transfer(trainer_cls, cfg, trainer.dm.dataset, request.model_dir, request.load_epoch)
            if cfg.EXPERIMENT.SOURCE and transfer.origin and cfg.EXPERIMENT.SOURCE != transfer.origin.dataset:
                raise ConfigError(
                    f"EXPERIMENT.SOURCE is {cfg.EXPERIMENT.SOURCE!r} but the model in {request.model_dir} was trained on "
                    f"{transfer.origin.dataset!r}; leave EXPERIMENT.SOURCE empty for trained models (it is read from the checkpoint)"
                )
            trainer.class_space = transfer.class_space
        trainer.build_model()
        log.info("Device %s", trainer.device)

        if request.eval_only:
            if learned:
                trainer.load_model(request.model_dir, epoch=request.load_epoch)
        elif request.no_train:
            log.info("--no-train: built the trainer, not training or testing")
            return None
        else:
            if resume_dir and not trainer.resume_if_possible(resume_dir):
                log.info("Nothing to resume in %s: starting from scratch", resume_dir)
            trainer.train()

        with_val = not request.eval_only and len(trainer.dm.dataset.val) > 0 and learned
        metrics, val_metrics = trainer.final_metrics(with_val)  # val that is the test split: scored once
        # a trainer that takes images never reads the feature cache, whatever FEATURES.MODE says
        mode = "images" if trainer_cls.input_kind == "images" else ""
        return RunOutcome(trainer, metrics, val_metrics, transfer, features_mode=mode)
