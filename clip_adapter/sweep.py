"""Sweeps: a script's runs as a job list, run by a local worker pool or on SLURM through submitit.

``python -m clip_adapter.sweep JOBLIST [--launcher local --jobs N | --launcher slurm ...] [--status]``

Why: the paper's comparison is hundreds of independent ``train.py`` runs. The scripts describe them
(``scripts/common.sh``'s ``run_one`` appends one JSON line per run, ``{"output_dir": DIR, "cmd":
[python, train.py, ...]}``; an optional ``"after": [DIR, ...]`` names runs that must finish first)
and this module decides where and in which order they run. It never trains in-process: every run
is its own ``train.py`` process, so a run behaves exactly as when a script runs it in the foreground.

A run's state lives in its folder, so every sweep, script and person sees the same thing:

- finished: ``results.json`` exists (the CLI writes it last, atomically). Never run again.
- running:  the run's lock ``DIR/.sweep.lock`` is held (a local worker or a cluster job holds it
  while ``train.py`` runs), or its SLURM job is RUNNING.
- failed:   ``DIR/sweep_failed.json`` (exit status, time, host; the output is ``DIR/sweep.log``),
  or its SLURM job ended FAILED, TIMEOUT, OUT_OF_MEMORY, CANCELLED, ... Retried on the next call.
- pending:  anything else: queued on SLURM, not started, or interrupted (unfinished: the CLI
  resumes it from its newest checkpoint on the next call).

Order. A run whose command has ``--model-dir D`` or ``--resume D`` (base-to-novel and
cross-dataset tests) waits for the run that writes ``D``. And a cache warm-up: runs that read the
same frozen image features (same dataset root and name, backbone, test-time transform, feature
precision and cache) form a group; the run of each group that encodes the most (a training run on
all classes with the most shots) goes first and fills the shared feature cache with the test/val
features and its training views, and the rest of the group fans out after it. The cache's
per-namespace file locks (``clip_adapter/features.py``) already stop two processes from encoding the
same image twice; the warm-up stops N-1 workers from idling on those locks while one encodes (they
take other groups' first runs meanwhile). A group that has a finished run is warm already.

Locks. A run's lock is taken without waiting before its process starts and ``results.json`` is
checked again under it, so two workers, or two sweeps started by mistake, never run the same run:
the second finds the lock held, counts the run as running and waits for it.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import math
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import IO, Dict, List, Optional, Sequence, Tuple, Union

import submitit
import yaml
from filelock import FileLock, Timeout
from tabulate import tabulate
from tqdm import tqdm

from clip_adapter.errors import UserError
from clip_adapter.utils import atomic_write_json

log = logging.getLogger(__name__)

RESULTS_FILE = "results.json"
LOCK_FILE = ".sweep.lock"
LOG_FILE = "sweep.log"
FAILED_FILE = "sweep_failed.json"
JOB_FILE = "sweep_job.json"
JOBLIST_ENV = "CLIP_ADAPTER_JOBLIST"
DEFAULT_CLUSTER_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "cluster.yaml")

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INCOMPLETE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
POLL_S = 0.2
TAIL_LINES = 15

# SLURM job states (sacct), by what they mean for a run.
SLURM_QUEUED = {"PENDING", "REQUEUED", "CONFIGURING", "RESIZING", "SUSPENDED", "REQUEUE_HOLD", "REQUEUE_FED"}
SLURM_RUNNING = {"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING"}
SLURM_FAILED = {"FAILED", "TIMEOUT", "OUT_OF_MEMORY", "CANCELLED", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "DEADLINE", "REVOKED"}


# ------------------------------------------------------------------------------ runs
@dataclass(frozen=True)
class Run:
    """One line of a job list, resolved: absolute folder, the command, and what it waits for."""

    output_dir: str
    cmd: Tuple[str, ...]
    cwd: str
    env: Tuple[Tuple[str, str], ...] = ()  # CLIP_ADAPTER_* as the sweep saw them (cache, weights)
    after: Tuple[str, ...] = ()  # run folders that must be finished first (absolute)
    group: str = ""  # feature-cache group ("" = none: not a cached-features train.py run)
    group_label: str = ""
    weight: Tuple = ()  # how much of the group's encoding the run does (the largest goes first)

    @property
    def label(self) -> str:
        rel = os.path.relpath(self.output_dir, self.cwd)
        return self.output_dir if rel.startswith("..") else rel

    def path(self, name: str) -> str:
        return os.path.join(self.output_dir, name)


def is_finished(folder: str) -> bool:
    return os.path.isfile(os.path.join(folder, RESULTS_FILE))


def _train_args(cmd: Sequence[str]) -> Optional[List[str]]:
    """The train.py arguments of a command that runs the CLI, else None (an opaque command)."""
    if len(cmd) >= 2 and os.path.basename(cmd[1]) == "train.py":
        return list(cmd[2:])
    if len(cmd) >= 3 and list(cmd[1:3]) == ["-m", "clip_adapter.app.train"]:
        return list(cmd[3:])
    if cmd and os.path.basename(cmd[0]) == "clip-adapter-train":
        return list(cmd[1:])
    return None


class _Resolver:
    """Reads a train.py command the way the CLI will (its own parser and ``setup_cfg``), for the
    run's dependencies and its feature-cache group. A bad command fails here, before any run starts."""

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

    def __call__(self, args: List[str], cwd: str, where: str) -> Tuple[Tuple[str, ...], str, str, Tuple]:
        from clip_adapter.config import setup_cfg

        try:
            ns = self.parser.parse_args(args)
        except UserError as exc:
            raise UserError(f"{where}: the train.py arguments do not parse: {exc}") from None

        def absolute(p: str) -> str:
            return os.path.abspath(os.path.join(cwd, os.path.expanduser(p))) if p else ""

        after = tuple(absolute(p) for p in (ns.model_dir, ns.resume) if p)
        try:
            cfg = setup_cfg(absolute(ns.dataset_config_file), absolute(ns.config_file), self.cli._cli_overrides(ns), ns.opts or [])
        except UserError as exc:
            raise UserError(f"{where}: {exc}") from None
        if cfg.FEATURES.MODE != "cached":
            return after, "", "", ()
        cache = cfg.FEATURES.CACHE_DIR or os.environ.get("CLIP_ADAPTER_FEATURE_CACHE", "")
        key = [absolute(cfg.DATASET.ROOT), cfg.DATASET.NAME, cfg.MODEL.BACKBONE.FAMILY, cfg.MODEL.BACKBONE.NAME, cfg.MODEL.BACKBONE.WEIGHTS,
               list(cfg.INPUT.SIZE), cfg.INPUT.INTERPOLATION,
               cfg.INPUT.PRESET, list(cfg.INPUT.PIXEL_MEAN), list(cfg.INPUT.PIXEL_STD), cfg.FEATURES.PREC, absolute(cache)]
        weight = (not ns.eval_only, cfg.DATASET.SUBSAMPLE_CLASSES == "all", int(cfg.DATASET.NUM_SHOTS))
        return after, json.dumps(key), f"{cfg.DATASET.NAME}/{cfg.MODEL.BACKBONE.NAME}", weight


