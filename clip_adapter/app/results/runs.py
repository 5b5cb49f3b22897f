"""Reading runs: every ``results.json`` under a folder, nothing else, each turned into a :class:`Run`.

The numbers come from ``results.json`` only (never from log scraping; ``log.txt`` keeps CoOp's
lines for people who use CoOp's parser), so a crashed run, which has no ``results.json``, can
never be counted. What the tables know about a method comes from its records too (the registry
is not imported): whether it uses training data, how it trains, how its hyperparameters were
selected, which split file it ran on, whether it was an offline check.
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

from clip_adapter.app.experiments.naming import opt_pairs, variant_suffix
from clip_adapter.errors import UserError

RESULTS_FILE = "results.json"
REQUIRED = ("trainer", "dataset", "accuracy", "seed", "shots")
# How a run chose its hyperparameters ("selection.protocol" of results.json); "" = not recorded.
PROTOCOLS = ("fewshot_val", "full_val", "none", "test")
# How a method learns, from its records: the first part of the rows' order.
TRAINING_FREE, ONE_STEP, EPOCHS = 0, 1, 2


@dataclass(frozen=True)
class Method:
    """One row of a table: runs that may be averaged together (equal in every compared field).

    ``preset`` (INPUT.PRESET), ``protocol`` (how hyperparameters were selected), ``split`` (a
    split that is not CoOp's, e.g. "built") and ``offline`` (smoke data or a tiny backbone) are
    part of it: runs that differ in any of them are never averaged together. ``display`` (a name
    the record gives) and ``learning`` only label and order the rows.
    """

    trainer: str
    config: str
    backbone: str
    variant: str
    preset: str = ""
    protocol: str = ""
    split: str = ""
    offline: bool = False
    display: str = field(default="", compare=False)
    learning: int = field(default=EPOCHS, compare=False)

    @property
    def name(self) -> str:
        return self.display or self.trainer

    def sort_key(self) -> tuple:
        """Rows grouped by backbone; within one, training-free methods first, then one-step fits, then
        methods trained in epochs; by name within each."""
        return (self.backbone, self.learning, self.name.casefold(), self.trainer, self.config, self.backbone, self.variant,
                self.preset, self.protocol, self.split, self.offline)


@dataclass(frozen=True)
class Run:
    """What the tables need from one ``results.json``."""

    path: str
    dataset: str
    method: Method
    shots: int
    seed: int
    subsample: str
    accuracy: float
    training_free: bool
    eval_only: bool
    model_dir: str
    # Transfer evaluations (xd_test.sh, base-to-novel tests): the dataset the model was trained on,
    # with how many shots, and the relation of the classes (see clip_adapter/engine/transfer.py).
    source: str = ""
    source_shots: Optional[int] = None
    relation: str = ""
    test_only: bool = False
    # Ablation runs (ablation.sh): the swept config key, this run's value of it (as given) and the
    # variant of the opts held fixed (the method an ablation table is about).
    sweep_key: str = ""
    sweep_value: str = ""
    sweep_fixed: str = ""
    # The split file's checksum ("" when not recorded): runs of one cell on different files are reported.
    split_sha256: str = ""


def _with_engine(variant: str, engine: str) -> str:
    """Runs through Dassl's engine are their own rows, never averaged with the project engine's."""
    if engine == "own":
        return variant
    return f"{variant}, engine={engine}" if variant else f"engine={engine}"


def _learning(record: dict) -> int:
    """TRAINING_FREE, ONE_STEP or EPOCHS from ``uses_training_data`` and ``epochs``.

    Records from before ``uses_training_data`` existed: 0 epochs meant training-free (zero-shot).
    """
    epochs = int(record.get("epochs", 1) or 0)
    if "uses_training_data" not in record:
        return TRAINING_FREE if epochs == 0 else EPOCHS
    if not record["uses_training_data"]:
        return TRAINING_FREE
    return ONE_STEP if epochs == 0 else EPOCHS


def protocol_of(record: dict) -> str:
    """``selection.protocol``, checked; "" when the record has no ``selection`` (an older run)."""
    selection = record.get("selection")
    if selection is None:
        return ""
    if not isinstance(selection, dict) or "protocol" not in selection:
        raise ValueError("selection must be an object with a 'protocol'")
    protocol = str(selection["protocol"])
    if protocol not in PROTOCOLS:
        raise ValueError(f"selection.protocol is {protocol!r}, expected one of {', '.join(PROTOCOLS)}")
    return protocol


def split_of(record: dict) -> Tuple[str, str]:
    """(origin, sha256) of ``split_file``; ("", "") when not recorded (an older run: no mark)."""
    split = record.get("split_file")
    if split is None:
        return "", ""
    if not isinstance(split, dict):
        raise ValueError("split_file must be an object with 'name', 'sha256' and 'origin'")
    return str(split.get("origin") or ""), str(split.get("sha256") or "")


def run_from(record: dict, path: str) -> Run:
    """One results.json record as a Run; ValueError (with the key) when it cannot be one."""
    missing = [k for k in REQUIRED if k not in record]
    if missing:
        raise ValueError(f"missing key(s) {', '.join(missing)}")
    accuracy = float(record["accuracy"])
    if not math.isfinite(accuracy):
        raise ValueError(f"accuracy is {record['accuracy']!r}")
    learning = _learning(record)
    origin, sha = split_of(record)
    method = Method(
        trainer=str(record["trainer"]),
        # CoOp's per-shot schedules (rn50_ep50 at 1 shot, rn50_ep100 at 2-4, rn50 at 8-16) are one method.
        config=re.sub(r"_ep\d+$", "", str(record.get("config") or "")),
        backbone=str(record.get("backbone_label") or record.get("backbone") or ""),  # readable: family, architecture, weights
        variant=_with_engine(variant_suffix(record.get("opts") or []), str(record.get("engine") or "own")),
        preset=str(record.get("preset") or ""),
        protocol=protocol_of(record),
        split="" if origin in ("", "coop") else origin,
        offline=bool(record.get("offline_check", False)),
        display=str(record.get("display_name") or ""),
        learning=learning,
    )
    dataset = str(record["dataset"])
    if dataset == "Custom" and record.get("dataset_config"):
        dataset = str(record["dataset_config"])  # every own dataset is "Custom": its config file names it
    return Run(
        path=path,
        dataset=dataset,
        method=method,
        shots=int(record["shots"]),
        seed=int(record["seed"]),
        subsample=str(record.get("subsample") or "all"),
        accuracy=accuracy,
        # A training-free method's number does not depend on shots: one run per dataset serves every shot count.
        training_free=learning == TRAINING_FREE,
        eval_only=bool(record.get("eval_only", False)),
        model_dir=str(record.get("model_dir") or ""),
        split_sha256=sha,
        **_experiment_fields(record),
    )


def _experiment_fields(record: dict) -> dict:
    """The transfer and ablation bookkeeping of a results.json (absent in files from before it existed)."""
    source = record.get("source") if isinstance(record.get("source"), dict) else {}
    key = str(record.get("sweep_key") or "")
    try:
        opts = opt_pairs(record.get("opts") or [], "opts")
    except UserError as exc:
        raise ValueError(str(exc)) from None
    value = opts.pop(key, "") if key else ""
    if key and not value:
        raise ValueError(f"sweep_key {key} is not among its opts")
    return {
        "source": str(source.get("dataset") or ""),
        "source_shots": None if source.get("shots") is None else int(source["shots"]),
        "relation": str(source.get("relation") or ""),
        "test_only": bool(record.get("test_only", False)),
        "sweep_key": key,
        "sweep_value": str(value),
        "sweep_fixed": variant_suffix([x for kv in opts.items() for x in kv]) if key else "",
    }


def load_runs(root: str) -> Tuple[List[Run], List[str]]:
    """Every ``results.json`` under ``root`` -> runs, plus one line per file that had to be skipped."""
    if not os.path.isdir(root):
        raise UserError(f"results folder not found: {root} (pass the OUTPUT folder the scripts wrote, e.g. output/)")
    runs, problems = [], []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        if RESULTS_FILE not in filenames:
            continue
        path = os.path.join(dirpath, RESULTS_FILE)
        try:
            with open(path, encoding="utf-8") as f:
                record = json.load(f)
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
            runs.append(run_from(record, path))
        except (OSError, ValueError, TypeError) as exc:
            problems.append(f"skipped {path}: {exc}")
    return runs, problems


def without_offline_checks(runs: Sequence[Run], include: bool) -> Tuple[List[Run], int]:
    """The runs the tables show and how many offline checks (smoke data, tiny backbone) were left out.

    Offline checks test the code, not a method: their numbers mean nothing next to real runs.
    """
    if include:
        return list(runs), 0
    kept = [r for r in runs if not r.method.offline]
    return kept, len(runs) - len(kept)
