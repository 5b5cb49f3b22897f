"""Progress for long loops: a tqdm bar on a terminal, a few plain log lines anywhere else.

Why: a bar redraws itself with carriage returns many times a second. On a terminal that is what
one wants; in a log file (a sweep's ``sweep.log``, SLURM output, CI) every redraw is kept, and one
sweep log was 165 KB of bar updates. So :func:`progress` draws a bar only when its stream is a
terminal; otherwise it writes one ``logging`` line each time another ~10% is done, or when
``interval_s`` seconds have passed since the last line (long loops, unknown totals), plus one at the
end. Every loop of the project that shows progress goes through it.

The returned object supports what the project uses of tqdm: iteration, ``update(n)``,
``set_postfix(**values)``, ``close()`` and ``with``.
"""
from __future__ import annotations

import logging
import sys
import time
from typing import IO, Any, Iterable, Iterator, Optional

log = logging.getLogger(__name__)

STEP = 0.1  # a log line per this fraction of the total
INTERVAL_S = 60.0  # ... or after this many seconds without one


def is_terminal(stream: Optional[IO] = None) -> bool:
    """Whether ``stream`` (default stderr, where tqdm draws) is an interactive terminal."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or not a real file
        return False


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def _amount(n: float, unit: str, scale: bool) -> str:
    if not scale:
        return f"{int(n)}"
    for prefix in ("", "K", "M", "G", "T"):
        if abs(n) < 1024 or prefix == "T":
            return f"{n:.0f}{prefix}" if prefix == "" else f"{n:.1f}{prefix}"
        n /= 1024.0
    return f"{n:.1f}"  # pragma: no cover


class LogProgress:
    """The non-terminal stand-in for a tqdm bar: log lines at each ~10% and every ``interval_s``."""

    def __init__(self, iterable: Optional[Iterable] = None, total: Optional[int] = None, desc: str = "", unit: str = "it",
                 unit_scale: bool = False, initial: int = 0, disable: bool = False, interval_s: float = INTERVAL_S) -> None:
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total, self.desc, self.unit, self.unit_scale = total, desc or "progress", unit, unit_scale
        self.n = initial
        self.disable = disable
        self.interval_s = interval_s
        self.postfix = ""
        self.t0 = self._last_t = time.monotonic()
        self._next_frac = (int(initial / total / STEP) + 1) * STEP if total else STEP
        self._closed = False
        self._logged_n = initial

    def __iter__(self) -> Iterator:
        if self.iterable is None:
            raise TypeError("LogProgress made without an iterable")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __len__(self) -> int:
        return int(self.total or 0)

    def __enter__(self) -> "LogProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def set_postfix(self, refresh: bool = True, **values: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.disable:
            return
        now = time.monotonic()
        crossed = bool(self.total) and self.n / self.total >= self._next_frac - 1e-9 and self.n < self.total
        if crossed or now - self._last_t >= self.interval_s:
            self._emit(now)

    def line(self, now: Optional[float] = None) -> str:
        now = time.monotonic() if now is None else now
        elapsed = now - self.t0
        done = _amount(self.n, self.unit, self.unit_scale)
        if self.total:
            parts = [f"{self.desc}: {done}/{_amount(self.total, self.unit, self.unit_scale)} {self.unit} ({100 * self.n / self.total:.0f}%)",
                     f"{_clock(elapsed)} elapsed"]
            if 0 < self.n < self.total:
                parts.append(f"~{_clock(elapsed * (self.total - self.n) / self.n)} left")
        else:
            parts = [f"{self.desc}: {done} {self.unit}", f"{_clock(elapsed)} elapsed"]
        if self.postfix:
            parts.append(self.postfix)
        return ", ".join(parts)

    def _emit(self, now: float) -> None:
        log.info("%s", self.line(now))
        self._last_t = now
        self._logged_n = self.n
        if self.total:
            while self._next_frac <= self.n / self.total + 1e-9:
                self._next_frac += STEP

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self.disable and self.n != self._logged_n:
            self._emit(time.monotonic())


def progress(iterable: Optional[Iterable] = None, *, total: Optional[int] = None, desc: str = "", unit: str = "it",
             min_total: int = 2, unit_scale: bool = False, initial: int = 0, leave: bool = True,
             disable: bool = False, stream: Optional[IO] = None, interval_s: float = INTERVAL_S):
    """A progress reporter over ``iterable`` (or updated by hand): a tqdm bar on a terminal, log lines elsewhere.

    Nothing is shown when the total is known and below ``min_total`` (a one-batch loop needs no
    progress). ``stream`` is where a bar would be drawn (default stderr); it also decides whether
    this is a terminal.
    """
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    disable = disable or (total is not None and total < min_total)
    if is_terminal(stream):
        from tqdm import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, unit_scale=unit_scale, unit_divisor=1024 if unit_scale else 1000,
                    initial=initial, leave=leave, disable=disable, file=stream if stream is not None else sys.stderr)
    return LogProgress(iterable, total=total, desc=desc, unit=unit, unit_scale=unit_scale, initial=initial,
                       disable=disable, interval_s=interval_s)
