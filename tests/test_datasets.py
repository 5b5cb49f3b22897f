"""The benchmark datasets on tiny fake trees in each one's real layout.

What is checked: each reader builds CoOp's split from the raw annotations and reads it back
unchanged; class-name clean-ups; the split and few-shot procedures against expectations derived
here by hand with plain ``random`` calls (never by calling the code under test); base/new halves;
and every bad input named in the issue.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
from collections import Counter, OrderedDict

import pytest

import clip_adapter.datasets  # noqa: F401  (registers the datasets)
from clip_adapter.config import get_cfg_default
from clip_adapter.data.build import find_unreadable
from clip_adapter.data.loader import read_image
from clip_adapter.data.splits import read_split
from clip_adapter.errors import DatasetError
from clip_adapter.registry import DATASETS
from fake_datasets import BUILDERS, WNIDS, class_folders, image, write

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_NAMES = {
    "imagenet": "ImageNet", "caltech101": "Caltech101", "oxford_pets": "OxfordPets", "stanford_cars": "StanfordCars",
    "oxford_flowers": "OxfordFlowers", "food101": "Food101", "fgvc_aircraft": "FGVCAircraft", "sun397": "SUN397",
    "dtd": "DescribableTextures", "eurosat": "EuroSAT", "ucf101": "UCF101", "imagenetv2": "ImageNetV2",
    "imagenet_sketch": "ImageNetSketch", "imagenet_a": "ImageNetA", "imagenet_r": "ImageNetR",
}


def make_cfg(root, name, shots=-1, seed=1, subsample="all", **dataset):
    cfg = get_cfg_default()
    cfg.DATASET.ROOT = str(root)
    cfg.DATASET.NAME = name
    cfg.DATASET.NUM_SHOTS = shots
    cfg.DATASET.SUBSAMPLE_CLASSES = subsample
    cfg.SEED = seed
    for key, value in dataset.items():
        cfg.DATASET[key] = value
    return cfg


def build(root, name, seed=1, **kw):
    """As the CLI does: seed ``random`` once, then build the dataset."""
    random.seed(seed)
    return DATASETS.get(name)(make_cfg(root, name, seed=seed, **kw))


def as_tuples(items):
    return [(d.impath, d.label, d.classname) for d in items]


def per_class(items):
    return Counter(d.label for d in items)


# ------------------------------------------------------------------ registry
def test_every_coop_config_names_a_registered_dataset_with_its_template():
    templates = json.load(open(os.path.join(REPO, "datasets", "templates.json")))
    for fname, name in CONFIG_NAMES.items():
        text = open(os.path.join(REPO, "configs", "datasets", fname + ".yaml")).read()
        assert f'NAME: "{name}"' in text
        cls = DATASETS.get(name)
        assert name in templates
        assert cls.resources or cls.manual_download, f"{name} says nothing about how to get it"


# ------------------------------------------------------- build/read round trip
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_split_is_built_from_raw_annotations_and_read_back_unchanged(tmp_path, name):
    expected = BUILDERS[name](str(tmp_path))
    first = build(tmp_path, name)
    assert first.classnames == expected["classnames"]
    n_train, n_val, n_test = expected["per_class"]
    labels = range(len(expected["classnames"]))
    assert per_class(first.train_x) == {y: n_train for y in labels}
    assert per_class(first.val) == {y: n_val for y in labels}
    assert per_class(first.test) == {y: n_test for y in labels}
    for items in (first.train_x, first.val, first.test):
        assert all(os.path.isfile(d.impath) for d in items)
        assert all(first.lab2cname[d.label] == d.classname for d in items)
    if not first.test_only and not first.val_is_test:
        train = {d.impath for d in first.train_x}
        assert not train & {d.impath for d in first.val} and not train & {d.impath for d in first.test}
    # Built here: saved as split_built_<Name>.json, never under CoOp's name, and it says so.
    assert not first.split_file or not os.path.exists(first.split_path)
    assert os.path.basename(first.built_split_path) == f"split_built_{name}.json"
    assert not [f for f in os.listdir(first.dataset_dir) if f.startswith("split_zhou_")]
    prov = first.split_provenance
    assert prov["source"] == "built here" and prov["procedure"]
    # the seed is recorded where CoOp's procedure draws at random, not for a listing
    drawn = {"Caltech101", "DescribableTextures", "EuroSAT", "Food101", "OxfordFlowers", "OxfordPets", "StanfordCars", "SUN397", "UCF101"}
    assert prov["seed"] == (1 if name in drawn else None)
    if first.save_built_split:
        stored = read_split(first.built_split_path, first.image_dir)
        assert as_tuples(stored["train"]) == as_tuples(first.train_x)
        assert as_tuples(stored["test"]) == as_tuples(first.test)
        assert prov["file"] == f"split_built_{name}.json"
        assert prov["sha256"] == hashlib.sha256(open(first.built_split_path, "rb").read()).hexdigest()
        assert json.loads(open(first.built_split_path).read())["_built"]["seed"] == prov["seed"]
    else:  # official lists / folder listings, read again each time
        assert not os.path.exists(first.built_split_path) and prov["file"] is None and prov["sha256"] is None
    # Rebuilt under another seed: a stored split is read, never redrawn; without a file the
    # official lists are deterministic anyway.
    second = build(tmp_path, name, seed=99)
    assert [as_tuples(s) for s in (second.train_x, second.val, second.test)] == [
        as_tuples(s) for s in (first.train_x, first.val, first.test)
    ]
    assert second.split_provenance == prov  # read back: the same file, and how it was made
    if "imagenet_labels" in expected:
        assert first.imagenet_labels == expected["imagenet_labels"]


def test_class_folder_split_follows_coops_procedure(tmp_path):
    """DTD-style: sorted class folders; per class random.shuffle, round(n*.5) train, round(n*.2) val, rest test."""
    BUILDERS["DescribableTextures"](str(tmp_path))
    image_dir = tmp_path / "dtd" / "images"
    random.seed(7)
    expected = {"train": [], "val": [], "test": []}
    for label, cname in enumerate(sorted(os.listdir(image_dir))):
        ims = sorted(str(image_dir / cname / f) for f in os.listdir(image_dir / cname))
        random.shuffle(ims)
        n_tr, n_va = round(len(ims) * 0.5), round(len(ims) * 0.2)
        expected["train"] += [(p, label, cname) for p in ims[:n_tr]]
        expected["val"] += [(p, label, cname) for p in ims[n_tr : n_tr + n_va]]
        expected["test"] += [(p, label, cname) for p in ims[n_tr + n_va :]]
    ds = build(tmp_path, "DescribableTextures", seed=7)
    assert {k: as_tuples(v) for k, v in ds.splits().items()} == expected


def test_trainval_split_follows_coops_procedure(tmp_path):
    """Pets-style: per label in order of first appearance, random.shuffle the indices, first round(n*.2) to val."""
    BUILDERS["OxfordPets"](str(tmp_path))
    base = tmp_path / "oxford_pets"
    rows = []
    for line in open(base / "annotations" / "trainval.txt"):
        name, label = line.split()[:2]
        rows.append((str(base / "images" / (name + ".jpg")), int(label) - 1, "_".join(name.split("_")[:-1]).lower()))
    groups = OrderedDict()
    for r in rows:
        groups.setdefault(r[1], []).append(r)
    random.seed(3)
    train, val = [], []
    for items in groups.values():
        idx = list(range(len(items)))
        n_val = round(len(idx) * 0.2)
        random.shuffle(idx)
        for n, i in enumerate(idx):
            (val if n < n_val else train).append(items[i])
    ds = build(tmp_path, "OxfordPets", seed=3)
    assert as_tuples(ds.train_x) == train and as_tuples(ds.val) == val


def test_flowers_walk_labels_in_order_of_appearance(tmp_path):
    BUILDERS["OxfordFlowers"](str(tmp_path))
    ds = build(tmp_path, "OxfordFlowers")
    assert [d.label for d in ds.train_x[:5]] == [2] * 5  # label file starts with class 3
    assert os.path.basename(ds.train_x[0].impath).startswith("image_")


# ------------------------------------------------------------ class names
def test_caltech_drops_background_and_renames_like_coop(tmp_path):
    BUILDERS["Caltech101"](str(tmp_path))
    ds = build(tmp_path, "Caltech101")
    names = set(ds.classnames)
    assert {"airplane", "face", "leopard", "motorbike"} <= names
    assert not names & {"airplanes", "Faces", "Faces_easy", "BACKGROUND_Google", "Leopards", "Motorbikes"}
    assert not any("Faces_easy" in d.impath or "BACKGROUND" in d.impath for d in ds.test)
    assert all(os.sep + "airplanes" + os.sep in d.impath for d in ds.test if d.classname == "airplane")


# --------------------------------------------------------------- few-shot
def coop_fewshot(items, k, val_items=None):
    """CoOp's procedure, by hand: per label (first appearance) random.sample(K); val gets min(K, 4) after."""
    def draw(data, n):
        groups = OrderedDict()
        for x in data:
            groups.setdefault(x[1], []).append(x)
        out = []
        for g in groups.values():
            out += random.sample(g, n) if len(g) >= n else g
        return out

    train = draw(items, k)
    return train, (draw(val_items, min(k, 4)) if val_items is not None else None)