def load_joblist(path: str, cwd: Optional[str] = None) -> List[Run]:
    """Parse a job list (JSON lines; ``-`` reads stdin). Errors name the file and line."""
    cwd = os.path.abspath(cwd or os.getcwd())
    env = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("CLIP_ADAPTER_") and k != JOBLIST_ENV))
    try:
        text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()
    except OSError as exc:
        raise UserError(f"cannot read the job list {path}: {exc.strerror or exc}") from None
    resolver: Optional[_Resolver] = None
    runs: List[Run] = []
    seen: Dict[str, Tuple[int, Tuple[str, ...]]] = {}
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
        out = os.path.abspath(os.path.join(cwd, out))
        cmd_t = tuple(cmd)
        if out in seen:
            if seen[out][1] == cmd_t:
                continue  # the same run listed twice (two scripts that share a folder): once is enough
            raise UserError(f"{where}: {out} is also the output folder of line {seen[out][0]}, with another command; two runs cannot share a folder")
        seen[out] = (no, cmd_t)
        deps = tuple(os.path.abspath(os.path.join(cwd, a)) for a in after)
        group, label, weight = "", "", ()
        args = _train_args(cmd)
        if args is not None:
            resolver = resolver or _Resolver()
            more, group, label, weight = resolver(args, cwd, where)
            deps += tuple(d for d in more if d not in deps)
        if out in deps:
            raise UserError(f"{where}: the run {out} waits for itself (--model-dir/--resume/after names its own folder)")
        runs.append(Run(out, cmd_t, cwd, env, deps, group, label, weight))
    return runs


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


