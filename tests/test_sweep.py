"""Sweeps (clip_adapter/app/sweep/): job lists, ordering, locks, the local pool, submitit, status.

The scheduling tests use small stand-in commands (a Python one-file "run" that sleeps, records what
it saw and writes results.json) because what they check (locks, GPU pinning, Ctrl-C, states) does
not depend on what a run computes; the slow tests run real train.py runs of the offline pair
(smoke dataset, tiny CLIP) through the scripts, sequentially, with --jobs 2 and with submitit's
local executor, and compare the results. SLURM itself is replaced by three tiny programs on PATH
(sbatch records the job script, sacct reports states the test chooses, srun only has to exist),
so the real submitit SlurmExecutor writes real sbatch scripts and parses real sacct output.
"""
from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import submitit
from filelock import FileLock

from clip_adapter.app import sweep
from clip_adapter.errors import UserError

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"

WORK = r'''
import json, os, sys, time
out, seconds, marker, fail = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4] == "fail"
print("stdout of", os.path.basename(out), flush=True)
print("stderr of", os.path.basename(out), file=sys.stderr, flush=True)
with open(marker, "a") as f:
    f.write(out + "\n")
time.sleep(seconds)
if fail:
    sys.exit(3)
os.makedirs(out, exist_ok=True)
env = {k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "CLIP_ADAPTER_WEIGHTS")}
with open(os.path.join(out, "results.tmp"), "w") as f:
    json.dump({"accuracy": 50.0, "env": env}, f)
os.replace(os.path.join(out, "results.tmp"), os.path.join(out, "results.json"))
'''


def stand_in_joblist(tmp_path: Path, names, seconds=0.0, fail=(), after=None) -> Path:
    """A job list of stand-in runs tmp/out/<name>: each sleeps ``seconds`` (a number, or a dict by
    name), fails when named in ``fail``; ``after`` maps a name to the names it waits for."""
    script = tmp_path / "work.py"
    script.write_text(WORK)
    lines = []
    for name in names:
        out = tmp_path / "out" / name
        job = {"output_dir": str(out),
               "cmd": [sys.executable, str(script), str(out), str(seconds.get(name, 0.0) if isinstance(seconds, dict) else seconds), str(tmp_path / "marker.txt"), "fail" if name in fail else "ok"]}
        if after and name in after:
            job["after"] = [str(tmp_path / "out" / a) for a in after[name]]
        lines.append(json.dumps(job))
    path = tmp_path / "jobs.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def sweep_cli(*args, cwd=None, timeout=300, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "clip_adapter", "sweep", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def as_in_a_terminal() -> None:
    """Give the sweep Ctrl-C's default meaning. A test run started in the background by a
    non-interactive shell (`cmd &`) inherits SIGINT as *ignored*, and so would the sweep under test."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def marker_lines(tmp_path: Path) -> list:
    path = tmp_path / "marker.txt"
    return path.read_text().split() if path.exists() else []


def status_rows(text: str) -> dict:
    """{run label: state} from the --status table."""
    rows = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1] in sweep.STATES:
            rows[parts[0]] = parts[1]
    return rows


def script_env(data, output: Path, **extra) -> dict:
    env = dict(os.environ)
    for key in ("CLIP_ADAPTER_FEATURE_CACHE", "SEEDS", "DRY_RUN"):
        env.pop(key, None)
    env.update(DATA=str(data), OUTPUT=str(output), PYTHON=sys.executable, PYTHONUNBUFFERED="1")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def collect(joblist: Path, data, output: Path, cwd: Path, script: str, *args, **env_extra) -> None:
    """Append the runs the planner makes for a script's arguments to ``joblist`` (JSON lines)."""
    from clip_adapter.app.experiments.cli import plan_runs
    from clip_adapter.app.experiments.runs import Settings

    seeds = tuple(int(s) for s in env_extra.get("SEEDS", "1 2 3").split())
    settings = Settings(output=str(output), data=str(data), seeds=seeds)
    with joblist.open("a") as f:
        for run in plan_runs(script[:-len(".sh")], [str(a) for a in args], settings):
            f.write(json.dumps(run.job_line(sys.executable)) + "\n")


