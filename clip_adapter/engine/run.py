"""The one run lifecycle: from a run request to ``results.json``, for every engine.

One run = one output folder. ``results.json`` in it means "finished": such a folder is skipped. A
folder without it is an unfinished run, resumed from its newest checkpoint or restarted. Whatever
engine trains (this project's own loop, or Dassl's through ``clip_adapter.dassl``), the steps
around it are these, in this order, and written only here:

1. build the config (defaults <- dataset YAML <- trainer YAML <- flags <- opts) on the engine's
   defaults, resolve the feature-cache folder into it, and check the trainer and dataset names;
2. refuse what cannot work before anything is written (a finished folder is skipped, ``--eval-only``
   without a checkpoint, a setting the engine does not implement);
3. open the log, record the session, save ``config.yaml``, seed everything once;
4. the engine builds and trains the trainer and evaluates it (``Engine.run``);
5. write ``results.json`` atomically, with the total wall time over every session of the folder.

Bad input (a ``UserError``: a broken image, bad weights, a missing file) on a folder this run
created removes the folder again, so nothing half-written is left behind; an unfinished folder
that was being resumed keeps its checkpoints.
"""
from __future__ import annotations

import datetime as _dt
import glob
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Protocol

from clip_adapter.config import get_cfg_default, ineffective_settings, save_cfg, setup_cfg
from clip_adapter.engine.logging_setup import close_logging, setup_logging
from clip_adapter.engine.transfer import Transfer
from clip_adapter.errors import CheckpointError, UserError
from clip_adapter.registry import DATASETS, TRAINERS
from clip_adapter.utils import atomic_write_json, set_random_seed

log = logging.getLogger("clip_adapter")

RESULTS_FILE = "results.json"
RESULTS_FORMAT = 2
SESSIONS_FILE = ".sessions.json"
# OUTPUT_DIR's default: a run given no --output-dir gets a folder of its own below it (see run_folder).
DEFAULT_OUTPUT_ROOT = get_cfg_default().OUTPUT_DIR


@dataclass
class RunRequest:
    """What the caller (train.py's flags, a test, a sweep worker) asks for."""

    config_file: str = ""
    dataset_config_file: str = ""
    #: config keys that command-line flags set ({"DATASET.ROOT": ..., "SEED": ...}); None = not given
    flags: Dict[str, Any] = field(default_factory=dict)
    opts: List[str] = field(default_factory=list)
    eval_only: bool = False
    model_dir: str = ""
    load_epoch: Optional[int] = None
    no_train: bool = False


@dataclass
class RunOutcome:
    """What an engine hands back: the project trainer it ran and its numbers."""

    trainer: Any
    test: Dict
    val: Optional[Dict] = None
    transfer: Optional[Transfer] = None
    features_mode: str = ""


class Engine(Protocol):
    """An engine trains and evaluates; everything around it is ``execute``'s."""

    name: str

    def base_config(self):
        """The defaults the config files are merged into (None: this project's)."""

    def check(self, cfg) -> None:
        """Refuse (UserError) what this engine cannot do (an unknown name, a setting it does not
        implement), before anything is written."""

    def run(self, cfg, request: RunRequest, trainer_cls, resume_dir: str) -> Optional[RunOutcome]:
        """Build, train (or load for --eval-only) and evaluate; None for --no-train."""


# ------------------------------------------------------------------ folder states
def has_checkpoint(folder: str) -> bool:
    return bool(folder) and bool(glob.glob(os.path.join(folder, "*", "model*.pth.tar*")))


def run_state(output_dir: str) -> str:
    """``finished`` (results.json), ``unfinished`` (a folder without it) or ``new``."""
    if os.path.isfile(os.path.join(output_dir, RESULTS_FILE)):
        return "finished"
    # (the sweep's own records, sweep.log, .sweep.lock, sweep_*.json, do not make a run unfinished)
    if os.path.isdir(output_dir) and any(not n.startswith(("sweep", ".sweep")) for n in os.listdir(output_dir)):
        return "unfinished"
    return "new"