# ---------------------------------------------------------------------- one attempt
_PRCTL = None


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the child gets SIGTERM if the process that holds its lock dies, so no run outlives its lock."""
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _load_prctl() -> None:
    global _PRCTL
    if _PRCTL is None and sys.platform.startswith("linux"):
        try:
            import ctypes

            _PRCTL = ctypes.CDLL(None, use_errno=True).prctl
        except (OSError, AttributeError):
            _PRCTL = None


def _now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def lock_held(folder: str) -> bool:
    """Whether another process holds the run's lock (without creating anything)."""
    path = os.path.join(folder, LOCK_FILE)
    if not os.path.exists(path):
        return False
    lock = FileLock(path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return True
    except OSError:
        return False
    lock.release()
    return False


@dataclass
class Attempt:
    """A started run: its lock (held), its log file and its train.py process."""

    run: Run
    lock: FileLock
    logf: IO
    proc: Optional[subprocess.Popen]
    started: float
    slot: int = -1
    start_error: Optional[int] = None

    def poll(self) -> Optional[int]:
        return self.start_error if self.proc is None else self.proc.poll()

    def stop(self, grace_s: float = 10.0) -> None:
        """Terminate the process (then kill it after ``grace_s``); atomic writes keep the folder consistent."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


FINISHED, BUSY = "finished", "busy"


def start_attempt(run: Run, extra_env: Optional[Dict[str, str]] = None, wait: bool = False, note: str = "") -> Union[Attempt, str]:
    """Take the run's lock and start its command, output appended to ``DIR/sweep.log``.

    Returns BUSY when another process holds the lock (``wait=False``), FINISHED when the run turned
    out to be finished once the lock was held.
    """
    os.makedirs(run.output_dir, exist_ok=True)
    lock = FileLock(run.path(LOCK_FILE))
    try:
        lock.acquire(timeout=-1 if wait else 0)
    except Timeout:
        return BUSY
    try:
        if is_finished(run.output_dir):
            lock.release()
            return FINISHED
        try:
            os.unlink(run.path(FAILED_FILE))
        except FileNotFoundError:
            pass
        env = dict(os.environ)
        env.update(run.env)
        env.update(extra_env or {})
        env.pop(JOBLIST_ENV, None)
        env["PYTHONUNBUFFERED"] = "1"
        logf = open(run.path(LOG_FILE), "a", encoding="utf-8")
        logf.write(f"===== {_now()} sweep attempt on {socket.gethostname()} (pid {os.getpid()}{note}) =====\n$ {shlex.join(run.cmd)}\n")
        logf.flush()
        _load_prctl()
        try:
            proc = subprocess.Popen(list(run.cmd), cwd=run.cwd, env=env, stdin=subprocess.DEVNULL, stdout=logf,
                                    stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        except OSError as exc:
            logf.write(f"could not start the command: {exc}\n")
            return Attempt(run, lock, logf, None, time.time(), start_error=127)
        return Attempt(run, lock, logf, proc, time.time())
    except BaseException:
        lock.release()
        raise


def finish_attempt(att: Attempt, rc: int, interrupted: bool = False) -> str:
    """Close the attempt: FINISHED, "interrupted" (left unfinished, no failure recorded) or "failed"."""
    run = att.run
    try:
        seconds = time.time() - att.started
        att.logf.write(f"===== exit status {rc} after {seconds:.1f}s{' (interrupted)' if interrupted else ''} =====\n")
        att.logf.close()
        if is_finished(run.output_dir):
            return FINISHED
        if interrupted:
            return "interrupted"
        why = f"exit status {rc}" if rc else "exit status 0 without writing results.json"
        atomic_write_json(run.path(FAILED_FILE), {"returncode": rc, "reason": why, "host": socket.gethostname(), "at": _now(),
                                                  "seconds": round(seconds, 1), "log": run.path(LOG_FILE), "cmd": list(run.cmd)})
        return "failed"
    finally:
        att.lock.release()


def log_tail(run: Run, lines: int = TAIL_LINES, extra: Optional[str] = None) -> str:
    """The last lines of the run's sweep.log (else of ``extra``, e.g. submitit's stderr file)."""
    for path in (run.path(LOG_FILE), extra):
        if path and os.path.isfile(path):
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read()[-20000:]
            return "\n".join(text.rstrip("\n").splitlines()[-lines:])
    return "(no log)"


# ------------------------------------------------------------------------- progress
class _Bar(tqdm):
    monitor_interval = 0  # no monitor thread: children are started with preexec_fn


def _fmt_s(seconds: Optional[float]) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else f"{seconds // 60}:{seconds % 60:02d}"


class Progress:
    """Finished/running/failed/remaining and an ETA from the durations of runs finished so far.

    A tqdm bar on a terminal; one plain status line per event otherwise (logs, CI, SLURM output).
    """

    def __init__(self, total: int, workers: int, stream: IO = sys.stdout) -> None:
        self.total, self.workers, self.stream = total, max(1, workers), stream
        self.t0 = time.time()
        self.durations: List[float] = []
        self.counts = {"finished": 0, "running": 0, "failed": 0, "remaining": total}
        self.running_since: List[float] = []
        self.bar = _Bar(total=total, unit="run", leave=True, file=sys.stderr, bar_format="sweep |{bar:20}| {desc}") if sys.stderr.isatty() else None
        self._last = 0.0

    def eta(self) -> Optional[float]:
        if not self.durations:
            return None
        mean = sum(self.durations) / len(self.durations)
        now = time.time()
        work = self.counts["remaining"] * mean + sum(max(0.0, mean - (now - s)) for s in self.running_since)
        return work / self.workers

    def line(self) -> str:
        c = self.counts
        return (f"{c['finished']}/{self.total} finished, {c['running']} running, {c['failed']} failed, {c['remaining']} remaining"
                f" | elapsed {_fmt_s(time.time() - self.t0)}, ETA {_fmt_s(self.eta())}")

    def update(self, finished: int, running_since: List[float], failed: int, remaining: int, event: str = "") -> None:
        self.counts = {"finished": finished, "running": len(running_since), "failed": failed, "remaining": remaining}
        self.running_since = running_since
        if self.bar is not None:
            if event:
                self.bar.write(event, file=self.stream)
            if event or time.time() - self._last > 1.0:
                self.bar.n = finished + failed
                self.bar.set_description_str(self.line(), refresh=True)
                self._last = time.time()
        elif event:
            print(f"{event}\n  [{self.line()}]", file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ----------------------------------------------------------------------- local pool
def detect_gpus() -> List[str]:
    """GPU ids for the workers: CUDA_VISIBLE_DEVICES when set, else what nvidia-smi lists, else none.

    (nvidia-smi rather than torch: the sweep itself never imports torch, so it starts in a second.)
    """
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and g.strip() != "-1"]
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [ln.strip() for ln in out.stdout.splitlines() if ln.strip().isdigit()] if out.returncode == 0 else []


@dataclass
class Outcome:
    finished_here: List[str] = field(default_factory=list)
    finished_elsewhere: List[str] = field(default_factory=list)
    failed: Dict[str, str] = field(default_factory=dict)  # run -> reason
    interrupted: List[str] = field(default_factory=list)


class LocalPool:
    """N worker slots, each one train.py process at a time, pinned round-robin to the GPUs.

    The scheduling loop is single-threaded: it polls its child processes, starts the next ready runs
    (in plan order) in free slots and keeps the progress line current.
    """

    def __init__(self, plan: Plan, jobs: int, gpus: Sequence[str], stream: IO = sys.stdout) -> None:
        self.plan, self.jobs, self.stream = plan, jobs, stream
        self.slot_gpu = [gpus[i % len(gpus)] if gpus else None for i in range(jobs)]
        # CPU only: split the cores between the workers instead of letting each take them all.
        self.threads = None
        if not gpus and jobs > 1 and "OMP_NUM_THREADS" not in os.environ:
            self.threads = str(max(1, (os.cpu_count() or 1) // jobs))

    def _env(self, slot: int) -> Dict[str, str]:
        env = {}
        if self.slot_gpu[slot] is not None:
            env["CUDA_VISIBLE_DEVICES"] = self.slot_gpu[slot]
        if self.threads:
            env["OMP_NUM_THREADS"] = self.threads
        return env

    def run(self) -> Outcome:
        plan, out = self.plan, Outcome()
        by_dir = {r.output_dir: r for r in plan.todo}
        waiting = [r for r in plan.todo if r.output_dir not in plan.blocked]
        for d, why in plan.blocked.items():
            out.failed[d] = why
        free = list(range(self.jobs))
        running: Dict[str, Attempt] = {}
        elsewhere: Dict[str, float] = {}  # run -> when we found its lock held by another process
        progress = Progress(len(plan.todo), self.jobs, self.stream)

        def done(d: str) -> bool:
            return d in out.finished_here or d in out.finished_elsewhere or is_finished(d)

        def report(event: str = "") -> None:
            since = [a.started for a in running.values()] + list(elsewhere.values())
            n_done = len(out.finished_here) + len(out.finished_elsewhere)
            progress.update(n_done, since, len(out.failed), len(waiting), event)

        def ready(r: Run) -> Tuple[bool, str]:
            for d in plan.needs[r.output_dir]:
                if d in out.failed:
                    return False, f"its dependency {by_dir[d].label} failed"
                if not done(d):
                    return False, ""
            lead = plan.warm_lead.get(r.output_dir)
            return (lead is None or done(lead) or lead in out.failed), ""

        for d, why in plan.blocked.items():
            report(f"BLOCKED {by_dir[d].label}: {why}")
        try:
            while waiting or running or elsewhere:
                for d, att in list(running.items()):
                    rc = att.poll()
                    if rc is None:
                        continue
                    del running[d]
                    free.append(att.slot)
                    state = finish_attempt(att, rc)
                    if state == FINISHED:
                        out.finished_here.append(d)
                        progress.durations.append(time.time() - att.started)
                        report(f"done    {att.run.label} ({time.time() - att.started:.0f}s)")
                    else:
                        out.failed[d] = f"exit status {rc}"
                        report(f"FAILED  {att.run.label} (exit status {rc}; log: {att.run.path(LOG_FILE)})")
                for d, seen_at in list(elsewhere.items()):
                    if is_finished(d):
                        del elsewhere[d]
                        out.finished_elsewhere.append(d)
                        report(f"done    {by_dir[d].label} (by another process)")
                    elif not lock_held(d):
                        del elsewhere[d]
                        marker = by_dir[d].path(FAILED_FILE)
                        if os.path.isfile(marker) and os.path.getmtime(marker) >= seen_at - 1:
                            out.failed[d] = "failed in another process"
                            report(f"FAILED  {by_dir[d].label} (in another process; log: {by_dir[d].path(LOG_FILE)})")
                        else:
                            waiting.insert(0, by_dir[d])  # stopped elsewhere, unfinished: ours to run
                i = 0
                while free and i < len(waiting):
                    r = waiting[i]
                    ok, why = ready(r)
                    if why:
                        waiting.pop(i)
                        out.failed[r.output_dir] = why
                        report(f"SKIPPED {r.label}: {why}")
                        continue
                    if not ok:
                        i += 1
                        continue
                    waiting.pop(i)
                    slot = free.pop(0)
                    gpu = self.slot_gpu[slot]
                    att = start_attempt(r, self._env(slot), note=f", gpu {gpu}" if gpu is not None else "")
                    if att == BUSY:
                        free.insert(0, slot)
                        elsewhere[r.output_dir] = time.time()
                        report(f"busy    {r.label}: another process is running it; waiting for it")
                    elif att == FINISHED:
                        free.insert(0, slot)
                        out.finished_elsewhere.append(r.output_dir)
                        report(f"done    {r.label} (by another process)")
                    else:
                        att.slot = slot
                        running[r.output_dir] = att
                        report(f"start   {r.label}" + (f" [gpu {gpu}]" if gpu is not None else ""))
                report()
                time.sleep(POLL_S)
        except KeyboardInterrupt:
            for d, att in running.items():
                att.stop()
                rc = att.poll()
                state = finish_attempt(att, -signal.SIGTERM if rc is None else rc, interrupted=True)
                (out.finished_here if state == FINISHED else out.interrupted).append(d)
            raise _Interrupted(out) from None
        finally:
            progress.close()
        return out


class _Interrupted(Exception):
    def __init__(self, outcome: Outcome) -> None:
        super().__init__("interrupted")
        self.outcome = outcome


# ------------------------------------------------------------------ status of runs
@dataclass
class RunStatus:
    state: str  # finished | running | pending | failed
    detail: str
    job_id: str = ""  # the cluster job that has it queued or running
    log: Optional[str] = None  # for failed runs: submitit's stderr file, when the run never wrote sweep.log


def _read_json(path: str) -> Optional[dict]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


class StatusReader:
    """Each run's state from its folder, and for runs submitted to SLURM from sacct (one call for all)."""

    def __init__(self, runs: Sequence[Run]) -> None:
        self.records = {r.output_dir: rec for r in runs if (rec := _read_json(r.path(JOB_FILE)))}
        self.slurm: Dict[str, submitit.SlurmJob] = {}
        for d, rec in self.records.items():
            if rec.get("cluster") == "slurm" and rec.get("job_id") and rec.get("folder"):
                self.slurm[d] = submitit.SlurmJob(folder=rec["folder"], job_id=str(rec["job_id"]))
        self.refresh()

    def refresh(self) -> None:
        if self.slurm:
            submitit.SlurmJob.watcher.update()

    def slurm_state(self, d: str) -> str:
        job = self.slurm.get(d)
        return "" if job is None else job.watcher.get_state(job.job_id, mode="cache").split(" ")[0].upper()

    def __call__(self, run: Run) -> RunStatus:
        d = run.output_dir
        if is_finished(d):
            res = _read_json(run.path(RESULTS_FILE)) or {}
            acc, wall = res.get("accuracy"), res.get("wall_time_s")
            return RunStatus("finished", ", ".join(x for x in (f"accuracy {acc:.2f}%" if isinstance(acc, (int, float)) else "",
                                                                 f"{wall:.0f}s" if isinstance(wall, (int, float)) else "") if x))
        rec = self.records.get(d) or {}
        job_id = str(rec.get("job_id", ""))
        if lock_held(d):
            return RunStatus("running", "lock held" + (f", job {job_id}" if job_id else ""), job_id)
        state = self.slurm_state(d)
        if state in SLURM_QUEUED:
            return RunStatus("pending", f"queued: slurm job {job_id} ({state})", job_id)
        if state in SLURM_RUNNING:
            return RunStatus("running", f"slurm job {job_id} ({state})", job_id)
        failed = _read_json(run.path(FAILED_FILE))
        if state in SLURM_FAILED:
            job = self.slurm[d]
            why = failed.get("reason") if failed else ""
            return RunStatus("failed", f"slurm job {job_id} {state}" + (f" ({why})" if why else ""), log=str(job.paths.stderr))
        if failed is not None:
            return RunStatus("failed", f"{failed.get('reason', 'failed')} at {failed.get('at', '?')} on {failed.get('host', '?')}")
        if os.path.isfile(run.path("log.txt")):
            return RunStatus("pending", "unfinished: resumed from its newest checkpoint next time")
        return RunStatus("pending", "not started")