# ------------------------------------------------------------------- job lists, plan
@pytest.mark.parametrize(
    "line,message",
    [
        ("not json", "not valid JSON"),
        ('["a", "b"]', "expected a JSON object"),
        ('{"cmd": ["true"]}', "output_dir must be a non-empty string"),
        ('{"output_dir": "x", "cmd": "python train.py"}', "cmd must be a non-empty list of strings"),
        ('{"output_dir": "x", "cmd": ["true"], "gpu": 1}', "unknown key(s) gpu"),
        ('{"output_dir": "x", "cmd": ["true"], "after": ["x"]}', "waits for itself"),
        ('{"output_dir": "x", "cmd": ["true"]}\n{"output_dir": "x", "cmd": ["false"]}', "also the output folder of line 1"),
        ('{"output_dir": "x", "cmd": ["python", "train.py", "--seed", "one"]}', "do not parse"),
        ('{"output_dir": "x", "cmd": ["python", "train.py", "--output-dir", "x", "NO.SUCH_KEY", "1"]}', "unknown config key"),
    ],
)
def test_bad_job_lines_fail_with_file_and_line(tmp_path, line, message):
    path = tmp_path / "jobs.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(UserError, match=re.escape(message)) as err:
        sweep.load_joblist(str(path), cwd=str(tmp_path))
    assert str(path) + ":" in str(err.value)
    if line == "not json":  # the command line: one line on stderr, exit status 2 (once is enough: each start costs seconds)
        proc = sweep_cli(path, cwd=tmp_path)
        assert proc.returncode == 2 and proc.stderr == f"error: {err.value}\n"


def test_same_run_listed_twice_is_one_run_and_cycles_are_refused(tmp_path):
    path = tmp_path / "jobs.jsonl"
    path.write_text('{"output_dir": "a", "cmd": ["true"]}\n{"output_dir": "a", "cmd": ["true"]}\n')
    assert [r.output_dir for r in sweep.load_joblist(str(path), cwd=str(tmp_path))] == [str(tmp_path / "a")]
    path.write_text('{"output_dir": "a", "cmd": ["true"], "after": ["b"]}\n{"output_dir": "b", "cmd": ["true"], "after": ["a"]}\n')
    with pytest.raises(UserError, match="in a circle"):
        sweep.make_plan(sweep.load_joblist(str(path), cwd=str(tmp_path)))


def test_plan_from_the_scripts_orders_tests_after_training_and_warms_the_cache_first(tmp_path, data_root):
    """The job list reproduce-style scripts write: few-shot + zero-shot + base-to-novel on smoke/tiny."""
    jobs, out = tmp_path / "jobs.jsonl", tmp_path / "output"
    collect(jobs, data_root, out, tmp_path, "zeroshot.sh", "smoke", "tiny")
    for k in (1, 4):
        collect(jobs, data_root, out, tmp_path, "main.sh", "smoke", "tiny", k, "CLIP_Adapter", SEEDS="1 2")
    collect(jobs, data_root, out, tmp_path, "base2new_train.sh", "smoke", "1", "CLIP_Adapter", "tiny")
    collect(jobs, data_root, out, tmp_path, "base2new_test.sh", "smoke", "1", "CLIP_Adapter", "tiny")
    runs = sweep.load_joblist(str(jobs), cwd=str(tmp_path))
    assert len(runs) == 1 + 4 + 1 + 2
    plan = sweep.make_plan(runs)
    train = str(out / "base2new/train_base/smoke/shots_16/CLIP_Adapter/tiny/seed1")
    tests = [str(out / f"base2new/test_{s}/smoke/shots_16/CLIP_Adapter/tiny/seed1") for s in ("new", "base")]
    lead = str(out / "smoke/CLIP_Adapter/tiny_4shots/seed1")  # trains, all classes, most shots, first such
    assert set(plan.warm_lead.values()) == {lead}
    assert set(plan.warm_lead) == {r.output_dir for r in runs} - {lead}
    for t in tests:
        assert plan.needs[t] == (train,)
        assert plan.stage[t] > plan.stage[train] > plan.stage[lead] == 0
    order = [r.output_dir for r in plan.todo]
    assert order[0] == lead and order.index(train) < min(order.index(t) for t in tests)
    assert not plan.blocked

    # a finished run warms its group: no warm-up stage; a test whose training is neither finished
    # nor in the sweep is blocked, with the reason
    (Path(lead) / "results.json").parent.mkdir(parents=True)
    (Path(lead) / "results.json").write_text("{}")
    plan = sweep.make_plan([r for r in runs if r.output_dir != train])
    assert not plan.warm_lead and plan.finished[0].output_dir == lead
    assert all("neither finished nor part of this sweep" in plan.blocked[t] for t in tests)


