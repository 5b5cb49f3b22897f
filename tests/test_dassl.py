"""The Dassl plugin mode against the real Dassl (installed from its git repository): registration,
``train.py --engine dassl`` for every trainer, equivalence with the own engine, a CoOp-shaped checkout.

Marked ``dassl``: skipped (with the reason) where Dassl is not installed; CI installs it and sets
CLIP_ADAPTER_REQUIRE_DASSL=1, which turns any such skip into a failure (tests/conftest.py).
"""
from __future__ import annotations

import difflib
import importlib
import importlib.util
import json
import logging
import re
import subprocess
import sys

import pytest
import torch

import clip_adapter.datasets  # noqa: F401  (register the project's classes for the parametrisation)
import clip_adapter.trainers  # noqa: F401
from clip_adapter.app.train import main
from clip_adapter.config import setup_cfg
from clip_adapter.errors import ConfigError, UserError
from clip_adapter.registry import DATASETS, TRAINERS
from conftest import SMOKE_DS, trainer_cfg

dassl_only = pytest.mark.skipif(
    importlib.util.find_spec("dassl") is None,
    reason="Dassl is not installed (docs/dassl.md says how; CI installs it)",
)
DASSL_ACCURACY = re.compile(r"^\* accuracy: (\d+\.\d)%$", re.M)  # Dassl's evaluator prints one decimal
CLIP_STATS = ["INPUT.PIXEL_MEAN", "[0.48145466, 0.4578275, 0.40821073]", "INPUT.PIXEL_STD", "[0.26862954, 0.26130258, 0.27577711]"]


def run_cli(engine, out, trainer, root, *opts, shots=2, seed=1):
    return main(["--engine", engine, "--root", str(root), "--seed", str(seed), "--trainer", trainer,
                 "--dataset-config-file", SMOKE_DS, "--config-file", trainer_cfg(trainer), "--output-dir", str(out),
                 "DATASET.NUM_SHOTS", str(shots), *opts])


def results(folder):
    return json.loads((folder / "results.json").read_text())


@pytest.fixture(scope="module")
def plugin():
    import clip_adapter.dassl

    return clip_adapter.dassl


