"""SLURM through submitit: cluster settings, job arrays in stage order, and what a cluster job runs.

On SLURM, a run that waits for others is submitted with ``--dependency=afterany:<their jobs>`` (its
job then checks that they finished, and fails clearly if one did not); submitit's local executor
(``--cluster local``) has no dependencies, so there each stage is submitted once the previous one
has ended. A cluster job runs its run through the same lock and log as a local worker.
"""
from __future__ import annotations

import math
import os
import re
import sys
import time
from typing import IO, Dict, List, Optional, Tuple, Union

import submitit
import yaml

from clip_adapter.app.sweep.attempt import FINISHED, Attempt, finish_attempt, lock_held, log_tail, now, read_json, start_attempt
from clip_adapter.app.sweep.jobs import FAILED_FILE, JOB_FILE, LOCK_FILE, LOG_FILE, RESULTS_FILE, Plan, Run, is_finished
from clip_adapter.app.sweep.progress import Progress
from clip_adapter.app.sweep.status import StatusReader
from clip_adapter.errors import UserError
from clip_adapter.plugins import REPO_CONFIGS
from clip_adapter.utils import atomic_write_json

DEFAULT_CLUSTER_CONFIG = os.path.join(REPO_CONFIGS, "cluster.yaml")


class RunJob(submitit.helpers.Checkpointable):
    """What a cluster job executes: one run, through the same lock and log as a local worker.

    Checkpointable: when SLURM preempts the job or its time runs out, submitit requeues it and the
    CLI resumes the run from its newest checkpoint.
    """

    def __init__(self, run: Run) -> None:
        self.run = run

    def __call__(self) -> str:
        return execute(self.run)


def execute(run: Run) -> str:
    """Run one run to its end in this process's foreground (a cluster job's body).

    Waits while a run it needs, or this run itself, is held by another process; fails with a clear
    message when a needed run is not finished.
    """
    for dep in run.after:
        while not is_finished(dep) and lock_held(dep):
            time.sleep(5)
        if not is_finished(dep):
            raise RuntimeError(f"{run.output_dir} needs {dep}, which is not finished (failed or never run); "
                               "it is submitted again, after that run, by the next sweep call")
    att = start_attempt(run, wait=True, note=f", job {os.environ.get('SLURM_JOB_ID') or os.environ.get('SUBMITIT_LOCAL_JOB_ID', '?')}")
    if att == FINISHED:
        return "finished by another process"
    assert isinstance(att, Attempt)
    try:
        rc = att.poll() if att.proc is None else att.proc.wait()
    except BaseException:  # requeue (SystemExit from submitit's signal handler), cancellation
        att.stop()
        finish_attempt(att, -1, interrupted=True)
        raise
    if finish_attempt(att, rc) != FINISHED:
        raise RuntimeError(f"{run.output_dir}: the run failed (exit status {rc}); last lines of {run.path(LOG_FILE)}:\n{log_tail(run)}")
    return "finished"


TIME_RE = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


def parse_time(text: Union[str, int]) -> int:
    """SLURM's time formats (minutes, MM:SS, HH:MM:SS, D-HH[:MM[:SS]]) -> whole minutes."""
    s = str(text).strip()
    m = TIME_RE.match(s)
    if not m:
        raise UserError(f"--time {s!r}: use minutes (240), HH:MM:SS (4:00:00) or D-HH:MM:SS (1-00:00:00), as sbatch does")
    days, a, b, c = m.groups()
    if days is not None:  # D-HH[:MM[:SS]]
        minutes = int(days) * 1440 + int(a) * 60 + int(b or 0) + int(c or 0) / 60
    elif c is not None:  # HH:MM:SS
        minutes = int(a) * 60 + int(b) + int(c) / 60
    elif b is not None:  # MM:SS
        minutes = int(a) + int(b) / 60
    else:
        minutes = int(a)
    if minutes <= 0:
        raise UserError(f"--time {s!r} must be positive")
    return int(math.ceil(minutes))


def parse_mem(text: Union[str, int, float]) -> float:
    """sbatch's --mem values (32G, 32GB, 32000M, 1T; a bare number is megabytes, as in sbatch) -> GB."""
    s = str(text).strip().upper()
    m = re.match(r"^(\d+(?:\.\d+)?)\s*([KMGT]?)B?$", s)
    if not m or float(m.group(1)) <= 0:
        raise UserError(f"--mem {text!r}: use a size such as 32G, 64000M or 1T (a bare number is megabytes, as in sbatch)")
    scale = {"K": 1 / 1024 ** 2, "M": 1 / 1024, "": 1 / 1024, "G": 1, "T": 1024}[m.group(2)]
    return float(m.group(1)) * scale


