"""The local worker pool: N slots, each one train.py process at a time, pinned round-robin to the GPUs."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import IO, Dict, List, Sequence, Tuple

from clip_adapter.app.sweep.attempt import BUSY, FINISHED, Attempt, finish_attempt, lock_held, start_attempt
from clip_adapter.app.sweep.jobs import FAILED_FILE, LOG_FILE, Plan, Run, is_finished
from clip_adapter.app.sweep.progress import Progress

POLL_S = 0.2


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
            raise Interrupted(out) from None
        finally:
            progress.close()
        return out


class Interrupted(Exception):
    def __init__(self, outcome: Outcome) -> None:
        super().__init__("interrupted")
        self.outcome = outcome