def test_fewshot_sampling_order_pinned_to_coops_procedure(tmp_path):
    """A hand-made split with interleaved labels: seed 5, K=2 must give exactly the images CoOp picks."""
    image_dir = tmp_path / "dtd" / "images"
    labels = [1, 0, 2, 0, 1, 1, 2, 0, 2, 1, 0, 2, 0, 1]  # first appearance: 1, 0, 2
    train = [(f"t/img{i:02d}.jpg", y, f"class{y}") for i, y in enumerate(labels)]
    val = [(f"v/img{i:02d}.jpg", y, f"class{y}") for i, y in enumerate([2, 2, 0, 1, 0, 1, 2, 0, 1, 2, 0, 1])]
    test = [(f"s/img{i:02d}.jpg", i % 3, f"class{i % 3}") for i in range(3)]
    for rel, _, _ in train + val + test:
        image(str(image_dir / rel))
    write(str(tmp_path / "dtd" / "split_zhou_DescribableTextures.json"), json.dumps({"train": train, "val": val, "test": test}))

    random.seed(5)
    exp_train, exp_val = coop_fewshot(train, 2, val)
    ds = build(tmp_path, "DescribableTextures", seed=5, shots=2)
    rel = lambda items: [(os.path.relpath(d.impath, image_dir).replace(os.sep, "/"), d.label, d.classname) for d in items]
    assert rel(ds.train_x) == [tuple(x) for x in exp_train]
    assert rel(ds.val) == [tuple(x) for x in exp_val]
    assert [x[1] for x in exp_train] == [1, 1, 0, 0, 2, 2]
    # cached as JSON and reused; the same seed resamples the same images once the cache is gone
    cache = tmp_path / "dtd" / "split_fewshot" / "shot_2-seed_5.json"
    assert json.loads(cache.read_text())["train"] == [list(x) for x in exp_train]
    assert as_tuples(build(tmp_path, "DescribableTextures", seed=5, shots=2).train_x) == as_tuples(ds.train_x)
    cache.unlink()
    assert as_tuples(build(tmp_path, "DescribableTextures", seed=5, shots=2).train_x) == as_tuples(ds.train_x)
    assert as_tuples(build(tmp_path, "DescribableTextures", seed=6, shots=2).train_x) != as_tuples(ds.train_x)


