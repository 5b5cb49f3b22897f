"""Each run's state, from its folder (and for runs submitted to SLURM, from sacct in one call).

- finished: ``results.json`` exists (the CLI writes it last, atomically). Never run again.
- running:  the run's lock ``DIR/.sweep.lock`` is held, or its SLURM job is RUNNING.
- failed:   ``DIR/sweep_failed.json`` (exit status, time, host, log), or its SLURM job ended FAILED,
  TIMEOUT, OUT_OF_MEMORY, CANCELLED, ... Retried on the next call.
- pending:  anything else: queued on SLURM, not started, or interrupted (the CLI resumes it from its
  newest checkpoint on the next call).
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import IO, Dict, Sequence, Tuple

import submitit
from tabulate import tabulate

from clip_adapter.app.sweep.attempt import RUN_LOG, lock_held, log_tail, read_json
from clip_adapter.app.sweep.jobs import FAILED_FILE, JOB_FILE, LOG_FILE, RESULTS_FILE, Run, is_finished

# SLURM job states (sacct), by what they mean for a run.
SLURM_QUEUED = {"PENDING", "REQUEUED", "CONFIGURING", "RESIZING", "SUSPENDED", "REQUEUE_HOLD", "REQUEUE_FED"}
SLURM_RUNNING = {"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING"}
SLURM_FAILED = {"FAILED", "TIMEOUT", "OUT_OF_MEMORY", "CANCELLED", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "DEADLINE", "REVOKED"}
STATES = ("finished", "running", "pending", "failed")

# Exit statuses of --status (and of every command that runs runs): all finished, some failed,
# bad input, some not finished yet (none failed), interrupted.
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INCOMPLETE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


@dataclass
class RunStatus:
    state: str  # finished | running | pending | failed
    detail: str
    job_id: str = ""  # the cluster job that has it queued or running
    logs: Tuple[str, ...] = ()  # for failed runs: where its output is, in the order to look


def exit_status(counts: Dict[str, int], total: int) -> int:
    """EXIT_OK when every run is finished, EXIT_FAILED when some failed, else EXIT_INCOMPLETE."""
    if counts["finished"] == total:
        return EXIT_OK
    return EXIT_FAILED if counts["failed"] else EXIT_INCOMPLETE


class StatusReader:
    """Each run's state from its folder, and for runs submitted to SLURM from sacct (one call for all)."""

    def __init__(self, runs: Sequence[Run]) -> None:
        self.records = {r.output_dir: rec for r in runs if (rec := read_json(r.path(JOB_FILE)))}
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
            res = read_json(run.path(RESULTS_FILE)) or {}
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
        failed = read_json(run.path(FAILED_FILE))
        if state in SLURM_FAILED:
            job = self.slurm[d]
            why = failed.get("reason") if failed else ""
            return RunStatus("failed", f"slurm job {job_id} {state}" + (f" ({why})" if why else ""),
                             logs=(run.path(LOG_FILE), str(job.paths.stderr)))
        if failed is not None:
            return RunStatus("failed", f"{failed.get('reason', 'failed')} at {failed.get('at', '?')} on {failed.get('host', '?')}",
                             logs=tuple(p for p in (failed.get("log"),) if isinstance(p, str)))
        if os.path.isfile(run.path(RUN_LOG)):
            return RunStatus("pending", "unfinished: resumed from its newest checkpoint next time")
        return RunStatus("pending", "not started")


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
            print(log_tail(r, candidates=st.logs), file=stream)
    if counts["failed"] and not only_failed:
        print("\nfailed runs are run again by the next call without --status", file=stream)
    return counts

