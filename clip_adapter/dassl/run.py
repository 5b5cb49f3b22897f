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
import os
import time

from clip_adapter.cli import RESULTS_FILE, _cli_overrides, _has_checkpoint, results_payload, run_state
from clip_adapter.config import save_cfg, setup_cfg
from clip_adapter.dassl.config import dassl_cfg, dassl_defaults_in_effect
from clip_adapter.dassl.trainers import refuse_own_engine_only
from clip_adapter.engine.logging_setup import setup_logging
from clip_adapter.errors import CheckpointError, UserError
from clip_adapter.registry import DATASETS, TRAINERS
from clip_adapter.utils import atomic_write_json, set_random_seed

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


def run_dassl(args) -> int:
    t0 = time.time()
    import clip_adapter.dassl  # noqa: F401  (registers; one-line DasslMissingError without Dassl)
    from dassl.data.datasets import DATASET_REGISTRY
    from dassl.engine import TRAINER_REGISTRY, build_trainer

    cfg = setup_cfg(args.dataset_config_file, args.config_file, _cli_overrides(args), args.opts or [], base=dassl_cfg())
    _check_registered("trainer", cfg.TRAINER.NAME, TRAINER_REGISTRY, TRAINERS)
    _check_registered("dataset", cfg.DATASET.NAME, DATASET_REGISTRY, DATASETS)
    host_cls = TRAINER_REGISTRY.get(cfg.TRAINER.NAME)
    project_cls = getattr(host_cls, "project_cls", None)
    if project_cls is None:
        raise UserError(f"trainer {cfg.TRAINER.NAME!r} in Dassl's registry is not this project's ({host_cls.__module__}); "
                        "--engine dassl runs this project's trainers: run that one with its own train.py")
    refuse_own_engine_only(project_cls, cfg)  # before anything is written
    out = cfg.OUTPUT_DIR
    state = run_state(out)
    if state == "finished":
        print(f"Finished run found in {out} ({RESULTS_FILE} exists): skipping. Delete the folder to run it again.")
        return 0
    if args.eval_only and project_cls.needs_training and not _has_checkpoint(args.model_dir):
        raise CheckpointError(
            f"--eval-only needs a trained model, but --model-dir {args.model_dir or '(not given)'!r} has no checkpoint; "
            "train first or pass the run folder that holds <module>/model*.pth.tar*"
        )

    setup_logging(out, cfg.VERBOSE)
    import dassl

    log.info("Engine: Dassl %s (build_trainer -> %s.%s)", dassl.__version__, host_cls.__module__, host_cls.__name__)
    if state == "unfinished":
        log.info("Unfinished run in %s: Dassl resumes from its newest checkpoint when there is one", out)
    save_cfg(cfg, out)
    in_effect = dassl_defaults_in_effect(cfg)
    if in_effect:
        log.info("Dassl's defaults apply where no config file set these keys (this project's own defaults differ): %s",
                 "; ".join(f"{k}={theirs!r} (own engine: {ours!r})" for k, theirs, ours in in_effect))
    log.info("Trainer %s | dataset %s | backbone %s | shots %s | seed %s", cfg.TRAINER.NAME, cfg.DATASET.NAME, cfg.MODEL.BACKBONE.NAME, cfg.DATASET.NUM_SHOTS, cfg.SEED)

    set_random_seed(int(cfg.SEED))  # as CoOp's train.py: once, before build_trainer
    stdout = PrintsToLog(dassl_log)
    with contextlib.redirect_stdout(stdout):
        try:
            trainer = build_trainer(cfg)
            if args.eval_only:
                trainer.load_model(args.model_dir, epoch=args.load_epoch)
                trainer.test()
            elif args.no_train:
                log.info("--no-train: built the trainer, not training or testing")
                return 0
            else:
                trainer.train()  # Dassl tests at the end (after_train)
            if "test" not in trainer.metrics:  # TEST.NO_TEST or TEST.SPLIT val: results.json reports test
                trainer.test("test")
            val_metrics = None
            if not args.eval_only and project_cls.needs_training:
                val_metrics = trainer.quiet_metrics("val")
        finally:
            stdout.flush()
    if val_metrics is not None:
        log.info("val accuracy: %.2f%%", val_metrics["accuracy"])
    payload = results_payload(cfg, args, trainer.core, trainer.metrics["test"], val_metrics, time.time() - t0, engine="dassl")
    payload["features_mode"] = "dassl"  # images encoded batch by batch from Dassl's loaders, no image-feature cache
    atomic_write_json(os.path.join(out, RESULTS_FILE), payload)
    log.info("Wrote %s", os.path.join(out, RESULTS_FILE))
    return 0
