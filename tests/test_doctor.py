"""The dataset doctor on a deliberately broken tree: each problem reported, with the fix and the right exit code.

The tree (built in tmp_path): ImageNet with its validation folder left flat and two classes named
"crane"; EuroSAT with images its split file lists deleted; Caltech101 with an unreadable image;
DTD with a stale few-shot file; a feature cache with a damaged shard; a custom dataset.
"""
from __future__ import annotations

import io
import os
import random
import tarfile
from pathlib import Path

import numpy as np
import pytest

import clip_adapter.datasets  # noqa: F401  (registers the datasets)
from clip_adapter.config import get_cfg_default
from clip_adapter.app import doctor
from clip_adapter.errors import DatasetError
from clip_adapter.registry import DATASETS
from fake_datasets import BUILDERS, WNIDS, class_folders, image, imagenet_classnames

WNID_LIST = list(WNIDS)
PER_CLASS_VAL = 3


def make_cfg(root, name, shots=-1, seed=1):
    cfg = get_cfg_default()
    cfg.DATASET.ROOT = str(root)
    cfg.DATASET.NAME = name
    cfg.DATASET.NUM_SHOTS = shots
    cfg.SEED = seed
    return cfg


def build(root, name, **kw):
    random.seed(kw.get("seed", 1))
    return DATASETS.get(name)(make_cfg(root, name, **kw))


def run_doctor(capsys, *argv):
    rc = doctor.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def row(out: str, dataset: str) -> list:
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0] == dataset:
            return cells
    raise AssertionError(f"no row for {dataset} in\n{out}")


# ------------------------------------------------------------------ the broken tree
def flat_imagenet(root: Path) -> dict:
    """ImageNet with train in class folders, val flat as ILSVRC2012_val_*.JPEG, two classes called 'crane'."""
    base = root / "imagenet"
    names = dict(WNIDS, **{WNID_LIST[0]: "crane", WNID_LIST[1]: "crane"})
    imagenet_classnames(str(base / "classnames.txt"), names)
    class_folders(str(base / "images" / "train"), WNID_LIST, per_class=4, ext=".JPEG")
    truth = {}
    n = 0
    for c, wnid in enumerate(WNID_LIST):
        for i in range(PER_CLASS_VAL):
            n += 1
            image(str(base / "images" / "val" / f"ILSVRC2012_val_{n:08d}.JPEG"), 5000 + n)
            truth[n] = c + 1  # ILSVRC2012_ID of the class (1-based, wnid order)
    order = sorted(truth)
    random.Random(0).shuffle(order)  # images of a class are not contiguous in the real val set either
    return {"truth": truth, "base": base}


