"""Sweeps: runs executed by a local worker pool, on SLURM through submitit, or in the foreground.

``clip-adapter sweep JOBLIST [--launcher local --jobs N | --launcher slurm ...] [--status]`` runs a
job list file; the experiment commands (``clip-adapter experiment ...``, ``scripts/*.sh``) hand their
planned runs over directly (``cli.execute``). It never trains in-process: every run is its own
``train.py`` process, so a run behaves exactly as when it runs in the foreground.

One job per module: ``jobs`` (runs, job lists, the plan: order, dependencies, cache warm-up),
``attempt`` (one run's lock, process, log, failure record), ``foreground``, ``local`` (worker pool),
``slurm`` (submitit), ``status`` (each run's state, exit statuses), ``progress``, ``cli``.
"""
from clip_adapter.app.sweep.attempt import BUSY, FINISHED, lock_held, log_tail, start_attempt, finish_attempt
from clip_adapter.app.sweep.cli import build_parser, check_options, execute, main, split_options
from clip_adapter.app.sweep.jobs import (FAILED_FILE, JOB_FILE, LOCK_FILE, LOG_FILE, RESULTS_FILE, JobSpec, Plan, Run,
                                         build_runs, describe_plan, is_finished, load_joblist, make_plan, read_joblist)
from clip_adapter.app.sweep.slurm import (CLUSTER_DEFAULTS, executor_parameters, load_cluster_config, parse_mem,
                                          parse_time)
from clip_adapter.app.sweep.status import (EXIT_FAILED, EXIT_INCOMPLETE, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, STATES,
                                           StatusReader, print_status)

__all__ = ["BUSY", "FINISHED", "lock_held", "log_tail", "start_attempt", "finish_attempt", "build_parser", "check_options",
           "execute", "main", "split_options", "FAILED_FILE", "JOB_FILE", "LOCK_FILE", "LOG_FILE", "RESULTS_FILE", "JobSpec",
           "Plan", "Run", "build_runs", "describe_plan", "is_finished", "load_joblist", "make_plan", "read_joblist",
           "CLUSTER_DEFAULTS", "executor_parameters", "load_cluster_config", "parse_mem", "parse_time", "EXIT_FAILED",
           "EXIT_INCOMPLETE", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "STATES", "StatusReader", "print_status"]