STATES = ("finished", "running", "pending", "failed")


def print_status(runs: Sequence[Run], reader: StatusReader, stream: IO = sys.stdout, only_failed: bool = False) -> Dict[str, int]:
    """A table of every run's state (or just the failed ones) and the tail of each failed run's log."""
    statuses = [(r, reader(r)) for r in runs]
    counts = {s: sum(1 for _, st in statuses if st.state == s) for s in STATES}
    if not only_failed:
        rows = [[r.label, st.state, st.detail] for r, st in statuses]
        print(tabulate(rows, headers=["run", "state", "detail"], tablefmt="simple"), file=stream)
        print(f"{len(runs)} run(s): " + ", ".join(f"{counts[s]} {s}" for s in STATES), file=stream)
    for r, st in statuses:
        if st.state == "failed":
            print(f"\n--- failed: {r.label} ({st.detail}); last lines of its log:", file=stream)
            print(log_tail(r, extra=st.log), file=stream)
    if counts["failed"] and not only_failed:
        print("\nfailed runs are run again by the next call without --status", file=stream)
    return counts


# ----------------------------------------------------------------------- submitit
class RunJob(submitit.helpers.Checkpointable):
    """What a cluster job executes: one run, through the same lock and log as a local worker.

    Checkpointable: when SLURM preempts the job or its time runs out, submitit requeues it and the
    CLI resumes the run from its newest checkpoint.
    """

    def __init__(self, run: Run) -> None:
        self.run = run

    def __call__(self) -> str:
        return execute(self.run)


