"""The experiment planner and the ``clip-adapter`` command, in-process: what a method is comes from the
registry, lists take commas or spaces, neutral keys make no folder, the foreground runner's states."""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from clip_adapter.app import sweep
from clip_adapter.app.commands import COMMANDS, main as command_main, run_command
from clip_adapter.app.experiments import lookup, reproduce
from clip_adapter.app.experiments.naming import NEUTRAL_KEYS, SCRIPT_KEYS, variant_suffix
from clip_adapter.app.experiments.runs import Settings, scheduled_config
from clip_adapter.config import get_cfg_default
from clip_adapter.registry import TRAINERS

REPO = Path(__file__).resolve().parents[1]


def planned(out: str, root: Path) -> dict:
    """{run folder relative to root: train.py argv} from DRY_RUN output."""
    runs = {}
    for line in out.splitlines():
        if line.startswith("dry-run:"):
            cmd = shlex.split(line[len("dry-run:"):])
            runs[os.path.relpath(cmd[cmd.index("--output-dir") + 1], root)] = cmd
    return runs


# ---------------------------------------------------------------- the command
def test_one_command_dispatches_every_tool_with_help(capsys):
    for name in COMMANDS:
        assert run_command(name, ["--help"]) == 0, name
        assert "usage" in capsys.readouterr().out.lower(), name
    assert command_main([]) == 2 and "commands:" in capsys.readouterr().out
    assert command_main(["trian"]) == 2
    assert "unknown command 'trian'; did you mean 'train'?" in capsys.readouterr().err
    # the console script and python -m clip_adapter are the same entry point
    assert '"clip-adapter=clip_adapter.app.commands:main"' in (REPO / "setup.py").read_text()
    proc = subprocess.run([sys.executable, "-m", "clip_adapter", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and all(name in proc.stdout for name in COMMANDS)


def test_sweep_options_split_from_a_scripts_arguments():
    ours, rest = sweep.split_options(["smoke", "--jobs", "2", "tiny", "--status", "--gpus=0,1", "OPTIM.LR", "-1", "--", "--jobs"])
    assert ours == ["--jobs", "2", "--status", "--gpus=0,1"]
    assert rest == ["smoke", "tiny", "OPTIM.LR", "-1", "--", "--jobs"]  # after a lone -- nothing is taken
    with pytest.raises(Exception, match="--launcher needs a value"):
        sweep.split_options(["--launcher", "--jobs", "2"])


# ------------------------------------------------------------------- naming
def test_neutral_keys_are_real_config_keys_and_never_make_a_folder():
    cfg = get_cfg_default()
    for key in NEUTRAL_KEYS + tuple(k for k in SCRIPT_KEYS if not k.startswith("TRAINER.NAME")):
        node = cfg
        for part in key.split("."):
            assert part in node, f"{key} is not a config key: the list has rotted"
            node = node[part]
    for key in ("DATASET.SKIP_BAD_IMAGES", "DATALOADER.NUM_WORKERS", "FEATURES.BATCH_SIZE", "TRAIN.PRINT_FREQ",
                "TRAIN.RESUME_SAVE_SECONDS", "FEATURES.CACHE_DIR"):
        assert variant_suffix([key, "7"]) == "" and variant_suffix(["OPTIM.LR", "0.1", key, "7"]) == "lr0.1"


# ---------------------------------------------------------- the registry's word
def test_coop_schedule_comes_from_the_trainer(data_root):
    coop = TRAINERS.get("CoOp")
    imagenet, caltech = lookup.dataset("imagenet"), lookup.dataset("caltech101")
    assert [scheduled_config("CoOp", coop, "rn50", caltech, k) for k in (1, 2, 4, 8, 16)] == ["rn50_ep50", "rn50_ep100", "rn50_ep100", "rn50", "rn50"]
    assert {scheduled_config("CoOp", coop, "rn50", imagenet, k) for k in (1, 2, 4, 8, 16)} == {"rn50_ep50"}
    assert scheduled_config("CoOp", coop, "tiny", caltech, 1) == "tiny"  # no tiny_ep50: the config itself
    assert scheduled_config("CLIP_Adapter", TRAINERS.get("CLIP_Adapter"), "rn50", imagenet, 1) == "rn50"


def test_reproduce_plans_every_experiment_from_the_registry(tmp_path, data_root, experiment):
    """Offline, all five experiments, four trainers: few-shot folders (CoOp's flags spelled out), training-free
    trainers once, class-bound trainers left out where classes change, ablation keys for the trainers owning them."""
    out = tmp_path / "out"
    rc, stdout, err = experiment("reproduce", "--datasets", "smoke", "--backbone", "tiny", "--shots", "1,4", "--seeds", "1 2",
                                 "--trainers", "ZeroshotCLIP", "CoOp,LinearProbeCLIP", "--ablations", "TRAINER.CLIP_ADAPTER.RATIO=0,0.5",
                                 "OPTIM.MAX_EPOCH=1,2", "--xd-targets", "smoke_other",
                                 env={"DATA": data_root, "OUTPUT": out, "DRY_RUN": 1})
    assert rc == 0, err
    runs = planned(stdout, out)
    assert "dry run: no tables" in stdout
    assert "base2new: LinearProbeCLIP is left out: its weights are one classifier row per training class" in err
    assert "xd: LinearProbeCLIP is left out" in err
    assert "ablation: TRAINER.CLIP_ADAPTER.RATIO belongs to CLIP_Adapter, not among --trainers" in err
    for k in (1, 4):
        for s in (1, 2):
            assert f"smoke/CoOp/tiny_{k}shots/nctx16_cscFalse_ctpend/seed{s}" in runs
            assert f"smoke/LinearProbeCLIP/tiny_{k}shots/seed{s}" in runs
    assert [r for r in runs if "ZeroshotCLIP" in r] == [  # one evaluation per experiment, no training
        "smoke/ZeroshotCLIP/tiny/seed1", "base2new/test_new/smoke/shots_16/ZeroshotCLIP/tiny/seed1",
        "base2new/test_base/smoke/shots_16/ZeroshotCLIP/tiny/seed1",
        *[f"evaluation_from_smoke/ZeroshotCLIP/tiny_16shots/{d}/seed1" for d in ("smoke_gray", "smoke_invert", "smoke_blur", "smoke_subset")],
        "evaluation_from_smoke/ZeroshotCLIP/tiny_16shots/smoke_other/seed1"]
    zs = runs["evaluation_from_smoke/ZeroshotCLIP/tiny_16shots/smoke_gray/seed1"]
    assert "--eval-only" in zs and zs[zs.index("EXPERIMENT.SOURCE") + 1] == "Smoke"
    # the transfer source run is the few-shot layout (CoOp's flags included), its tests load it
    lp = runs["evaluation_from_smoke/LinearProbeCLIP/tiny_16shots/smoke_subset/seed2"]
    assert lp[lp.index("--model-dir") + 1] == str(out / "smoke/LinearProbeCLIP/tiny_16shots/seed2")
    assert "smoke/CoOp/tiny_16shots/nctx16_cscFalse_ctpend/seed1" in runs
    assert not [r for r in runs if "LinearProbeCLIP" in r and ("smoke_other" in r or "base2new" in r)]
    assert {r for r in runs if r.startswith("base2new/train_base")} == {f"base2new/train_base/smoke/shots_16/CoOp/tiny/seed{s}" for s in (1, 2)}
    # a core key is ablated for every trainer that trains, a node's key for its owners only
    ablation = sorted(r for r in runs if r.startswith("ablation/"))
    assert ablation == sorted(f"ablation/smoke/{t}/tiny_16shots/ep{e}/seed{s}" for t in ("CoOp", "LinearProbeCLIP") for e in (1, 2) for s in (1, 2))


def test_list_arguments_take_commas_or_spaces(data_root):
    forms = [["--datasets", "smoke smoke_other", "--seeds", "1 2", "--shots", "1,2"],
             ["--datasets", "smoke,smoke_other", "--seeds", "1,2", "--shots", "1", "2"],
             ["--datasets", "smoke", "smoke_other", "--seeds", "1", "2", "--shots", "1 2"]]
    parsed = []
    for form in forms:
        o = reproduce.parse([*form, "--backbone", "tiny", "--experiments", "fewshot xd"], Settings(data=data_root))
        parsed.append(([d.name for d in o.datasets], o.seeds, o.shots, o.experiments))
    assert parsed[0] == parsed[1] == parsed[2] == (["smoke", "smoke_other"], [1, 2], [1, 2], ("fewshot", "xd"))


# ------------------------------------------------------------ the foreground
STAND_IN = "import os, sys; out = sys.argv[1]; os.makedirs(out, exist_ok=True); sys.exit(3) if sys.argv[2] == 'fail' else open(os.path.join(out, 'results.json'), 'w').write('{}')"


def test_foreground_runs_in_order_records_failures_and_skips_their_dependents(tmp_path, capsys):
    specs = [sweep.JobSpec(str(tmp_path / name), (sys.executable, "-c", STAND_IN, str(tmp_path / name), how), after, name)
             for name, how, after in (("train", "fail", ()), ("test", "ok", (str(tmp_path / "train"),)), ("other", "ok", ()))]
    runs = sweep.build_runs(specs, cwd=str(tmp_path))
    args = sweep.cli.option_parser().parse_args([])
    assert sweep.execute(runs, args, None) == sweep.EXIT_FAILED
    out = capsys.readouterr().out
    assert f"==> {tmp_path / 'train'}" in out and f"FAILED  {tmp_path / 'train'} (exit status 3" in out
    assert f"SKIPPED {tmp_path / 'test'}: its dependency {tmp_path / 'train'} did not finish" in out
    assert (tmp_path / "other" / "results.json").exists() and not (tmp_path / "test").exists()
    assert json.loads((tmp_path / "train" / sweep.FAILED_FILE).read_text())["returncode"] == 3
    status = sweep.cli.option_parser().parse_args(["--status"])
    assert sweep.execute(runs, status, None) == sweep.EXIT_FAILED  # failed, and --status says so
    assert re.search(r"3 run\(s\): 1 finished, 0 running, 1 pending, 1 failed", capsys.readouterr().out)
    # fixed: the next call runs the failed run and its dependent, and skips the finished one
    runs = sweep.build_runs([sweep.JobSpec(s.output_dir, s.cmd[:-1] + ("ok",), s.after, s.where) for s in specs], cwd=str(tmp_path))
    assert sweep.execute(runs, args, None) == sweep.EXIT_OK
    out = capsys.readouterr().out
    assert f"skip: {tmp_path / 'other'} is finished" in out and f"==> {tmp_path / 'train'} (unfinished: resuming or restarting)" in out
    assert not (tmp_path / "train" / sweep.FAILED_FILE).exists() and (tmp_path / "test" / "results.json").exists()
