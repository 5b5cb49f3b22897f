"""The runs one after the other in this terminal's foreground (an experiment without sweep options).

What the scripts always did: a finished run (``results.json``) is skipped, an unfinished one is
handed to the CLI, which resumes it from its newest checkpoint or restarts it, and its output is
on the terminal. Each attempt still goes through the run's lock and, when it fails, leaves
``sweep_failed.json``, so ``--status`` and a sweep started meanwhile see the same state. A failing
run does not stop the others; the runs that need it are skipped, and all are listed at the end.
"""
from __future__ import annotations

import os
import signal
import sys
from typing import IO, Dict, List, Optional

from clip_adapter.app.sweep.attempt import BUSY, FINISHED, Attempt, finish_attempt, start_attempt
from clip_adapter.app.sweep.jobs import Plan, Run, is_finished
from clip_adapter.app.sweep.status import EXIT_FAILED, EXIT_INCOMPLETE, EXIT_INTERRUPTED, EXIT_OK


def _in_order(plan: Plan) -> List[Run]:
    """Every run in the order given, each after the runs it needs."""
    depth: Dict[str, int] = {}

    def depth_of(d: str) -> int:
        if d not in depth:
            depth[d] = 0  # (make_plan refused circles already)
            depth[d] = max((depth_of(p) + 1 for p in plan.needs.get(d, ())), default=0)
        return depth[d]

    position = {r.output_dir: i for i, r in enumerate(plan.runs)}
    return sorted(plan.runs, key=lambda r: (depth_of(r.output_dir), position[r.output_dir]))


def run_in_foreground(plan: Plan, stream: Optional[IO] = None) -> int:
    stream = stream or sys.stdout
    failed: Dict[str, str] = {}  # run -> why
    busy: List[str] = []
    for run in _in_order(plan):
        d = run.output_dir
        if is_finished(d):
            print(f"skip: {run.name} is finished (results.json exists; delete the folder to rerun it)", file=stream, flush=True)
            continue
        if d in plan.blocked:
            failed[d] = plan.blocked[d]
            print(f"SKIPPED {run.name}: {plan.blocked[d]}", file=stream, flush=True)
            continue
        bad = [p for p in plan.needs.get(d, ()) if p in failed or p in busy]
        if bad:
            failed[d] = f"its dependency {bad[0]} did not finish"
            print(f"SKIPPED {run.name}: {failed[d]}", file=stream, flush=True)
            continue
        state = "unfinished: resuming or restarting" if os.path.isdir(d) else ""
        att = start_attempt(run, terminal=True)
        if att == BUSY:
            busy.append(d)
            print(f"busy: {run.name} is being run by another process (its lock is held); left to it", file=stream, flush=True)
            continue
        if att == FINISHED:
            print(f"skip: {run.name} was finished by another process", file=stream, flush=True)
            continue
        assert isinstance(att, Attempt)
        print(f"==> {run.name}" + (f" ({state})" if state else ""), file=stream, flush=True)
        try:
            rc = att.poll() if att.proc is None else att.proc.wait()
        except KeyboardInterrupt:
            # Ctrl-C reached the run too (same process group): let it write its resume point.
            try:
                if att.proc is not None:
                    att.proc.wait(30)
            except BaseException:  # a second Ctrl-C, or a child that does not stop: stop it
                att.stop()
            finish_attempt(att, -signal.SIGINT, interrupted=True)
            print(f"interrupted: {run.name} stays unfinished and is resumed by the next call", file=sys.stderr)
            return EXIT_INTERRUPTED
        if rc == 130:  # the run itself was interrupted (its own Ctrl-C)
            finish_attempt(att, rc, interrupted=True)
            return EXIT_INTERRUPTED
        if finish_attempt(att, rc) != FINISHED:
            failed[d] = f"exit status {rc}; its log: {att.log_path}"
            print(f"FAILED  {run.name} ({failed[d]})", file=stream, flush=True)
    if failed:
        print(f"\n{len(failed)} run(s) did not finish (fix the cause and run the same command again; finished runs are skipped):", file=stream)
        for run in plan.runs:
            if run.output_dir in failed:
                print(f"  {run.name}: {failed[run.output_dir]}", file=stream)
        return EXIT_FAILED
    return EXIT_INCOMPLETE if busy else EXIT_OK
