"""``train.py`` / ``clip-adapter train``: CoOp's flags turned into a run request for the one run
lifecycle (``clip_adapter.engine.run.execute``); ``main(argv)`` takes a list so tests run it in-process."""
from __future__ import annotations

import argparse
import logging
import sys
from typing import List, Optional

from clip_adapter.engine.own import OwnEngine
from clip_adapter.engine.run import RunRequest, execute
from clip_adapter.errors import UserError
from clip_adapter.plugins import load_all

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


def request_from_args(args) -> RunRequest:
    return RunRequest(
        config_file=args.config_file,
        dataset_config_file=args.dataset_config_file,
        flags=_cli_overrides(args),
        opts=list(args.opts or []),
        eval_only=bool(args.eval_only),
        model_dir=args.model_dir or "",
        load_epoch=args.load_epoch,
        no_train=bool(args.no_train),
    )


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


def engine_for(name: str):
    """The engine object; Dassl's is imported only when asked for (it is an optional plugin)."""
    if name == "dassl":
        from clip_adapter.dassl.run import DasslEngine

        return DasslEngine()
    return OwnEngine()


def run(args) -> int:
    load_all()
    return execute(request_from_args(args), engine_for(args.engine))


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
