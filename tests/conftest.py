"""Shared fixtures: every test runs offline on the tiny random CLIP and the generated smoke data."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SMOKE_DS = str(REPO / "configs" / "datasets" / "smoke.yaml")


# The tiny OpenAI-format CLIP's input, stated explicitly (the defaults leave INPUT.* to the backbone).
TINY_INPUT_OPTS = ["INPUT.SIZE", "(32, 32)", "INPUT.INTERPOLATION", "bicubic",
                   "INPUT.PIXEL_MEAN", "[0.48145466, 0.4578275, 0.40821073]", "INPUT.PIXEL_STD", "[0.26862954, 0.26130258, 0.27577711]"]
# The offline models of every backbone family: (family, NAME, the trainer config that uses it).
TINY_BACKBONES = [("openai", "tiny", "tiny"), ("open_clip", "tiny-vit", "tiny_openclip"), ("open_clip", "tiny-sigmoid", "tiny_siglip")]


def trainer_cfg(trainer: str, name: str = "tiny") -> str:
    return str(REPO / "configs" / "trainers" / trainer / f"{name}.yaml")


def load_tiny(family: str = "openai", name: str = "tiny"):
    """A family's offline backbone through its real loader (weights created once per session)."""
    from clip_adapter.backbones import BackboneSpec, load_backbone

    return load_backbone(BackboneSpec(family, name))


@pytest.fixture(scope="session", autouse=True)
def _registered():
    """Every built-in trainer and dataset (and their config nodes) registered, as a run has them."""
    from clip_adapter.plugins import load_all

    load_all(quiet=True)


@pytest.fixture(scope="session", autouse=True)
def _isolated_caches(tmp_path_factory):
    """Tiny CLIP weights in a per-session folder, never the user's ~/.cache."""
    weights = tmp_path_factory.mktemp("clip_weights")
    old = os.environ.get("CLIP_ADAPTER_WEIGHTS")
    os.environ["CLIP_ADAPTER_WEIGHTS"] = str(weights)
    os.environ.pop("CLIP_ADAPTER_FEATURE_CACHE", None)
    yield
    if old is None:
        os.environ.pop("CLIP_ADAPTER_WEIGHTS", None)
    else:
        os.environ["CLIP_ADAPTER_WEIGHTS"] = old


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> str:
    """One generated smoke dataset shared by the session (generation is deterministic)."""
    root = tmp_path_factory.mktemp("data")
    return str(root)


@pytest.fixture
def run_train(data_root):
    """Call the real CLI in-process: run_train(out_dir, trainer, *opts, cfg="tiny", extra=[...])."""
    from clip_adapter.app.train import main

    def _run(output_dir, trainer="ZeroshotCLIP", *opts, cfg="tiny", seed=1, shots=16, extra=(), dataset=SMOKE_DS, root=None):
        argv = [
            "--root", root or data_root,
            "--seed", str(seed),
            "--trainer", trainer,
            "--dataset-config-file", dataset,
            "--config-file", trainer_cfg(trainer, cfg),
            "--output-dir", str(output_dir),
            *extra,
            "DATASET.NUM_SHOTS", str(shots),
            *opts,
        ]
        return main(argv)

    return _run


PLANNER_ENV = ("CLIP_ADAPTER_FEATURE_CACHE", "SEEDS", "DRY_RUN", "SHOTS", "SOURCE", "DATA", "OUTPUT")


@pytest.fixture
def experiment(monkeypatch, capsys, tmp_path):
    """``clip-adapter experiment NAME ARGS`` in-process, as scripts/NAME.sh runs it (its environment
    variables from ``env``, the current directory ``cwd``, default tmp_path): (exit status, stdout, stderr).
    The scripts are one line each; this skips a Python start (seconds on a busy machine) per call."""
    from clip_adapter.app.experiments.cli import main

    def _run(name, *args, env=None, cwd=None):
        for key in PLANNER_ENV:
            monkeypatch.delenv(key, raising=False)
        for key, value in (env or {}).items():
            monkeypatch.setenv(key, str(value))
        monkeypatch.chdir(cwd or tmp_path)
        capsys.readouterr()
        rc = main([name, *map(str, args)])
        captured = capsys.readouterr()
        return rc, captured.out, captured.err

    return _run


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """With CLIP_ADAPTER_REQUIRE_DASSL=1 (set by .ci/run once it has installed Dassl) a skipped
    ``dassl`` test is a failure, so the plugin mode can never silently go untested."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and item.get_closest_marker("dassl") and os.environ.get("CLIP_ADAPTER_REQUIRE_DASSL") == "1":
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"a dassl test was skipped but CLIP_ADAPTER_REQUIRE_DASSL=1 requires Dassl: {reason}"


def spy_splits(trainer, monkeypatch) -> list:
    """The splits a trainer asks features of, in order (to show that a choice never reads test)."""
    seen = []
    original = trainer.split_features

    def spy(split):
        seen.append(split)
        return original(split)

    monkeypatch.setattr(trainer, "split_features", spy)
    return seen
