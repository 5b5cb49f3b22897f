"""Your own data without code: the ``Custom`` dataset in each layout, through the library, the CLI and the scripts.

The expectations (classes, per-class split sizes, which images exist) come from the trees built
here; the split procedure itself is checked against CoOp's proportions per class, for determinism
(same file twice, reused, independent of the run's seed) and for staleness.
"""
from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import clip_adapter.datasets  # noqa: F401  (registers the datasets)
from clip_adapter.config import get_cfg_default
from clip_adapter.errors import ConfigError, DatasetError
from clip_adapter.registry import DATASETS, TRAINERS
from conftest import REPO, trainer_cfg

CLASSES = ["cat", "dog", "red_fox"]
PER_CLASS = 10
COLOURS = [(220, 30, 30), (30, 200, 40), (40, 60, 230), (230, 220, 30)]


def png(path: Path, label: int, i: int, size=(20, 12)) -> None:
    """A non-square image: a class colour plus a little per-image noise."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(label * 1000 + i)
    pixels = np.clip(np.array(COLOURS[label], dtype=np.float32) + rng.normal(0, 12, size=(size[1], size[0], 3)), 0, 255)
    Image.fromarray(pixels.astype(np.uint8)).save(path)


def folders_tree(base: Path, classes=CLASSES, per_class=PER_CLASS) -> Path:
    for label, name in enumerate(classes):
        for i in range(per_class):
            png(base / name / f"{name}_{i:02d}.png", label, i)
    (base / "README.txt").write_text("not a class")  # stray files are ignored
    (base / classes[0] / "Thumbs.db").write_bytes(b"junk")
    return base


def csv_tree(base: Path, classes=CLASSES, per_class=PER_CLASS) -> Path:
    rows = []
    for label, name in enumerate(classes):
        for i in range(per_class):
            rel = f"images/{name}/{i}.png"
            png(base / rel, label, i)
            rows.append((f"./{rel}", name))  # "./" on purpose: paths are normalised
    path = base / "labels.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "classname"])  # no label column: labels follow the sorted class names
        w.writerows(rows)
    return path


def json_tree(base: Path, classes=CLASSES, per_class=PER_CLASS) -> Path:
    train, test = [], []
    for label, name in enumerate(classes):
        for i in range(per_class):
            rel = f"{name}/{i}.png"
            png(base / "imgs" / rel, label, i)
            (train if i < 7 else test).append([rel, label, name])
    path = base / "split.json"
    path.write_text(json.dumps({"train": train, "test": test}))  # no val: it is generated from train
    return path


LAYOUTS = {
    "folders": lambda root: (folders_tree(root / "pets"), {"PATH": "pets"}),
    "csv": lambda root: (csv_tree(root / "pets_csv"), {"PATH": "pets_csv/labels.csv"}),
    "json": lambda root: (json_tree(root / "pets_json"), {"PATH": "pets_json/split.json", "IMAGE_DIR": "imgs"}),
}


def custom_cfg(root, shots=-1, seed=1, subsample="all", **custom):
    cfg = get_cfg_default()
    cfg.DATASET.ROOT = str(root)
    cfg.DATASET.NAME = "Custom"
    cfg.DATASET.NUM_SHOTS = shots
    cfg.DATASET.SUBSAMPLE_CLASSES = subsample
    cfg.SEED = seed
    for key, value in custom.items():
        cfg.DATASET.CUSTOM[key] = value
    return cfg


def build(root, seed=1, **kw):
    random.seed(seed)  # as the CLI does, once, before the dataset is built
    return DATASETS.get("Custom")(custom_cfg(root, seed=seed, **kw))


def dataset_yaml(path: Path, **custom) -> str:
    lines = ['DATASET:', '  NAME: "Custom"', '  CUSTOM:'] + [f"    {k}: {json.dumps(v)}" for k, v in custom.items()]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def per_class(items):
    return Counter(d.label for d in items)


def as_tuples(items):
    return [(d.impath, d.label, d.classname) for d in items]


# ---------------------------------------------------------------------- reading
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_each_layout_gives_the_classes_and_a_stratified_split(tmp_path, layout):
    _, custom = LAYOUTS[layout](tmp_path)
    ds = build(tmp_path, **custom)
    assert ds.classnames == CLASSES and ds.num_classes == 3
    if layout == "json":  # train and test given (7/3 per class); val is 20% of train
        expected = {"train": 6, "val": 1, "test": 3}
    else:  # nothing given: CoOp's 50/20/30 per class
        expected = {"train": 5, "val": 2, "test": 3}
    for split, n in expected.items():
        assert per_class(getattr(ds, "train_x" if split == "train" else split)) == {0: n, 1: n, 2: n}
    everything = [d.impath for d in ds.train_x + ds.val + ds.test]
    assert len(everything) == len(set(everything)) == 3 * PER_CLASS
    assert all(os.path.isfile(p) and p.endswith(".png") for p in everything)
    for d in ds.train_x + ds.val + ds.test:
        assert CLASSES[d.label] == d.classname and f"{os.sep}{d.classname}" in d.impath


def test_generated_split_is_written_once_identical_and_independent_of_the_run_seed(tmp_path, caplog):
    folders_tree(tmp_path / "pets")
    first = build(tmp_path, seed=1, PATH="pets")
    split = tmp_path / "pets" / "split_pets_seed1_val0.2_test0.3.json"
    content, stamp = split.read_bytes(), split.stat().st_mtime_ns
    split.unlink()
    again = build(tmp_path, seed=7, PATH="pets")  # another run seed, split made afresh
    assert split.read_bytes() == content
    stamp = split.stat().st_mtime_ns
    with caplog.at_level("INFO"):
        reused = build(tmp_path, seed=3, PATH="pets")
    assert "Reusing the generated split" in caplog.text
    assert split.stat().st_mtime_ns == stamp  # read, not rewritten
    for ds in (again, reused):
        assert as_tuples(ds.train_x) == as_tuples(first.train_x)
        assert as_tuples(ds.val) == as_tuples(first.val) and as_tuples(ds.test) == as_tuples(first.test)
    prov = reused.split_provenance  # what results.json records: the generated split, its seed and cut
    assert prov["file"] == split.name and prov["source"] == "built here" and prov["seed"] == 1
    assert prov["sha256"] == hashlib.sha256(content).hexdigest() and "val 0.2 / test 0.3" in prov["procedure"]
    # Its layout is CoOp's, relative to the folder, so it can be shared and read back with FORMAT json.
    raw = json.loads(content)
    assert set(raw) == {"train", "val", "test"} and raw["test"][0][0].split("/")[0] in CLASSES
    other = build(tmp_path, PATH="pets", SPLIT_SEED=2)
    assert (tmp_path / "pets" / "split_pets_seed2_val0.2_test0.3.json").is_file()
    assert as_tuples(other.test) != as_tuples(first.test) and per_class(other.test) == per_class(first.test)
    assert "split_fewshot" not in CLASSES and build(tmp_path, PATH="pets", shots=1).classnames == CLASSES  # its own files are no class


def test_generating_the_split_leaves_the_run_rng_alone(tmp_path):
    """The few-shot draw under a run seed is the same whether the split was just generated or reused."""
    folders_tree(tmp_path / "pets")
    fresh = build(tmp_path, seed=5, PATH="pets", shots=2)
    fewshot_dir = tmp_path / "pets" / "split_fewshot" / "split_pets_seed1_val0.2_test0.3"
    stored = (fewshot_dir / "shot_2-seed_5.json").read_text()
    (fewshot_dir / "shot_2-seed_5.json").unlink()  # resample with the split file now present
    reused = build(tmp_path, seed=5, PATH="pets", shots=2)
    assert (fewshot_dir / "shot_2-seed_5.json").read_text() == stored
    assert as_tuples(fresh.train_x) == as_tuples(reused.train_x) and len(fresh.train_x) == 6


def test_given_splits_are_kept_and_only_the_missing_one_is_generated(tmp_path):
    base = tmp_path / "flowers"
    for split, n in (("train", 10), ("test", 4)):
        for label, name in enumerate(["daisy", "rose"]):
            for i in range(n):
                png(base / split / name / f"{i}.png", label, i + (100 if split == "test" else 0))
    ds = build(tmp_path, PATH="flowers")
    assert [d.impath for d in ds.test] == sorted(str(p) for p in (base / "test").rglob("*.png"))
    assert per_class(ds.val) == {0: 2, 1: 2} and per_class(ds.train_x) == {0: 8, 1: 8}
    assert all("/train/" in d.impath for d in ds.train_x + ds.val)
    for label, name in enumerate(["daisy", "rose"]):  # all three given: nothing is generated or written
        for i in range(3):
            png(base / "val" / name / f"{i}.png", label, 200 + i)
    os.remove(base / "split_flowers_seed1_val0.2_test0.3.json")
    full = build(tmp_path, PATH="flowers")
    assert per_class(full.val) == {0: 3, 1: 3} and per_class(full.train_x) == {0: 10, 1: 10}
    assert not list(base.glob("split_*.json"))
    assert full.split_provenance["source"] == "given" and full.split_provenance["file"] is None  # a folder, not a file


def test_csv_with_labels_and_a_split_column(tmp_path):
    base = tmp_path / "sat"
    rows = [["path", "label", "classname", "split"]]
    for label, name in enumerate(["forest", "river"]):
        for i in range(8):
            png(base / f"{name}{i}.jpg.png", label, i)
            rows.append([f"{name}{i}.jpg.png", str(1 - label), name, "test" if i >= 6 else "train"])  # labels reversed on purpose
    with open(base / "all.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    ds = build(tmp_path, PATH="sat/all.csv")
    assert ds.classnames == ["river", "forest"]  # the file's labels win over name order
    assert per_class(ds.test) == {0: 2, 1: 2} and per_class(ds.val) == {0: 1, 1: 1} and per_class(ds.train_x) == {0: 5, 1: 5}


def test_classnames_file_and_templates(tmp_path):
    folders_tree(tmp_path / "pets")
    assert build(tmp_path, PATH="pets", shots=2).classnames == CLASSES  # split and few-shot file made with folder names
    (tmp_path / "pets" / "names.json").write_text(json.dumps({"red_fox": "red fox", "cat": "house cat"}))
    ds = build(tmp_path, PATH="pets", shots=2, CLASSNAMES_FILE="names.json", TEMPLATES=["a photo of a {}, a pet.", "a blurry photo of a {}."])
    assert ds.classnames == ["house cat", "dog", "red fox"]  # renaming keeps the split and the few-shot draw
    assert {d.classname for d in ds.train_x} == {"house cat", "dog", "red fox"}
    assert ds.templates("single") == ["a photo of a {}, a pet.", "a blurry photo of a {}."]
    assert len(ds.templates("ensemble")) == 7
    assert ds.templates("coop_ensemble") == ds.templates("ensemble") + ["a photo of a {}, a pet.", "a blurry photo of a {}."]
    assert build(tmp_path, PATH="pets").templates() == ["a photo of a {}."]
    (tmp_path / "pets" / "names.txt").write_text("kitty\npuppy\nfox\n")
    assert build(tmp_path, PATH="pets", CLASSNAMES_FILE="names.txt").classnames == ["kitty", "puppy", "fox"]


def test_a_changed_tree_makes_the_stored_split_stale_and_says_so(tmp_path):
    folders_tree(tmp_path / "pets")
    build(tmp_path, PATH="pets")
    png(tmp_path / "pets" / "dog" / "new.png", 1, 99)
    with pytest.raises(DatasetError) as err:
        build(tmp_path, PATH="pets")
    msg = str(err.value)
    assert "no longer matches" in msg and "1 image(s) new or relabelled since it was made" in msg and "delete it to make a new one" in msg
    assert "python -m clip_adapter.app.doctor Custom --root" in msg and "DATASET.CUSTOM.PATH" in msg


@pytest.mark.parametrize(
    "setup, custom, error, needle",
    [
        (None, {"PATH": ""}, ConfigError, "DATASET.CUSTOM.PATH is empty"),
        (None, {"PATH": "nowhere"}, DatasetError, "DATASET.CUSTOM.PATH not found"),
        ("folders", {"PATH": "pets", "FORMAT": "csv"}, DatasetError, "is not a .csv file"),
        ("folders", {"PATH": "pets", "FORMAT": "parquet"}, ConfigError, "must be one of auto, folders, json, csv"),
        ("folders", {"PATH": "pets", "VAL_FRACTION": 0.5, "TEST_FRACTION": 0.5}, ConfigError, "sum to less than 1"),
        ("folders", {"PATH": "pets", "CLASSNAMES_FILE": "two.txt"}, DatasetError, "has 2 names but the data has 3 classes"),
        ("badcsv", {"PATH": "bad.csv"}, DatasetError, "header with 'path'"),
        ("gapcsv", {"PATH": "gap.csv"}, DatasetError, "label(s) 1 have none"),
        ("twonames", {"PATH": "two.csv"}, DatasetError, "label 0 has two class names"),
        ("mixed", {"PATH": "mixed"}, DatasetError, "mixes split folders"),
        ("tiny", {"PATH": "tiny"}, DatasetError, "too few to split"),
    ],
)
def test_bad_input_is_one_line_naming_the_fix(tmp_path, setup, custom, error, needle):
    if setup == "folders":
        folders_tree(tmp_path / "pets")
        (tmp_path / "pets" / "two.txt").write_text("a\nb\n")
    elif setup == "badcsv":
        (tmp_path / "bad.csv").write_text("file,name\nx.png,cat\n")
    elif setup == "gapcsv":
        png(tmp_path / "a.png", 0, 0)
        (tmp_path / "gap.csv").write_text("path,label,classname\na.png,0,cat\na.png,2,dog\n")
    elif setup == "twonames":
        png(tmp_path / "a.png", 0, 0)
        (tmp_path / "two.csv").write_text("path,label,classname\na.png,0,cat\na.png,0,kitten\n")
    elif setup == "mixed":
        folders_tree(tmp_path / "mixed" / "train")
        folders_tree(tmp_path / "mixed" / "cow", classes=["cow"], per_class=2)
    elif setup == "tiny":
        folders_tree(tmp_path / "tiny", classes=["a", "b"], per_class=2)
    with pytest.raises(error) as err:
        build(tmp_path, **custom)
    assert needle in str(err.value) and "\n" not in str(err.value)
    if error is DatasetError:
        assert "clip_adapter.app.doctor Custom" in str(err.value)


def test_bad_template_is_refused_when_the_classifier_is_built(tmp_path):
    folders_tree(tmp_path / "pets")
    with pytest.raises(ConfigError, match="one {} slot"):
        build(tmp_path, PATH="pets", TEMPLATES=["a photo of a cat."]).templates()


# ------------------------------------------------------------------ duplicate class names
@pytest.mark.slow
def test_equal_class_names_stay_two_classes_end_to_end(tmp_path, run_train):
    """Two labels named 'crane': two classifier rows, two labels in the data, in the metrics, in results.json."""
    import torch

    from clip_adapter.models.text import encode_text_classifier
    from conftest import load_tiny

    weights = encode_text_classifier(load_tiny(), ["crane", "crane", "fox"], ["a photo of a {}."], "cpu")
    assert weights.shape[0] == 3
    assert torch.allclose(weights[0], weights[1]) and not torch.allclose(weights[0], weights[2])

    base = tmp_path / "birds"
    rows = [["path", "label", "classname"]]
    for label, name in enumerate(["crane", "crane", "fox"]):
        for i in range(10):
            png(base / f"{label}_{i}.png", label, i)
            rows.append([f"{label}_{i}.png", str(label), name])
    with open(base / "birds.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    ds = build(tmp_path, PATH="birds/birds.csv", shots=4)
    assert ds.classnames == ["crane", "crane", "fox"] and ds.num_classes == 3
    assert per_class(ds.train_x) == {0: 4, 1: 4, 2: 4} and per_class(ds.test) == {0: 3, 1: 3, 2: 3}

    yaml = dataset_yaml(tmp_path / "birds.yaml", PATH="birds/birds.csv")
    out = tmp_path / "out"
    rc = run_train(out, "LinearProbeCLIP", "TEST.PER_CLASS_RESULT", "True", "TRAINER.LINEAR_PROBE.SEARCH_STEPS", "0",
                   shots=4, dataset=yaml, root=str(tmp_path))
    assert rc == 0
    record = json.loads((out / "results.json").read_text())
    assert record["num_classes"] == 3 and record["total"] == 9
    # one entry per label: the second 'crane' is its own class with its own accuracy
    assert sorted(record["per_class_accuracy"]) == ["crane", "crane#1", "fox"]
    assert record["per_class_accuracy"]["crane#1"] > 0  # a fitted head predicts the second 'crane' too


# ------------------------------------------------------------------- CLI and scripts
def fast(*opts):
    return ["OPTIM.MAX_EPOCH", "2", *opts]


@pytest.mark.slow
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_each_layout_trains_through_the_cli_fewshot_and_base_new(tmp_path, run_train, layout):
    _, custom = LAYOUTS[layout](tmp_path / "data")
    yaml = dataset_yaml(tmp_path / f"{layout}.yaml", **custom)
    root = str(tmp_path / "data")
    cache = ["FEATURES.CACHE_DIR", str(tmp_path / "cache")]
    assert run_train(tmp_path / "out" / "fewshot", "CLIP_Adapter", *fast(*cache), shots=2, dataset=yaml, root=root) == 0
    record = json.loads((tmp_path / "out" / "fewshot" / "results.json").read_text())
    assert record["dataset"] == "Custom" and record["shots"] == 2 and record["num_classes"] == 3
    assert record["total"] == 9  # 3 test images per class in every layout
    generated = sorted((tmp_path / "data").rglob("split_*_seed1_val0.2_test0.3.json"))
    assert len(generated) == 1
    content = generated[0].read_bytes()

    for half, n in (("base", 2), ("new", 1)):
        out = tmp_path / "out" / half
        assert run_train(out, "CLIP_Adapter", *fast("DATASET.SUBSAMPLE_CLASSES", half, *cache), shots=2, dataset=yaml, root=root) == 0
        record = json.loads((out / "results.json").read_text())
        assert record["subsample"] == half and record["num_classes"] == n and record["total"] == 3 * n
        assert "Reusing the generated split" in (out / "log.txt").read_text()
    assert generated[0].read_bytes() == content


@pytest.mark.slow
def test_every_trainer_runs_on_a_custom_dataset(tmp_path, run_train):
    csv_tree(tmp_path / "data" / "pets_csv")
    yaml = dataset_yaml(tmp_path / "pets.yaml", PATH="pets_csv/labels.csv")
    import clip_adapter.trainers  # noqa: F401

    for name in TRAINERS.names():
        if not os.path.isfile(trainer_cfg(name)):
            continue
        out = tmp_path / "out" / name
        rc = run_train(out, name, *fast("FEATURES.CACHE_DIR", str(tmp_path / "cache")), shots=2, dataset=yaml, root=str(tmp_path / "data"))
        assert rc == 0, name
        record = json.loads((out / "results.json").read_text())
        assert record["num_classes"] == 3 and record["total"] == 9 and 0 <= record["accuracy"] <= 100


def _bash(script, *args, data, out, cwd):
    env = dict(os.environ, DATA=str(data), OUTPUT=str(out), PYTHON=sys.executable, SEEDS="1", SHOTS="2")
    env.pop("CLIP_ADAPTER_FEATURE_CACHE", None)
    return subprocess.run(["bash", str(REPO / "scripts" / script), *map(str, args)], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
@pytest.mark.skipif(not (REPO / "scripts" / "main.sh").is_file(), reason="scripts/main.sh not there")
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_scripts_run_the_example_config_on_each_layout(tmp_path, layout):
    """configs/datasets/custom_example.yaml as shipped (PATH my_data under $DATA), layout chosen by opts."""
    data, out = tmp_path / "data", tmp_path / "output"
    if layout == "folders":
        folders_tree(data / "my_data")
        opts = []
    else:
        _, custom = LAYOUTS[layout](data)
        opts = [x for k, v in custom.items() for x in (f"DATASET.CUSTOM.{k}", v)]
    proc = _bash("main.sh", "custom_example", "tiny", "2", "CLIP_Adapter", *opts, "OPTIM.MAX_EPOCH", "2", data=data, out=out, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    records = [json.loads(p.read_text()) for p in out.rglob("results.json")]
    assert len(records) == 1 and records[0]["dataset"] == "Custom" and records[0]["num_classes"] == 3
    assert records[0]["dataset_config"] == "custom_example" and records[0]["shots"] == 2
    if layout != "folders":
        return
    args = ["custom_example", "1", "CLIP_Adapter", "tiny", "OPTIM.MAX_EPOCH", "2"]
    for script in ("base2new_train.sh", "base2new_test.sh"):
        proc = _bash(script, *args, data=data, out=out, cwd=tmp_path)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    b2n = {p.parent.relative_to(out).parts[1]: json.loads(p.read_text()) for p in (out / "base2new").rglob("results.json")}
    assert {k: (r["subsample"], r["num_classes"]) for k, r in b2n.items()} == {
        "train_base": ("base", 2), "test_base": ("base", 2), "test_new": ("new", 1)
    }
    assert math.isfinite(b2n["test_new"]["accuracy"])


def test_results_tool_tells_custom_datasets_apart_by_their_config(tmp_path):
    from clip_adapter.app.results import load_runs, render_tables

    for name, acc in (("birds", 50.0), ("cars", 60.0)):
        folder = tmp_path / name / "seed1"
        folder.mkdir(parents=True)
        (folder / "results.json").write_text(json.dumps({
            "trainer": "CLIP_Adapter", "dataset": "Custom", "dataset_config": name, "config": "rn50", "backbone": "RN50",
            "shots": 16, "seed": 1, "subsample": "all", "accuracy": acc, "epochs": 200, "opts": [], "preset": "clip"}))
    runs, _ = load_runs(str(tmp_path))
    assert sorted(r.dataset for r in runs) == ["birds", "cars"]
    text, _ = render_tables(runs, expected_seeds=1)
    header = next(line for line in text.splitlines() if line.startswith("| Method"))
    assert "birds" in header and "cars" in header and "Custom" not in header
