"""The shell entry points on the offline pair (smoke dataset, tiny CLIP), run as a user runs them.

The numbers in the tables are checked against the results.json files the runs wrote, with the
statistics computed here (population std over seeds, HM of the seed-averaged base and new).
"""
from __future__ import annotations

import json
import math
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clip_adapter.engine.trainer import FAULT_ENV

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"


def script_env(data: str, output: Path, **extra) -> dict:
    env = dict(os.environ)
    env.pop("CLIP_ADAPTER_FEATURE_CACHE", None)
    env.pop("SEEDS", None)
    env.pop("DRY_RUN", None)
    env.update(DATA=str(data), OUTPUT=str(output), PYTHON=sys.executable, PYTHONUNBUFFERED="1")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def bash(name: str, *args, env: dict, cwd, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPTS / name), *map(str, args)], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def results_under(root: Path) -> dict:
    return {str(p.parent.relative_to(root)): json.loads(p.read_text()) for p in sorted(root.rglob("results.json"))}


def mean(xs):
    return sum(xs) / len(xs)


def pstd(xs):
    m = mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / len(xs))


def markdown_rows(text: str, title_part: str) -> list:
    """Rows (lists of cells) of the github table that follows the heading containing ``title_part``."""
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("###") and title_part in ln)
    rows = []
    for ln in lines[start + 1:]:
        if ln.startswith("###"):
            break
        if ln.startswith("|") and not ln.startswith("|--"):
            rows.append([c.strip() for c in ln.strip("|").split("|")])
    return rows[1:]  # without the header


# --------------------------------------------------------------- fast: no training
@pytest.mark.parametrize(
    "script,args,env_extra,message",
    [
        ("main.sh", ["caltech101", "rn50", "16"], {"DATA": ""}, "DATA is not set"),
        ("main.sh", ["smoke", "tiny", "4"], {"DATA": "/nonexistent/data"}, None),  # smoke creates its DATA
        ("main.sh", ["nosuchset", "tiny", "4"], {}, "known: "),
        ("main.sh", ["smok", "tiny", "4"], {}, "unknown dataset 'smok'; did you mean 'smoke'?"),
        ("main.sh", ["smoke", "nosuchcfg", "4"], {}, "known CFG names"),
        ("main.sh", ["smoke", "tiyn", "4"], {}, "no config 'tiyn' for trainer 'CLIP_Adapter'; did you mean 'tiny'?"),
        ("main.sh", ["smoke", "/nonexistent/cfg.yaml", "4"], {}, "config file /nonexistent/cfg.yaml not found"),
        ("main.sh", ["smoke", "tiny", "four"], {}, "SHOTS must be a positive integer"),
        ("main.sh", ["smoke", "tiny", "4", "NoSuchTrainer"], {}, "unknown trainer 'NoSuchTrainer'"),
        ("main.sh", ["smoke", "tiny", "4", "CLIP_Adaptr"], {}, "unknown trainer 'CLIP_Adaptr'; did you mean 'CLIP_Adapter'?"),
        ("main.sh", ["smoke", "tiny", "4", "ZeroshotCLIP", "DATASET.NUM_SHOTS", "8"], {}, "set by the script"),
        ("main.sh", ["smoke", "tiny", "4", "CLIP_Adapter", "OPTIM.NOPE", "1"], {}, "unknown config key in command-line opts: OPTIM.NOPE"),
        ("main.sh", ["smoke", "tiny", "4", "CLIP_Adapter", "OPTIM.LR"], {}, "odd number of items"),
        ("main.sh", ["smoke", "tiny"], {}, "usage:"),
        ("main.sh", ["smoke", "tiny", "4"], {"SEEDS": "1 two"}, "SEEDS must be a non-negative integer"),
        ("zeroshot.sh", ["smoke", "tiny", "CLIP_Adapter"], {}, "use scripts/main.sh"),
        ("base2new_train.sh", ["smoke", "1", "LinearProbeCLIP", "tiny"], {}, "LinearProbeCLIP cannot be tested on new classes"),
        ("base2new_test.sh", ["smoke", "1", "CLIP_Adapter", "tiny"], {"DRY_RUN": "0"}, "run 'bash scripts/base2new_train.sh smoke 1 CLIP_Adapter tiny' first"),
        ("reproduce.sh", ["--frobnicate"], {}, "unknown option '--frobnicate'"),
        ("reproduce.sh", ["--datasets", "smoke", "--backbone", "vit_h14"], {}, "known CFG names"),
        ("reproduce.sh", ["--datasets", "smoke", "--experiments", "fewshot,xdd"], {}, "unknown experiment 'xdd'; did you mean 'xd'?"),
        ("reproduce.sh", ["--datasets", "smoke", "--shots", "1,0"], {}, "--shots: '0' is not a positive integer"),
    ],
)
def test_bad_arguments_fail_fast_with_one_clear_line(tmp_path, data_root, experiment, script, args, env_extra, message):
    """In-process (each script is one call of the planner; test_scripts_are_one_planner_call pins that)."""
    env = {"DATA": data_root, "OUTPUT": tmp_path / "output", "DRY_RUN": 1, **env_extra}
    if env.get("DATA") == "":
        del env["DATA"]
    if env_extra.get("DATA") == "/nonexistent/data":
        env["DATA"] = str(tmp_path / "fresh_data")  # a missing DATA folder for smoke is created, not an error
    rc, out, err = experiment(script[:-len(".sh")], *args, env=env)
    if message is None:
        assert rc == 0, err
        assert (tmp_path / "fresh_data").is_dir()
        return
    assert rc == 2, out + err
    assert message in err and len(err.strip().splitlines()) <= 2, err  # (usage: two lines)
    assert not (tmp_path / "output").exists()


