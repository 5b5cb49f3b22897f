"""INPUT.PRESET clip|coop: different pixels on a non-square image, recorded in results.json, separate cache entries."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from clip_adapter.config import get_cfg_default
from clip_adapter.data.transforms import build_transform, transform_spec
from clip_adapter.errors import ConfigError

RED, BLUE = (255, 0, 0), (0, 0, 255)


def cfg_with(preset: str, transforms=("normalize",)):
    cfg = get_cfg_default()
    cfg.INPUT.PRESET = preset
    cfg.INPUT.SIZE = (32, 32)
    cfg.INPUT.INTERPOLATION = "bicubic"
    cfg.INPUT.PIXEL_MEAN = [0.48145466, 0.4578275, 0.40821073]
    cfg.INPUT.PIXEL_STD = [0.26862954, 0.26130258, 0.27577711]
    cfg.INPUT.TRANSFORMS = tuple(transforms)
    return cfg


def wide_image() -> Image.Image:
    """80x40: red left and right quarters, blue middle half."""
    pixels = np.zeros((40, 80, 3), dtype=np.uint8)
    pixels[:, :] = BLUE
    pixels[:, :20] = RED
    pixels[:, 60:] = RED
    return Image.fromarray(pixels)


def test_presets_give_different_pixels_on_a_non_square_image():
    img = wide_image()
    clip = build_transform(cfg_with("clip", ()), is_train=False)(img)
    coop = build_transform(cfg_with("coop", ()), is_train=False)(img)
    assert clip.shape == coop.shape == (3, 32, 32)
    # clip: short side to 32 (-> 64x32), centre crop 32x32 = the blue middle half only
    assert torch.all(clip[2] > 0.95) and torch.all(clip[0] < 0.05)
    # coop: both sides to 32, nothing cropped: the red quarters survive, squeezed, at the edges
    assert torch.all(coop[0, :, :6] > 0.95) and torch.all(coop[0, :, -6:] > 0.95)
    assert torch.all(coop[2, :, 12:20] > 0.95)
    # a square image is resized the same way by both
    square = Image.fromarray(np.asarray(img)[:, 20:60])
    same = [build_transform(cfg_with(p, ()), is_train=False)(square) for p in ("clip", "coop")]
    assert torch.allclose(same[0], same[1], atol=1e-6)


def test_presets_change_the_spec_and_the_training_resize():
    for is_train in (False, True):
        clip, coop = transform_spec(cfg_with("clip"), is_train), transform_spec(cfg_with("coop"), is_train)
        assert clip != coop and "preset=clip" in clip and "preset=coop" in coop
    # without random_resized_crop the training view starts from the preset's resize too
    img = wide_image()
    views = []
    for preset in ("clip", "coop"):
        torch.manual_seed(0)
        views.append(build_transform(cfg_with(preset, ("random_flip",)), is_train=True)(img))
    assert not torch.allclose(views[0], views[1])


def test_unknown_preset_names_the_key():
    with pytest.raises(ConfigError, match="INPUT.PRESET must be one of clip, coop"):
        build_transform(cfg_with("resnet"), is_train=False)


def _shards(cache: str) -> dict:
    out = {}
    for folder in sorted(os.listdir(cache)):
        meta = os.path.join(cache, folder, "meta.json")
        if os.path.isfile(meta):
            with open(meta) as f:
                spec = json.load(f)["transform"]
            files = sorted(n for n in os.listdir(os.path.join(cache, folder)) if n.startswith("shard-"))
            out[folder] = (spec, files, [os.stat(os.path.join(cache, folder, n)).st_mtime_ns for n in files])
    return out


def test_presets_are_recorded_and_key_the_feature_cache_separately(tmp_path, run_train):
    cache = str(tmp_path / "cache")
    opts = ("FEATURES.CACHE_DIR", cache)

    def run(name, preset):
        out = tmp_path / name
        assert run_train(out, "ZeroshotCLIP", "INPUT.PRESET", preset, *opts) == 0
        with open(out / "results.json") as f:
            return json.load(f), (out / "log.txt").read_text()

    first, log1 = run("clip", "clip")
    assert first["preset"] == "clip" and "preset=clip" in first["transform"]
    after_first = _shards(cache)
    assert [spec.split(";")[1] for spec, _, _ in after_first.values()] == ["preset=clip"]
    assert "Encoded 100 image(s)" in log1

    second, log2 = run("coop", "coop")  # other preset: its own namespace, every test image encoded again
    assert second["preset"] == "coop" and "preset=coop" in second["transform"]
    assert second["transform"] != first["transform"]
    after_second = _shards(cache)
    assert set(after_first) < set(after_second) and len(after_second) == 2
    assert sorted(spec.split(";")[1] for spec, _, _ in after_second.values()) == ["preset=clip", "preset=coop"]
    assert "Encoded 100 image(s)" in log2
    for folder, entry in after_first.items():
        assert after_second[folder] == entry  # the clip entries were not touched

    third, log3 = run("clip_again", "clip")  # same preset again: nothing encoded, same numbers
    assert _shards(cache) == after_second
    assert "Encoded" not in log3
    assert third["accuracy"] == first["accuracy"] and third["transform"] == first["transform"]


def _record(folder, preset, seed, accuracy):
    os.makedirs(folder, exist_ok=True)
    record = {"trainer": "CLIP_Adapter", "dataset": "Caltech101", "config": "rn50", "backbone": "RN50", "shots": 16,
              "seed": seed, "subsample": "all", "accuracy": accuracy, "epochs": 200, "opts": [], "preset": preset}
    with open(os.path.join(folder, "results.json"), "w") as f:
        json.dump(record, f)


def test_results_tool_shows_a_preset_column_only_when_runs_differ(tmp_path):
    from clip_adapter.app.results import load_runs, render_csv, render_tables

    for seed in (1, 2, 3):
        _record(tmp_path / "a" / f"seed{seed}", "clip", seed, 80.0 + seed)
    text, _ = render_tables(load_runs(str(tmp_path / "a"))[0])
    assert "Preset" not in text and "82.00 ± 0.82" in text

    for seed in (1, 2, 3):  # same config and opts, other preset (e.g. set in a dataset YAML): never averaged in
        _record(tmp_path / "a" / f"coop_seed{seed}", "coop", seed, 70.0 + seed)
    runs, _ = load_runs(str(tmp_path / "a"))
    text, _ = render_tables(runs)
    rows = {line.split("|")[2].strip(): line for line in text.splitlines() if line.startswith("| CLIP_Adapter")}
    header = next(line for line in text.splitlines() if line.startswith("| Method"))
    assert [c.strip() for c in header.strip("|").split("|")][:3] == ["Method", "Preset", "Caltech101"]
    assert set(rows) == {"clip", "coop"} and "82.00 ± 0.82" in rows["clip"] and "72.00 ± 0.82" in rows["coop"]
    csv_text, _ = render_csv(runs)
    assert {line.split(",")[6] for line in csv_text.splitlines()[1:]} == {"clip", "coop"}