def run_folder(cfg, request: RunRequest) -> str:
    """The run's folder. Without --output-dir (OUTPUT_DIR left at its default) a run gets a folder of
    its own, ``<OUTPUT_DIR>/runs/<dataset>_<trainer>_<config>_<shots>shots_seed<S>_<time>``, so it can
    never be mistaken for (and skipped as) an earlier run or the scripts' output root."""
    if _given("OUTPUT_DIR", request) or os.path.normpath(cfg.OUTPUT_DIR) != os.path.normpath(DEFAULT_OUTPUT_ROOT):
        return cfg.OUTPUT_DIR
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    name = f"{cfg.DATASET.NAME}_{cfg.TRAINER.NAME}_{_config_name(request.config_file) or 'default'}_{cfg.DATASET.NUM_SHOTS}shots_seed{cfg.SEED}_{stamp}"
    return os.path.join(cfg.OUTPUT_DIR, "runs", name)


def _given(key: str, request: RunRequest) -> bool:
    return request.flags.get(key) is not None or key in request.opts[0::2]


def _config_name(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0] if path else ""


# ---------------------------------------------------------------- sessions
def start_session(output_dir: str) -> List[Dict]:
    """Record that a session starts working on the folder; an earlier session that ended without
    ``results.json`` (a crash, Ctrl-C, a cluster pre-emption) is closed at its log's last write."""
    path = os.path.join(output_dir, SESSIONS_FILE)
    sessions: List[Dict] = []
    if os.path.isfile(path):
        try:
            with open(path, encoding="utf-8") as f:
                sessions = list(json.load(f))
        except (OSError, ValueError):
            sessions = []
    log_file = os.path.join(output_dir, "log.txt")
    for s in sessions:
        if s.get("seconds") is None:
            end = os.path.getmtime(log_file) if os.path.isfile(log_file) else s["start"]
            s["seconds"] = round(max(0.0, end - s["start"]), 3)
    sessions.append({"start": time.time(), "seconds": None})
    atomic_write_json(path, sessions)
    return sessions


def close_sessions(sessions: List[Dict], now: float) -> List[Dict]:
    sessions[-1]["seconds"] = round(now - sessions[-1]["start"], 3)
    return sessions


# -------------------------------------------------------------------- results
def source_record(cfg, transfer: Optional[Transfer], num_classes: int) -> Optional[dict]:
    """Where the evaluated model came from (transfer evaluations only; see engine/transfer.py)."""
    if transfer is not None:
        return transfer.record(num_classes)
    if cfg.EXPERIMENT.SOURCE:  # a training-free trainer evaluated as part of a transfer experiment
        return {"dataset": cfg.EXPERIMENT.SOURCE, "relation": "", "training_free": True, "target_classes": num_classes}
    return None


