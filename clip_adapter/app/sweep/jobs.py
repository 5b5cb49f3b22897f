"""The job list: runs (folder, command, what they wait for), resolved, and the plan of what to run in
which order. Input either from a JSON-lines file (``{"output_dir": DIR, "cmd": [...], "after": [...]}``
per line, for commands of your own) or from the experiment planner's run objects (``build_runs``).

Order. A run whose command has ``--model-dir D`` or ``--resume D`` (base-to-novel and cross-dataset
tests) waits for the run that writes ``D``. And a cache warm-up: runs that read the same frozen
image features (same dataset root and name, backbone, test-time transform, feature precision and
cache) form a group; the run of each group that encodes the most (a training run on all classes
with the most shots) goes first and fills the shared feature cache, and the rest of the group fans
out after it. A group that has a finished run is warm already.
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from typing import IO, Dict, Iterable, List, Optional, Sequence, Tuple

from tabulate import tabulate

from clip_adapter.errors import UserError

# The files a run folder holds (the run's state lives there, so every process sees the same thing).
RESULTS_FILE = "results.json"  # written last by the CLI: the run is finished
LOCK_FILE = ".sweep.lock"  # held while a process runs the run
LOG_FILE = "sweep.log"  # the output of every sweep attempt
FAILED_FILE = "sweep_failed.json"  # the last attempt failed (exit status, time, host, log)
JOB_FILE = "sweep_job.json"  # the cluster job that has the run (submitit)
ENV_PREFIX = "CLIP_ADAPTER_"  # environment variables a run gets as the sweep saw them (cache, weights)


@dataclass(frozen=True)
class Run:
    """One run, resolved: absolute folder, the command, and what it waits for."""

    output_dir: str
    cmd: Tuple[str, ...]
    cwd: str
    env: Tuple[Tuple[str, str], ...] = ()  # CLIP_ADAPTER_* as the sweep saw them (cache, weights)
    after: Tuple[str, ...] = ()  # run folders that must be finished first (absolute)
    group: str = ""  # feature-cache group ("" = none: not a cached-features train.py run)
    group_label: str = ""
    weight: Tuple = ()  # how much of the group's encoding the run does (the largest goes first)
    given: str = ""  # the folder as the job list or planner spelled it (messages in the foreground)

    @property
    def label(self) -> str:
        rel = os.path.relpath(self.output_dir, self.cwd)
        return self.output_dir if rel.startswith("..") else rel

    @property
    def name(self) -> str:
        return self.given or self.output_dir

    def path(self, name: str) -> str:
        return os.path.join(self.output_dir, name)


@dataclass(frozen=True)
class JobSpec:
    """A run as described, before resolution: ``where`` prefixes its errors (``jobs.jsonl:3``), ``ref``
    names it in another line's error (``line 3``)."""

    output_dir: str
    cmd: Tuple[str, ...]
    after: Tuple[str, ...] = ()
    where: str = ""
    ref: str = ""


def is_finished(folder: str) -> bool:
    return os.path.isfile(os.path.join(folder, RESULTS_FILE))


def train_args(cmd: Sequence[str]) -> Optional[List[str]]:
    """The train.py arguments of a command that runs the CLI, else None (an opaque command)."""
    cmd = list(cmd)
    if len(cmd) >= 2 and os.path.basename(cmd[1]) == "train.py":
        return cmd[2:]
    if len(cmd) >= 3 and cmd[1:3] == ["-m", "clip_adapter.app.train"]:
        return cmd[3:]
    if len(cmd) >= 4 and cmd[1:4] == ["-m", "clip_adapter", "train"]:
        return cmd[4:]
    if cmd and os.path.basename(cmd[0]) == "clip-adapter-train":
        return cmd[1:]
    if len(cmd) >= 2 and os.path.basename(cmd[0]) == "clip-adapter" and cmd[1] == "train":
        return cmd[2:]
    return None