# Every key of a cluster config file; the command-line options of the same names override them.
CLUSTER_DEFAULTS = {
    "cluster": "slurm",  # submitit executor: slurm (sbatch), or local (this machine, to try the path)
    "partition": None,  # None: the cluster's default partition
    "time": "4:00:00",
    "gpus_per_node": 1,
    "cpus_per_task": 8,
    "mem": "32G",
    "array_parallelism": 64,
    "account": None,
    "qos": None,
    "constraint": None,
    "setup": [],  # shell lines run in each job before the run (module load ..., source .venv/bin/activate)
    "additional_parameters": {},  # any other sbatch option, e.g. {exclude: "node[01-02]"}
}


def load_cluster_config(path: Optional[str]) -> Dict:
    """Defaults <- the YAML file (``--cluster-config``, else configs/cluster.yaml when present)."""
    conf = dict(CLUSTER_DEFAULTS)
    if path is None:
        path = DEFAULT_CLUSTER_CONFIG if os.path.isfile(DEFAULT_CLUSTER_CONFIG) else None
        if path is None:
            return conf
    elif not os.path.isfile(path):
        raise UserError(f"cluster config {path} not found: pass an existing YAML file to --cluster-config (example: configs/cluster.yaml)")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise UserError(f"malformed YAML in {path}{f' (line {mark.line + 1})' if mark else ''}: fix the syntax there") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} must hold a mapping of cluster settings (keys: {', '.join(CLUSTER_DEFAULTS)})")
    unknown = sorted(set(data) - set(CLUSTER_DEFAULTS))
    if unknown:
        raise UserError(f"unknown key(s) {', '.join(map(str, unknown))} in {path}; known: {', '.join(CLUSTER_DEFAULTS)} "
                        "(other sbatch options go under additional_parameters)")
    if not isinstance(data.get("setup", []), list) or not isinstance(data.get("additional_parameters", {}), dict):
        raise UserError(f"{path}: setup must be a list of shell lines and additional_parameters a mapping")
    conf.update({k: v for k, v in data.items() if v is not None})
    conf["_source"] = path
    return conf


def executor_parameters(conf: Dict, dependency: str = "") -> Dict:
    """The cluster settings as submitit AutoExecutor parameters (slurm_* ones are ignored by the local executor)."""
    params = {
        "name": "clip_adapter",
        "timeout_min": parse_time(conf["time"]),
        "gpus_per_node": int(conf["gpus_per_node"]),
        "cpus_per_task": int(conf["cpus_per_task"]),
        "mem_gb": parse_mem(conf["mem"]),
        "slurm_array_parallelism": int(conf["array_parallelism"]),
    }
    for key in ("partition", "account", "qos", "constraint"):
        if conf.get(key):
            params[f"slurm_{key}"] = str(conf[key])
    if conf.get("setup"):
        params["slurm_setup"] = [str(x) for x in conf["setup"]]
    if conf.get("additional_parameters"):
        params["slurm_additional_parameters"] = dict(conf["additional_parameters"])
    if dependency:
        params["slurm_dependency"] = dependency
    return params


def make_executor(conf: Dict, folder: str, dependency: str = "") -> submitit.AutoExecutor:
    try:
        ex = submitit.AutoExecutor(folder=folder, cluster=conf["cluster"])
    except RuntimeError as exc:
        raise UserError(f"--launcher slurm: {exc} Run the sweep on the cluster's login node (sbatch and srun on PATH), "
                        "or pass --cluster local to try the SLURM path on this machine") from None
    ex.update_parameters(**executor_parameters(conf, dependency))
    return ex