def results_payload(cfg, request: RunRequest, outcome: RunOutcome, engine: str, sessions: List[Dict]) -> dict:
    trainer, metrics, val_metrics = outcome.trainer, outcome.test, outcome.val
    info = getattr(trainer, "clip_info", None)
    backbone = getattr(trainer, "backbone", None)
    # backbone (short unique name), backbone_label (readable), backbone_family/_arch/_weights/_sha256
    identity = backbone.identity.record() if backbone is not None else {"backbone": cfg.MODEL.BACKBONE.NAME}
    dataset = trainer.dm.dataset
    num_classes = len(dataset.classnames)
    cls = type(trainer)
    return {
        "format": RESULTS_FORMAT,
        "engine": engine,
        "trainer": cfg.TRAINER.NAME,
        "dataset": cfg.DATASET.NAME,
        "config": _config_name(request.config_file),
        "dataset_config": _config_name(request.dataset_config_file),
        **identity,
        "encoder": info.encoder_id if info else "",
        "shots": int(cfg.DATASET.NUM_SHOTS),
        "seed": int(cfg.SEED),
        "subsample": cfg.DATASET.SUBSAMPLE_CLASSES,
        "split_file": getattr(dataset, "split_provenance", None),
        "split": "test",
        "accuracy": metrics["accuracy"],
        "error": metrics["error"],
        "macro_f1": metrics["macro_f1"],
        "total": metrics["total"],
        "correct": metrics["correct"],
        "per_class_accuracy": metrics.get("per_class_accuracy"),
        "val_accuracy": val_metrics["accuracy"] if val_metrics else None,
        "num_classes": num_classes,
        "uses_training_data": bool(cls.uses_training_data),
        "epochs": int(cfg.OPTIM.MAX_EPOCH) if cls.uses_training_data and cls.trains_in_epochs else 0,
        "eval_only": bool(request.eval_only),
        "model_dir": request.model_dir or "",
        "features_mode": outcome.features_mode or cfg.FEATURES.MODE,
        "preset": cfg.INPUT.PRESET,
        "transform": getattr(trainer, "spec_test", ""),
        "offline_check": cfg.DATASET.NAME.startswith("Smoke") or bool(backbone is not None and backbone.identity.offline),
        "opts": list(request.opts or []),
        "test_only": bool(getattr(dataset, "test_only", False)),
        "source": source_record(cfg, outcome.transfer, num_classes),
        "sweep_key": cfg.EXPERIMENT.SWEEP_KEY,
        "encoder_images": getattr(trainer, "encoder_stats", {}).get("images"),
        "hyperparameters": trainer.result_fields(),
        "selection": trainer.selection_record(),
        "wall_time_s": round(sum(s["seconds"] for s in sessions), 3),
        "sessions": [{"started_at": _iso(s["start"]), "seconds": s["seconds"]} for s in sessions],
        "finished_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _iso(t: float) -> str:
    return _dt.datetime.fromtimestamp(t, _dt.timezone.utc).isoformat(timespec="seconds")


# ------------------------------------------------------------------ execute
def build_config(request: RunRequest, engine: Engine):
    """The frozen run config, with the run folder and the feature-cache folder resolved into it."""
    from clip_adapter.features import default_cache_dir

    from clip_adapter.backbones.preprocess import preflight_input

    cfg = setup_cfg(request.dataset_config_file, request.config_file, request.flags, request.opts, base=engine.base_config())
    cfg.defrost()
    cfg.OUTPUT_DIR = run_folder(cfg, request)
    cfg.FEATURES.CACHE_DIR = default_cache_dir(cfg)
    # INPUT.* checked against (and empty keys filled from) the backbone's preprocessing, before
    # anything is written; the engine's own defaults (Dassl's 224 px, ImageNet statistics) count as unset.
    defaults = engine.base_config()  # a fresh copy (setup_cfg merged into the first)
    preflight_input(cfg, unset=defaults if defaults is not None else get_cfg_default())
    cfg.freeze()
    return cfg


def execute(request: RunRequest, engine: Engine) -> int:
    """Run one request through ``engine``; returns the exit status (0). Raises UserError for bad input."""
    t0 = time.time()
    cfg = build_config(request, engine)
    engine.check(cfg)
    trainer_cls = TRAINERS.get(cfg.TRAINER.NAME)
    DATASETS.get(cfg.DATASET.NAME)
    out = cfg.OUTPUT_DIR
    state = run_state(out)
    if state == "finished":
        print(f"Finished run found in {out} ({RESULTS_FILE} exists): skipping. Delete the folder to run it again.")
        return 0
    if request.eval_only and trainer_cls.uses_training_data and not has_checkpoint(request.model_dir):
        raise CheckpointError(
            f"--eval-only needs a trained model, but --model-dir {request.model_dir or '(not given)'!r} has no checkpoint; "
            "train first or pass the run folder that holds <module>/model*.pth.tar*"
        )
    created = not os.path.exists(out)
    try:
        setup_logging(out, cfg.VERBOSE)
        sessions = start_session(out)
        resume_dir = cfg.RESUME or (out if state == "unfinished" and has_checkpoint(out) else "")
        if state == "unfinished":
            log.info("Unfinished run in %s: %s", out, "resuming from its newest checkpoint" if resume_dir else "no checkpoint, restarting")
        save_cfg(cfg, out)
        log.info("Trainer %s | dataset %s | backbone %s | shots %s | seed %s | engine %s", cfg.TRAINER.NAME, cfg.DATASET.NAME,
                 cfg.MODEL.BACKBONE.NAME, cfg.DATASET.NUM_SHOTS, cfg.SEED, engine.name)
        for key, value in ineffective_settings(cfg):
            log.info("Note: %s = %r is a Dassl/CoOp compatibility key that has no effect here", key, value)
        # The only seeding of the run, before anything random (few-shot sampling included) happens.
        set_random_seed(int(cfg.SEED))
        outcome = engine.run(cfg, request, trainer_cls, resume_dir)
        if outcome is None:
            return 0
        payload = results_payload(cfg, request, outcome, engine.name, close_sessions(sessions, time.time()))
        atomic_write_json(os.path.join(out, RESULTS_FILE), payload)
        log.info("Wrote %s (%.1fs this session)", os.path.join(out, RESULTS_FILE), time.time() - t0)
        return 0
    except UserError:
        if created and state == "new":
            close_logging()
            shutil.rmtree(out, ignore_errors=True)
        raise
