"""``clip-adapter COMMAND ...`` (also ``python -m clip_adapter COMMAND ...``): one command, its sub-commands
dispatched to their modules' ``main(argv) -> int``. The table below is the one place that says where
each lives, so moving a tool is a one-line change here; a module is imported only when its command runs.
"""
from __future__ import annotations

import importlib
import sys
from typing import Callable, Dict, List, Optional, Sequence, Tuple

COMMANDS: Dict[str, Tuple[str, str]] = {
    "train": ("clip_adapter.app.train:main", "train or evaluate one run (train.py's CoOp-style flags)"),
    "experiment": ("clip_adapter.app.experiments.cli:main",
                   "plan and run an experiment: main, coop, zeroshot, base2new_train/test, xd_train/test, ablation, reproduce"),
    "sweep": ("clip_adapter.app.sweep.cli:main", "run a job list of runs on a local worker pool or on SLURM; --status"),
    "results": ("clip_adapter.app.results:main", "tables and plots from a folder of runs"),
    "doctor": ("clip_adapter.app.doctor:main", "check a dataset folder and say how to fix what is wrong"),
    "download": ("clip_adapter.app.download:main", "download and prepare the benchmark's datasets"),
}
PROG = "clip-adapter"


def entry(name: str) -> Callable[[Optional[Sequence[str]]], int]:
    module, _, func = COMMANDS[name][0].partition(":")
    return getattr(importlib.import_module(module), func)


def run_command(name: str, argv: Sequence[str]) -> int:
    """Run a sub-command in this process (its exit status; argparse's own exits become statuses)."""
    try:
        return int(entry(name)(list(argv)) or 0)
    except SystemExit as exc:  # --help, or argparse refusing the arguments
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"usage: {PROG} COMMAND [ARGS...]   ({PROG} COMMAND --help for its options)", "", "commands:"]
    lines += [f"  {name:{width}s}  {about}" for name, (_, about) in COMMANDS.items()]
    lines += ["", "Exit status of the commands that run runs (experiment, sweep, and --status): 0 every run finished,",
              "1 some failed, 2 bad input, 3 some not finished yet, 130 interrupted."]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    name = argv[0]
    if name not in COMMANDS:
        import difflib

        close = difflib.get_close_matches(name, list(COMMANDS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        print(f"error: unknown command {name!r}{hint} Commands: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    return run_command(name, argv[1:])