def devkit(path: Path, truth: dict) -> Path:
    """A minimal ILSVRC2012 devkit: data/meta.mat (synsets, with one non-leaf) and the val ground truth."""
    from scipy.io import savemat

    dtype = [("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("gloss", "O"), ("num_children", "O")]
    synsets = [(i + 1, w, WNIDS[w], "", 0) for i, w in enumerate(WNID_LIST)] + [(1001, "n00015388", "animal", "", 5)]
    mat = io.BytesIO()
    savemat(mat, {"synsets": np.array(synsets, dtype=dtype)})
    gt = "".join(f"{truth[n]}\n" for n in sorted(truth)).encode()
    with tarfile.open(path, "w:gz") as tar:
        for name, data in (("data/meta.mat", mat.getvalue()), ("data/ILSVRC2012_validation_ground_truth.txt", gt)):
            info = tarfile.TarInfo(f"ILSVRC2012_devkit_t12/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def broken(tmp_path):
    root = tmp_path / "data"
    info = flat_imagenet(root)
    # EuroSAT: split file written, then two of its images deleted
    BUILDERS["EuroSAT"](str(root))
    ds = build(root, "EuroSAT")
    gone = sorted(d.impath for d in ds.test)[:2]
    for p in gone:
        os.remove(p)
    # Caltech101: one image that is not an image
    BUILDERS["Caltech101"](str(root))
    bad = build(root, "Caltech101").train_x[0].impath
    Path(bad).write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    # DTD: a 1-shot file sampled from an older split (images renamed since)
    BUILDERS["DescribableTextures"](str(root))
    build(root, "DescribableTextures", shots=1)
    os.remove(root / "dtd" / "split_built_DescribableTextures.json")
    os.rename(root / "dtd" / "images" / "banded", root / "dtd" / "images" / "banded2")
    stale = root / "dtd" / "split_fewshot" / "shot_1-seed_1.json"
    assert stale.is_file()
    return {"root": root, "gone": gone, "bad": bad, "stale": stale, **info}


# -------------------------------------------------------------------------- tests
def test_each_problem_is_reported_with_its_fix(broken, capsys):
    root = broken["root"]
    (root / "imagenet" / "images" / "train" / "n01530575.tar").write_bytes(b"")  # a class archive left unextracted
    rc, out, err = run_doctor(capsys, "imagenet", "eurosat", "caltech101", "dtd", "--root", root, "--cache-dir", "")
    assert rc == 1 and "unusable: ImageNet, EuroSAT, Caltech101, DescribableTextures" in err

    # flat ImageNet val -> incomplete, with the exact sorting command
    assert row(out, "ImageNet")[1] == "incomplete"
    val = root / "imagenet" / "images" / "val"
    assert f"{val} is flat (15 images, no class folders)" in out
    assert f"python -m clip_adapter.app.doctor --sort-imagenet-val {val} --devkit /path/to/ILSVRC2012_devkit_t12.tar.gz" in out
    assert "holds 1 unextracted class archive(s), e.g. n01530575.tar" in out and 'tar -xf "$f" -C "$d"' in out

    # missing images: counts against the split file, first paths, what to do
    eurosat = row(out, "EuroSAT")
    assert eurosat[1] == "broken" and eurosat[3:6] == ["15", "6", "7/9"]  # test: 7 of the 9 listed images found
    assert "2 image(s) listed in" in out and "split_built_EuroSAT.json are missing" in out and broken["gone"][0] in out
    assert "delete " in out and "to rebuild it" in out

    # unreadable image: named, counted, with the fix
    caltech = row(out, "Caltech101")
    assert caltech[1] == "broken" and caltech[6] == "1/50"
    assert f"1 unreadable image(s) (of 50 decoded): {broken['bad']}" in out and "DATASET.SKIP_BAD_IMAGES True" in out

    # stale few-shot file: named with the rm command
    assert row(out, "DescribableTextures")[1] == "broken" and row(out, "DescribableTextures")[8] == "1 (1 stale)"
    assert f"stale few-shot file {broken['stale']}" in out and f"rm {broken['stale']}" in out


def test_each_dataset_alone_gets_its_own_exit_code(broken, capsys):
    root = broken["root"]
    for name in ("imagenet", "eurosat", "caltech101", "dtd"):
        assert run_doctor(capsys, name, "--root", root, "--cache-dir", "")[0] == 1, name
    BUILDERS["Food101"](str(root))
    rc, out, _ = run_doctor(capsys, "food101", "--root", root, "--cache-dir", "")
    assert rc == 0 and row(out, "Food101")[1] == "ok"
    # a named dataset that is not there is unusable; the same dataset not named is only listed
    rc, out, _ = run_doctor(capsys, "oxford_pets", "--root", root, "--cache-dir", "")
    assert rc == 1 and row(out, "OxfordPets")[1] == "missing" and "clip-adapter download OxfordPets" in out
    rc, out, _ = run_doctor(capsys, "--root", root / "empty", "--cache-dir", "")
    assert rc == 0 and row(out, "OxfordPets")[1] == "missing" and "not under" in out
    assert run_doctor(capsys, "nosuchset", "--root", root)[0] == 2


def test_a_split_built_here_is_reported_as_such(tmp_path, capsys):
    root = tmp_path / "data"
    BUILDERS["Food101"](str(root))
    rc, out, _ = run_doctor(capsys, "food101", "--root", root, "--cache-dir", "")
    assert rc == 0 and "saves it as split_built_Food101.json (not CoOp's)" in out
    assert not (root / "food-101" / "split_built_Food101.json").exists()  # the doctor writes nothing
    build(root, "Food101", seed=3)
    rc, out, _ = run_doctor(capsys, "food101", "--root", root, "--cache-dir", "")
    assert rc == 0 and row(out, "Food101")[1] == "ok"
    built = root / "food-101" / "split_built_Food101.json"
    assert f"split {built} was built here (CoOp's per-class random 50/20/30" in out and "seed 3)" in out
    assert "not CoOp's split_zhou_Food101.json" in out and f"clip-adapter download Food101 --root {root}" in out


def test_flat_imagenet_val_is_sorted_by_the_printed_command(broken, capsys, tmp_path):
    root, base = broken["root"], broken["base"]
    val = base / "images" / "val"
    with pytest.raises(DatasetError, match="no class folders found in .*val.*clip_adapter.app.doctor ImageNet --root"):
        build(root, "ImageNet")
    kit = devkit(base / "ILSVRC2012_devkit_t12.tar.gz", broken["truth"])
    rc, out, _ = run_doctor(capsys, "imagenet", "--root", root, "--cache-dir", "")
    command = f"python -m clip_adapter.app.doctor --sort-imagenet-val {val} --devkit {kit}"
    assert rc == 1 and command in out  # the devkit next to the data is found and named

    rc, out, _ = run_doctor(capsys, *command.split()[3:])
    assert rc == 0 and "moved 15 image(s)" in out
    assert sorted(os.listdir(val)) == WNID_LIST
    for n, label in broken["truth"].items():
        assert (val / WNID_LIST[label - 1] / f"ILSVRC2012_val_{n:08d}.JPEG").is_file()
    assert run_doctor(capsys, *command.split()[3:])[1].startswith("moved 0")  # rerun: nothing left to move

    # now usable; the two 'crane' classes are reported and kept apart
    rc, out, _ = run_doctor(capsys, "imagenet", "--root", root, "--cache-dir", "")
    assert rc == 0 and row(out, "ImageNet")[1] == "warning"
    assert row(out, "ImageNet")[3:6] == ["20", "= test", "15"] and row(out, "ImageNet")[7] == "5 (2 share 1 name(s))"
    assert "'crane' (labels 0, 1)" in out and "Resolved by position" in out and "nothing is merged" in out
    assert f"rename one of each pair in {base / 'classnames.txt'}" in out
    ds = build(root, "ImageNet")
    assert ds.classnames[:2] == ["crane", "crane"] and ds.num_classes == 5


def test_sorting_with_a_labels_file_and_refusing_unknown_images(tmp_path, capsys):
    val = tmp_path / "val"
    for n in (1, 2, 3):
        image(str(val / f"ILSVRC2012_val_{n:08d}.JPEG"), n)
    labels = tmp_path / "LOC_val_solution.csv"
    labels.write_text("ImageId,PredictionString\nILSVRC2012_val_00000001,n01 1 2 3 4\nILSVRC2012_val_00000002,n02 1 2 3 4\n")
    rc, _, err = run_doctor(capsys, "--sort-imagenet-val", val, "--labels", labels)
    assert rc == 2 and "no class for 1 image(s)" in err and "ILSVRC2012_val_00000003.JPEG" in err
    assert len(list(val.iterdir())) == 3  # nothing moved
    labels.write_text(labels.read_text() + "ILSVRC2012_val_00000003,n01 5 6 7 8\n")
    rc, out, _ = run_doctor(capsys, "--sort-imagenet-val", val, "--labels", labels)
    assert rc == 0 and sorted(p.name for p in (val / "n01").iterdir()) == ["ILSVRC2012_val_00000001.JPEG", "ILSVRC2012_val_00000003.JPEG"]


def test_fix_deletes_the_stale_fewshot_file_and_a_damaged_cache_shard(broken, capsys, tmp_path, run_train):
    root = broken["root"]
    cache = tmp_path / "cache"
    assert run_train(tmp_path / "run", "ZeroshotCLIP", "FEATURES.CACHE_DIR", str(cache)) == 0
    shard = sorted(cache.rglob("shard-*.npz"))[0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    rc, out, _ = run_doctor(capsys, "dtd", "--root", root, "--cache-dir", cache)
    assert rc == 1 and f"feature-cache shard {shard}" in out and f"rm {shard}" in out
    assert "test preset=clip size=(32, 32)" in out  # the cache table says what each namespace holds
    rc, out, _ = run_doctor(capsys, "dtd", "--root", root, "--cache-dir", cache, "--fix")
    assert "--fix: deleted 2" in out and not shard.exists() and not broken["stale"].exists()
    rc, out, _ = run_doctor(capsys, "dtd", "--root", root, "--cache-dir", cache)
    assert rc == 0 and "damaged" in out and "feature-cache shard" not in out
    build(root, "DescribableTextures", shots=1)  # the run now resamples instead of stopping


def test_custom_dataset_by_yaml_and_every_run_error_points_here(tmp_path, capsys):
    from test_custom_dataset import folders_tree

    root = tmp_path / "data"
    folders_tree(root / "my_data")
    yaml = tmp_path / "mine.yaml"
    yaml.write_text('DATASET:\n  NAME: "Custom"\n  CUSTOM:\n    PATH: "my_data"\n')
    rc, out, _ = run_doctor(capsys, yaml, "--root", root, "--cache-dir", "")
    assert rc == 0 and row(out, "Custom (mine)")[1:6] == ["ok", str(root / "my_data"), "15", "6", "9"]
    assert not list((root / "my_data").glob("split_*.json"))  # the doctor writes nothing

    cfg = get_cfg_default()
    cfg.DATASET.ROOT, cfg.DATASET.NAME, cfg.DATASET.CUSTOM.PATH = str(root), "Custom", "my_data"
    random.seed(1)
    DATASETS.get("Custom")(cfg)
    bad = root / "my_data" / "dog" / "dog_03.png"
    bad.write_bytes(b"nope")
    os.remove(root / "my_data" / "cat" / "cat_00.png")
    with pytest.raises(DatasetError) as err:
        random.seed(1)
        DATASETS.get("Custom")(cfg)
    hint = str(err.value).split("`")[-2]  # the run's error ends with the doctor command for this dataset
    assert hint.startswith("python -m clip_adapter.app.doctor Custom --root")
    rc, out, _ = run_doctor(capsys, *hint.split()[3:], "--cache-dir", "")
    assert rc == 1 and row(out, "Custom")[1] == "broken"  # by class name: no config name to show
    assert "no longer matches" in out and "1 image(s) gone or relabelled since it was made" in out

    os.remove(next((root / "my_data").glob("split_*.json")))  # regenerate from what is there
    rc, out, _ = run_doctor(capsys, *hint.split()[3:], "--cache-dir", "")
    assert rc == 1 and f"1 unreadable image(s) (of 29 decoded): {bad}" in out


def test_duplicate_names_are_warned_about_at_run_time(tmp_path, caplog):
    base = tmp_path / "imagenet-sketch"
    class_folders(str(base / "images"), WNID_LIST[:3], per_class=2)
    imagenet_classnames(str(base / "classnames.txt"), dict(WNIDS, **{WNID_LIST[1]: "sunglasses", WNID_LIST[2]: "sunglasses"}))
    with caplog.at_level("WARNING"):
        ds = build(tmp_path, "ImageNetSketch")
    assert ds.classnames == ["tench", "sunglasses", "sunglasses"]
    assert "'sunglasses' (labels 1, 2)" in caplog.text and "stay separate classes" in caplog.text