def execute(run: Run) -> str:
    """Run one run to its end in this process's foreground (a cluster job's body).

    Waits while a run it needs, or this run itself, is held by another process; fails with a clear
    message when a needed run is not finished.
    """
    for dep in run.after:
        while not is_finished(dep) and lock_held(dep):
            time.sleep(5)
        if not is_finished(dep):
            raise RuntimeError(f"{run.output_dir} needs {dep}, which is not finished (failed or never run); "
                               "it is submitted again, after that run, by the next sweep call")
    att = start_attempt(run, wait=True, note=f", job {os.environ.get('SLURM_JOB_ID') or os.environ.get('SUBMITIT_LOCAL_JOB_ID', '?')}")
    if att == FINISHED:
        return "finished by another process"
    assert isinstance(att, Attempt)
    try:
        rc = att.poll() if att.proc is None else att.proc.wait()
    except BaseException:  # requeue (SystemExit from submitit's signal handler), cancellation
        att.stop()
        finish_attempt(att, -1, interrupted=True)
        raise
    if finish_attempt(att, rc) != FINISHED:
        raise RuntimeError(f"{run.output_dir}: the run failed (exit status {rc}); last lines of {run.path(LOG_FILE)}:\n{log_tail(run)}")
    return "finished"


TIME_RE = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


def parse_time(text: Union[str, int]) -> int:
    """SLURM's time formats (minutes, MM:SS, HH:MM:SS, D-HH[:MM[:SS]]) -> whole minutes."""
    s = str(text).strip()
    m = TIME_RE.match(s)
    if not m:
        raise UserError(f"--time {s!r}: use minutes (240), HH:MM:SS (4:00:00) or D-HH:MM:SS (1-00:00:00), as sbatch does")
    days, a, b, c = m.groups()
    if days is not None:  # D-HH[:MM[:SS]]
        minutes = int(days) * 1440 + int(a) * 60 + int(b or 0) + int(c or 0) / 60
    elif c is not None:  # HH:MM:SS
        minutes = int(a) * 60 + int(b) + int(c) / 60
    elif b is not None:  # MM:SS
        minutes = int(a) + int(b) / 60
    else:
        minutes = int(a)
    if minutes <= 0:
        raise UserError(f"--time {s!r} must be positive")
    return int(math.ceil(minutes))


def parse_mem(text: Union[str, int, float]) -> float:
    """sbatch's --mem values (32G, 32GB, 32000M, 1T; a bare number is megabytes, as in sbatch) -> GB."""
    s = str(text).strip().upper()
    m = re.match(r"^(\d+(?:\.\d+)?)\s*([KMGT]?)B?$", s)
    if not m or float(m.group(1)) <= 0:
        raise UserError(f"--mem {text!r}: use a size such as 32G, 64000M or 1T (a bare number is megabytes, as in sbatch)")
    scale = {"K": 1 / 1024 ** 2, "M": 1 / 1024, "": 1 / 1024, "G": 1, "T": 1024}[m.group(2)]
    return float(m.group(1)) * scale


