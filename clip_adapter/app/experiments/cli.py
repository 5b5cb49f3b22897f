"""``clip-adapter experiment NAME ARGS...``: what every script in scripts/ runs (``scripts/main.sh`` is
``clip-adapter experiment main "$@"``), with CoOp's positional arguments, the scripts' environment
variables and the sweep's options.

Environment: DATA (datasets; the generated smoke data defaults to ./data), OUTPUT (default output),
SEEDS (default "1 2 3"; commas or spaces), DRY_RUN=1 (print each run's command, run nothing),
CLIP_ADAPTER_FEATURE_CACHE (default $OUTPUT/feature_cache); SHOTS (base2new_*, xd_*; default 16),
SOURCE (xd_*; default imagenet).

Without sweep options the runs run one after the other in the foreground (finished ones skipped,
unfinished ones resumed); ``--jobs N``/``--launcher slurm ...`` hand them to the sweep; ``--status``
shows their states. Exit status: 0 every run finished, 1 some failed, 2 bad input, 3 some not
finished yet (queued on SLURM, or found unfinished by --status), 130 interrupted.
"""
from __future__ import annotations

import logging
import os
import re
import shlex
import sys
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

from clip_adapter.app.experiments import lookup
from clip_adapter.app.experiments.plans import (ablation, base2new_test, base2new_train, fewshot, training_free, transfer_test,
                                                transfer_train)
from clip_adapter.app.experiments.runs import Run, Settings, config_of, folder_opts, method, unique
from clip_adapter.app.sweep import cli as sweep_cli
from clip_adapter.app.sweep.jobs import JobSpec, build_runs, describe_plan, is_finished, make_plan
from clip_adapter.app.sweep.status import EXIT_OK, EXIT_USAGE
from clip_adapter.errors import UserError
from clip_adapter.plugins import load_all

KEY_RE = re.compile(r"[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)+")


# ------------------------------------------------------------------- arguments
def is_key(arg: str) -> bool:
    """Whether an argument is a config key (``TRAINER.CLIP_ADAPTER.RATIO``) rather than an optional
    positional (a trainer, a config name or YAML path)."""
    return bool(KEY_RE.fullmatch(arg))


def optional(rest: List[str], default: str) -> str:
    """The next optional positional argument, unless the KEY VALUE opts start there."""
    return rest.pop(0) if rest and not is_key(rest[0]) else default


def integer(text: str, name: str, positive: bool) -> int:
    if not text.isdigit() or (positive and int(text) == 0):
        raise UserError(f"{name} must be a {'positive' if positive else 'non-negative'} integer, got {text!r}")
    return int(text)


def split_list(text: str) -> List[str]:
    return [x for x in re.split(r"[,\s]+", text) if x]


def settings_from_env(env=os.environ) -> Settings:
    seeds_text = env.get("SEEDS") or "1 2 3"
    seeds = tuple(integer(x, "SEEDS", positive=False) for x in split_list(seeds_text))
    if not seeds:
        raise UserError("SEEDS is empty: give seeds separated by spaces or commas, e.g. SEEDS=\"1 2 3\"")
    return Settings(output=env.get("OUTPUT") or "output", data=env.get("DATA") or None, seeds=seeds, python=sys.executable,
                    dry_run=env.get("DRY_RUN", "0") == "1")


def env_int(name: str, default: int) -> int:
    return integer(os.environ.get(name) or str(default), name, positive=True)


# ----------------------------------------------------------------- experiments
def plan_main(args: List[str], s: Settings, trainer: Optional[str] = None) -> List[Run]:
    ds_name, cfg, shots_text, *rest = args
    shots = integer(shots_text, "SHOTS", positive=True)
    trainer = trainer or optional(rest, "CLIP_Adapter")
    ds = lookup.dataset(ds_name)
    m = method(trainer, cfg, rest)
    config_of(m, ds)
    s.data_for([ds])
    if m.training_free:
        print(f"note: {trainer} is training-free (uses_training_data False): one evaluation in zeroshot.sh's folder, "
              "whatever SHOTS and SEEDS", file=sys.stderr)
    return fewshot(s, ds, m, shots, s.seeds)


def plan_coop(args: List[str], s: Settings) -> List[Run]:
    ds_name, cfg, shots, *rest = args
    defaults = folder_opts(lookup.trainer("CoOp"))
    opts: List[str] = []
    for key, default in zip(defaults[0::2], defaults[1::2]):
        opts += [key, optional(rest, default)]
    return plan_main([ds_name, cfg, shots, *opts, *rest], s, trainer="CoOp")