@pytest.mark.parametrize("name", ["Caltech101", "OxfordPets", "FGVCAircraft", "StanfordCars"])
def test_fewshot_counts_per_class(tmp_path, name):
    BUILDERS[name](str(tmp_path))
    full = build(tmp_path, name)
    ds = build(tmp_path, name, shots=2)
    assert set(per_class(ds.train_x).values()) == {2}
    assert per_class(ds.val) == {y: min(2, n) for y, n in per_class(full.val).items()}
    assert {d.impath for d in ds.train_x} <= {d.impath for d in full.train_x}
    assert as_tuples(ds.test) == as_tuples(full.test)


def test_imagenet_uses_val_as_test_and_samples_train_only(tmp_path):
    BUILDERS["ImageNet"](str(tmp_path))
    full = build(tmp_path, "ImageNet")
    stored = read_split(full.built_split_path, full.image_dir)
    assert stored["val"] == [] and len(stored["test"]) == 15
    random.seed(2)
    exp_train, _ = coop_fewshot(as_tuples(full.train_x), 4)
    ds = build(tmp_path, "ImageNet", seed=2, shots=4)
    assert as_tuples(ds.train_x) == exp_train
    assert as_tuples(ds.val) == as_tuples(ds.test) == as_tuples(full.test)
    cache = json.loads((tmp_path / "imagenet" / "split_fewshot" / "shot_4-seed_2.json").read_text())
    assert list(cache) == ["train"]


