"""``train.py --engine dassl``: a project trainer run through Dassl's ``build_trainer``.

The same flags, config files and run-folder rules as the own engine (a folder with results.json is
finished and skipped; an unfinished one resumes, here from Dassl's newest checkpoint), on a Dassl
config: Dassl's defaults + ``extend_cfg`` <- dataset YAML <- trainer YAML <- flags <- opts. The flow
after that is CoOp's ``train.py``: seed, ``build_trainer``, then ``load_model`` + ``test`` for
``--eval-only`` or ``train`` (which tests at the end). Dassl prints; its lines are sent to the
project's log, so log.txt holds Dassl's ``* accuracy:`` lines next to the project's, and the run ends
with the project's results.json (``"engine": "dassl"``).
"""
from __future__ import annotations

import contextlib
import io
import logging
from typing import Optional

from clip_adapter.dassl.config import dassl_cfg, dassl_defaults_in_effect
from clip_adapter.dassl.trainers import refuse_own_engine_only
from clip_adapter.engine.run import RunOutcome, RunRequest
from clip_adapter.errors import UserError
from clip_adapter.registry import DATASETS, TRAINERS

log = logging.getLogger("clip_adapter")
dassl_log = logging.getLogger("clip_adapter.dassl.stdout")


class PrintsToLog(io.TextIOBase):
    """A stdout stand-in that turns each printed line (Dassl reports with print) into a log line."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self.pending = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        lines = (self.pending + text).split("\n")
        self.pending = lines.pop()
        for line in lines:
            self.logger.info(line)
        return len(text)

    def flush(self) -> None:
        if self.pending:
            self.logger.info(self.pending)
            self.pending = ""


def _check_registered(kind: str, name: str, registry, ours) -> None:
    """A name Dassl does not know gets the project registry's error (known names, nearest match)."""
    if name not in registry.registered_names():
        ours.get(name)
        raise UserError(f"{kind} {name!r} is not registered in Dassl; known there: {', '.join(sorted(registry.registered_names()))}")


class DasslEngine:
    """``train.py --engine dassl``: Dassl's ``build_trainer`` and loop inside the one run lifecycle."""

    name = "dassl"

    def __init__(self) -> None:
        import clip_adapter.dassl  # noqa: F401  (registers; one-line DasslMissingError without Dassl)

    def base_config(self):
        return dassl_cfg()

    def check(self, cfg) -> None:
        from dassl.data.datasets import DATASET_REGISTRY
        from dassl.engine import TRAINER_REGISTRY

        _check_registered("trainer", cfg.TRAINER.NAME, TRAINER_REGISTRY, TRAINERS)
        _check_registered("dataset", cfg.DATASET.NAME, DATASET_REGISTRY, DATASETS)
        host_cls = TRAINER_REGISTRY.get(cfg.TRAINER.NAME)
        if getattr(host_cls, "project_cls", None) is None:
            raise UserError(f"trainer {cfg.TRAINER.NAME!r} in Dassl's registry is not this project's ({host_cls.__module__}); "
                            "--engine dassl runs this project's trainers: run that one with its own train.py")
        refuse_own_engine_only(host_cls.project_cls, cfg)

    def run(self, cfg, request: RunRequest, trainer_cls, resume_dir: str) -> Optional[RunOutcome]:
        import dassl
        from dassl.engine import TRAINER_REGISTRY, build_trainer

        host_cls = TRAINER_REGISTRY.get(cfg.TRAINER.NAME)
        log.info("Engine: Dassl %s (build_trainer -> %s.%s); Dassl resumes from the folder's newest checkpoint when there is one",
                 dassl.__version__, host_cls.__module__, host_cls.__name__)
        in_effect = dassl_defaults_in_effect(cfg)
        if in_effect:
            log.info("Dassl's defaults apply where no config file set these keys (this project's own defaults differ): %s",
                     "; ".join(f"{k}={theirs!r} (own engine: {ours!r})" for k, theirs, ours in in_effect))
        stdout = PrintsToLog(dassl_log)
        with contextlib.redirect_stdout(stdout):
            try:
                trainer = build_trainer(cfg)
                if request.eval_only:
                    trainer.load_model(request.model_dir, epoch=request.load_epoch)
                    trainer.test()
                elif request.no_train:
                    log.info("--no-train: built the trainer, not training or testing")
                    return None
                else:
                    trainer.train()  # Dassl tests at the end (after_train)
                if "test" not in trainer.metrics:  # TEST.NO_TEST or TEST.SPLIT val: results.json reports test
                    trainer.test("test")
                val_metrics = None
                if not request.eval_only and trainer_cls.uses_training_data:
                    val_metrics = trainer.quiet_metrics("val")
            finally:
                stdout.flush()
        if val_metrics is not None:
            log.info("val accuracy: %.2f%%", val_metrics["accuracy"])
        # images encoded batch by batch from Dassl's loaders: no image-feature cache
        return RunOutcome(trainer.core, trainer.metrics["test"], val_metrics, features_mode="dassl")