def plan_zeroshot(args: List[str], s: Settings) -> List[Run]:
    ds_name, cfg, *rest = args
    trainer = optional(rest, "ZeroshotCLIP")
    m = method(trainer, cfg, rest)
    ds = lookup.dataset(ds_name)
    config_of(m, ds)
    s.data_for([ds])
    return training_free(s, ds, m, s.seeds)


def _dataset_seed(args: List[str]):
    """DATASET SEED [TRAINER=CLIP_Adapter] [CFG=rn50] [KEY VALUE ...] (the base-to-novel and transfer tests)."""
    ds_name, seed_text, *rest = args
    trainer = optional(rest, "CLIP_Adapter")
    cfg = optional(rest, "rn50")
    return ds_name, integer(seed_text, "SEED", positive=False), trainer, cfg, rest


def plan_base2new_train(args: List[str], s: Settings) -> List[Run]:
    ds_name, seed, trainer, cfg, rest = _dataset_seed(args)
    if not lookup.trainer(trainer).uses_training_data:
        print(f"{trainer} needs no training: scripts/base2new_test.sh evaluates it directly on base and new classes")
        return []
    ds, m = lookup.dataset(ds_name), method(trainer, cfg, rest)
    s.data_for([ds])
    return base2new_train(s, ds, m, seed, env_int("SHOTS", 16))


def plan_base2new_test(args: List[str], s: Settings) -> List[Run]:
    ds_name, seed, trainer, cfg, rest = _dataset_seed(args)
    ds, m = lookup.dataset(ds_name), method(trainer, cfg, rest)
    s.data_for([ds])
    return base2new_test(s, ds, m, seed, env_int("SHOTS", 16))


def plan_xd_train(args: List[str], s: Settings) -> List[Run]:
    seed_text, *rest = args
    seed = integer(seed_text, "SEED", positive=False)
    trainer = optional(rest, "CLIP_Adapter")
    cfg = optional(rest, "rn50")
    shots = env_int("SHOTS", 16)
    if not lookup.trainer(trainer).uses_training_data:
        print(f"{trainer} needs no training: scripts/xd_test.sh evaluates it directly on each target")
        return []
    source, m = lookup.dataset(os.environ.get("SOURCE") or "imagenet"), method(trainer, cfg, rest)
    config_of(m, source)
    s.data_for([source])
    return transfer_train(s, source, m, seed, shots)


def plan_xd_test(args: List[str], s: Settings) -> List[Run]:
    ds_name, seed, trainer, cfg, rest = _dataset_seed(args)
    shots = env_int("SHOTS", 16)
    source, target = lookup.dataset(os.environ.get("SOURCE") or "imagenet"), lookup.dataset(ds_name)
    m = method(trainer, cfg, rest)
    config_of(m, target)
    s.data_for([target])
    return transfer_test(s, source, target, m, seed, shots)


def plan_ablation(args: List[str], s: Settings) -> List[Run]:
    ds_name, cfg, shots_text, key, values_text, *rest = args
    shots = integer(shots_text, "SHOTS", positive=True)
    if re.search(r"(^|,)\s*(,|$)", values_text):
        raise UserError(f"empty value in {values_text!r}: pass the values separated by commas (or spaces), e.g. 0,0.2,0.4")
    values = split_list(values_text)
    trainer = optional(rest, "CLIP_Adapter")
    ds, m = lookup.dataset(ds_name), method(trainer, cfg, rest)
    s.data_for([ds])
    return ablation(s, ds, m, shots, key, values, s.seeds)


@dataclass(frozen=True)
class Experiment:
    """One experiment command: its arguments (after the script name), how many are required, its
    description, and the planner that turns them into runs."""

    usage: str
    required: int
    about: str
    plan: Callable[[List[str], Settings], List[Run]]
    example: str = ""