def test_test_only_datasets_ignore_shots(tmp_path):
    BUILDERS["ImageNetA"](str(tmp_path))
    ds = build(tmp_path, "ImageNetA", shots=1)
    assert len(ds.test) == 6 and as_tuples(ds.train_x) == as_tuples(ds.test)
    assert not (tmp_path / "imagenet-adversarial" / "split_fewshot").exists()


def test_more_shots_than_a_class_has_takes_all_and_logs(tmp_path, caplog):
    BUILDERS["DescribableTextures"](str(tmp_path))
    with caplog.at_level(logging.WARNING):
        ds = build(tmp_path, "DescribableTextures", shots=16)
    assert per_class(ds.train_x) == {0: 4, 1: 4, 2: 4}
    assert "few-shot train draw (16 per class from the train split): 3 class(es) have fewer than 16 images" in caplog.text
    # The val draw takes min(shots, 4): its warning says so, rather than reading like one about the shots.
    n_val = min(per_class(ds.val).values())
    assert n_val < 4
    assert (f"few-shot val draw (4 per class from the val split: CoOp draws min(shots, 4) for validation): "
            f"3 class(es) have fewer than 4 images") in caplog.text


# ------------------------------------------------------------------ base/new
def test_base_new_halves(tmp_path):
    root = tmp_path
    class_folders(str(root / "dtd" / "images"), ["c0", "c1", "c2", "c3", "c4"], per_class=5)
    full = build(root, "DescribableTextures")
    base = build(root, "DescribableTextures", subsample="base")
    new = build(root, "DescribableTextures", subsample="new")
    n = len(full.classnames)
    m = math.ceil(n / 2)
    assert base.classnames == full.classnames[:m] == ["c0", "c1", "c2"]
    assert new.classnames == full.classnames[m:] == ["c3", "c4"]
    for part, offset in ((base, 0), (new, m)):
        for split in ("train_x", "val", "test"):
            items = getattr(part, split)
            ref = [d for d in getattr(full, split) if offset <= d.label < offset + len(part.classnames)]
            assert [(d.impath, d.label + offset) for d in items] == [(d.impath, d.label) for d in ref]
    fewshot_new = build(root, "DescribableTextures", subsample="new", shots=1)
    assert sorted(per_class(fewshot_new.train_x).items()) == [(0, 1), (1, 1)]


# ------------------------------------------------------------------ bad input
def test_missing_dataset_folder_names_path_and_download_command(tmp_path):
    with pytest.raises(DatasetError) as err:
        build(tmp_path, "Caltech101")
    msg = str(err.value)
    assert str(tmp_path / "caltech-101") in msg
    assert f"clip-adapter download Caltech101 --root {tmp_path}" in msg
    assert "\n" not in msg


def test_missing_image_folder_inside_existing_dataset_folder(tmp_path):
    (tmp_path / "oxford_pets" / "annotations").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"dataset folder not found: .*oxford_pets/images"):
        build(tmp_path, "OxfordPets")


def test_split_referencing_missing_images_gives_count_and_first_paths(tmp_path):
    BUILDERS["EuroSAT"](str(tmp_path))
    ds = build(tmp_path, "EuroSAT")
    gone = sorted(d.impath for d in ds.test)[:4]
    for p in gone:
        os.remove(p)
    with pytest.raises(DatasetError) as err:
        build(tmp_path, "EuroSAT")
    msg = str(err.value)
    assert "split_built_EuroSAT.json references 4 missing image(s)" in msg
    assert sum(p in msg for p in gone) >= 1