@pytest.mark.slow
def test_dry_run_through_a_script_prints_the_commands_and_the_plan(tmp_path, data_root):
    env = script_env(data_root, tmp_path / "out", DRY_RUN=1, SEEDS="1 2")
    proc = subprocess.run(["bash", str(SCRIPTS / "main.sh"), "smoke", "tiny", "2", "--jobs", "2"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("dry-run:") == 2
    assert "sweep plan: 2 run(s): 0 finished (skipped), 2 to run in 2 stage(s)" in proc.stdout
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "args,message",
    [
        (["--jobs", "0"], "--jobs must be a positive number"),
        (["--partition", "gpu"], "--partition apply to --launcher slurm"),
        (["--wait"], "--wait applies to --launcher slurm"),
        (["--gpus", "first"], "--gpus 'first'"),
        (["--launcher", "slurm", "--jobs", "4"], "--jobs/--gpus apply to --launcher local"),
        (["--launcher", "slurm", "--time", "soon"], "--time 'soon'"),
        (["--launcher", "slurm", "--mem", "lots"], "--mem 'lots'"),
        (["--launcher", "slurm", "--cpus-per-task", "0"], "cpus-per-task must be a positive integer"),
        (["--launcher", "slurm", "--cluster-config", "/nonexistent/cluster.yaml"], "cluster config /nonexistent/cluster.yaml not found"),
    ],
)
def test_bad_sweep_options_fail_in_the_script_before_any_run(tmp_path, data_root, experiment, args, message):
    rc, out, err = experiment("main", "smoke", "tiny", "2", *args, env={"DATA": data_root, "OUTPUT": tmp_path / "out"})
    assert rc == 2, out + err
    assert message in err and err.count("error: ") == 1
    assert not (tmp_path / "out").exists()


def test_cluster_config_file_and_options(tmp_path):
    assert [sweep.parse_time(t) for t in ("90", "1:30", "1:30:00", "2-00", "1-01:00:30")] == [90, 2, 90, 2880, 1501]
    assert [sweep.parse_mem(m) for m in ("32G", "32GB", "16384M", "1T", "2048")] == [32, 32, 16, 1024, 2]
    conf_file = tmp_path / "cluster.yaml"
    conf_file.write_text("partition: gpu\ntime: '2:00:00'\nmem: 64G\nsetup: ['module load cuda']\nadditional_parameters: {exclude: node1}\n")
    args = sweep.build_parser().parse_args(["--launcher", "slurm", "--cluster-config", str(conf_file), "--time", "30", "--gpus-per-node", "2"])
    conf = sweep.check_options(args)
    params = sweep.executor_parameters(conf, "afterany:7")
    assert params["timeout_min"] == 30 and params["gpus_per_node"] == 2 and params["mem_gb"] == 64.0
    assert params["slurm_partition"] == "gpu" and params["slurm_setup"] == ["module load cuda"]
    assert params["slurm_additional_parameters"] == {"exclude": "node1"} and params["slurm_dependency"] == "afterany:7"
    conf_file.write_text("partition: gpu\ngpu: 2\n")
    with pytest.raises(UserError, match=r"unknown key\(s\) gpu in .*cluster.yaml; known: cluster, partition"):
        sweep.check_options(sweep.build_parser().parse_args(["--launcher", "slurm", "--cluster-config", str(conf_file)]))
    # the example shipped in configs/ loads and is the default
    assert sweep.load_cluster_config(None)["_source"] == str(REPO / "configs" / "cluster.yaml")


# ------------------------------------------------------------------- local worker pool
@pytest.mark.slow
def test_local_pool_pins_gpus_round_robin_and_logs_each_run(tmp_path):
    names = [f"r{i}" for i in range(5)]
    jobs = stand_in_joblist(tmp_path, names, seconds=0.3)
    proc = sweep_cli(jobs, "--jobs", "3", "--gpus", "0,1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(marker_lines(tmp_path)) == sorted(str(tmp_path / "out" / n) for n in names)
    gpus = [json.loads((tmp_path / "out" / n / "results.json").read_text())["env"]["CUDA_VISIBLE_DEVICES"] for n in names]
    assert set(gpus) <= {"0", "1"} and len(set(gpus)) == 2  # one GPU per process, both used
    for n in names:
        log = (tmp_path / "out" / n / "sweep.log").read_text()
        assert f"stdout of {n}" in log and f"stderr of {n}" in log and "exit status 0" in log
    assert "5 run(s) finished here" in proc.stdout

    # CPU only: no GPU pinning, the cores split between the workers; CLIP_ADAPTER_* reaches the runs
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", CLIP_ADAPTER_WEIGHTS="/somewhere/weights")
    env.pop("OMP_NUM_THREADS", None)
    (tmp_path / "cpu").mkdir()
    jobs = stand_in_joblist(tmp_path / "cpu", ["c0", "c1"])
    proc = sweep_cli(jobs, "--jobs", "2", cwd=tmp_path / "cpu", env=env)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads((tmp_path / "cpu/out/c0/results.json").read_text())["env"]
    assert seen == {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // 2)), "CLIP_ADAPTER_WEIGHTS": "/somewhere/weights"}


@pytest.mark.slow
def test_failed_run_is_reported_with_its_log_retried_next_call_and_blocks_its_dependents(tmp_path):
    jobs = stand_in_joblist(tmp_path, ["good", "bad", "after_bad"], fail={"bad"}, after={"after_bad": ["bad"]})
    proc = sweep_cli(jobs, "--jobs", "2", cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    bad = tmp_path / "out" / "bad"
    record = json.loads((bad / sweep.FAILED_FILE).read_text())
    assert record["returncode"] == 3 and record["log"] == str(bad / "sweep.log")
    assert "--- failed: out/bad (exit status 3" in proc.stdout and "stderr of bad" in proc.stdout  # the log's tail
    assert "SKIPPED out/after_bad: its dependency out/bad failed" in proc.stdout
    assert not (tmp_path / "out" / "after_bad").exists()
    assert "1 run(s) finished here" in proc.stdout and "2 failed" in proc.stdout

    # the next call runs the failed run again (and then its dependent), not the finished one
    jobs = stand_in_joblist(tmp_path, ["good", "bad", "after_bad"], after={"after_bad": ["bad"]})
    before = marker_lines(tmp_path)
    proc = sweep_cli(jobs, "--jobs", "2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert marker_lines(tmp_path)[len(before):] == [str(bad), str(tmp_path / "out" / "after_bad")]
    assert not (bad / sweep.FAILED_FILE).exists()
    assert sweep_cli(jobs, cwd=tmp_path).stdout.strip() == "sweep: all 3 run(s) are finished"


@pytest.mark.slow
def test_two_sweeps_started_at_once_run_each_run_exactly_once(tmp_path):
    names = [f"r{i}" for i in range(6)]
    jobs = stand_in_joblist(tmp_path, names, seconds=1.5)
    procs = [subprocess.Popen([sys.executable, "-m", "clip_adapter", "sweep", str(jobs), "--jobs", "2"], cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    ran = marker_lines(tmp_path)
    assert sorted(ran) == sorted(str(tmp_path / "out" / n) for n in names)  # each run once, by one of them
    here = [int(re.search(r"(\d+) run\(s\) finished here", o).group(1)) for o in outs]
    assert sum(here) == len(names)
    for o in outs:  # each sweep accounts for every run: its own, the other's, or finished before it looked
        m = re.search(r"(\d+) run\(s\) finished here(?:, (\d+) by another process)?, (\d+) were finished before, 0 failed", o)
        assert m and sum(int(x or 0) for x in m.groups()) == len(names), o
    for n in names:
        assert (tmp_path / "out" / n / "sweep.log").read_text().count("sweep attempt") == 1


@pytest.mark.slow
def test_ctrl_c_stops_the_pool_and_leaves_runs_unfinished_not_failed(tmp_path):
    jobs = stand_in_joblist(tmp_path, ["quick", "slow1", "slow2"], seconds={"slow1": 60, "slow2": 60})
    proc = subprocess.Popen([sys.executable, "-m", "clip_adapter", "sweep", str(jobs), "--jobs", "2"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=as_in_a_terminal)
    deadline = time.time() + 60
    while len(marker_lines(tmp_path)) < 3:  # quick finished, both slow ones started
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read() if proc.poll() is not None else "timeout"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=60)[0]
    assert proc.returncode == 130, out
    assert "2 interrupted" in out
    for n in ("slow1", "slow2"):
        run = tmp_path / "out" / n
        assert not (run / "results.json").exists() and not (run / sweep.FAILED_FILE).exists()
        assert not sweep.lock_held(str(run))
        assert "(interrupted)" in (run / "sweep.log").read_text()
    status = sweep_cli(jobs, "--status", cwd=tmp_path)
    assert status_rows(status.stdout) == {"out/quick": "finished", "out/slow1": "pending", "out/slow2": "pending"}


@pytest.mark.slow
def test_status_reports_each_state(tmp_path):
    names = ["done", "busy", "broken", "queued"]
    jobs = stand_in_joblist(tmp_path, names, fail={"broken"})
    sweep_cli(jobs, cwd=tmp_path)  # runs all: done/busy/queued finish, broken fails
    for n in ("busy", "queued"):
        (tmp_path / "out" / n / "results.json").unlink()
    (tmp_path / "out" / "queued" / "log.txt").write_text("epoch 1\n")
    lock = FileLock(str(tmp_path / "out" / "busy" / sweep.LOCK_FILE))
    lock.acquire()  # another process is running it
    try:
        proc = sweep_cli(jobs, "--status", cwd=tmp_path)
        # a second sweep (the broken run fixed) leaves the held run alone and waits for it
        jobs = stand_in_joblist(tmp_path, names)
        sweep_proc = subprocess.Popen([sys.executable, "-m", "clip_adapter", "sweep", str(jobs), "--jobs", "2"], cwd=tmp_path,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.time() + 60
        while not (tmp_path / "out" / "queued" / "results.json").exists():
            assert time.time() < deadline and sweep_proc.poll() is None
            time.sleep(0.05)
        time.sleep(0.5)
        assert sweep_proc.poll() is None  # still waiting for "busy"
        (tmp_path / "out" / "busy" / "results.json").write_text('{"accuracy": 1.0}')
    finally:
        lock.release()
    assert proc.returncode == 1
    assert status_rows(proc.stdout) == {"out/done": "finished", "out/busy": "running", "out/broken": "failed", "out/queued": "pending"}
    assert "4 run(s): 1 finished, 1 running, 1 pending, 1 failed" in proc.stdout
    assert "unfinished: resumed from its newest checkpoint next time" in proc.stdout
    assert "--- failed: out/broken (exit status 3" in proc.stdout and "stderr of broken" in proc.stdout
    out = sweep_proc.communicate(timeout=60)[0]
    assert sweep_proc.returncode == 0, out
    assert "busy    out/busy: another process is running it" in out and "done    out/busy (by another process)" in out
    assert marker_lines(tmp_path).count(str(tmp_path / "out" / "busy")) == 1  # never run by the second sweep


# ------------------------------------------------------------------- SLURM (fake CLI)
FAKE_SBATCH = """#!/bin/bash
n=$(( $(cat "$FAKE_SLURM/next") ))
echo $(( n + 1 )) > "$FAKE_SLURM/next"
cp "$1" "$FAKE_SLURM/sbatch_$n.sh"
echo "Submitted batch job $n"
"""
FAKE_SACCT = """#!/bin/bash
echo "JobID|State|NodeList"
cat "$FAKE_SLURM/states"
"""


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    bin_dir = tmp_path / "fake_slurm"
    bin_dir.mkdir()
    for name, text in (("sbatch", FAKE_SBATCH), ("sacct", FAKE_SACCT), ("srun", "#!/bin/bash\nexit 1\n")):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(stat.S_IRWXU)
    (bin_dir / "next").write_text("1001")
    (bin_dir / "states").write_text("")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM", str(bin_dir))
    submitit.SlurmJob.watcher.clear()
    yield bin_dir
    submitit.SlurmJob.watcher.clear()


def test_slurm_submission_dependencies_status_and_resubmission(tmp_path, fake_slurm, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    jobs = stand_in_joblist(tmp_path, ["a", "b", "c"], after={"b": ["a"]})
    opts = ["--launcher", "slurm", "--partition", "gpu", "--time", "1:30:00", "--gpus-per-node", "2", "--cpus-per-task", "4",
            "--mem", "16G", "--array-parallelism", "2", "--account", "lab", "--submitit-dir", str(tmp_path / "submitit")]
    assert sweep.main([str(jobs), *opts]) == sweep.EXIT_INCOMPLETE
    out = capsys.readouterr().out
    assert "submitted job array 1001 (2 runs): out/a, out/c" in out
    assert "submitted job 1002 after 1001_0: out/b" in out
    array = (fake_slurm / "sbatch_1001.sh").read_text()
    for flag in ("--partition=gpu", "--time=90", "--gpus-per-node=2", "--cpus-per-task=4", "--mem=16GB", "--array=0-1%2", "--account=lab"):
        assert f"#SBATCH {flag}" in array
    assert "--dependency" not in array and "#SBATCH --dependency=afterany:1001_0" in (fake_slurm / "sbatch_1002.sh").read_text()
    records = {n: json.loads((tmp_path / "out" / n / sweep.JOB_FILE).read_text())["job_id"] for n in "abc"}
    assert records == {"a": "1001_0", "c": "1001_1", "b": "1002"}

    (tmp_path / "out" / "c" / "sweep.log").write_text("Traceback ...\nRuntimeError: CUDA out of memory\n")
    (fake_slurm / "states").write_text("1001_0|RUNNING|node1\n1001_1|OUT_OF_MEMORY|node2\n1002|PENDING|\n")
    assert sweep.main([str(jobs), "--launcher", "slurm", "--status"]) == sweep.EXIT_FAILED
    out = capsys.readouterr().out
    assert status_rows(out) == {"out/a": "running", "out/b": "pending", "out/c": "failed"}
    assert "queued: slurm job 1002 (PENDING)" in out and "slurm job 1001_1 OUT_OF_MEMORY" in out
    assert "RuntimeError: CUDA out of memory" in out  # the failed run's log tail

    # the next call resubmits only the failed run; queued and running ones are left alone
    assert sweep.main([str(jobs), *opts]) == sweep.EXIT_INCOMPLETE
    out = capsys.readouterr().out
    assert "submitted job 1003: out/c" in out and "already running: out/a" in out and "already pending: out/b" in out
    assert not (fake_slurm / "sbatch_1004.sh").exists()

    # a finished run is finished whatever sacct says; a timed-out one is failed
    (tmp_path / "out" / "a" / "results.json").write_text('{"accuracy": 12.5, "wall_time_s": 3}')
    (fake_slurm / "states").write_text("1001_0|COMPLETED|node1\n1002|TIMEOUT|node1\n1003|RUNNING|node3\n")
    assert sweep.main([str(jobs), "--launcher", "slurm", "--status"]) == sweep.EXIT_FAILED
    out = capsys.readouterr().out
    assert status_rows(out) == {"out/a": "finished", "out/b": "failed", "out/c": "running"}
    assert "accuracy 12.50%" in out and "slurm job 1002 TIMEOUT" in out


def test_slurm_without_a_cluster_says_how_to_proceed(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # no srun
    jobs = stand_in_joblist(tmp_path, ["a"])
    assert sweep.main([str(jobs), "--launcher", "slurm", "--submitit-dir", str(tmp_path / "s")]) == sweep.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("error: --launcher slurm:") and "--cluster local" in err


@pytest.mark.slow
def test_submitit_local_executor_runs_stages_in_order(tmp_path):
    jobs = stand_in_joblist(tmp_path, ["train", "test1", "test2"], seconds=0.5, after={"test1": ["train"], "test2": ["train"]})
    proc = sweep_cli(jobs, "--launcher", "slurm", "--cluster", "local", "--time", "5", "--submitit-dir", tmp_path / "submitit", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ran = marker_lines(tmp_path)
    assert ran[0] == str(tmp_path / "out" / "train") and sorted(ran[1:]) == [str(tmp_path / "out" / t) for t in ("test1", "test2")]
    assert "3 of 3 run(s) finished, 0 failed" in proc.stdout
    for n in ("train", "test1", "test2"):
        record = json.loads((tmp_path / "out" / n / sweep.JOB_FILE).read_text())
        assert record["cluster"] == "local" and (tmp_path / "submitit" / f"{record['job_id']}_0_log.out").exists()
    status = sweep_cli(jobs, "--status", cwd=tmp_path)
    assert status.returncode == 0 and set(status_rows(status.stdout).values()) == {"finished"}


# ------------------------------------------------------- slow: real runs of the offline pair
REPRO = ["--datasets", "smoke", "--backbone", "tiny", "--trainers", "CLIP_Adapter", "--shots", "2", "--seeds", "1",
         "--experiments", "base2new"]
COMPARED = ("trainer", "dataset", "config", "backbone", "encoder", "shots", "seed", "subsample", "accuracy", "correct", "total",
            "macro_f1", "per_class_accuracy", "val_accuracy", "num_classes", "epochs", "eval_only", "features_mode", "transform", "opts")


def results_under(root: Path) -> dict:
    return {str(p.parent.relative_to(root)): json.loads(p.read_text()) for p in sorted(root.rglob("results.json"))}


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory, data_root):
    """reproduce.sh on the offline pair three ways: in the foreground, with --jobs 2, through submitit's local executor."""
    found = {}
    for name, extra in (("sequential", []), ("jobs2", ["--jobs", "2"]),
                        ("submitit", ["--launcher", "slurm", "--cluster", "local", "--time", "20"])):
        cwd = tmp_path_factory.mktemp(name)
        proc = subprocess.run(["bash", str(SCRIPTS / "reproduce.sh"), *REPRO, *extra], env=script_env(data_root, cwd / "output"),
                              cwd=cwd, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        found[name] = (cwd / "output", proc)
    return found


@pytest.mark.slow
@pytest.mark.parametrize("how", ["jobs2", "submitit"])
def test_parallel_sweep_results_equal_the_sequential_runs(reproduced, how):
    seq_root, _ = reproduced["sequential"]
    root, proc = reproduced[how]
    seq, par = results_under(seq_root), results_under(root)
    assert set(par) == set(seq) and len(seq) == 3
    for rel in seq:
        assert {k: par[rel][k] for k in COMPARED} == {k: seq[rel][k] for k in COMPARED}, rel
        log = (root / rel / "sweep.log").read_text()
        assert log.count("sweep attempt") == 1 and "exit status 0" in log
        assert "Unfinished run" not in (root / rel / "log.txt").read_text()  # the sweep's records do not count
    test_new = "base2new/test_new/smoke/shots_16/CLIP_Adapter/tiny/seed1"
    assert par[test_new]["model_dir"] == str(root / test_new.replace("test_new", "train_base"))
    assert (root / "tables.md").read_text().replace(str(root), "") == (seq_root / "tables.md").read_text().replace(str(seq_root), "")
    # order: the tests ran after their training run finished
    train = json.loads((root / test_new.replace("test_new", "train_base") / "results.json").read_text())["finished_at"]
    assert par[test_new]["finished_at"] >= train


@pytest.mark.slow
def test_killed_sweep_redoes_the_unfinished_run_and_not_the_finished_one(tmp_path, data_root):
    """Ctrl-C while one run is finished and another is midway; the next call resumes only the latter."""
    jobs, out = tmp_path / "jobs.jsonl", tmp_path / "output"
    collect(jobs, data_root, out, tmp_path, "main.sh", "smoke", "tiny", 2, "CLIP_Adapter", SEEDS="1")  # first: warms the cache
    # A resume point after every epoch (RESUME_SAVE_SECONDS 0) keeps the long run busy long enough to be caught midway.
    collect(jobs, data_root, out, tmp_path, "main.sh", "smoke", "tiny", 1, "CLIP_Adapter", "OPTIM.MAX_EPOCH", 300,
            "TRAIN.RESUME_SAVE_SECONDS", 0, SEEDS="1")
    short = out / "smoke/CLIP_Adapter/tiny_2shots/seed1"
    long_ = out / "smoke/CLIP_Adapter/tiny_1shots/ep300/seed1"  # (RESUME_SAVE_SECONDS changes no number: no folder)
    env = script_env(data_root, out)
    proc = subprocess.Popen([sys.executable, "-m", "clip_adapter", "sweep", str(jobs), "--jobs", "2"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            preexec_fn=as_in_a_terminal)
    deadline = time.time() + 300
    try:
        while not ((short / "results.json").exists() and list(long_.glob("*/model.pth.tar-*"))):
            assert proc.poll() is None, proc.stdout.read()
            assert time.time() < deadline, "no checkpoint appeared"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in the terminal does: the whole foreground group
    first = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, first
    assert not (long_ / "results.json").exists() and not (long_ / sweep.FAILED_FILE).exists()
    stamp = (short / "results.json").stat().st_mtime_ns

    second = sweep_cli(jobs, "--jobs", "2", cwd=tmp_path, env=env)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "1 run(s) finished here, 1 were finished before, 0 failed" in second.stdout
    assert (short / "results.json").stat().st_mtime_ns == stamp
    assert (short / "sweep.log").read_text().count("sweep attempt") == 1
    assert (long_ / "sweep.log").read_text().count("sweep attempt") == 2
    done = int(re.search(r"Resuming from .* \(epoch (\d+) done\)", (long_ / "log.txt").read_text()).group(1))
    assert 1 <= done < 300
    assert json.loads((long_ / "results.json").read_text())["epochs"] == 300
