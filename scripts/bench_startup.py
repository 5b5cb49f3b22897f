#!/usr/bin/env python
"""Benchmark: how long a run takes to start, and how long a warm run takes in all.

    python scripts/bench_startup.py            # about a minute on two CPU cores

Start-up is what every run of a sweep pays before any work: importing torch and the project,
reading the config, loading the backbone. This measures it on the offline pair (the smoke data,
the tiny random CLIP), where the work itself is almost nothing, so the figures are the overhead:

* ``import torch``: the floor, a Python process that imports torch and exits;
* command to first log line: ``train.py`` started as a user starts it, until the first line of its
  log reaches the terminal (the config has been read and the run folder set up by then);
* a warm run in all: the same command once its features are cached (a second seed of a sweep
  reads every feature from the cache); once as an evaluation (``--eval-only``), once training.

Each figure is the median of ``--repeats`` fresh processes, measured side by side in this one run.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Tuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def timed_process(cmd: List[str], env: Dict[str, str]) -> Tuple[float, float]:
    """(seconds to the first output line, seconds to exit) of a command; a failure ends the benchmark."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    first = None
    lines = []
    for line in proc.stdout:
        if first is None:
            first = time.perf_counter() - t0
        lines.append(line)
    code = proc.wait()
    total = time.perf_counter() - t0
    if code != 0:
        sys.stderr.write("".join(lines[-20:]))
        raise SystemExit(f"command failed with exit code {code}: {' '.join(cmd)}")
    return (first if first is not None else total), total


def train_cmd(data: str, out: str, *extra: str) -> List[str]:
    return [
        sys.executable, "train.py", "--root", data, "--seed", "1", "--trainer", "CLIP_Adapter",
        "--dataset-config-file", "configs/datasets/smoke.yaml", "--config-file", "configs/trainers/CLIP_Adapter/tiny.yaml",
        "--output-dir", out, *extra,
    ]


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3, help="fresh processes per figure (medians reported)")
    p.add_argument("--workdir", default="", help="data, weights, cache and runs (default: a temporary folder)")
    args = p.parse_args(argv)
    work = args.workdir or tempfile.mkdtemp(prefix="bench_startup_")
    data, cache = os.path.join(work, "data"), os.path.join(work, "cache")
    env = dict(os.environ, CLIP_ADAPTER_WEIGHTS=os.path.join(work, "weights"), TQDM_DISABLE="1", PYTHONUNBUFFERED="1")
    opts = ["DATASET.NUM_SHOTS", "2", "OPTIM.MAX_EPOCH", "2", "FEATURES.CACHE_DIR", cache]

    print(f"machine: {os.cpu_count()} CPU cores visible, load average {os.getloadavg()[0]:.2f} at start; "
          f"offline pair (smoke data, tiny random CLIP); medians of {args.repeats} fresh processes")
    cold_first, cold_total = timed_process(train_cmd(data, os.path.join(work, "cold"), *opts), env)
    print(f"{'cold run (data made, weights made, features encoded):':58s} first log line {cold_first:5.2f} s, in all {cold_total:5.2f} s")

    figures: Dict[str, List[Tuple[float, float]]] = {"torch": [], "eval": [], "train": []}
    for i in range(args.repeats):  # alternating, so load from other jobs touches every figure alike
        figures["torch"].append(timed_process([sys.executable, "-c", "import torch; print('ok')"], env))
        figures["eval"].append(timed_process(train_cmd(data, os.path.join(work, f"eval{i}"), "--eval-only", "--model-dir",
                                                       os.path.join(work, "cold"), *opts), env))
        figures["train"].append(timed_process(train_cmd(data, os.path.join(work, f"train{i}"), *opts), env))

    def med(key: str, which: int) -> float:
        return statistics.median(f[which] for f in figures[key])

    floor = 'python -c "import torch" (the floor):'
    print(f"{floor:58s} {'':23s}in all {med('torch', 1):5.2f} s")
    print(f"{'warm evaluation (--eval-only, features cached):':58s} first log line {med('eval', 0):5.2f} s, in all {med('eval', 1):5.2f} s")
    print(f"{'warm training run (2 epochs, features cached):':58s} first log line {med('train', 0):5.2f} s, in all {med('train', 1):5.2f} s")
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    print(f"command to first log line: {med('train', 0):.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