def test_annotations_referencing_missing_images(tmp_path):
    BUILDERS["FGVCAircraft"](str(tmp_path))
    os.remove(tmp_path / "fgvc_aircraft" / "images" / "1000001.jpg")
    with pytest.raises(DatasetError, match=r"FGVCAircraft annotations references 1 missing image.*1000001\.jpg"):
        build(tmp_path, "FGVCAircraft")


@pytest.mark.parametrize(
    "content, needle",
    [
        ("[1, 2, 3]", "wrong format"),
        ('{"train": [], "val": []}', "wrong format"),
        ('{"train": 3, "val": [], "test": []}', "'train' is int"),
        ('{"train": [["a.jpg", 0]], "val": [], "test": []}', "entry 0 of 'train'"),
        ('{"train": [["a.jpg", "zero", "c"]], "val": [], "test": []}', "non-integer label"),
        ("{not json", "not valid JSON"),
    ],
)
def test_split_file_with_wrong_format(tmp_path, content, needle):
    BUILDERS["Food101"](str(tmp_path))
    split = tmp_path / "food-101" / "split_zhou_Food101.json"
    split.write_text(content)
    with pytest.raises(DatasetError) as err:
        build(tmp_path, "Food101")
    assert needle in str(err.value) and str(split) in str(err.value)


def test_corrupt_image_named_or_skipped_with_flag(tmp_path, caplog):
    BUILDERS["Caltech101"](str(tmp_path))
    ds = build(tmp_path, "Caltech101")
    bad = ds.test[0].impath
    with open(bad, "wb") as f:
        f.write(b"not an image at all")
    with pytest.raises(DatasetError, match="cannot read image " + bad):
        read_image(bad)
    with caplog.at_level(logging.WARNING):
        skipped = build(tmp_path, "Caltech101", SKIP_BAD_IMAGES=True)
    assert bad not in {d.impath for d in skipped.test}
    assert len(skipped.test) == len(ds.test) - 1
    assert "skipped 1 unreadable image(s)" in caplog.text and bad in caplog.text


