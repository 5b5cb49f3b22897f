"""A third-party plugin, installed only by being on PYTHONPATH, through every tool without editing this project.

The plugin is written into tmp_path as a module plus a ``*.dist-info`` folder whose ``entry_points.txt``
declares it in the group ``clip_adapter.plugins`` (what ``pip install`` of a package with that entry
point leaves behind), so ``importlib.metadata`` finds it in the subprocesses. It registers a trainer
with its own config node (``ShiftProbe``: a learned shift of the image features, class-independent),
a training-free trainer (``PluginZeroShot``) and a dataset (``PluginShapes``: the smoke generator with
another seed), and ships its configs folder (``CLIP_ADAPTER_CONFIGS``). A second, broken plugin raises
on import: it is reported in one line and the good one still works.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from test_scripts import bash, markdown_rows, mean, pstd, results_under, script_env

REPO = Path(__file__).resolve().parents[1]

PLUGIN = '''
"""A tiny clip_adapter plugin (written by tests/test_plugin_end_to_end.py)."""
import os

import torch
from torch import nn
from yacs.config import CfgNode as CN

from clip_adapter.datasets.smoke import Smoke
from clip_adapter.engine.clip_trainer import ClipTrainer
from clip_adapter.registry import DATASETS, TRAINERS
from clip_adapter.trainers.zeroshot_clip import ZeroshotCLIP

CLIP_ADAPTER_CONFIGS = os.path.join(os.path.dirname(__file__), "configs")


@TRAINERS.register()
class ShiftProbe(ClipTrainer):
    """Logits of the image features plus one learned shift vector (times TRAINER.SHIFT_PROBE.SCALE)."""

    @classmethod
    def config_defaults(cls):
        node = CN()
        node.SCALE = 1.0
        return {"TRAINER.SHIFT_PROBE": node}

    @classmethod
    def transfer_blocker(cls, cfg):
        return None  # one shift for every class: it transfers

    def build_head(self):
        self.shift = nn.Linear(1, self.clip_info.embed_dim, bias=False).to(self.device)
        nn.init.zeros_(self.shift.weight)
        self.register_model("shift", self.shift)

    def logits(self, image_feats):
        img = image_feats.float() + float(self.cfg.TRAINER.SHIFT_PROBE.SCALE) * self.shift.weight[:, 0]
        img = img / img.norm(dim=-1, keepdim=True)
        return self.logit_scale * img @ self.current_text_features().t()


@TRAINERS.register()
class PluginZeroShot(ZeroshotCLIP):
    """Training-free, like zero-shot CLIP: the experiments learn that from uses_training_data alone."""


@DATASETS.register()
class PluginShapes(Smoke):
    dataset_dir = "plugin_shapes"
    split_file = "split_zhou_PluginShapes.json"
    seed = 3
'''
TINY_INPUT = """INPUT:
  SIZE: (32, 32)
  INTERPOLATION: "bicubic"
  PIXEL_MEAN: [0.48145466, 0.4578275, 0.40821073]
  PIXEL_STD: [0.26862954, 0.26130258, 0.27577711]
MODEL:
  BACKBONE:
    NAME: "tiny"
DATALOADER:
  NUM_WORKERS: 0
"""
SHIFT_CFG = TINY_INPUT + """OPTIM:
  NAME: "sgd"
  LR: 0.5
  MAX_EPOCH: 3
FEATURES:
  TRAIN_VIEWS: 2
TRAINER:
  SHIFT_PROBE:
    SCALE: 1.0