class Submitter:
    """Submit the plan's runs that are neither finished nor queued/running, as job arrays in stage order.

    On SLURM, a run that waits for others is submitted with ``--dependency=afterany:<their jobs>``
    (its job then checks that they finished, and fails clearly if one did not); submitit's local
    executor has no dependencies, so there each stage is submitted once the previous one has ended.
    With ``follow`` (local executor, or --wait) it then stays until every job has ended.
    """

    def __init__(self, plan: Plan, conf: Dict, folder: str, follow: bool, stream: IO = sys.stdout) -> None:
        self.plan, self.conf, self.folder, self.follow, self.stream = plan, conf, os.path.abspath(folder), follow, stream
        self.slurm = conf["cluster"] == "slurm"
        self.jobs: Dict[str, submitit.Job] = {}  # run -> job submitted by this call
        self.by_dir = {r.output_dir: r for r in plan.todo}
        self.ended: set = set()
        self.progress: Optional[Progress] = None

    def submit(self) -> Tuple[int, Dict[str, str]]:
        """Returns (number submitted, run -> job id of every run queued or running now)."""
        plan = self.plan
        reader = StatusReader(plan.todo)
        states = {r.output_dir: reader(r) for r in plan.todo}
        in_flight = {d: st.job_id for d, st in states.items() if st.state == "running" or (st.state == "pending" and st.job_id)}
        to_submit = [r for r in plan.todo if r.output_dir not in in_flight and r.output_dir not in plan.blocked]
        for d, why in plan.blocked.items():
            print(f"BLOCKED {self.by_dir[d].label}: {why}", file=self.stream)
        for d in in_flight:
            print(f"already {states[d].state}: {self.by_dir[d].label} ({states[d].detail})", file=self.stream)
        if self.follow and to_submit:
            self.progress = Progress(len(to_submit), len(to_submit), self.stream)
        for stage in sorted({plan.stage[r.output_dir] for r in to_submit}):
            batches: Dict[Tuple[str, ...], List[Run]] = {}
            for r in to_submit:
                if plan.stage[r.output_dir] == stage:
                    ids = tuple(sorted({in_flight[d] for d in plan.waits_for(r.output_dir) if in_flight.get(d)}))
                    batches.setdefault(ids if self.slurm else (), []).append(r)
            if not self.slurm and stage > 0:
                self.wait()  # the local executor has no job dependencies
            for ids, runs in batches.items():
                self._submit_batch(runs, ids, in_flight)
        return len(to_submit), in_flight

    def _submit_batch(self, runs: List[Run], ids: Tuple[str, ...], in_flight: Dict[str, str]) -> None:
        ex = make_executor(self.conf, self.folder, "afterany:" + ":".join(ids) if ids else "")
        with ex.batch():
            jobs = [ex.submit(RunJob(r)) for r in runs]
        for r, job in zip(runs, jobs):
            self.jobs[r.output_dir] = job
            in_flight[r.output_dir] = job.job_id
            atomic_write_json(r.path(JOB_FILE), {"cluster": self.conf["cluster"], "job_id": job.job_id,
                                                 "folder": self.folder, "submitted_at": now()})
        if self.slurm and len(jobs) > 1:
            what = f"job array {jobs[0].job_id.split('_')[0]} ({len(jobs)} runs)"
        else:
            what = "job " + ", ".join(j.job_id for j in jobs)
        after = f" after {', '.join(ids)}" if ids else ""
        names = ", ".join(r.label for r in runs[:3]) + (f" and {len(runs) - 3} more" if len(runs) > 3 else "")
        print(f"submitted {what}{after}: {names}", file=self.stream, flush=True)

    def wait(self) -> None:
        """Wait until every job submitted so far has ended."""
        last_update = 0.0
        while True:
            if self.slurm and time.time() - last_update > 30:
                submitit.SlurmJob.watcher.update()
                last_update = time.time()
            if self.slurm:
                open_jobs = [j for j in self.jobs.values() if not j.watcher.is_done(j.job_id, mode="cache")]
            else:
                open_jobs = [j for j in self.jobs.values() if not j.done()]
            self.report()
            if not open_jobs:
                return
            time.sleep(5.0 if self.slurm else 0.5)

    def report(self) -> None:
        """Progress of this call's jobs, from their run folders; one event line per run that ended."""
        if self.progress is None:
            return
        events: List[str] = []
        finished, failed, running = 0, 0, []
        for d in self.jobs:
            run = self.by_dir[d]
            if is_finished(d):
                finished += 1
                if d not in self.ended:
                    self.ended.add(d)
                    wall = (read_json(run.path(RESULTS_FILE)) or {}).get("wall_time_s")
                    if isinstance(wall, (int, float)):
                        self.progress.durations.append(float(wall))
                    events.append(f"done    {run.label}")
            elif os.path.isfile(run.path(FAILED_FILE)):
                failed += 1
                if d not in self.ended:
                    self.ended.add(d)
                    events.append(f"FAILED  {run.label} (log: {run.path(LOG_FILE)})")
            elif lock_held(d):
                running.append(os.path.getmtime(run.path(LOCK_FILE)))
        remaining = max(0, self.progress.total - finished - failed - len(running))
        for event in events or [""]:
            self.progress.update(finished, running, failed, remaining, event)