@pytest.mark.slow
def test_unreadable_images_are_all_named_before_anything_trains(tmp_path, run_train, capsys):
    """Truncated files (a test image among them, which a run decodes only after training) stop the
    run at the start with one error: the count, the paths, the fix."""
    root = tmp_path / "data"
    assert run_train(tmp_path / "first", "ZeroshotCLIP", shots=2, root=str(root)) == 0  # generates the smoke data
    test_dir = root / "smoke" / "images" / "test" / "cat"
    victims = [str(test_dir / name) for name in sorted(os.listdir(test_dir))[:2]] + [str(root / "smoke" / "images" / "val" / "boat" / "boat_000.png")]
    for path in victims:
        data = open(path, "rb").read()
        open(path, "wb").write(data[: len(data) // 2])  # cut short, as by an interrupted copy
    out = tmp_path / "run"
    rc = run_train(out, "CLIP_Adapter", "OPTIM.MAX_EPOCH", "2", shots=2, root=str(root))
    err = capsys.readouterr().err
    assert rc == 2 and "3 of the" in err and "images this run reads are unreadable" in err and "val 1, test 2" in err
    assert all(v in err for v in victims) and "DATASET.SKIP_BAD_IMAGES True" in err and "clip_adapter.app.doctor Smoke" in err
    assert not (out / "clip_adapter").exists() and not (out / "results.json").exists()  # nothing trained
    # the quick check does not flag good files, whatever their format: only the cut ones
    assert find_unreadable(sorted(str(p) for p in (root / "smoke" / "images").rglob("*.png")), quick=True) == sorted(victims)


def test_malformed_annotation_line_names_file_and_line(tmp_path):
    BUILDERS["OxfordPets"](str(tmp_path))
    path = tmp_path / "oxford_pets" / "annotations" / "test.txt"
    path.write_text(path.read_text() + "garbage-line\n")
    with pytest.raises(DatasetError, match=rf"{path}:10: cannot parse 'garbage-line'"):
        build(tmp_path, "OxfordPets")


def test_too_few_images_to_split_a_class(tmp_path):
    class_folders(str(tmp_path / "dtd" / "images"), ["ok"], per_class=10)
    class_folders(str(tmp_path / "dtd" / "images"), ["tiny"], per_class=2)
    with pytest.raises(DatasetError, match="class 'tiny' has only 2 image"):
        build(tmp_path, "DescribableTextures")


def test_missing_imagenet_classnames_names_both_places(tmp_path):
    class_folders(str(tmp_path / "imagenet-rendition" / "imagenet-r"), list(WNIDS)[:2], per_class=1)
    with pytest.raises(DatasetError) as err:
        build(tmp_path, "ImageNetR")
    msg = str(err.value)
    assert str(tmp_path / "imagenet-rendition" / "classnames.txt") in msg and str(tmp_path / "imagenet" / "classnames.txt") in msg


def test_coops_split_file_is_preferred_and_named_as_the_source(tmp_path, caplog):
    """A built split is read back until CoOp's file appears; then CoOp's wins, and provenance says which."""
    BUILDERS["DescribableTextures"](str(tmp_path))
    built = build(tmp_path, "DescribableTextures")
    assert built.split_provenance["source"] == "built here"
    # CoOp's published file (json.dump(indent=4) layout), with another split of the same images
    items = sorted(built.train_x + built.val + built.test, key=lambda d: d.impath)
    rel = lambda d: [os.path.relpath(d.impath, built.image_dir).replace(os.sep, "/"), d.label, d.classname]
    coop = {"train": [rel(d) for d in items[0::3]], "val": [rel(d) for d in items[1::3]], "test": [rel(d) for d in items[2::3]]}
    coop_path = tmp_path / "dtd" / "split_zhou_DescribableTextures.json"
    coop_path.write_text(json.dumps(coop, indent=4, separators=(",", ": ")))
    ds = build(tmp_path, "DescribableTextures")
    assert [d.impath for d in ds.train_x] == [d.impath for d in items[0::3]]
    assert ds.split_provenance == {
        "file": "split_zhou_DescribableTextures.json", "sha256": hashlib.sha256(coop_path.read_bytes()).hexdigest(),
        "source": "coop", "procedure": "CoOp's published split file", "seed": None,
    }
    # A split an earlier version of this project saved under CoOp's name is recognised by its layout.
    coop_path.write_bytes((tmp_path / "dtd" / "split_built_DescribableTextures.json").read_bytes())
    with caplog.at_level(logging.WARNING):
        legacy = build(tmp_path, "DescribableTextures")
    assert legacy.split_provenance["source"] == "built here" and "earlier version" in legacy.split_provenance["procedure"]
    assert "Rename it to split_built_DescribableTextures.json" in caplog.text


def test_stale_fewshot_file_is_refused(tmp_path):
    BUILDERS["DescribableTextures"](str(tmp_path))
    build(tmp_path, "DescribableTextures", shots=1)
    split = tmp_path / "dtd" / "split_built_DescribableTextures.json"
    split.unlink()
    os.rename(tmp_path / "dtd" / "images" / "banded", tmp_path / "dtd" / "images" / "banded2")
    with pytest.raises(DatasetError, match="stale: delete it to resample"):
        build(tmp_path, "DescribableTextures", shots=1)


def test_cli_runs_on_a_benchmark_dataset_config(tmp_path, run_train):
    """The real CLI with CoOp's dataset YAML and a fake Caltech101 tree: the whole pipeline reads it."""
    BUILDERS["Caltech101"](str(tmp_path / "data"))
    out = tmp_path / "run"
    assert run_train(out, "ZeroshotCLIP", dataset=os.path.join(REPO, "configs", "datasets", "caltech101.yaml"), root=str(tmp_path / "data"), shots=2) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["dataset"] == "Caltech101" and res["num_classes"] == 5 and res["total"] == 15
    assert (tmp_path / "data" / "caltech-101" / "split_fewshot" / "shot_2-seed_1.json").is_file()