def test_scripts_are_one_planner_call():
    """Every script runs its experiment through the planner with its arguments untouched."""
    from clip_adapter.app.experiments.cli import EXPERIMENTS

    names = sorted(p.stem for p in SCRIPTS.glob("*.sh") if p.stem not in ("common", "demo"))
    assert names == sorted([*EXPERIMENTS, "reproduce"])
    for name in names:
        code = [ln for ln in (SCRIPTS / f"{name}.sh").read_text().splitlines() if ln and not ln.startswith("#")]
        assert code == ['source "$(dirname "${BASH_SOURCE[0]}")/common.sh"', f'experiment {name} "$@"'], name


@pytest.mark.slow
def test_status_and_usage_exit_statuses_come_through_the_script(tmp_path, data_root):
    """--status: 3 while a run is not finished, 1 once one has failed (never 0 then); usage errors 2."""
    out = tmp_path / "out"
    env = script_env(data_root, out, SEEDS="1,2")
    proc = bash("main.sh", "smoke", "tiny", "2", "--status", env=env, cwd=tmp_path)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "2 run(s): 0 finished, 0 running, 2 pending, 0 failed" in proc.stdout
    seed1 = out / "smoke/CLIP_Adapter/tiny_2shots/seed1"
    seed1.mkdir(parents=True)
    (seed1 / "sweep_failed.json").write_text(json.dumps({"reason": "exit status 1", "log": str(seed1 / "log.txt")}))
    (seed1 / "log.txt").write_text("Traceback ...\nRuntimeError: boom\n")
    proc = bash("main.sh", "smoke", "tiny", "2", "--status", env=env, cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "RuntimeError: boom" in proc.stdout  # the failed run's log tail
    proc = bash("xd_train.sh", env=env, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.startswith("usage: bash scripts/xd_train.sh SEED")


@pytest.mark.slow
def test_dry_run_shows_folder_layout_and_command(tmp_path, data_root, experiment):
    """One place builds the command: folder names encode shots, extra opts (CoOp style) and seeds."""
    env = script_env(data_root, tmp_path / "out", DRY_RUN=1, SEEDS="1 2")
    proc = bash("main.sh", "smoke", "tiny", "4", "CLIP_Adapter", "TRAINER.CLIP_ADAPTER.RATIO", "0.6", "DATALOADER.NUM_WORKERS", "0",
                env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    cmds = [shlex.split(ln[len("dry-run:"):]) for ln in proc.stdout.splitlines() if ln.startswith("dry-run:")]
    assert len(cmds) == 2
    for seed, cmd in zip((1, 2), cmds):
        # (DATALOADER.NUM_WORKERS changes no number: no folder level of its own)
        assert cmd[cmd.index("--output-dir") + 1] == f"{tmp_path}/out/smoke/CLIP_Adapter/tiny_4shots/ratio0.6/seed{seed}"
        assert cmd[cmd.index("--seed") + 1] == str(seed)
        assert cmd[cmd.index("--config-file") + 1] == str(REPO / "configs/trainers/CLIP_Adapter/tiny.yaml")
        assert cmd[-6:] == ["DATASET.NUM_SHOTS", "4", "TRAINER.CLIP_ADAPTER.RATIO", "0.6", "DATALOADER.NUM_WORKERS", "0"]
    env = {"DATA": data_root, "OUTPUT": tmp_path / "out", "DRY_RUN": 1, "SEEDS": "1,2"}
    rc, out, err = experiment("base2new_test", "smoke", "3", "CLIP_Adapter", "tiny", env=env)
    assert rc == 0, err
    cmds = [shlex.split(ln[len("dry-run:"):]) for ln in out.splitlines() if ln.startswith("dry-run:")]
    train = f"{tmp_path}/out/base2new/train_base/smoke/shots_16/CLIP_Adapter/tiny/seed3"
    for split, cmd in zip(("new", "base"), cmds):
        assert cmd[cmd.index("--output-dir") + 1] == f"{tmp_path}/out/base2new/test_{split}/smoke/shots_16/CLIP_Adapter/tiny/seed3"
        assert "--eval-only" in cmd and cmd[cmd.index("--model-dir") + 1] == train
        assert cmd[-2:] == ["DATASET.SUBSAMPLE_CLASSES", split]
    rc, out, err = experiment("coop", "smoke", "tiny", "2", "4", "True", "middle", env=env)
    assert rc == 0, err
    assert "/smoke/CoOp/tiny_2shots/nctx4_cscTrue_ctpmiddle/seed1" in out
    # a config given as a YAML path: its file name is the folder level
    cfg = tmp_path / "my_adapter.yaml"
    cfg.write_text((REPO / "configs/trainers/CLIP_Adapter/tiny.yaml").read_text())
    rc, out, err = experiment("main", "smoke", str(cfg), "2", env=env)
    assert rc == 0, err
    assert f"--config-file {cfg} --output-dir {tmp_path}/out/smoke/CLIP_Adapter/my_adapter_2shots/seed1 " in out


def test_training_free_trainers_get_one_evaluation_and_no_training_step(tmp_path, data_root, experiment):
    """What a method is comes from the registry (uses_training_data), for every experiment."""
    env = {"DATA": data_root, "OUTPUT": tmp_path / "out", "DRY_RUN": 1, "SEEDS": "2 3"}
    rc, out, err = experiment("main", "smoke", "tiny", "4", "ZeroshotCLIP2", env=env)
    assert rc == 0 and "training-free" in err
    cmds = [shlex.split(ln[len("dry-run:"):]) for ln in out.splitlines() if ln.startswith("dry-run:")]
    assert len(cmds) == 1 and cmds[0][cmds[0].index("--output-dir") + 1] == f"{tmp_path}/out/smoke/ZeroshotCLIP2/tiny/seed2"
    assert "--eval-only" in cmds[0] and "DATASET.NUM_SHOTS" not in cmds[0]
    for name, args, what in (("base2new_train", ["smoke", "1", "ZeroshotCLIP", "tiny"], "base2new_test.sh evaluates it directly"),
                             ("xd_train", ["1", "ZeroshotCLIP", "tiny"], "xd_test.sh evaluates it directly")):
        rc, out, err = experiment(name, *args, env={**env, "DRY_RUN": 0, "SOURCE": "smoke"})
        assert rc == 0 and "needs no training" in out and what in out, out + err
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------- slow: real runs end to end
@pytest.mark.slow
def test_main_killed_midway_is_resumed_then_skipped(tmp_path, data_root):
    """A run killed (SIGKILL, injected in-process right after epoch 3's resume point) is unfinished:
    the next call resumes it from epoch 3; then it is skipped."""
    out = tmp_path / "output"
    env = script_env(data_root, out, SEEDS="1")
    args = ["smoke", "tiny", "4", "CLIP_Adapter", "OPTIM.MAX_EPOCH", "8"]
    run_dir = out / "smoke" / "CLIP_Adapter" / "tiny_4shots" / "ep8" / "seed1"
    killed = bash("main.sh", *args, env={**env, FAULT_ENV: "3"}, cwd=tmp_path)
    assert killed.returncode != 0, killed.stdout
    assert list(run_dir.glob("*/model.pth.tar-3")) and not (run_dir / "results.json").exists()

    second = bash("main.sh", *args, env=env, cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert "unfinished: resuming" in second.stdout
    log = (run_dir / "log.txt").read_text()
    done = int(re.search(r"Resuming from .* \(epoch (\d+) done\)", log).group(1))
    assert done == 3
    record = json.loads((run_dir / "results.json").read_text())
    assert record["epochs"] == 8 and record["shots"] == 4 and record["seed"] == 1
    assert record["opts"] == ["DATASET.NUM_SHOTS", "4", "OPTIM.MAX_EPOCH", "8"]
    assert len(record["sessions"]) == 2 and record["wall_time_s"] >= sum(s["seconds"] for s in record["sessions"]) - 1e-6

    stamp = (run_dir / "results.json").stat().st_mtime_ns
    third = bash("main.sh", *args, env=env, cwd=tmp_path)
    assert third.returncode == 0 and f"skip: {run_dir} is finished" in third.stdout
    assert "==>" not in third.stdout
    assert (run_dir / "results.json").stat().st_mtime_ns == stamp


SEEDS = [1, 2]
SHOTS = [2]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, data_root):
    """reproduce.sh on the offline pair: zero-shot + CLIP-Adapter, few-shot and base-to-novel."""
    cwd = tmp_path_factory.mktemp("reproduce")
    out = cwd / "output"
    env = script_env(data_root, out)
    args = ["--experiments", "fewshot,base2new", "--datasets", "smoke", "--backbone", "tiny", "--trainers", "ZeroshotCLIP CLIP_Adapter",
            "--shots", " ".join(map(str, SHOTS)), "--seeds", " ".join(map(str, SEEDS))]
    proc = bash("reproduce.sh", *args, env=env, cwd=cwd, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {"out": out, "env": env, "cwd": cwd, "args": args, "proc": proc}


def expected_folders() -> set:
    folders = {"smoke/ZeroshotCLIP/tiny/seed1"}
    folders |= {f"smoke/CLIP_Adapter/tiny_{k}shots/seed{s}" for k in SHOTS for s in SEEDS}
    folders |= {f"base2new/train_base/smoke/shots_16/CLIP_Adapter/tiny/seed{s}" for s in SEEDS}
    folders |= {f"base2new/test_{sp}/smoke/shots_16/CLIP_Adapter/tiny/seed{s}" for sp in ("new", "base") for s in SEEDS}
    folders |= {f"base2new/test_{sp}/smoke/shots_16/ZeroshotCLIP/tiny/seed1" for sp in ("new", "base")}
    return folders


@pytest.mark.slow
def test_reproduce_folder_layout(sweep):
    found = results_under(sweep["out"])
    assert set(found) == expected_folders()
    for rel, rec in found.items():
        assert rec["dataset"] == "Smoke" and rec["backbone"] == "tiny" and rec["config"] == "tiny"
        if rel.startswith("base2new/test_"):
            split = rel.split("/")[1][len("test_"):]
            assert rec["subsample"] == split and rec["eval_only"] is True
            if "CLIP_Adapter" in rel:
                assert rec["model_dir"] == str(sweep["out"] / rel.replace(f"test_{split}", "train_base"))
        elif rel.startswith("base2new/train_base"):
            assert rec["subsample"] == "base" and rec["eval_only"] is False and rec["epochs"] > 0
        else:
            assert rec["subsample"] == "all"
    assert (sweep["out"] / "fewshot_curves.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_reproduce_tables_equal_the_results_files(sweep):
    found = results_under(sweep["out"])
    text = (sweep["out"] / "tables.md").read_text()
    assert text in sweep["proc"].stdout  # printed as well as written
    zs = found["smoke/ZeroshotCLIP/tiny/seed1"]["accuracy"]
    for k in SHOTS:
        rows = {r[0]: r[1] for r in markdown_rows(text, f"{k} shot")}
        accs = [found[f"smoke/CLIP_Adapter/tiny_{k}shots/seed{s}"]["accuracy"] for s in SEEDS]
        assert rows["CLIP_Adapter (tiny)"] == f"{mean(accs):.2f} ± {pstd(accs):.2f}"  # n=2 expected: not shown
        assert rows["ZeroshotCLIP (tiny)"] == f"{zs:.2f} (n=1)"
    b2n = {r[0]: r[2:] for r in markdown_rows(text, "Base-to-novel")}
    for method, seeds in (("CLIP_Adapter", SEEDS), ("ZeroshotCLIP", [1])):
        base = [found[f"base2new/test_base/smoke/shots_16/{method}/tiny/seed{s}"]["accuracy"] for s in seeds]
        new = [found[f"base2new/test_new/smoke/shots_16/{method}/tiny/seed{s}"]["accuracy"] for s in seeds]
        b, n = mean(base), mean(new)
        cell = (lambda xs: f"{mean(xs):.2f} ± {pstd(xs):.2f}") if len(seeds) > 1 else (lambda xs: f"{mean(xs):.2f} (n=1)")
        assert b2n[f"{method} (tiny)"] == [cell(base), cell(new), f"{2 * b * n / (b + n):.2f}"]


@pytest.mark.slow
def test_reproduce_again_redoes_nothing_and_redoes_a_crashed_run(sweep):
    out, env, cwd, args = sweep["out"], sweep["env"], sweep["cwd"], sweep["args"]
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("results.json")}
    again = bash("reproduce.sh", *args, env=env, cwd=cwd)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "==>" not in again.stdout
    assert again.stdout.count("skip: ") == len(expected_folders())
    assert {p: p.stat().st_mtime_ns for p in out.rglob("results.json")} == stamps

    # a crash after training (no results.json, checkpoints left) is redone, and only that run
    victim = out / "smoke/CLIP_Adapter/tiny_2shots/seed2"
    before = json.loads((victim / "results.json").read_text())
    (victim / "results.json").unlink()
    third = bash("reproduce.sh", *args, env=env, cwd=cwd)
    assert third.returncode == 0, third.stderr[-2000:]
    assert [ln for ln in third.stdout.splitlines() if ln.startswith("==>")] == [f"==> {victim} (unfinished: resuming or restarting)"]
    after = json.loads((victim / "results.json").read_text())
    assert after["accuracy"] == before["accuracy"]


@pytest.mark.slow
def test_reproduce_dry_run_plans_the_paper_comparison(tmp_path, data_root):
    """Default trainers, 5 shot counts, 3 seeds, base-to-novel; CoOp's per-shot configs as in its README."""
    env = script_env(data_root, tmp_path / "out", DRY_RUN=1)
    proc = bash("reproduce.sh", "--experiments", "fewshot,base2new", "--datasets", "imagenet caltech101", env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    cmds = [shlex.split(ln[len("dry-run:"):]) for ln in proc.stdout.splitlines() if ln.startswith("dry-run:")]
    plan = {}
    for cmd in cmds:
        out = cmd[cmd.index("--output-dir") + 1]
        plan[os.path.relpath(out, tmp_path / "out")] = Path(cmd[cmd.index("--config-file") + 1]).stem
    per_dataset = 1 + 5 * 3 * 2 + (3 + 6) * 2 + 2  # zero-shot; CoOp + CLIP-Adapter few-shot; base-to-novel
    assert len(plan) == len(cmds) == 2 * per_dataset
    coop = {"caltech101": {1: "rn50_ep50", 2: "rn50_ep100", 4: "rn50_ep100", 8: "rn50", 16: "rn50"},
            "imagenet": {k: "rn50_ep50" for k in (1, 2, 4, 8, 16)}}
    for ds, by_shots in coop.items():
        for k, cfg in by_shots.items():
            for s in (1, 2, 3):
                assert plan[f"{ds}/CoOp/{cfg}_{k}shots/nctx16_cscFalse_ctpend/seed{s}"] == cfg
                assert plan[f"{ds}/CLIP_Adapter/rn50_{k}shots/seed{s}"] == "rn50"
        assert plan[f"{ds}/ZeroshotCLIP/rn50/seed1"] == "rn50"
        assert plan[f"base2new/test_new/{ds}/shots_16/CoOp/{by_shots[16]}/seed3"] == by_shots[16]
    assert "dry run: no tables" in proc.stdout