"""


def _dist(site: Path, name: str, module: str) -> None:
    info = site / f"{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[clip_adapter.plugins]\n{name.split('_')[0]} = {module}\n")


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("site")
    pkg = site / "shift_plugin"
    (pkg / "configs" / "datasets").mkdir(parents=True)
    (pkg / "__init__.py").write_text(PLUGIN)
    (pkg / "templates.json").write_text(json.dumps({"PluginShapes": ["a photo of a {}."]}))
    (pkg / "configs" / "datasets" / "plugin_shapes.yaml").write_text('DATASET:\n  NAME: "PluginShapes"\n')
    for trainer, text in (("ShiftProbe", SHIFT_CFG), ("PluginZeroShot", TINY_INPUT)):
        (pkg / "configs" / "trainers" / trainer).mkdir(parents=True)
        (pkg / "configs" / "trainers" / trainer / "tiny.yaml").write_text(text)
    _dist(site, "shift_plugin", "shift_plugin")
    (site / "broken_plugin.py").write_text('raise ImportError("this plugin is broken on purpose")\n')
    _dist(site, "broken_plugin", "broken_plugin")
    return site


def plugin_env(site: Path, data, output: Path, **extra) -> dict:
    env = script_env(data, output, **extra)
    env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def broken_lines(stderr: str) -> list:
    return [ln for ln in stderr.splitlines() if "broken" in ln]


@pytest.mark.slow
def test_plugin_names_resolve_and_a_broken_plugin_is_one_line(plugin_site, data_root, tmp_path):
    """The planner finds the plugin's trainer, config node and dataset by name; the broken plugin is one warning."""
    env = plugin_env(plugin_site, data_root, tmp_path / "out", DRY_RUN=1, SEEDS="1")
    proc = bash("main.sh", "plugin_shapes", "tiny", "2", "ShiftProbe", "TRAINER.SHIFT_PROBE.SCALE", "0.5", env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    cmd = shlex.split(next(ln for ln in proc.stdout.splitlines() if ln.startswith("dry-run:"))[len("dry-run:"):])
    assert cmd[cmd.index("--output-dir") + 1] == f"{tmp_path}/out/plugin_shapes/ShiftProbe/tiny_2shots/scale0.5/seed1"
    assert cmd[cmd.index("--config-file") + 1] == str(plugin_site / "shift_plugin/configs/trainers/ShiftProbe/tiny.yaml")
    assert cmd[cmd.index("--dataset-config-file") + 1] == str(plugin_site / "shift_plugin/configs/datasets/plugin_shapes.yaml")
    lines = broken_lines(proc.stderr)
    assert len(lines) == 1 and "plugin 'broken'" in lines[0] and "ImportError: this plugin is broken on purpose" in lines[0]
    proc = bash("main.sh", "plugin_shapes", "tiny", "2", "ShiftProbe", "TRAINER.SHIFT_PROBE.SCAL", "0.5", env=env, cwd=tmp_path)
    assert proc.returncode == 2 and "unknown config key in command-line opts: TRAINER.SHIFT_PROBE.SCAL" in proc.stderr


@pytest.mark.slow
def test_plugin_through_main_reproduce_sweep_and_tables(plugin_site, data_root, tmp_path):
    out = tmp_path / "output"
    # main.sh with the CFG as a YAML path (its file name is the folder level) and the plugin's own key
    cfg = tmp_path / "shift_fast.yaml"
    cfg.write_text(SHIFT_CFG.replace("MAX_EPOCH: 3", "MAX_EPOCH: 2"))
    env = plugin_env(plugin_site, data_root, out, SEEDS="1")
    proc = bash("main.sh", "plugin_shapes", cfg, "2", "ShiftProbe", "TRAINER.SHIFT_PROBE.SCALE", "0.5", env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    run = results_under(out)["plugin_shapes/ShiftProbe/shift_fast_2shots/scale0.5/seed1"]
    assert run["trainer"] == "ShiftProbe" and run["dataset"] == "PluginShapes" and run["epochs"] == 2 and run["config"] == "shift_fast"
    assert broken_lines(proc.stderr) and all("plugin 'broken'" in ln for ln in broken_lines(proc.stderr))  # reported, not fatal

    # reproduce.sh: the training-free plugin trainer once, the trainable one per seed, through the sweep (--jobs 2), then the tables
    env = plugin_env(plugin_site, data_root, out)
    proc = bash("reproduce.sh", "--experiments", "fewshot", "--datasets", "plugin_shapes", "--trainers", "PluginZeroShot,ShiftProbe",
                "--backbone", "tiny", "--shots", "2", "--seeds", "1 2", "--jobs", "2", env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    found = results_under(out)
    assert set(found) == {"plugin_shapes/ShiftProbe/shift_fast_2shots/scale0.5/seed1", "plugin_shapes/PluginZeroShot/tiny/seed1",
                          "plugin_shapes/ShiftProbe/tiny_2shots/seed1", "plugin_shapes/ShiftProbe/tiny_2shots/seed2"}
    for rel in ("plugin_shapes/ShiftProbe/tiny_2shots/seed1", "plugin_shapes/ShiftProbe/tiny_2shots/seed2"):
        assert "sweep attempt" in (out / rel / "sweep.log").read_text()  # ran by the pool
    rows = {r[0]: r[1] for r in markdown_rows(proc.stdout, "2 shot")}
    accs = [found[f"plugin_shapes/ShiftProbe/tiny_2shots/seed{s}"]["accuracy"] for s in (1, 2)]
    assert rows["ShiftProbe (tiny)"] == f"{mean(accs):.2f} ± {pstd(accs):.2f}"
    assert rows["PluginZeroShot (tiny)"] == f"{found['plugin_shapes/PluginZeroShot/tiny/seed1']['accuracy']:.2f} (n=1)"
    status = bash("main.sh", "plugin_shapes", "tiny", "2", "ShiftProbe", "--status", env={**env, "SEEDS": "1,2"}, cwd=tmp_path)
    assert status.returncode == 0 and "2 run(s): 2 finished" in status.stdout


@pytest.mark.slow
@pytest.mark.dassl
@pytest.mark.skipif(importlib.util.find_spec("dassl") is None, reason="Dassl is not installed (docs: the Dassl plugin mode)")
def test_plugin_trainer_and_dataset_under_dassls_engine(plugin_site, data_root, tmp_path):
    env = plugin_env(plugin_site, data_root, tmp_path / "out")
    configs = plugin_site / "shift_plugin" / "configs"
    out = tmp_path / "dassl_run"
    proc = subprocess.run([sys.executable, str(REPO / "train.py"), "--engine", "dassl", "--root", str(data_root), "--seed", "1",
                           "--trainer", "ShiftProbe", "--dataset-config-file", str(configs / "datasets/plugin_shapes.yaml"),
                           "--config-file", str(configs / "trainers/ShiftProbe/tiny.yaml"), "--output-dir", str(out),
                           "DATASET.NUM_SHOTS", "2", "OPTIM.MAX_EPOCH", "1"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    record = json.loads((out / "results.json").read_text())
    assert record["trainer"] == "ShiftProbe" and record["dataset"] == "PluginShapes" and record["engine"] == "dassl"
    assert len(broken_lines(proc.stderr)) == 1
