"""``clip-adapter sweep JOBLIST [--launcher local --jobs N | --launcher slurm ...] [--status]``, and the
options every experiment command shares (``add_options``/``split_options``/``execute``), so the
experiment planner hands its runs to the sweep directly and the options exist in one place.

Exit statuses (every command that runs runs, and ``--status``): 0 every run finished, 1 some failed
(or are blocked), 2 bad input, 3 some not finished yet (submitted to SLURM and still queued or
running, or found unfinished by ``--status``; none failed), 130 interrupted.
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import time
from typing import IO, Dict, List, Optional, Sequence, Tuple

from clip_adapter.app.sweep.foreground import run_in_foreground
from clip_adapter.app.sweep.jobs import Plan, Run, describe_plan, load_joblist, make_plan
from clip_adapter.app.sweep.local import Interrupted, LocalPool, Outcome, detect_gpus
from clip_adapter.app.sweep.progress import fmt_s
from clip_adapter.app.sweep.slurm import CLUSTER_DEFAULTS, Submitter, load_cluster_config, parse_mem, parse_time
from clip_adapter.app.sweep.status import (EXIT_FAILED, EXIT_INCOMPLETE, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, StatusReader,
                                           exit_status, print_status)
from clip_adapter.errors import UserError

SLURM_FLAGS = ("cluster_config", "cluster", "partition", "time", "gpus_per_node", "cpus_per_task", "mem", "array_parallelism", "account", "qos")
# Options that do not by themselves ask for a sweep (an experiment without the others runs in the foreground).
NOT_A_SWEEP = ("status", "dry_run", "submitit_dir")


def add_options(p: argparse.ArgumentParser) -> None:
    """The sweep options, on the sweep's own parser and on every experiment command's."""
    p.add_argument("--launcher", choices=("local", "slurm"), default=None, help="local worker pool (default) or SLURM via submitit")
    p.add_argument("--jobs", type=int, default=None, help="local: number of worker processes (default 1); each gets one GPU, round-robin, when there are GPUs")
    p.add_argument("--gpus", default=None, help="local: GPU ids to use, e.g. 0,1 (default: CUDA_VISIBLE_DEVICES, else every GPU nvidia-smi lists)")
    p.add_argument("--status", action="store_true", help="show each run's state (finished/running/pending/failed) and the log tails of failed runs; "
                                                         "runs nothing (exit 0 all finished, 1 some failed, 3 some not finished yet)")
    p.add_argument("--dry-run", action="store_true", help="show the plan (stages, dependencies, cache warm-up) and run nothing")
    p.add_argument("--wait", action="store_true", help="slurm: stay until every submitted job has ended, with progress")
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="clip-adapter sweep",
        description="Execute a job list of runs (JSON lines: {\"output_dir\": DIR, \"cmd\": [ARG, ...], \"after\": [DIR, ...]}) on a local "
                    "worker pool or on SLURM through submitit. Finished runs (results.json) are skipped; unfinished ones are resumed. "
                    "The experiment commands (clip-adapter experiment ..., scripts/*.sh) take the same options and hand their runs over directly.",
    )
    p.add_argument("joblist", nargs="?", help="job list file (JSON lines; - reads stdin)")
    add_options(p)
    p.add_argument("--check", action="store_true", help="only check these options")
    return p


def option_parser() -> argparse.ArgumentParser:
    """A parser of the sweep options alone (what the experiment commands parse them with)."""
    p = argparse.ArgumentParser(add_help=False, prog="sweep options")
    add_options(p)
    return p


def split_options(argv: Sequence[str]) -> Tuple[List[str], List[str]]:
    """(sweep options, everything else in order) from a command line: the sweep's options may come
    anywhere before a lone ``--``, which ends them (what follows is passed through untouched)."""
    takes_value = {}
    for action in option_parser()._actions:
        for flag in action.option_strings:
            takes_value[flag] = action.nargs != 0
    ours: List[str] = []
    rest: List[str] = []
    i = 0
    argv = list(argv)
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            rest += argv[i:]
            break
        flag = arg.split("=", 1)[0]
        if flag in takes_value:
            if "=" in arg or not takes_value[flag]:
                ours.append(arg)
                i += 1
                continue
            if i + 1 >= len(argv) or not argv[i + 1] or argv[i + 1].startswith("--"):
                raise UserError(f"{arg} needs a value (e.g. --launcher local --jobs 4, or --launcher slurm --partition gpu)")
            ours += [arg, argv[i + 1]]
            i += 2
            continue
        rest.append(arg)
        i += 1
    return ours, rest


def parse_options(argv: Sequence[str]) -> argparse.Namespace:
    """The sweep options of ``split_options``, parsed; a bad one is a UserError, not a usage exit."""
    p = option_parser()

    def refuse(message: str) -> None:
        raise UserError(message)

    p.error = refuse  # type: ignore[method-assign]
    return p.parse_args(list(argv))


def wants_sweep(args: argparse.Namespace) -> bool:
    """Whether options other than --status/--dry-run/--submitit-dir were given (else: the foreground)."""
    return any(getattr(args, k) not in (None, False) for k in vars(args) if k not in NOT_A_SWEEP)


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
        if args.gpus is not None and not re.fullmatch(r"\d+([,\s]+\d+)*", args.gpus.strip()):
            raise UserError(f"--gpus {args.gpus!r}: give GPU ids separated by commas or spaces, e.g. --gpus 0,1")
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
    print(f"sweep: {', '.join(parts)} ({fmt_s(seconds)} wall)", file=stream)


def execute(runs: Sequence[Run], args: argparse.Namespace, conf: Optional[Dict], stream: Optional[IO] = None) -> int:
    """Run (or show) ``runs`` as the options say: --status, --dry-run, the foreground (no sweep
    option), the local pool or SLURM. Returns the exit status (see the module docstring)."""
    stream = stream or sys.stdout
    if args.status:
        counts = print_status(runs, StatusReader(runs), stream)
        return exit_status(counts, len(runs))
    plan = make_plan(runs)
    if args.dry_run:
        describe_plan(plan, stream)
        return EXIT_OK
    if not wants_sweep(args):
        return run_in_foreground(plan, stream)
    if not plan.todo:
        print(f"sweep: all {len(runs)} run(s) are finished", file=stream)
        return EXIT_OK
    t0 = time.time()
    if conf is None:
        gpus = re.split(r"[,\s]+", args.gpus.strip()) if args.gpus else detect_gpus()
        jobs = args.jobs or 1
        where = f"GPUs {', '.join(gpus)}" if gpus else "CPU"
        print(f"sweep: {len(plan.todo)} run(s) to do ({len(plan.finished)} finished), {jobs} worker(s) on {where}", file=stream, flush=True)
        try:
            outcome = LocalPool(plan, jobs, gpus, stream).run()
        except Interrupted as exc:
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
              f"{counts['pending'] + counts['running']} not done ({fmt_s(time.time() - t0)} wall)", file=stream)
        if counts["finished"] == len(plan.todo):
            return EXIT_OK
        return EXIT_FAILED if counts["failed"] or plan.blocked else EXIT_INCOMPLETE
    print(f"sweep: {submitted} run(s) submitted, {len(in_flight) - submitted} already queued or running, {len(plan.finished)} finished"
          f"{f', {len(plan.blocked)} blocked' if plan.blocked else ''}. Follow them with the same command plus --status.", file=stream)
    return EXIT_INCOMPLETE if in_flight else (EXIT_FAILED if plan.blocked else EXIT_OK)


def main(argv: Optional[List[str]] = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    args = build_parser().parse_args(argv)
    try:
        conf = check_options(args)
        if args.check:
            return EXIT_OK
        if not args.joblist:
            raise UserError("give the job list file (JSON lines, or - for stdin)")
        runs = load_joblist(args.joblist)
        if not wants_sweep(args) and not args.status and not args.dry_run:
            args.jobs = 1  # a job list is always run by the pool (output in each run's sweep.log)
        return execute(runs, args, conf)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
