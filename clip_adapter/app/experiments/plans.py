"""The experiments as lists of runs: few-shot, training-free, base-to-novel, transfer, ablation.

Everything about a method comes from the registry (the trainer contract): a training-free trainer
(``uses_training_data`` False) gets one evaluation, no training step and one seed, since its
number depends on neither; a trainer whose ``transfer_blocker`` names a reason is refused where its
weights would have to score classes they were not trained on.
"""
from __future__ import annotations

import re
from typing import List, Sequence

from clip_adapter.app.experiments.lookup import DatasetRef
from clip_adapter.app.experiments.naming import NEUTRAL_KEYS, variant_suffix
from clip_adapter.app.experiments.runs import (Dependency, Method, Run, Settings, ablation_dir, base2new_dir, config_of, evaluation_dir,
                                               fewshot_dir, train_run, transfer_blocker, zeroshot_dir)
from clip_adapter.errors import UserError

NUM_SHOTS = "DATASET.NUM_SHOTS"
SUBSAMPLE = "DATASET.SUBSAMPLE_CLASSES"


def one_seed(m: Method, seeds: Sequence[int]) -> List[int]:
    """The seeds a method runs with: all of them, or the first for a training-free method."""
    return list(seeds[:1]) if m.training_free else list(seeds)


def fewshot(s: Settings, ds: DatasetRef, m: Method, shots: int, seeds: Sequence[int]) -> List[Run]:
    """Few-shot training on all classes (main.sh); a training-free method is evaluated once instead."""
    if m.training_free:
        return training_free(s, ds, m, seeds)
    return [train_run(s, fewshot_dir(s, ds, m, shots, seed), ds, m, seed, opts=[NUM_SHOTS, str(shots)]) for seed in seeds]


def training_free(s: Settings, ds: DatasetRef, m: Method, seeds: Sequence[int]) -> List[Run]:
    """One evaluation of a training-free method (zeroshot.sh): no shots in its folder, the first seed."""
    if not m.training_free:
        raise UserError(f"{m.trainer} trains (uses_training_data is True): use scripts/main.sh for it; "
                        "zeroshot.sh is for training-free trainers")
    return [train_run(s, zeroshot_dir(s, ds, m, seed), ds, m, seed, flags=["--eval-only"]) for seed in one_seed(m, seeds)]


def refuse_new_classes(m: Method, ds: DatasetRef, what: str) -> None:
    reason = transfer_blocker(m, ds)
    if reason:
        raise UserError(f"{m.trainer} cannot be {what}: {reason}")


def base2new_train(s: Settings, ds: DatasetRef, m: Method, seed: int, shots: int) -> List[Run]:
    """Train on the base classes (the first half of the labels); nothing for a training-free method."""
    if m.training_free:
        return []
    refuse_new_classes(m, ds, "tested on new classes (base-to-novel)")
    out = base2new_dir(s, "train_base", ds, m, shots, seed)
    return [train_run(s, out, ds, m, seed, opts=[NUM_SHOTS, str(shots), SUBSAMPLE, "base"])]


def base2new_test(s: Settings, ds: DatasetRef, m: Method, seed: int, shots: int) -> List[Run]:
    """Evaluate the base-class model on the new and on the base classes (a training-free method directly)."""
    flags: List[str] = ["--eval-only"]
    needs: List[Dependency] = []
    if not m.training_free:
        refuse_new_classes(m, ds, "tested on new classes (base-to-novel)")
        model = base2new_dir(s, "train_base", ds, m, shots, seed)
        env = "" if shots == 16 else f"SHOTS={shots} "
        hint = f"{env}bash scripts/base2new_train.sh {ds.name} {seed} {m.hint_args()}"
        flags += ["--model-dir", model]
        needs.append(Dependency(model, "the base-class training run", hint))
    return [train_run(s, base2new_dir(s, f"test_{split}", ds, m, shots, seed), ds, m, seed, flags=flags,
                      opts=[NUM_SHOTS, str(shots), SUBSAMPLE, split], needs=needs) for split in ("new", "base")]


def transfer_train(s: Settings, source: DatasetRef, m: Method, seed: int, shots: int) -> List[Run]:
    """Train on the source (xd_train.sh): main.sh's own folder, so a finished few-shot run is reused."""
    if m.training_free:
        return []
    return fewshot(s, source, m, shots, [seed])


def transfer_test(s: Settings, source: DatasetRef, target: DatasetRef, m: Method, seed: int, shots: int) -> List[Run]:
    """Evaluate the source's model on a target (xd_test.sh); a training-free method directly, recording its source."""
    if target.name == source.name:
        raise UserError(f"DATASET is the source ({source.name}): its accuracy is the training run's own (results.json in the "
                        "xd_train.sh folder); pass a target dataset")
    out = evaluation_dir(s, source, target, m, shots, seed)
    if m.training_free:
        # No model to load: the run records its source experiment so the tables place it in the right row.
        return [train_run(s, out, target, m, seed, flags=["--eval-only"], opts=["EXPERIMENT.SOURCE", source.registered])]
    model = fewshot_dir(s, source, m, shots, seed)
    env = f"SOURCE={source.name} " + ("" if shots == 16 else f"SHOTS={shots} ")
    need = Dependency(model, "the training run", f"{env}bash scripts/xd_train.sh {seed} {m.hint_args()}")
    return [train_run(s, out, target, m, seed, flags=["--eval-only", "--model-dir", model], needs=[need])]


def check_ablation(ds: DatasetRef, m: Method, key: str, values: Sequence[str]) -> List[str]:
    """The variant folder of each value; refuses unknown keys, bad values, repeats and neutral keys."""
    if not values:
        raise UserError("no values to sweep: pass them comma-separated, e.g. 0,0.2,0.4")
    if not re.fullmatch(r"[A-Z][A-Z0-9_]*(\.[A-Z][A-Z0-9_]*)*", key):
        raise UserError(f"KEY must be a config key such as TRAINER.CLIP_ADAPTER.RATIO, got {key!r}")
    if key in NEUTRAL_KEYS:
        raise UserError(f"{key} does not change a run's numbers (the results tool ignores it), so there is nothing to ablate")
    if key in m.opts[0::2]:
        raise UserError(f"{key} is both the swept KEY and one of the extra opts; drop it from the extra opts")
    settings, folders = {}, []
    for value in values:
        cfg = config_of(m, ds, [key, value])
        node = cfg
        for part in key.split("."):
            node = node[part]
        if repr(node) in settings:
            raise UserError(f"values {settings[repr(node)]!r} and {value!r} of {key} are the same setting; pass each value once")
        settings[repr(node)] = value
        folder = variant_suffix([key, value, *m.opts], forbid_script_keys=True)
        if folder in folders:
            raise UserError(f"values {values[folders.index(folder)]!r} and {value!r} of {key} give the same run folder ({folder}); pass each value once")
        folders.append(folder)
    return folders


def ablation(s: Settings, ds: DatasetRef, m: Method, shots: int, key: str, values: Sequence[str], seeds: Sequence[int]) -> List[Run]:
    """One config key over a list of values (ablation.sh), every value with the method's other opts."""
    runs = []
    flags = ["--eval-only"] if m.training_free else []
    for value, variant in zip(values, check_ablation(ds, m, key, values)):
        for seed in one_seed(m, seeds):
            runs.append(train_run(s, ablation_dir(s, ds, m, shots, variant, seed), ds, m, seed, flags=flags,
                                  opts=[NUM_SHOTS, str(shots), key, value, "EXPERIMENT.SWEEP_KEY", key]))
    return runs