EXPERIMENTS = {
    "main": Experiment("DATASET CFG SHOTS [TRAINER=CLIP_Adapter] [KEY VALUE ...]", 3,
                       "Few-shot training, seeds $SEEDS: $OUTPUT/<DATASET>/<TRAINER>/<CFG>_<SHOTS>shots[/<variant>]/seed<S>. "
                       "Extra KEY VALUE opts override the config and name a variant folder (TRAINER.CLIP_ADAPTER.RATIO 0.6 -> "
                       "ratio0.6). A training-free TRAINER is evaluated once, in zeroshot's folder.", plan_main,
                       "bash scripts/main.sh smoke tiny 4 CLIP_Adapter    (offline check)"),
    "coop": Experiment("DATASET CFG SHOTS [NCTX=16] [CSC=False] [CTP=end] [KEY VALUE ...]", 3,
                       "CoOp with its three flags in the folder name, as CoOp's scripts do: "
                       "$OUTPUT/<DATASET>/CoOp/<CFG>_<SHOTS>shots/nctx<NCTX>_csc<CSC>_ctp<CTP>/seed<S>; CTP: end | middle | front.",
                       plan_coop),
    "zeroshot": Experiment("DATASET CFG [TRAINER=ZeroshotCLIP] [KEY VALUE ...]", 2,
                           "A training-free trainer, one evaluation (the first of $SEEDS): $OUTPUT/<DATASET>/<TRAINER>/<CFG>[/<variant>]/seed<S>. "
                           "TRAINER ZeroshotCLIP2 uses the ImageNet template ensemble.", plan_zeroshot),
    "base2new_train": Experiment("DATASET SEED [TRAINER=CLIP_Adapter] [CFG=rn50] [KEY VALUE ...]", 2,
                                 "Base-to-novel, step 1: train on the base classes, $SHOTS (16) shots: "
                                 "$OUTPUT/base2new/train_base/<DATASET>/shots_16/<TRAINER>/<CFG>[/<variant>]/seed<SEED> (CoCoOp's layout). "
                                 "Nothing for a training-free trainer.", plan_base2new_train),
    "base2new_test": Experiment("DATASET SEED [TRAINER=CLIP_Adapter] [CFG=rn50] [KEY VALUE ...]", 2,
                                "Base-to-novel, step 2: evaluate the base-class model on the new and on the base classes: "
                                "$OUTPUT/base2new/test_{new,base}/... (same levels). A training-free trainer is evaluated directly; "
                                "one whose weights are tied to their classes (transfer_blocker) is refused.", plan_base2new_test),
    "xd_train": Experiment("SEED [TRAINER=CLIP_Adapter] [CFG=rn50] [KEY VALUE ...]", 1,
                           "Transfer, step 1: train on $SOURCE (imagenet), $SHOTS (16) shots, all classes: main's own folder "
                           "$OUTPUT/<SOURCE>/<TRAINER>/<CFG>_<SHOTS>shots[/<variant>]/seed<SEED>, so a finished run is reused.",
                           plan_xd_train),
    "xd_test": Experiment("DATASET SEED [TRAINER=CLIP_Adapter] [CFG=rn50] [KEY VALUE ...]", 2,
                          "Transfer, step 2: evaluate the $SOURCE model on a target (distribution shift or another dataset): "
                          "$OUTPUT/evaluation[_from_<SOURCE>]/<TRAINER>/<CFG>_<SHOTS>shots[/<variant>]/<DATASET>/seed<SEED>. "
                          "A class-bound model on other classes is refused by the run, in one line.", plan_xd_test),
    "ablation": Experiment("DATASET CFG SHOTS KEY v1,v2,... [TRAINER=CLIP_Adapter] [KEY VALUE ...]", 5,
                           "One config key over a list of values, seeds $SEEDS: "
                           "$OUTPUT/ablation/<DATASET>/<TRAINER>/<CFG>_<SHOTS>shots/<variant>/seed<S>.", plan_ablation,
                           "bash scripts/ablation.sh smoke tiny 4 TRAINER.CLIP_ADAPTER.RATIO 0,0.2,0.6   (offline)"),
}


def usage(name: str) -> str:
    if name == "reproduce":
        return "bash scripts/reproduce.sh [--experiments ...] [--datasets ...] [options] [-- KEY VALUE ...]  (--help)"
    e = EXPERIMENTS[name]
    lines = [f"usage: bash scripts/{name}.sh {e.usage}   (or: clip-adapter experiment {name} ...)"]
    if e.example:
        lines.append(f"  e.g. {e.example}")
    return "\n".join(lines)


