"""One attempt at a run: its lock, its process, its log and, when it fails, the failure record.

Shared by every executor (the foreground, the local pool, a cluster job) so a run is started and
recorded the same way wherever it runs. The lock ``DIR/.sweep.lock`` is taken without waiting
before the process starts and ``results.json`` is checked again under it, so two workers, or two
sweeps started by mistake, never run the same run.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import IO, Dict, Optional, Sequence, Union

from filelock import FileLock, Timeout

from clip_adapter.app.sweep.jobs import FAILED_FILE, LOCK_FILE, LOG_FILE, Run, is_finished
from clip_adapter.utils import atomic_write_json

TAIL_LINES = 15
RUN_LOG = "log.txt"  # the CLI's own log in the run folder
FINISHED, BUSY = "finished", "busy"

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


def now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def read_json(path: str) -> Optional[dict]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


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
    """A started run: its lock (held), its log file (None: output on the terminal) and its process."""

    run: Run
    lock: FileLock
    logf: Optional[IO]
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

    @property
    def log_path(self) -> str:
        """Where this attempt's output is: ``sweep.log``, or the CLI's ``log.txt`` for a terminal attempt."""
        return self.run.path(LOG_FILE if self.logf is not None else RUN_LOG)


def start_attempt(run: Run, extra_env: Optional[Dict[str, str]] = None, wait: bool = False, note: str = "",
                  terminal: bool = False) -> Union[Attempt, str]:
    """Take the run's lock and start its command, output appended to ``DIR/sweep.log`` (or, with
    ``terminal``, on this process's stdout/stderr).

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
        logf = None
        if not terminal:
            env["PYTHONUNBUFFERED"] = "1"
            logf = open(run.path(LOG_FILE), "a", encoding="utf-8")
            logf.write(f"===== {now()} sweep attempt on {socket.gethostname()} (pid {os.getpid()}{note}) =====\n$ {shlex.join(run.cmd)}\n")
            logf.flush()
        else:
            sys.stdout.flush()
            sys.stderr.flush()
        _load_prctl()
        try:
            proc = subprocess.Popen(list(run.cmd), cwd=run.cwd, env=env, stdin=subprocess.DEVNULL if logf else None,
                                    stdout=logf, stderr=subprocess.STDOUT if logf else None, preexec_fn=_die_with_parent)
        except OSError as exc:
            print(f"could not start the command: {exc}", file=logf or sys.stderr)
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
        if att.logf is not None:
            att.logf.write(f"===== exit status {rc} after {seconds:.1f}s{' (interrupted)' if interrupted else ''} =====\n")
            att.logf.close()
        if is_finished(run.output_dir):
            return FINISHED
        if interrupted:
            return "interrupted"
        why = f"exit status {rc}" if rc else "exit status 0 without writing results.json"
        atomic_write_json(run.path(FAILED_FILE), {"returncode": rc, "reason": why, "host": socket.gethostname(), "at": now(),
                                                  "seconds": round(seconds, 1), "log": att.log_path, "cmd": list(run.cmd)})
        return "failed"
    finally:
        att.lock.release()


def log_tail(run: Run, lines: int = TAIL_LINES, candidates: Sequence[Optional[str]] = ()) -> str:
    """The last lines of the first log that exists: ``candidates`` in order, else the run's sweep.log."""
    for path in (*candidates, run.path(LOG_FILE)):
        if path and os.path.isfile(path):
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read()[-20000:]
            return "\n".join(text.rstrip("\n").splitlines()[-lines:])
    return "(no log)"