# ------------------------------------------------------------- without Dassl
def test_without_dassl_one_line_saying_how_to_install(monkeypatch, tmp_path, data_root, capsys):
    """Runs everywhere: with Dassl unimportable, the plugin import and --engine dassl fail in one line."""
    import clip_adapter

    for name in [m for m in sys.modules if m == "clip_adapter.dassl" or m.startswith("clip_adapter.dassl.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.delattr(clip_adapter, "dassl", raising=False)
    monkeypatch.setitem(sys.modules, "dassl", None)

    with pytest.raises(ImportError) as info:
        importlib.import_module("clip_adapter.dassl")
    message = str(info.value)
    assert isinstance(info.value, UserError) and "\n" not in message
    assert "needs Dassl" in message and "--no-build-isolation" in message and "github.com/KaiyangZhou/Dassl.pytorch" in message

    assert run_cli("dassl", tmp_path / "run", "ZeroshotCLIP", data_root) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: the Dassl plugin mode needs Dassl"), err
    assert not (tmp_path / "run").exists()


# -------------------------------------------------------------- registration
@pytest.mark.dassl
@dassl_only
def test_registration_skip_on_duplicate_and_double_import(plugin, monkeypatch, caplog):
    from dassl.data.datasets import DATASET_REGISTRY, DatasetBase
    from dassl.engine import TRAINER_REGISTRY, TrainerX

    for name in TRAINERS.names():
        cls = TRAINER_REGISTRY.get(name)
        assert issubclass(cls, TrainerX) and cls.project_cls is TRAINERS.get(name)
    for name in DATASETS.names():
        cls = DATASET_REGISTRY.get(name)
        assert issubclass(cls, DatasetBase) and cls.project_cls is DATASETS.get(name)

    importlib.reload(plugin)  # a second import (or register_all) finds its own classes: nothing changes
    assert plugin.register_all()["skipped_trainers"] == [] and plugin.REPORT["skipped_datasets"] == []
    assert sorted(plugin.REPORT["trainers"]) == TRAINERS.names() and sorted(plugin.REPORT["datasets"]) == DATASETS.names()

    # Another plugin (a CoOp checkout) registered these names first: they stay theirs and the log says so.
    theirs_t, theirs_d = type("ZeroshotCLIP", (TrainerX,), {}), type("Caltech101", (DatasetBase,), {})
    monkeypatch.setitem(TRAINER_REGISTRY._obj_map, "ZeroshotCLIP", theirs_t)
    monkeypatch.setitem(DATASET_REGISTRY._obj_map, "Caltech101", theirs_d)
    with caplog.at_level(logging.INFO, logger="clip_adapter"):
        report = plugin.register_all()
    assert TRAINER_REGISTRY.get("ZeroshotCLIP") is theirs_t and DATASET_REGISTRY.get("Caltech101") is theirs_d
    assert report["skipped_trainers"] == ["ZeroshotCLIP"] and report["skipped_datasets"] == ["Caltech101"]
    assert "skipped" in caplog.text and "trainer ZeroshotCLIP" in caplog.text and "dataset Caltech101" in caplog.text
    monkeypatch.undo()
    assert plugin.register_all()["skipped_trainers"] == []


@pytest.mark.dassl
@dassl_only
def test_extend_cfg_adds_only_what_is_missing_from_the_one_set_of_defaults(plugin):
    from dassl.config import get_cfg_default as dassl_defaults

    from clip_adapter.config import get_cfg_default

    cfg = dassl_defaults()
    cfg.TRAINER.COOP = type(cfg)()  # a CoOp checkout's own node, with its own value
    cfg.TRAINER.COOP.N_CTX = 99
    dassl_mean = list(cfg.INPUT.PIXEL_MEAN)
    added = plugin.extend_cfg(cfg)
    assert {"TRAINER.CLIP_ADAPTER", "FEATURES", "INPUT.PRESET", "DATASET.SUBSAMPLE_CLASSES", "MODEL.BACKBONE.CACHE_DIR"} <= set(added)
    assert cfg.TRAINER.COOP.N_CTX == 99 and cfg.TRAINER.COOP.PREC == "fp16"  # kept, and completed
    assert list(cfg.INPUT.PIXEL_MEAN) == dassl_mean  # present keys keep Dassl's value

    def keys(node, prefix=""):
        return {k for key, v in node.items() for k in (keys(v, prefix + key + ".") if isinstance(v, type(node)) else {prefix + key})}

    assert keys(get_cfg_default()) <= keys(cfg)
    cfg.TRAINER.CLIP_ADAPTER.RATIO_TABLE.MyData = 0.3  # the per-dataset table still takes new keys
    assert plugin.extend_cfg(cfg) == []
    cfg.freeze()
    with pytest.raises(ConfigError, match="before it is frozen"):
        plugin.extend_cfg(cfg)


# ----------------------------------------------------- every trainer, via CLI
@pytest.mark.slow
@pytest.mark.dassl
@dassl_only
@pytest.mark.parametrize("trainer", TRAINERS.names())
def test_every_trainer_runs_through_dassl(trainer, plugin, tmp_path, data_root):
    core = TRAINERS.get(trainer)
    short = ["OPTIM.MAX_EPOCH", "3"] if core.uses_training_data and core.trains_in_epochs else []  # (fit: one step)
    out = tmp_path / "run"
    assert run_cli("dassl", out, trainer, data_root, *short) == 0
    log = (out / "log.txt").read_text()
    printed = DASSL_ACCURACY.findall(log)
    assert printed and "Evaluate on the *test* set" in log and "Loading trainer: " + trainer in log
    res = results(out)
    assert res["engine"] == "dassl" and res["trainer"] == trainer and res["dataset"] == "Smoke" and res["total"] == 100
    assert f"{res['accuracy']:.1f}" == printed[-1]  # the last Dassl line is the test result results.json reports
    assert res["transform"].startswith("dassl;") and res["encoder_images"] > 0
    if core.uses_training_data:
        assert res["val_accuracy"] is not None
        assert list(out.glob("*/model.pth.tar-*")), "Dassl saved no checkpoint"
    assert run_cli("dassl", out, trainer, data_root, *short) == 0  # finished: skipped, as in the own engine
    assert (out / "log.txt").read_text() == log


@pytest.mark.dassl
@dassl_only
@pytest.mark.parametrize("trainer, opts, needle", [
    ("CLIP_Adapter", ["TRAINER.CLIP_ADAPTER.SEARCH_RATIOS", "[0.2, 0.5]"], "SEARCH_RATIOS (the alpha search)"),
    ("Vanilla", [], "is not this project's"),  # one of Dassl's own trainers
    ("CLIP_adaptor", [], "did you mean 'CLIP_Adapter'"),
])
def test_dassl_engine_bad_input_one_line_nothing_written(trainer, opts, needle, plugin, tmp_path, data_root, capsys):
    out = tmp_path / "run"
    argv = ["--engine", "dassl", "--root", data_root, "--trainer", trainer, "--dataset-config-file", SMOKE_DS,
            "--config-file", trainer_cfg("CLIP_Adapter"), "--output-dir", str(out), *opts]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err
    assert not out.exists()


# ----------------------------------------------- the two engines, same numbers
@pytest.mark.slow
@pytest.mark.dassl
@dassl_only
def test_engines_agree_on_fewshot_subset_adapter_weights_and_accuracy(plugin, tmp_path):
    """Deterministic inputs (INPUT.TRANSFORMS normalize only; smoke images are 48x48 squares, so Dassl's
    resize of both sides and the own engine's short side + centre crop give the same pixels), the whole
    training set in one batch, the same seed: after 5 epochs CLIP-Adapter's weights agree to 1e-5 (fp32;
    the engines differ in batch composition order and encoder batch sizes only: observed ~2e-7) and so
    do the accuracies. Dassl's own cosine schedule runs (no warm-up). Each engine samples its few-shot
    subset in its own fresh data root: the files must be identical."""
    opts = ["INPUT.TRANSFORMS", '["normalize"]', "DATALOADER.TRAIN_X.BATCH_SIZE", "256", *CLIP_STATS,
            "OPTIM.MAX_EPOCH", "5", "OPTIM.WARMUP_EPOCH", "0", "OPTIM.LR", "2.0", "TRAINER.CLIP_ADAPTER.RATIO", "0.8"]
    runs = {}
    for engine in ("own", "dassl"):
        root, out = tmp_path / f"data_{engine}", tmp_path / "output" / engine
        assert run_cli(engine, out, "CLIP_Adapter", root, *opts, shots=16) == 0
        weights = torch.load(out / "clip_adapter" / "model.pth.tar-5", map_location="cpu", weights_only=True)["state_dict"]
        fewshot = json.loads((root / "smoke" / "split_fewshot" / "shot_16-seed_1.json").read_text())
        runs[engine] = (results(out), weights, fewshot)
    (own, w_own, fs_own), (dassl, w_dassl, fs_dassl) = runs["own"], runs["dassl"]

    assert fs_own == fs_dassl and len(fs_own["train"]) == 160
    for key in ("fc.0.weight", "fc.2.weight"):
        torch.testing.assert_close(w_dassl[key], w_own[key], rtol=0, atol=1e-5)
    assert (own["accuracy"], own["correct"], own["val_accuracy"]) == (dassl["accuracy"], dassl["correct"], dassl["val_accuracy"])
    assert own["accuracy"] > 10.0  # trained: zero-shot tiny CLIP is at chance (10%) on smoke
    assert set(own) == set(dassl) and (own["engine"], dassl["engine"]) == ("own", "dassl")


# ------------------------------------------------------ a CoOp-shaped checkout
COOP_TRAIN_PY = '''\
"""A CoOp-shaped train.py: its flags, extend_cfg, setup_cfg and build_trainer."""
import argparse

import torch
from dassl.config import get_cfg_default
from dassl.engine import build_trainer
from dassl.utils import set_random_seed, setup_logger

import datasets.smoke_split  # noqa: F401
import trainers.zsclip  # noqa: F401


def reset_cfg(cfg, args):
    if args.root:
        cfg.DATASET.ROOT = args.root
    if args.output_dir:
        cfg.OUTPUT_DIR = args.output_dir
    if args.resume:
        cfg.RESUME = args.resume
    if args.seed:
        cfg.SEED = args.seed
    if args.trainer:
        cfg.TRAINER.NAME = args.trainer
    if args.backbone:
        cfg.MODEL.BACKBONE.NAME = args.backbone


def extend_cfg(cfg):
    from yacs.config import CfgNode as CN

    cfg.TRAINER.COOP = CN()
    cfg.TRAINER.COOP.N_CTX = 16
    cfg.TRAINER.COOP.CSC = False
    cfg.TRAINER.COOP.CTX_INIT = ""
    cfg.TRAINER.COOP.PREC = "fp16"
    cfg.TRAINER.COOP.CLASS_TOKEN_POSITION = "end"
    cfg.DATASET.SUBSAMPLE_CLASSES = "all"


def setup_cfg(args):
    cfg = get_cfg_default()
    extend_cfg(cfg)
    if args.dataset_config_file:
        cfg.merge_from_file(args.dataset_config_file)
    if args.config_file:
        cfg.merge_from_file(args.config_file)
    reset_cfg(cfg, args)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    return cfg


def main(args):
    cfg = setup_cfg(args)
    if cfg.SEED >= 0:
        set_random_seed(cfg.SEED)
    setup_logger(cfg.OUTPUT_DIR)
    torch.backends.cudnn.benchmark = True
    trainer = build_trainer(cfg)
    if args.eval_only:
        trainer.load_model(args.model_dir, epoch=args.load_epoch)
        trainer.test()
        return
    if not args.no_train:
        trainer.train()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", type=str, default="")
    parser.add_argument("--output-dir", type=str, default="")
    parser.add_argument("--resume", type=str, default="")
    parser.add_argument("--seed", type=int, default=-1)
    parser.add_argument("--config-file", type=str, default="")
    parser.add_argument("--dataset-config-file", type=str, default="")
    parser.add_argument("--trainer", type=str, default="")
    parser.add_argument("--backbone", type=str, default="")
    parser.add_argument("--eval-only", action="store_true")
    parser.add_argument("--model-dir", type=str, default="")
    parser.add_argument("--load-epoch", type=int)
    parser.add_argument("--no-train", action="store_true")
    parser.add_argument("opts", default=None, nargs=argparse.REMAINDER)
    main(parser.parse_args())
'''

# The checkout's own dataset named like ours (so ours is skipped and its own is used, as CoOp's
# Caltech101 would be): Dassl Datums read from the split file the project's Smoke wrote.
CHECKOUT_DATASET = '''\
import json
import os

from dassl.data.datasets import DATASET_REGISTRY, DatasetBase, Datum


@DATASET_REGISTRY.register()
class Smoke(DatasetBase):
    def __init__(self, cfg):
        folder = os.path.join(cfg.DATASET.ROOT, "smoke")
        with open(os.path.join(folder, "split_built_Smoke.json")) as f:
            split = json.load(f)
        read = lambda rows: [Datum(impath=os.path.join(folder, "images", p), label=y, classname=c) for p, y, c in rows]
        train = self.generate_fewshot_dataset(read(split["train"]), num_shots=cfg.DATASET.NUM_SHOTS)
        super().__init__(train_x=train, val=read(split["val"]), test=read(split["test"]))
'''

CHECKOUT_TRAINER = '''\
from dassl.engine import TRAINER_REGISTRY, TrainerX


@TRAINER_REGISTRY.register()
class ZeroshotCLIP(TrainerX):
    """The checkout's own zero-shot trainer (never run here)."""
'''


def plug(train_py: str) -> str:
    """The two lines a CoOp checkout adds: the import, and the call inside its extend_cfg."""
    text = train_py.replace("import trainers.zsclip  # noqa: F401\n", "import trainers.zsclip  # noqa: F401\nimport clip_adapter.dassl\n")
    return text.replace('    cfg.DATASET.SUBSAMPLE_CLASSES = "all"\n', '    cfg.DATASET.SUBSAMPLE_CLASSES = "all"\n    clip_adapter.dassl.extend_cfg(cfg)\n')


@pytest.mark.dassl
@pytest.mark.slow
@dassl_only
def test_coop_checkout_runs_clip_adapter_with_two_added_lines(tmp_path, data_root):
    DATASETS.get("Smoke")(setup_cfg(SMOKE_DS, "", {"DATASET.ROOT": data_root}))  # smoke data + split file on disk
    checkout = tmp_path / "CoOp"
    for pkg, body in (("datasets", ("smoke_split", CHECKOUT_DATASET)), ("trainers", ("zsclip", CHECKOUT_TRAINER))):
        (checkout / pkg).mkdir(parents=True)
        (checkout / pkg / "__init__.py").write_text("")
        (checkout / pkg / f"{body[0]}.py").write_text(body[1])
    plugged = plug(COOP_TRAIN_PY)
    added = [l for l in difflib.unified_diff(COOP_TRAIN_PY.splitlines(), plugged.splitlines(), lineterm="", n=0)
             if l.startswith(("+", "-")) and not l.startswith(("+++", "---"))]
    assert added == ["+import clip_adapter.dassl", "+    clip_adapter.dassl.extend_cfg(cfg)"]
    (checkout / "train.py").write_text(plugged)

    out = tmp_path / "output" / "coop_checkout"
    cmd = [sys.executable, "train.py", "--root", data_root, "--seed", "1", "--trainer", "CLIP_Adapter",
           "--dataset-config-file", SMOKE_DS, "--config-file", trainer_cfg("CLIP_Adapter"), "--output-dir", str(out),
           "DATASET.NUM_SHOTS", "2", "OPTIM.MAX_EPOCH", "3", *CLIP_STATS]
    proc = subprocess.run(cmd, cwd=checkout, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = (out / "log.txt").read_text()
    assert DASSL_ACCURACY.search(log), log[-2000:]
    assert "skipped" in log and "trainer ZeroshotCLIP" in log and "dataset Smoke" in log  # the checkout's own stay
    assert "CLIP-Adapter: visual adapter(s)" in log  # the project's trainer built and logged (alpha from its table)
    assert (out / "clip_adapter" / "model.pth.tar-3").is_file()
    state = torch.load(out / "clip_adapter" / "model.pth.tar-3", map_location="cpu", weights_only=True)["state_dict"]
    assert set(state) == {"fc.0.weight", "fc.2.weight"}  # the authors' adapter keys, loadable by either engine