class Resolver:
    """Reads a train.py command the way the CLI will (its public parser, request builder and
    ``setup_cfg``), for the run's dependencies and its feature-cache group. A bad command fails
    here, before any run starts."""

    def __init__(self) -> None:
        from clip_adapter.app import train as cli
        from clip_adapter.plugins import load_all

        load_all()  # trainer config nodes and plugin classes, as the run itself will see them

        self.cli = cli
        self.parser = cli.build_parser()
        self.parser.error = self._refuse  # an error message, not usage text and an exit

    @staticmethod
    def _refuse(message: str) -> None:
        raise UserError(message)

    def __call__(self, args: List[str], cwd: str, where: str, cache_env: str = "") -> Tuple[Tuple[str, ...], str, str, Tuple]:
        from clip_adapter.config import setup_cfg

        try:
            ns = self.parser.parse_args(args)
        except UserError as exc:
            raise UserError(f"{where}: the train.py arguments do not parse: {exc}") from None

        def absolute(p: str) -> str:
            return os.path.abspath(os.path.join(cwd, os.path.expanduser(p))) if p else ""

        request = self.cli.request_from_args(ns)
        after = tuple(absolute(p) for p in (request.model_dir, ns.resume) if p)
        try:
            cfg = setup_cfg(absolute(request.dataset_config_file), absolute(request.config_file), request.flags, request.opts)
        except UserError as exc:
            raise UserError(f"{where}: {exc}") from None
        if cfg.FEATURES.MODE != "cached":
            return after, "", "", ()
        cache = cfg.FEATURES.CACHE_DIR or cache_env
        key = [absolute(cfg.DATASET.ROOT), cfg.DATASET.NAME, cfg.MODEL.BACKBONE.FAMILY, cfg.MODEL.BACKBONE.NAME, cfg.MODEL.BACKBONE.WEIGHTS,
               list(cfg.INPUT.SIZE), cfg.INPUT.INTERPOLATION,
               cfg.INPUT.PRESET, list(cfg.INPUT.PIXEL_MEAN), list(cfg.INPUT.PIXEL_STD), cfg.FEATURES.PREC, absolute(cache)]
        weight = (not ns.eval_only, cfg.DATASET.SUBSAMPLE_CLASSES == "all", int(cfg.DATASET.NUM_SHOTS))
        return after, json.dumps(key), f"{cfg.DATASET.NAME}/{cfg.MODEL.BACKBONE.NAME}", weight


def read_joblist(path: str) -> List[JobSpec]:
    """Parse a job list file (JSON lines; ``-`` reads stdin). Errors name the file and line."""
    try:
        text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()
    except OSError as exc:
        raise UserError(f"cannot read the job list {path}: {exc.strerror or exc}") from None
    specs: List[JobSpec] = []
    for no, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{no}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f'{where}: not valid JSON ({exc.msg}); each line is {{"output_dir": DIR, "cmd": [ARG, ...]}}') from None
        if not isinstance(obj, dict):
            raise UserError(f'{where}: expected a JSON object {{"output_dir": DIR, "cmd": [ARG, ...]}}, got {type(obj).__name__}')
        unknown = sorted(set(obj) - {"output_dir", "cmd", "after"})
        if unknown:
            raise UserError(f"{where}: unknown key(s) {', '.join(unknown)}; a job line has output_dir, cmd and optionally after")
        out, cmd, after = obj.get("output_dir"), obj.get("cmd"), obj.get("after", [])
        if not isinstance(out, str) or not out:
            raise UserError(f"{where}: output_dir must be a non-empty string (the run's folder)")
        if not isinstance(cmd, list) or not cmd or not all(isinstance(a, str) for a in cmd):
            raise UserError(f"{where}: cmd must be a non-empty list of strings (the command that runs the run)")
        if not isinstance(after, list) or not all(isinstance(a, str) and a for a in after):
            raise UserError(f"{where}: after must be a list of run folders")
        specs.append(JobSpec(out, tuple(cmd), tuple(after), where, f"line {no}"))
    return specs


def build_runs(specs: Iterable[JobSpec], cwd: Optional[str] = None, env: Optional[Dict[str, str]] = None) -> List[Run]:
    """Resolve job specs (relative folders against ``cwd``): train.py commands are parsed for their
    dependencies and cache group; the same run listed twice is kept once; two commands for one
    folder are refused. The runs get the CLIP_ADAPTER_* variables of this process, ``env`` on top."""
    cwd = os.path.abspath(cwd or os.getcwd())
    run_env = {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIX)}
    run_env.update(env or {})
    env_items = tuple(sorted(run_env.items()))
    resolver: Optional[Resolver] = None
    runs: List[Run] = []
    seen: Dict[str, JobSpec] = {}
    for spec in specs:
        where = spec.where or spec.output_dir
        out = os.path.abspath(os.path.join(cwd, spec.output_dir))
        if out in seen:
            if seen[out].cmd == spec.cmd:
                continue  # the same run listed twice (two experiments that share a folder): once is enough
            first = seen[out].ref or seen[out].where or "another run"
            raise UserError(f"{where}: {out} is also the output folder of {first}, with another command; two runs cannot share a folder")
        seen[out] = spec
        deps = tuple(os.path.abspath(os.path.join(cwd, a)) for a in spec.after)
        group, label, weight = "", "", ()
        args = train_args(spec.cmd)
        if args is not None:
            resolver = resolver or Resolver()
            more, group, label, weight = resolver(args, cwd, where, run_env.get("CLIP_ADAPTER_FEATURE_CACHE", ""))
            deps += tuple(d for d in more if d not in deps)
        if out in deps:
            raise UserError(f"{where}: the run {out} waits for itself (--model-dir/--resume/after names its own folder)")
        runs.append(Run(out, spec.cmd, cwd, env_items, deps, group, label, weight, spec.output_dir))
    return runs


