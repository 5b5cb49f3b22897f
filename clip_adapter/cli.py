"""The training CLI with CoOp's flags; ``main(argv)`` takes a list so tests run it in-process.

One run = one output folder. ``results.json`` in it means "finished": such a folder is skipped;
a folder without it is an unfinished run, resumed from its newest checkpoint or restarted.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import glob
import logging
import os
import sys
import time
from typing import List, Optional

from clip_adapter.config import save_cfg, setup_cfg
from clip_adapter.engine.logging_setup import setup_logging
from clip_adapter.engine.transfer import Transfer, plan_transfer
from clip_adapter.errors import CheckpointError, ConfigError, UserError
from clip_adapter.registry import DATASETS, TRAINERS
from clip_adapter.utils import atomic_write_json, set_random_seed

log = logging.getLogger("clip_adapter")

RESULTS_FILE = "results.json"
RESULTS_FORMAT = 1
ENGINES = ("own", "dassl")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="clip-adapter-train",
        description="Train/evaluate a CLIP few-shot method (CoOp-compatible flags; trailing KEY VALUE pairs override the config).",
    )
    p.add_argument("--root", default=None, help="folder holding the datasets (DATASET.ROOT)")
    p.add_argument("--output-dir", default=None, help="run folder (OUTPUT_DIR)")
    p.add_argument("--resume", default=None, help="run folder to resume from (RESUME)")
    p.add_argument("--seed", type=int, default=None, help="random seed; 0 is a valid seed (SEED)")
    p.add_argument("--source-domains", nargs="+", default=None, help="DATASET.SOURCE_DOMAINS")
    p.add_argument("--target-domains", nargs="+", default=None, help="DATASET.TARGET_DOMAINS")
    p.add_argument("--transforms", nargs="+", default=None, help="INPUT.TRANSFORMS")
    p.add_argument("--config-file", default="", help="trainer config YAML")
    p.add_argument("--dataset-config-file", default="", help="dataset config YAML")
    p.add_argument("--trainer", default=None, help="registered trainer name (TRAINER.NAME)")
    p.add_argument("--backbone", default=None, help="CLIP backbone name or weights path (MODEL.BACKBONE.NAME)")
    p.add_argument("--head", default=None, help="MODEL.HEAD.NAME (accepted for CoOp compatibility)")
    p.add_argument("--eval-only", action="store_true", help="evaluate only (load --model-dir first)")
    p.add_argument("--model-dir", default="", help="run folder whose checkpoint --eval-only loads")
    p.add_argument("--load-epoch", type=int, default=None, help="which epoch checkpoint to load (default: best, else last)")
    p.add_argument("--no-train", action="store_true", help="build everything but do not train")
    p.add_argument("--engine", choices=ENGINES, default="own",
                   help="own: this project's engine (cached features, fast; the default); dassl: Dassl's trainer loop, "
                        "data manager and evaluator around the same trainers (needs Dassl, see clip_adapter.dassl)")
    p.add_argument("opts", default=None, nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return p


def register_all() -> None:
    """Import the trainer and dataset packages so their classes register (as CoOp's train.py does)."""
    import clip_adapter.datasets  # noqa: F401
    import clip_adapter.trainers  # noqa: F401


def _cli_overrides(args) -> dict:
    return {
        "DATASET.ROOT": args.root,
        "OUTPUT_DIR": args.output_dir,
        "RESUME": args.resume,
        "SEED": args.seed,
        "DATASET.SOURCE_DOMAINS": args.source_domains,
        "DATASET.TARGET_DOMAINS": args.target_domains,
        "INPUT.TRANSFORMS": args.transforms,
        "TRAINER.NAME": args.trainer,
        "MODEL.BACKBONE.NAME": args.backbone,
        "MODEL.HEAD.NAME": args.head,
    }


def _has_checkpoint(folder: str) -> bool:
    return bool(folder) and bool(glob.glob(os.path.join(folder, "*", "model*.pth.tar*")))


def run_state(output_dir: str) -> str:
    """``finished`` (results.json), ``unfinished`` (a folder without it) or ``new``."""
    if os.path.isfile(os.path.join(output_dir, RESULTS_FILE)):
        return "finished"
    # (the sweep's own records, sweep.log, .sweep.lock, sweep_*.json, do not make a run unfinished)
    if os.path.isdir(output_dir) and any(not n.startswith(("sweep", ".sweep")) for n in os.listdir(output_dir)):
        return "unfinished"
    return "new"


def _config_name(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0] if path else ""


def source_record(cfg, transfer: Optional[Transfer], num_classes: int) -> Optional[dict]:
    """Where the evaluated model came from (transfer evaluations only; see engine/transfer.py)."""
    if transfer is not None:
        return transfer.record(num_classes)
    if cfg.EXPERIMENT.SOURCE:  # a training-free trainer evaluated as part of a transfer experiment
        return {"dataset": cfg.EXPERIMENT.SOURCE, "relation": "", "training_free": True, "target_classes": num_classes}
    return None


def results_payload(cfg, args, trainer, metrics: dict, val_metrics: Optional[dict], wall: float,
                    transfer: Optional[Transfer] = None, engine: str = "own") -> dict:
    info = getattr(trainer, "clip_info", None)
    return {
        "format": RESULTS_FORMAT,
        "engine": engine,
        "trainer": cfg.TRAINER.NAME,
        "dataset": cfg.DATASET.NAME,
        "config": _config_name(args.config_file),
        "dataset_config": _config_name(args.dataset_config_file),
        "backbone": cfg.MODEL.BACKBONE.NAME,
        "encoder": info.encoder_id if info else "",
        "shots": int(cfg.DATASET.NUM_SHOTS),
        "seed": int(cfg.SEED),
        "subsample": cfg.DATASET.SUBSAMPLE_CLASSES,
        "split": "test",
        "accuracy": metrics["accuracy"],
        "error": metrics["error"],
        "macro_f1": metrics["macro_f1"],
        "total": metrics["total"],
        "correct": metrics["correct"],
        "per_class_accuracy": metrics.get("per_class_accuracy"),
        "val_accuracy": val_metrics["accuracy"] if val_metrics else None,
        "num_classes": len(trainer.dm.dataset.classnames),
        "epochs": int(cfg.OPTIM.MAX_EPOCH) if trainer.needs_training else 0,
        "eval_only": bool(args.eval_only),
        "model_dir": args.model_dir or "",
        "features_mode": cfg.FEATURES.MODE,
        "preset": cfg.INPUT.PRESET,
        "transform": getattr(trainer, "spec_test", ""),
        "offline_check": cfg.DATASET.NAME.startswith("Smoke") or cfg.MODEL.BACKBONE.NAME == "tiny",
        "opts": list(args.opts or []),
        "test_only": bool(getattr(trainer.dm.dataset, "test_only", False)),
        "source": source_record(cfg, transfer, len(trainer.dm.dataset.classnames)),
        "sweep_key": cfg.EXPERIMENT.SWEEP_KEY,
        "encoder_images": getattr(trainer, "encoder_stats", {}).get("images"),
        "hyperparameters": getattr(trainer, "result_fields", dict)(),
        "wall_time_s": round(wall, 3),
        "finished_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def run(args) -> int:
    if args.engine == "dassl":  # the optional plugin, imported only when asked for
        from clip_adapter.dassl.run import run_dassl

        return run_dassl(args)
    t0 = time.time()
    register_all()
    cfg = setup_cfg(args.dataset_config_file, args.config_file, _cli_overrides(args), args.opts or [])
    trainer_cls = TRAINERS.get(cfg.TRAINER.NAME)
    DATASETS.get(cfg.DATASET.NAME)
    out = cfg.OUTPUT_DIR
    state = run_state(out)
    if state == "finished":
        print(f"Finished run found in {out} ({RESULTS_FILE} exists): skipping. Delete the folder to run it again.")
        return 0
    if args.eval_only and trainer_cls.needs_training and not _has_checkpoint(args.model_dir):
        raise CheckpointError(
            f"--eval-only needs a trained model, but --model-dir {args.model_dir or '(not given)'!r} has no checkpoint; "
            "train first or pass the run folder that holds <module>/model*.pth.tar*"
        )

    setup_logging(out, cfg.VERBOSE)
    resume_dir = cfg.RESUME or (out if state == "unfinished" and _has_checkpoint(out) else "")
    if state == "unfinished":
        log.info("Unfinished run in %s: %s", out, "resuming from its newest checkpoint" if resume_dir else "no checkpoint, restarting")
    save_cfg(cfg, out)
    log.info("Trainer %s | dataset %s | backbone %s | shots %s | seed %s", cfg.TRAINER.NAME, cfg.DATASET.NAME, cfg.MODEL.BACKBONE.NAME, cfg.DATASET.NUM_SHOTS, cfg.SEED)

    # The only seeding of the run, before anything random (few-shot sampling included) happens.
    set_random_seed(int(cfg.SEED))
    trainer = trainer_cls(cfg)
    trainer.build_data()
    transfer = None
    if args.eval_only and trainer.needs_training:
        # Before the model is built: a class-bound model on a mapped class subset is built over its
        # training classes; one that cannot classify these classes is refused here (TransferError).
        transfer = plan_transfer(trainer_cls, cfg, trainer.dm.dataset, args.model_dir, args.load_epoch)
        if cfg.EXPERIMENT.SOURCE and transfer.origin and cfg.EXPERIMENT.SOURCE != transfer.origin.dataset:
            raise ConfigError(
                f"EXPERIMENT.SOURCE is {cfg.EXPERIMENT.SOURCE!r} but the model in {args.model_dir} was trained on "
                f"{transfer.origin.dataset!r}; leave EXPERIMENT.SOURCE empty for trained models (it is read from the checkpoint)"
            )
        trainer.class_space = transfer.class_space
    trainer.build_model()
    log.info("Device %s", trainer.device)

    if args.eval_only:
        if trainer.needs_training:
            trainer.load_model(args.model_dir, epoch=args.load_epoch)
    elif args.no_train:
        log.info("--no-train: built the trainer, not training or testing")
        return 0
    else:
        if resume_dir and not trainer.resume_if_possible(resume_dir):
            log.info("Nothing to resume in %s: starting from scratch", resume_dir)
        trainer.train()

    with_val = not args.eval_only and len(trainer.dm.dataset.val) > 0 and trainer.needs_training
    metrics, val_metrics = trainer.final_metrics(with_val)
    payload = results_payload(cfg, args, trainer, metrics, val_metrics, time.time() - t0, transfer)
    atomic_write_json(os.path.join(out, RESULTS_FILE), payload)
    log.info("Wrote %s", os.path.join(out, RESULTS_FILE))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        logging.getLogger("clip_adapter").debug("user error", exc_info=True)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the run folder has no results.json and will be resumed next time", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
