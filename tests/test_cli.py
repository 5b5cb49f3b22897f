"""The CLI in-process: bad input gives one line and exit 2 with nothing written; finished runs are skipped."""
import json
import os

import pytest

from clip_adapter.app.train import main
from conftest import REPO, SMOKE_DS, trainer_cfg


def one_line_error(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def base_args(data_root, out, trainer="ZeroshotCLIP"):
    return ["--root", data_root, "--seed", "1", "--trainer", trainer, "--dataset-config-file", SMOKE_DS,
            "--config-file", trainer_cfg("ZeroshotCLIP"), "--output-dir", str(out)]


@pytest.mark.slow
def test_zero_shot_run_writes_results_config_and_coop_log_lines(tmp_path, data_root):
    out = tmp_path / "run"
    assert main(base_args(data_root, out) + ["DATASET.NUM_SHOTS", "4"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["trainer"] == "ZeroshotCLIP" and res["dataset"] == "Smoke" and res["seed"] == 1
    assert res["total"] == 100 and 0 <= res["accuracy"] <= 100 and res["offline_check"] is True
    log = (out / "log.txt").read_text()
    assert f"* accuracy: {res['accuracy']:.2f}%" in log
    cfg = (out / "config.yaml").read_text()
    assert "NAME: ZeroshotCLIP" in cfg and "NUM_SHOTS: 4" in cfg


@pytest.mark.parametrize(
    "override, needle",
    [
        (["--trainer", "ZeroShotClip"], "unknown trainer 'ZeroShotClip'"),
        (["DATASET.NAME", "Caltech10"], "unknown dataset 'Caltech10'"),
        (["OPTIM.NOPE", "1"], "unknown config key in command-line opts: OPTIM.NOPE"),
        (["OPTIM.MAX_EPOCH", "ten"], "type mismatch in command-line opts for OPTIM.MAX_EPOCH"),
        (["--config-file", "/nonexistent/cfg.yaml"], "config file not found: /nonexistent/cfg.yaml"),
    ],
)
def test_bad_input_one_line_exit_2_nothing_written(tmp_path, data_root, capsys, override, needle):
    out = tmp_path / "run"
    args = base_args(data_root, out)
    flags = [o for o in override if o.startswith("--")]
    if flags:
        i = args.index(flags[0])
        args[i + 1] = override[1]
        argv = args
    else:
        argv = args + override
    assert main(argv) == 2
    assert needle in one_line_error(capsys)
    assert not out.exists()


def test_malformed_yaml(tmp_path, data_root, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("OPTIM: [unclosed\n")
    args = base_args(data_root, tmp_path / "run")
    args[args.index("--config-file") + 1] = str(bad)
    assert main(args) == 2
    assert "malformed YAML in" in one_line_error(capsys)


def test_eval_only_without_checkpoint(tmp_path, data_root, capsys):
    import clip_adapter.trainers  # noqa: F401
    from clip_adapter.registry import TRAINERS

    trainable = [n for n in TRAINERS.names() if TRAINERS.get(n).uses_training_data]
    if not trainable:
        pytest.skip("no trainable trainer registered yet")
    name = trainable[0]
    out = tmp_path / "eval"
    argv = ["--root", data_root, "--trainer", name, "--dataset-config-file", SMOKE_DS, "--config-file", trainer_cfg(name),
            "--output-dir", str(out), "--eval-only", "--model-dir", str(tmp_path / "empty")]
    assert main(argv) == 2
    assert "has no checkpoint" in one_line_error(capsys)
    assert not out.exists()


def test_finished_run_is_skipped(tmp_path, data_root, capsys):
    out = tmp_path / "run"
    assert main(base_args(data_root, out)) == 0
    before = (out / "results.json").stat().st_mtime_ns
    capsys.readouterr()
    assert main(base_args(data_root, out)) == 0
    assert "Finished run found" in capsys.readouterr().out
    assert (out / "results.json").stat().st_mtime_ns == before


@pytest.mark.slow
def test_unfinished_run_without_checkpoint_restarts(tmp_path, data_root, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "log.txt").write_text("crashed before any checkpoint\n")
    assert main(base_args(data_root, out)) == 0
    assert "no checkpoint, restarting" in capsys.readouterr().out
    assert (out / "results.json").exists()


@pytest.mark.slow
def test_seed_zero_is_a_real_seed(tmp_path, data_root):
    out = tmp_path / "run"
    args = base_args(data_root, out)
    args[args.index("--seed") + 1] = "0"
    assert main(args + ["DATASET.NUM_SHOTS", "2"]) == 0
    assert json.loads((out / "results.json").read_text())["seed"] == 0
    assert os.path.isfile(os.path.join(data_root, "smoke", "split_fewshot", "shot_2-seed_0.json"))


@pytest.mark.slow
def test_results_record_the_hyperparameters_used(tmp_path, run_train):
    out = tmp_path / "ca"
    assert run_train(out, "CLIP_Adapter", "OPTIM.MAX_EPOCH", "2", "TRAINER.CLIP_ADAPTER.RATIO", "0.4", shots=2) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["hyperparameters"] == {"alpha": 0.4, "adapter_type": "visual", "reduction": res["hyperparameters"]["reduction"]}
    assert res["epochs"] == 2 and res["shots"] == 2
    # the split's provenance: Smoke's split is built here (no random draw), never named split_zhou_*
    assert res["split_file"]["file"] == "split_built_Smoke.json" and res["split_file"]["source"] == "built here"
    assert len(res["split_file"]["sha256"]) == 64 and res["split_file"]["seed"] is None


def _numbers(path):
    res = json.loads((path / "results.json").read_text())
    return {k: res[k] for k in ("accuracy", "correct", "macro_f1", "val_accuracy", "per_class_accuracy")}


@pytest.mark.slow
def test_same_seed_same_results_and_an_interrupted_run_resumes_to_the_same_numbers(tmp_path, run_train, monkeypatch, capsys):
    """Two runs with one seed agree exactly; a run killed after epoch 2 resumes from its checkpoint
    (epoch 1) and ends with the uninterrupted run's numbers (views and batch order are seeded per epoch)."""
    from clip_adapter.engine.trainer import TrainerBase

    opts = ("OPTIM.MAX_EPOCH", "4", "TEST.PER_CLASS_RESULT", "True")
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    assert run_train(a, "CLIP_Adapter", *opts, shots=4) == 0
    assert run_train(b, "CLIP_Adapter", *opts, shots=4) == 0
    assert _numbers(a) == _numbers(b)

    original = TrainerBase.after_epoch

    def crash_after_second_epoch(self, epoch):
        original(self, epoch)
        if epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(TrainerBase, "after_epoch", crash_after_second_epoch)
    assert run_train(c, "CLIP_Adapter", *opts, shots=4) == 130
    assert not (c / "results.json").exists()
    monkeypatch.setattr(TrainerBase, "after_epoch", original)
    capsys.readouterr()
    assert run_train(c, "CLIP_Adapter", *opts, shots=4) == 0
    out = capsys.readouterr().out
    assert "resuming from its newest checkpoint" in out and "(epoch 1 done)" in out
    assert _numbers(c) == _numbers(a)


@pytest.mark.slow
def test_a_run_without_output_dir_gets_a_folder_of_its_own(tmp_path, data_root, monkeypatch, capsys):
    """No --output-dir: the run does not write into the scripts' output root (where results.json would
    make every later run "finished"); each such run gets its own folder under output/runs/."""
    monkeypatch.chdir(tmp_path)
    args = base_args(data_root, tmp_path / "unused")
    i = args.index("--output-dir")
    del args[i : i + 2]
    assert main(args) == 0 and main(args) == 0
    assert "Finished run found" not in capsys.readouterr().out
    runs = sorted((tmp_path / "output" / "runs").iterdir())
    assert len(runs) == 2 and all((r / "results.json").is_file() for r in runs)
    assert not (tmp_path / "output" / "results.json").exists()
    assert runs[0].name.startswith("Smoke_ZeroshotCLIP_tiny_")


def test_bad_data_leaves_no_run_folder(tmp_path, capsys):
    """A dataset that is not there fails with one line, and the run folder it would have created is gone
    (no config.yaml, no log.txt): nothing is written for bad input."""
    out = tmp_path / "run"
    argv = ["--root", str(tmp_path / "nodata"), "--trainer", "ZeroshotCLIP", "--dataset-config-file",
            str(REPO / "configs" / "datasets" / "dtd.yaml"), "--config-file", trainer_cfg("ZeroshotCLIP"), "--output-dir", str(out)]
    assert main(argv) == 2
    assert "error:" in capsys.readouterr().err
    assert not out.exists()