# Every key of a cluster config file; the command-line options of the same names override them.
CLUSTER_DEFAULTS = {
    "cluster": "slurm",  # submitit executor: slurm (sbatch), or local (this machine, to try the path)
    "partition": None,  # None: the cluster's default partition
    "time": "4:00:00",
    "gpus_per_node": 1,
    "cpus_per_task": 8,
    "mem": "32G",
    "array_parallelism": 64,
    "account": None,
    "qos": None,
    "constraint": None,
    "setup": [],  # shell lines run in each job before the run (module load ..., source .venv/bin/activate)
    "additional_parameters": {},  # any other sbatch option, e.g. {exclude: "node[01-02]"}
}


def load_cluster_config(path: Optional[str]) -> Dict:
    """Defaults <- the YAML file (``--cluster-config``, else configs/cluster.yaml when present)."""
    conf = dict(CLUSTER_DEFAULTS)
    if path is None:
        path = DEFAULT_CLUSTER_CONFIG if os.path.isfile(DEFAULT_CLUSTER_CONFIG) else None
        if path is None:
            return conf
    elif not os.path.isfile(path):
        raise UserError(f"cluster config {path} not found: pass an existing YAML file to --cluster-config (example: configs/cluster.yaml)")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise UserError(f"malformed YAML in {path}{f' (line {mark.line + 1})' if mark else ''}: fix the syntax there") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} must hold a mapping of cluster settings (keys: {', '.join(CLUSTER_DEFAULTS)})")
    unknown = sorted(set(data) - set(CLUSTER_DEFAULTS))
    if unknown:
        raise UserError(f"unknown key(s) {', '.join(map(str, unknown))} in {path}; known: {', '.join(CLUSTER_DEFAULTS)} "
                        "(other sbatch options go under additional_parameters)")
    if not isinstance(data.get("setup", []), list) or not isinstance(data.get("additional_parameters", {}), dict):
        raise UserError(f"{path}: setup must be a list of shell lines and additional_parameters a mapping")
    conf.update({k: v for k, v in data.items() if v is not None})
    conf["_source"] = path
    return conf


def executor_parameters(conf: Dict, dependency: str = "") -> Dict:
    """The cluster settings as submitit AutoExecutor parameters (slurm_* ones are ignored by the local executor)."""
    params = {
        "name": "clip_adapter",
        "timeout_min": parse_time(conf["time"]),
        "gpus_per_node": int(conf["gpus_per_node"]),
        "cpus_per_task": int(conf["cpus_per_task"]),
        "mem_gb": parse_mem(conf["mem"]),
        "slurm_array_parallelism": int(conf["array_parallelism"]),
    }
    for key in ("partition", "account", "qos", "constraint"):
        if conf.get(key):
            params[f"slurm_{key}"] = str(conf[key])
    if conf.get("setup"):
        params["slurm_setup"] = [str(x) for x in conf["setup"]]
    if conf.get("additional_parameters"):
        params["slurm_additional_parameters"] = dict(conf["additional_parameters"])
    if dependency:
        params["slurm_dependency"] = dependency
    return params


def make_executor(conf: Dict, folder: str, dependency: str = "") -> submitit.AutoExecutor:
    try:
        ex = submitit.AutoExecutor(folder=folder, cluster=conf["cluster"])
    except RuntimeError as exc:
        raise UserError(f"--launcher slurm: {exc} Run the sweep on the cluster's login node (sbatch and srun on PATH), "
                        "or pass --cluster local to try the SLURM path on this machine") from None
    ex.update_parameters(**executor_parameters(conf, dependency))
    return ex


