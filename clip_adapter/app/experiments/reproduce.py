"""The paper's comparison in one plan (scripts/reproduce.sh), then the tables.

  fewshot:  every trainer on every dataset, every shot count and seed (training-free ones once)
  base2new: train on the base classes (16 shots), test on new and base
  dg:       train on the source (ImageNet, 16 shots), test on its distribution-shift variants
  xd:       the same models tested on the other datasets (trainers whose weights are tied to their
            training classes, by their ``transfer_blocker``, are left out with one line)
  ablation: config keys swept over values on a few datasets (each key for the trainers whose config
            node holds it; a core key for every trainer that trains)

With ``--datasets smoke`` the source is smoke, the dg targets its shifted variants and the xd target
smoke_other, so the whole flow runs offline. Resumable: finished runs are skipped, unfinished ones
resumed, so re-running redoes nothing. A failing run does not stop the others.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

from clip_adapter.app.experiments import lookup
from clip_adapter.app.experiments.lookup import DatasetRef
from clip_adapter.app.experiments.plans import (ablation, base2new_test, base2new_train, fewshot, one_seed, training_free,
                                                transfer_test, transfer_train)
from clip_adapter.app.experiments.runs import Method, Run, Settings, folder_opts, method, scheduled_config, transfer_blocker
from clip_adapter.errors import UserError

EXPERIMENTS = ("fewshot", "base2new", "dg", "xd", "ablation")
DATASETS = ("imagenet caltech101 oxford_pets stanford_cars oxford_flowers food101 fgvc_aircraft sun397 dtd eurosat ucf101").split()
SHOTS = (1, 2, 4, 8, 16)
TRAINERS = ("ZeroshotCLIP", "CoOp", "CLIP_Adapter")
# The paper's ablations (CLIP-Adapter's residual ratio, bottleneck reduction and adapter type).
ABLATIONS = ("TRAINER.CLIP_ADAPTER.RATIO=0,0.2,0.4,0.6,0.8,1.0", "TRAINER.CLIP_ADAPTER.REDUCTION=2,4,8,16,32",
             "TRAINER.CLIP_ADAPTER.TYPE=visual,text,both")
ABLATION_DATASETS = ("imagenet", "caltech101", "dtd", "eurosat")
# Distribution-shift targets of a source, and extra cross-dataset targets (smoke's offline ones).
DG_TARGETS = {"imagenet": ("imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r"),
              "smoke": ("smoke_gray", "smoke_invert", "smoke_blur", "smoke_subset")}
XD_EXTRA_TARGETS = {"smoke": ("smoke_other",)}
TRANSFER_SHOTS = BASE2NEW_SHOTS = ABLATION_SHOTS = 16


def split_list(values: Optional[Sequence[str]]) -> Optional[List[str]]:
    """``a,b c`` (commas or spaces, one argument or several) -> [a, b, c]; None stays None."""
    if values is None:
        return None
    return [x for v in values for x in re.split(r"[,\s]+", v) if x]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bash scripts/reproduce.sh (clip-adapter experiment reproduce)", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter, add_help=False,
                                usage="%(prog)s [options] [sweep options] [--status] [-- KEY VALUE ...]",
                                epilog="KEY VALUE opts after a lone -- go to every run. The environment (DATA, OUTPUT, ...), the sweep "
                                       "options (--jobs N, --launcher slurm ...), --status and the exit statuses are those of every "
                                       "script: bash scripts/main.sh --help. Tables: $OUTPUT/tables.md.")
    p.add_argument("-h", "--help", action="store_true")
    lists = "(commas or spaces)"
    p.add_argument("--experiments", nargs="+", help=f"which of {','.join(EXPERIMENTS)} to run (default: all) {lists}")
    p.add_argument("--datasets", nargs="+", help=f"datasets {lists} (default: the benchmark's 11)")
    p.add_argument("--shots", nargs="+", help=f"few-shot counts {lists} (default: 1 2 4 8 16)")
    p.add_argument("--trainers", nargs="+", help=f"trainers {lists} (default: {' '.join(TRAINERS)})")
    p.add_argument("--backbone", default="rn50", help="the config of every trainer: rn50, rn101, vit_b32, vit_b16, or tiny (offline); "
                                                       "ViT-B/16 and RN50 spellings work")
    p.add_argument("--seeds", nargs="+", help=f"seeds {lists} (default: SEEDS, else 1 2 3)")
    p.add_argument("--source", default=None, help="transfer source (default: imagenet, or smoke offline)")
    p.add_argument("--dg-targets", nargs="+", help=f"distribution-shift targets {lists} (default: the source's variants)")
    p.add_argument("--xd-targets", nargs="+", help=f"cross-dataset targets {lists} (default: the other datasets)")
    p.add_argument("--ablation-datasets", nargs="+", help=f"datasets of the ablations {lists} (default: those of "
                                                          f"{' '.join(ABLATION_DATASETS)} in --datasets, else all)")
    p.add_argument("--ablations", nargs="+", help="KEY=v1,v2,... (several separated by spaces)")
    p.add_argument("--no-fewshot", action="store_true", help="leave out the few-shot experiment")
    p.add_argument("--no-base2new", action="store_true", help="leave out base-to-novel")
    p.add_argument("--published", action="store_true", help="tables with the published figures next to ours")
    return p


@dataclass
class Options:
    experiments: Tuple[str, ...]
    datasets: List[DatasetRef]
    shots: List[int]
    trainers: List[str]
    cfg: str
    seeds: List[int]
    source: Optional[DatasetRef]
    dg_targets: List[DatasetRef]
    xd_targets: List[DatasetRef]
    ablation_datasets: List[DatasetRef]
    ablations: List[Tuple[str, List[str]]]
    extra: List[str]
    published: bool
    notes: List[str] = field(default_factory=list)


def _ints(values: List[str], flag: str, positive: bool) -> List[int]:
    out = []
    for v in values:
        if not v.isdigit() or (positive and int(v) == 0):
            raise UserError(f"{flag}: {v!r} is not a {'positive' if positive else 'non-negative'} integer")
        out.append(int(v))
    return out


def parse(argv: Sequence[str], s: Settings) -> Optional[Options]:
    """The command line -> Options, every name checked before the first run (None: --help was shown)."""
    argv = list(argv)
    extra: List[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    p = build_parser()

    def refuse(message: str) -> None:
        raise UserError(f"{message} (see bash scripts/reproduce.sh --help)")

    p.error = refuse  # type: ignore[method-assign]
    for arg in argv:
        if arg.startswith("-") and arg.split("=", 1)[0] not in p._option_string_actions:
            raise UserError(f"unknown option {arg!r} (see bash scripts/reproduce.sh --help)")
    a = p.parse_args(argv)
    if a.help:
        p.print_help()
        return None
    experiments = tuple(split_list(a.experiments) or EXPERIMENTS)
    for e in experiments:
        if e not in EXPERIMENTS:
            raise UserError(f"--experiments: unknown experiment {e!r}{lookup._did_you_mean(e, EXPERIMENTS)} choose from {','.join(EXPERIMENTS)}")
    experiments = tuple(e for e in EXPERIMENTS if e in experiments and not (a.no_fewshot and e == "fewshot")
                        and not (a.no_base2new and e == "base2new"))
    datasets = [lookup.dataset(d) for d in split_list(a.datasets) or DATASETS]
    names = [d.name for d in datasets]
    shots = _ints(split_list(a.shots) or [str(k) for k in SHOTS], "--shots", positive=True)
    seeds = _ints(split_list(a.seeds), "--seeds", positive=False) if a.seeds else list(s.seeds)
    trainers = split_list(a.trainers) or list(TRAINERS)
    cfg = lookup.backbone_config_name(a.backbone)
    for t in trainers:
        method(t, cfg, extra)  # the trainer, its config and the extra opts, checked now
    transfer = "dg" in experiments or "xd" in experiments
    source_name = a.source or ("smoke" if "imagenet" not in names and "smoke" in names else "imagenet")
    source = lookup.dataset(source_name) if transfer else None
    notes: List[str] = []
    dg: List[DatasetRef] = []
    if "dg" in experiments:
        targets = split_list(a.dg_targets)
        if targets is None:
            targets = list(DG_TARGETS.get(source_name, ()))
            if not targets:
                notes.append(f"dg: no distribution-shift targets known for source {source_name} (pass --dg-targets)")
        dg = [lookup.dataset(d) for d in targets]
    xd: List[DatasetRef] = []
    if "xd" in experiments:
        targets = split_list(a.xd_targets)
        if targets is None:
            targets = [d for d in names if d != source_name] + list(XD_EXTRA_TARGETS.get(source_name, ()))
        xd = [lookup.dataset(d) for d in targets]
    abl_data: List[DatasetRef] = []
    ablations: List[Tuple[str, List[str]]] = []
    if "ablation" in experiments:
        chosen = split_list(a.ablation_datasets)
        if chosen is None:
            chosen = [d for d in ABLATION_DATASETS if d in names] or names
        abl_data = [lookup.dataset(d) for d in chosen]
        for spec in [x for v in (a.ablations or ABLATIONS) for x in v.split()]:
            key, sep, values = spec.partition("=")
            if not sep or not key or not values:
                raise UserError(f"--ablations: {spec!r} is not KEY=v1,v2,...")
            ablations.append((key, [v for v in values.split(",") if v]))
    s.data_for([*datasets, *dg, *xd, *abl_data, *([source] if source else [])])
    return Options(experiments, datasets, shots, trainers, cfg, seeds, source, dg, xd, abl_data, ablations, extra, a.published, notes)


# --------------------------------------------------------------------------- plan
def _method(o: Options, trainer: str, ds: DatasetRef, shots: int, named_folder: bool) -> Method:
    """The trainer's method for a run: its scheduled config for the shots and, in the few-shot layout,
    its ``folder_keys`` spelled out (at their defaults, the user's extra opts winning)."""
    cls = lookup.trainer(trainer)
    cfg = scheduled_config(trainer, cls, o.cfg, ds, shots)
    opts = (folder_opts(cls) if named_folder else []) + o.extra
    return method(trainer, cfg, opts)


def _ablation_trainers(o: Options, key: str) -> Tuple[List[str], str]:
    """The trainers a key is ablated for: those whose own config node holds it; every trainer that
    trains for a core key. With none, the reason."""
    owners_all = {}
    for name in _registered_trainers():
        for node in lookup.trainer(name).config_defaults():
            if key.startswith(node + "."):
                owners_all.setdefault(name, node)
    if not owners_all:
        chosen = [t for t in o.trainers if lookup.trainer(t).uses_training_data]
        return chosen, "" if chosen else f"ablation: no trainer among --trainers trains; no runs for {key}"
    chosen = [t for t in o.trainers if t in owners_all]
    why = f"ablation: {key} belongs to {', '.join(sorted(owners_all))}, not among --trainers; no runs for it"
    return chosen, "" if chosen else why


def _registered_trainers() -> List[str]:
    from clip_adapter.registry import TRAINERS

    return TRAINERS.names()


def plan(s: Settings, o: Options) -> List[Run]:
    runs: List[Run] = []
    seeds = o.seeds
    if "fewshot" in o.experiments:
        for ds in o.datasets:
            for t in o.trainers:
                if lookup.trainer(t).uses_training_data:
                    for k in o.shots:
                        runs += fewshot(s, ds, _method(o, t, ds, k, True), k, seeds)
                else:
                    runs += training_free(s, ds, _method(o, t, ds, 0, True), seeds)
    if "base2new" in o.experiments:
        for ds in o.datasets:
            for t in o.trainers:
                m = _method(o, t, ds, BASE2NEW_SHOTS, False)
                reason = None if m.training_free else transfer_blocker(m, ds)
                if reason:
                    o.notes.append(f"base2new: {t} is left out: {reason}")
                    continue
                for seed in one_seed(m, seeds):
                    runs += base2new_train(s, ds, m, seed, BASE2NEW_SHOTS) + base2new_test(s, ds, m, seed, BASE2NEW_SHOTS)
    for kind, targets in (("dg", o.dg_targets), ("xd", o.xd_targets)):
        if kind not in o.experiments or not targets:
            continue
        assert o.source is not None
        for t in o.trainers:
            m = _method(o, t, o.source, TRANSFER_SHOTS, True)
            if kind == "xd" and not m.training_free:
                reason = transfer_blocker(m, o.source)
                if reason:
                    o.notes.append(f"xd: {t} is left out: {reason}")
                    continue
            if m.training_free:  # its source column is its own run on the source
                runs += training_free(s, o.source, m, seeds)
            for seed in one_seed(m, seeds):
                runs += transfer_train(s, o.source, m, seed, TRANSFER_SHOTS)
                for target in targets:
                    if target.name != o.source.name:
                        runs += transfer_test(s, o.source, target, m, seed, TRANSFER_SHOTS)
    if "ablation" in o.experiments:
        for key, values in o.ablations:
            trainers, why = _ablation_trainers(o, key)
            if why:
                o.notes.append(why)
            for ds in o.ablation_datasets:
                for t in trainers:
                    runs += ablation(s, ds, _method(o, t, ds, ABLATION_SHOTS, False), ABLATION_SHOTS, key, values, seeds)
    for note in o.notes:
        print(note, file=sys.stderr)
    return runs


# -------------------------------------------------------------------------- tables
def tables(s: Settings, o: Options, status: int) -> int:
    """The tables (and curves, ablation plot) once the runs are done; the exit status of the whole."""
    from clip_adapter.app.commands import run_command
    from clip_adapter.app.sweep.status import EXIT_FAILED, EXIT_INCOMPLETE, EXIT_INTERRUPTED

    if status in (EXIT_INTERRUPTED, 2):
        return status
    if s.dry_run:
        print("dry run: no tables")
        return status
    if status == EXIT_INCOMPLETE:
        print(f"not every run is finished yet: once they are (check with the same command plus --status), make the tables with: "
              f"clip-adapter results {s.output}")
        return status
    out = os.path.join(s.output, "tables.md")
    args = [s.output, "--expected-seeds", str(len(o.seeds)), "--out", out]
    if o.published:
        args.append("--published")
    if o.cfg.startswith("tiny") or any(d.registered.startswith("Smoke") for d in o.datasets):
        args.append("--include-offline-checks")  # the offline check's tables (left out of tables by default)
    if "ablation" in o.experiments and o.ablations:
        args += ["--plot-ablation", os.path.join(s.output, "ablation.png")]
    if "fewshot" in o.experiments and any(lookup.trainer(t).uses_training_data for t in o.trainers):
        args += ["--plot", os.path.join(s.output, "fewshot_curves.png")]
    rc = run_command("results", args)
    if rc == 0 and os.path.isfile(out):
        with open(out, encoding="utf-8") as f:
            sys.stdout.write(f.read())
    else:
        print(f"FAILED: the tables (clip-adapter results {s.output})", file=sys.stderr)
        return EXIT_FAILED
    if status == EXIT_FAILED:
        print("some runs failed (their rows show 'missing'); fix the cause and run the same command again", file=sys.stderr)
    return status