def print_help(name: Optional[str]) -> None:
    if name is None:
        print("usage: clip-adapter experiment NAME ARGS... [sweep options] [--status]\n\nexperiments (each is also scripts/NAME.sh):")
        for n, e in EXPERIMENTS.items():
            print(f"  {n:15s} {e.usage}")
        print(f"  {'reproduce':15s} [--experiments fewshot,base2new,dg,xd,ablation] [--datasets ...] ... (--help)")
        print("\n" + __doc__.split("\n\n", 1)[1])
        return
    e = EXPERIMENTS[name]
    print(usage(name) + "\n\n" + e.about + "\n")
    print(__doc__.split("\n\n", 1)[1])
    print("sweep options (anywhere before a lone --):")
    text = sweep_cli.option_parser().format_help()
    print(text[text.index("\n\n") + 2:])


def plan_runs(name: str, args: Sequence[str], s: Settings) -> List[Run]:
    """The runs of an experiment command (a script's arguments), each once."""
    if name not in EXPERIMENTS:
        known = [*EXPERIMENTS, "reproduce"]
        raise UserError(f"unknown experiment {name!r}{lookup._did_you_mean(name, known)} known: {', '.join(known)}")
    args = [a for a in args if a != "--"]  # (a lone -- only ends the sweep options)
    if len(args) < EXPERIMENTS[name].required:
        raise UserError(usage(name).replace("\n", "; "))
    return unique(EXPERIMENTS[name].plan(args, s))


# -------------------------------------------------------------------- execution
def execute(runs: Sequence[Run], s: Settings, sweep_args, conf) -> int:
    """Check what the runs need, then run them (foreground or sweep), show them (DRY_RUN) or their states (--status)."""
    runs = unique(runs)
    if not runs:
        return EXIT_OK
    planned = {os.path.normpath(r.output_dir) for r in runs}
    if not s.dry_run and not sweep_args.status:
        for r in runs:
            for d in r.needs:
                if not is_finished(d.output_dir) and os.path.normpath(d.output_dir) not in planned:
                    raise UserError(f"{d.what} {d.output_dir} is not finished (no results.json): run '{d.hint}' first")
    cache = {"CLIP_ADAPTER_FEATURE_CACHE": os.environ.get("CLIP_ADAPTER_FEATURE_CACHE") or os.path.join(s.output, "feature_cache")}
    specs = [JobSpec(r.output_dir, tuple(r.command(s.python)), tuple(d.output_dir for d in r.needs), r.output_dir) for r in runs]
    if s.dry_run and not sweep_args.status:
        for r in runs:
            if not is_finished(r.output_dir):
                print("dry-run: " + shlex.join(r.command(s.python)))
        if sweep_cli.wants_sweep(sweep_args):
            describe_plan(make_plan(build_runs(specs, env=cache)))
        return EXIT_OK
    if sweep_args.submitit_dir is None:
        sweep_args.submitit_dir = os.path.join(s.output, "submitit")
    return sweep_cli.execute(build_runs(specs, env=cache), sweep_args, conf)


def main(argv: Optional[Sequence[str]] = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print_help(None)
        return EXIT_OK if argv else EXIT_USAGE
    name, argv = argv[0], argv[1:]
    try:
        load_all()  # built-in and plugin trainers/datasets; a broken plugin is reported here, once
        sweep_argv, rest = sweep_cli.split_options(argv)
        if name == "reproduce":
            return _reproduce(rest, sweep_argv)
        positional = rest[:rest.index("--")] if "--" in rest else rest
        if name in EXPERIMENTS and ("-h" in positional or "--help" in positional):
            print_help(name)
            return EXIT_OK
        sweep_args = sweep_cli.parse_options(sweep_argv)
        conf = sweep_cli.check_options(sweep_args)
        if name in EXPERIMENTS and len([a for a in rest if a != "--"]) < EXPERIMENTS[name].required:
            print(usage(name), file=sys.stderr)
            return EXIT_USAGE
        s = settings_from_env()
        s.dry_run = sweep_args.dry_run = sweep_args.dry_run or s.dry_run
        return execute(plan_runs(name, rest, s), s, sweep_args, conf)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _reproduce(rest: List[str], sweep_argv: List[str]) -> int:
    from clip_adapter.app.experiments import reproduce

    sweep_args = sweep_cli.parse_options(sweep_argv)
    conf = sweep_cli.check_options(sweep_args)
    s = settings_from_env()
    s.dry_run = sweep_args.dry_run = sweep_args.dry_run or s.dry_run
    options = reproduce.parse(rest, s)
    if options is None:
        return EXIT_OK
    status = execute(reproduce.plan(s, options), s, sweep_args, conf)
    if sweep_args.status:
        return status
    return reproduce.tables(s, options, status)