class Submitter:
    """Submit the plan's runs that are neither finished nor queued/running, as job arrays in stage order.

    On SLURM, a run that waits for others is submitted with ``--dependency=afterany:<their jobs>``
    (its job then checks that they finished, and fails clearly if one did not); submitit's local
    executor has no dependencies, so there each stage is submitted once the previous one has ended.
    With ``follow`` (local executor, or --wait) it then stays until every job has ended.
    """

    def __init__(self, plan: Plan, conf: Dict, folder: str, follow: bool, stream: IO = sys.stdout) -> None:
        self.plan, self.conf, self.folder, self.follow, self.stream = plan, conf, os.path.abspath(folder), follow, stream
        self.slurm = conf["cluster"] == "slurm"
        self.jobs: Dict[str, submitit.Job] = {}  # run -> job submitted by this call
        self.by_dir = {r.output_dir: r for r in plan.todo}
        self.ended: set = set()
        self.progress: Optional[Progress] = None

    def submit(self) -> Tuple[int, Dict[str, str]]:
        """Returns (number submitted, run -> job id of every run queued or running now)."""
        plan = self.plan
        reader = StatusReader(plan.todo)
        states = {r.output_dir: reader(r) for r in plan.todo}
        in_flight = {d: st.job_id for d, st in states.items() if st.state == "running" or (st.state == "pending" and st.job_id)}
        to_submit = [r for r in plan.todo if r.output_dir not in in_flight and r.output_dir not in plan.blocked]
        for d, why in plan.blocked.items():
            print(f"BLOCKED {self.by_dir[d].label}: {why}", file=self.stream)
        for d in in_flight:
            print(f"already {states[d].state}: {self.by_dir[d].label} ({states[d].detail})", file=self.stream)
        if self.follow and to_submit:
            self.progress = Progress(len(to_submit), len(to_submit), self.stream)
        for stage in sorted({plan.stage[r.output_dir] for r in to_submit}):
            batches: Dict[Tuple[str, ...], List[Run]] = {}
            for r in to_submit:
                if plan.stage[r.output_dir] == stage:
                    ids = tuple(sorted({in_flight[d] for d in plan.waits_for(r.output_dir) if in_flight.get(d)}))
                    batches.setdefault(ids if self.slurm else (), []).append(r)
            if not self.slurm and stage > 0:
                self.wait()  # the local executor has no job dependencies
            for ids, runs in batches.items():
                self._submit_batch(runs, ids, in_flight)
        return len(to_submit), in_flight

    def _submit_batch(self, runs: List[Run], ids: Tuple[str, ...], in_flight: Dict[str, str]) -> None:
        ex = make_executor(self.conf, self.folder, "afterany:" + ":".join(ids) if ids else "")
        with ex.batch():
            jobs = [ex.submit(RunJob(r)) for r in runs]
        for r, job in zip(runs, jobs):
            self.jobs[r.output_dir] = job
            in_flight[r.output_dir] = job.job_id
            atomic_write_json(r.path(JOB_FILE), {"cluster": self.conf["cluster"], "job_id": job.job_id,
                                                 "folder": self.folder, "submitted_at": _now()})
        if self.slurm and len(jobs) > 1:
            what = f"job array {jobs[0].job_id.split('_')[0]} ({len(jobs)} runs)"
        else:
            what = "job " + ", ".join(j.job_id for j in jobs)
        after = f" after {', '.join(ids)}" if ids else ""
        names = ", ".join(r.label for r in runs[:3]) + (f" and {len(runs) - 3} more" if len(runs) > 3 else "")
        print(f"submitted {what}{after}: {names}", file=self.stream, flush=True)

    def wait(self) -> None:
        """Wait until every job submitted so far has ended."""
        last_update = 0.0
        while True:
            if self.slurm and time.time() - last_update > 30:
                submitit.SlurmJob.watcher.update()
                last_update = time.time()
            if self.slurm:
                open_jobs = [j for j in self.jobs.values() if not j.watcher.is_done(j.job_id, mode="cache")]
            else:
                open_jobs = [j for j in self.jobs.values() if not j.done()]
            self.report()
            if not open_jobs:
                return
            time.sleep(5.0 if self.slurm else 0.5)

    def report(self) -> None:
        """Progress of this call's jobs, from their run folders; one event line per run that ended."""
        if self.progress is None:
            return
        events: List[str] = []
        finished, failed, running = 0, 0, []
        for d in self.jobs:
            run = self.by_dir[d]
            if is_finished(d):
                finished += 1
                if d not in self.ended:
                    self.ended.add(d)
                    wall = (_read_json(run.path(RESULTS_FILE)) or {}).get("wall_time_s")
                    if isinstance(wall, (int, float)):
                        self.progress.durations.append(float(wall))
                    events.append(f"done    {run.label}")
            elif os.path.isfile(run.path(FAILED_FILE)):
                failed += 1
                if d not in self.ended:
                    self.ended.add(d)
                    events.append(f"FAILED  {run.label} (log: {run.path(LOG_FILE)})")
            elif lock_held(d):
                running.append(os.path.getmtime(run.path(LOCK_FILE)))
        remaining = max(0, self.progress.total - finished - failed - len(running))
        for event in events or [""]:
            self.progress.update(finished, running, failed, remaining, event)


# ----------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m clip_adapter.sweep",
        description="Execute a job list of train.py runs (JSON lines written by scripts/common.sh) on a local worker pool "
                    "or on SLURM through submitit. Finished runs (results.json) are skipped; unfinished ones are resumed.",
    )
    p.add_argument("joblist", nargs="?", help="job list file (JSON lines; - reads stdin)")
    p.add_argument("--launcher", choices=("local", "slurm"), default=None, help="local worker pool (default) or SLURM via submitit")
    p.add_argument("--jobs", type=int, default=None, help="local: number of worker processes (default 1); each gets one GPU, round-robin, when there are GPUs")
    p.add_argument("--gpus", default=None, help="local: GPU ids to use, e.g. 0,1 (default: CUDA_VISIBLE_DEVICES, else every GPU nvidia-smi lists)")
    p.add_argument("--status", action="store_true", help="show each run's state (finished/running/pending/failed) and the log tails of failed runs; runs nothing")
    p.add_argument("--dry-run", action="store_true", help="show the plan (stages, dependencies, cache warm-up) and run nothing")
    p.add_argument("--wait", action="store_true", help="slurm: stay until every submitted job has ended, with progress")
    p.add_argument("--check", action="store_true", help="only check these options (scripts call this before collecting runs)")
    g = p.add_argument_group("slurm (defaults: --cluster-config, else configs/cluster.yaml)")
    g.add_argument("--cluster-config", default=None, help="YAML file of cluster defaults (keys: %s)" % ", ".join(CLUSTER_DEFAULTS))
    g.add_argument("--cluster", choices=("slurm", "local"), default=None, help="submitit executor: slurm, or local to try the slurm path on this machine")
    g.add_argument("--partition", default=None)
    g.add_argument("--time", default=None, help="time limit per run: minutes, HH:MM:SS or D-HH:MM:SS")
    g.add_argument("--gpus-per-node", type=int, default=None)
    g.add_argument("--cpus-per-task", type=int, default=None)
    g.add_argument("--mem", default=None, help="memory per run, e.g. 32G")
    g.add_argument("--array-parallelism", type=int, default=None, help="most runs of one job array running at once")
    g.add_argument("--account", default=None)
    g.add_argument("--qos", default=None)
    g.add_argument("--submitit-dir", default=None, help="where submitit keeps job scripts and logs (default: <common folder of the runs>/submitit)")
    return p


SLURM_FLAGS = ("cluster_config", "cluster", "partition", "time", "gpus_per_node", "cpus_per_task", "mem", "array_parallelism", "account", "qos")