def load_joblist(path: str, cwd: Optional[str] = None) -> List[Run]:
    """A job list file, resolved (``read_joblist`` then ``build_runs``)."""
    return build_runs(read_joblist(path), cwd)


# ------------------------------------------------------------------------------ plan
@dataclass
class Plan:
    """What is left to do and in which order (``todo`` is sorted by stage, then job-list order)."""

    runs: List[Run]
    finished: List[Run]
    todo: List[Run]
    needs: Dict[str, Tuple[str, ...]]  # run -> unfinished runs of this sweep it needs (--model-dir, after)
    warm_lead: Dict[str, str]  # run -> the first run of its feature-cache group
    stage: Dict[str, int]
    blocked: Dict[str, str]  # run -> why it cannot run in this sweep

    def waits_for(self, d: str) -> Tuple[str, ...]:
        return self.needs.get(d, ()) + ((self.warm_lead[d],) if d in self.warm_lead else ())


def make_plan(runs: Sequence[Run]) -> Plan:
    finished = [r for r in runs if is_finished(r.output_dir)]
    todo = [r for r in runs if not is_finished(r.output_dir)]
    pending = {r.output_dir for r in todo}
    needs: Dict[str, Tuple[str, ...]] = {}
    blocked: Dict[str, str] = {}
    for r in todo:
        needs[r.output_dir] = tuple(d for d in r.after if d in pending)
        missing = [d for d in r.after if d not in pending and not is_finished(d)]
        if missing:
            blocked[r.output_dir] = f"needs {missing[0]}, which is neither finished nor part of this sweep: run it first"
    warm_lead: Dict[str, str] = {}
    warm = {r.group for r in finished if r.group}
    groups: Dict[str, List[Run]] = {}
    for r in todo:
        if r.group and r.group not in warm:
            groups.setdefault(r.group, []).append(r)
    for members in groups.values():
        free = [m for m in members if not needs[m.output_dir] and m.output_dir not in blocked]
        if len(members) < 2 or not free:
            continue
        lead = max(free, key=lambda m: m.weight)  # the first of the largest, in job-list order
        for m in members:
            if m is not lead:
                warm_lead[m.output_dir] = lead.output_dir
    stage: Dict[str, int] = {}

    def stage_of(d: str, path: Tuple[str, ...]) -> int:
        if d in stage:
            return stage[d]
        if d in path:
            raise UserError(f"runs wait for each other in a circle: {' -> '.join(path[path.index(d):] + (d,))}")
        before = needs[d] + ((warm_lead[d],) if d in warm_lead else ())
        stage[d] = max((stage_of(p, path + (d,)) + 1 for p in before), default=0)
        return stage[d]

    for r in todo:
        stage_of(r.output_dir, ())
    position = {r.output_dir: i for i, r in enumerate(todo)}
    todo.sort(key=lambda r: (stage[r.output_dir], position[r.output_dir]))
    return Plan(list(runs), finished, todo, needs, warm_lead, stage, blocked)


def describe_plan(plan: Plan, stream: IO = sys.stdout) -> None:
    """The dry-run view: every run to do with its stage and what it waits for."""
    n_stages = 1 + max(plan.stage.values(), default=-1)
    print(f"sweep plan: {len(plan.runs)} run(s): {len(plan.finished)} finished (skipped), {len(plan.todo)} to run in {n_stages} stage(s)", file=stream)
    rows, leads = [], set(plan.warm_lead.values())
    for r in plan.todo:
        d = r.output_dir
        waits = [os.path.relpath(p, r.cwd) for p in plan.needs[d]]
        if d in plan.warm_lead and not waits:  # (a run with a dependency waits for the warm-up through it)
            waits.append(f"{os.path.relpath(plan.warm_lead[d], r.cwd)} (cache warm-up)")
        note = plan.blocked.get(d, "; ".join(waits) or (f"first of its cache group {r.group_label}" if d in leads else ""))
        rows.append([plan.stage[d], r.label, note])
    if rows:
        print(tabulate(rows, headers=["stage", "run", "waits for"], tablefmt="simple"), file=stream)
