"""Progress of a sweep: finished/running/failed/remaining and an ETA from the runs finished so far.

A tqdm bar on a terminal; one plain status line per event otherwise (logs, CI, SLURM output).
"""
from __future__ import annotations

import sys
import time
from typing import IO, List, Optional

from tqdm import tqdm


class _Bar(tqdm):
    monitor_interval = 0  # no monitor thread: children are started with preexec_fn


def fmt_s(seconds: Optional[float]) -> str:
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
                f" | elapsed {fmt_s(time.time() - self.t0)}, ETA {fmt_s(self.eta())}")

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