def check_options(args: argparse.Namespace) -> Optional[Dict]:
    """Validate the option combination; returns the cluster settings for --launcher slurm."""
    launcher = args.launcher or "local"
    if launcher == "local":
        given = [f"--{k.replace('_', '-')}" for k in SLURM_FLAGS if getattr(args, k) is not None]
        if given:
            raise UserError(f"{', '.join(given)} apply to --launcher slurm; add --launcher slurm, or drop them for the local pool")
        if args.wait:
            raise UserError("--wait applies to --launcher slurm (the local pool always runs in the foreground)")
        if args.jobs is not None and args.jobs < 1:
            raise UserError(f"--jobs must be a positive number of worker processes, got {args.jobs}")
        if args.gpus is not None and not re.fullmatch(r"\d+(,\d+)*", args.gpus.replace(" ", "")):
            raise UserError(f"--gpus {args.gpus!r}: give GPU ids separated by commas, e.g. --gpus 0,1")
        return None
    if args.jobs is not None or args.gpus is not None:
        raise UserError("--jobs/--gpus apply to --launcher local; on SLURM use --array-parallelism (runs at once) and --gpus-per-node")
    conf = load_cluster_config(args.cluster_config)
    for key in SLURM_FLAGS[1:]:
        if getattr(args, key) is not None:
            conf[key] = getattr(args, key)
    for key in ("gpus_per_node", "cpus_per_task", "array_parallelism"):
        try:
            value = int(conf[key])
        except (TypeError, ValueError):
            value = -1
        if value < (0 if key == "gpus_per_node" else 1):
            raise UserError(f"{key.replace('_', '-')} must be a {'non-negative' if key == 'gpus_per_node' else 'positive'} integer, got {conf[key]!r}")
    if conf["cluster"] not in ("slurm", "local"):
        raise UserError(f"cluster must be slurm or local, got {conf['cluster']!r} (in {conf.get('_source', 'the options')})")
    parse_time(conf["time"])
    parse_mem(conf["mem"])
    return conf


def _default_submitit_dir(runs: Sequence[Run]) -> str:
    parents = [os.path.dirname(r.output_dir) for r in runs] or [os.getcwd()]
    return os.path.join(os.path.commonpath(parents), "submitit")


def _summary(outcome: Outcome, plan: Plan, seconds: float, stream: IO) -> None:
    parts = [f"{len(outcome.finished_here)} run(s) finished here"]
    if outcome.finished_elsewhere:
        parts.append(f"{len(outcome.finished_elsewhere)} by another process")
    parts.append(f"{len(plan.finished)} were finished before")
    parts.append(f"{len(outcome.failed)} failed")
    if outcome.interrupted:
        parts.append(f"{len(outcome.interrupted)} interrupted")
    print(f"sweep: {', '.join(parts)} ({_fmt_s(seconds)} wall)", file=stream)


def main(argv: Optional[List[str]] = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    args = build_parser().parse_args(argv)
    stream = sys.stdout
    try:
        conf = check_options(args)
        if args.check:
            return EXIT_OK
        if not args.joblist:
            raise UserError("give the job list file (JSON lines written by the scripts, or - for stdin)")
        runs = load_joblist(args.joblist)
        plan = make_plan(runs)
        if args.dry_run:
            describe_plan(plan, stream)
            return EXIT_OK
        if args.status:
            counts = print_status(runs, StatusReader(runs), stream)
            return EXIT_OK if counts["finished"] == len(runs) else (EXIT_FAILED if counts["failed"] else EXIT_INCOMPLETE)
        if not plan.todo:
            print(f"sweep: all {len(runs)} run(s) are finished", file=stream)
            return EXIT_OK
        t0 = time.time()
        if conf is None:
            gpus = [g.strip() for g in args.gpus.split(",")] if args.gpus else detect_gpus()
            jobs = args.jobs or 1
            where = f"GPUs {', '.join(gpus)}" if gpus else "CPU"
            print(f"sweep: {len(plan.todo)} run(s) to do ({len(plan.finished)} finished), {jobs} worker(s) on {where}", file=stream, flush=True)
            try:
                outcome = LocalPool(plan, jobs, gpus, stream).run()
            except _Interrupted as exc:
                _summary(exc.outcome, plan, time.time() - t0, stream)
                print("interrupted: the stopped runs stay unfinished (no results.json) and are resumed by the next call", file=sys.stderr)
                return EXIT_INTERRUPTED
            _summary(outcome, plan, time.time() - t0, stream)
            if outcome.failed:
                failed = [r for r in plan.todo if r.output_dir in outcome.failed]
                print_status(failed, StatusReader(failed), stream, only_failed=True)
                return EXIT_FAILED
            return EXIT_OK
        folder = args.submitit_dir or _default_submitit_dir(runs)
        follow = conf["cluster"] == "local" or args.wait
        sub = Submitter(plan, conf, folder, follow, stream)
        try:
            submitted, in_flight = sub.submit()
            if follow:
                sub.wait()
        except KeyboardInterrupt:
            if conf["cluster"] == "local":
                for job in sub.jobs.values():
                    job.cancel(check=False)
                print("interrupted: local jobs cancelled; their runs stay unfinished and are resumed by the next call", file=sys.stderr)
            else:
                print("stopped waiting: the jobs keep running on the cluster (follow them with --status)", file=sys.stderr)
            return EXIT_INTERRUPTED
        finally:
            if sub.progress is not None:
                sub.progress.close()
        if follow:
            counts = print_status(plan.todo, StatusReader(plan.todo), stream, only_failed=True)
            print(f"sweep: {counts['finished']} of {len(plan.todo)} run(s) finished, {counts['failed']} failed, "
                  f"{counts['pending'] + counts['running']} not done ({_fmt_s(time.time() - t0)} wall)", file=stream)
            if counts["finished"] == len(plan.todo):
                return EXIT_OK
            return EXIT_FAILED if counts["failed"] or plan.blocked else EXIT_INCOMPLETE
        print(f"sweep: {submitted} run(s) submitted, {len(in_flight) - submitted} already queued or running, {len(plan.finished)} finished"
              f"{f', {len(plan.blocked)} blocked' if plan.blocked else ''}. Follow them with the same command plus --status.", file=stream)
        return EXIT_INCOMPLETE if in_flight else (EXIT_FAILED if plan.blocked else EXIT_OK)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
