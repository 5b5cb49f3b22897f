"""Your own dataset without code: class folders, a CoOp split file or a CSV, described in YAML.

``DATASET.NAME "Custom"`` plus ``DATASET.CUSTOM.*`` (configs/datasets/custom_example.yaml) is all
a user writes. Three layouts are read:

* ``folders``: ``PATH/<class>/<image>``, or ``PATH/{train,val,test}/<class>/<image>`` where
  ``train/`` is required and ``val/``, ``test/`` are optional. Labels are the sorted class folders.
* ``json``: CoOp's ``{"train"|"val"|"test": [[relative_path, label, classname], ...]}``; ``val``
  and ``test`` may be absent or empty.
* ``csv``: a header with ``path`` and ``label`` and/or ``classname``, optionally ``split``
  (train/val/test); without ``label`` the sorted class names give the labels.

A split that is not given is cut from train per class (stratified) with ``SPLIT_SEED`` (CoOp's
50/20/30 and 80/20 procedures from :mod:`clip_adapter.data.build`, with the fractions from the
config), under a private random state, so the run's seed and its few-shot draw are untouched. The
result is written in CoOp's layout next to the data (``split_<name>_seed<S>_val<V>_test<T>.json``)
so it is reused, can be shared, and can be read back with ``FORMAT json``. On reuse it is checked
against the data: images added, removed or relabelled since it was made are reported, never
silently ignored. Few-shot files go to ``split_fewshot/<that split's name>/``, so changing the split
settings never meets a stale few-shot file.

Everything after the split (few-shot sampling, base/new halves, the feature cache, every trainer
and script) is the shared machinery of :class:`~clip_adapter.data.dataset_base.DatasetBase`.
"""
from __future__ import annotations

import csv
import json
import logging
import os
import random
import shlex
from typing import Dict, List, Optional, Sequence, Union

from clip_adapter.data.build import listdir_nohidden, split_groups, split_trainval
from clip_adapter.data.dataset_base import DatasetBase, with_classnames
from clip_adapter.data.datum import Datum
from clip_adapter.data.fewshot import group_by_label
from clip_adapter.data.splits import BUILT_HERE, DOCTOR, GIVEN, SPLIT_NAMES, check_images_exist, provenance, read_split, write_split
from clip_adapter.data.templates import coop_ensemble, get_templates
from clip_adapter.errors import ConfigError, DatasetError

log = logging.getLogger(__name__)

FORMATS = ("auto", "folders", "json", "csv")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm")
# Folders this project writes inside a dataset folder: never class folders.
RESERVED = ("split_fewshot",)
EXAMPLE = "configs/datasets/custom_example.yaml"

Splits = Dict[str, List[Datum]]
Given = Dict[str, Optional[List[Datum]]]  # None: that split is not given and will be generated
ClassNames = Union[List[str], Dict[str, str]]


# --------------------------------------------------------------------- readers
def resolve_format(path: str, fmt: str) -> str:
    """The layout to read: ``fmt`` unless it is ``auto``, then guessed from ``path``.

    A path that does not exist yet and has no extension counts as a folder (reading it then
    fails with "not found", which is the useful message).
    """
    if fmt not in FORMATS:
        raise ConfigError(f"DATASET.CUSTOM.FORMAT must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt != "auto":
        return fmt
    ext = os.path.splitext(path)[1].lower()
    if os.path.isdir(path) or (not ext and not os.path.exists(path)):
        return "folders"
    if ext in (".json", ".csv"):
        return ext[1:]
    raise ConfigError(
        f"DATASET.CUSTOM.FORMAT auto cannot tell the layout of {path}: it is not a folder, a .json or a .csv; "
        "set DATASET.CUSTOM.FORMAT to folders, json or csv"
    )


def read_classnames_file(path: str) -> ClassNames:
    """A text file (line i = name of label i) or a JSON object {class folder or label: name}."""
    if not os.path.isfile(path):
        raise DatasetError(f"DATASET.CUSTOM.CLASSNAMES_FILE not found: {path}")
    if path.lower().endswith(".json"):
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DatasetError(f"class-name file {path} is not valid JSON ({exc})") from None
        if not isinstance(data, dict) or not all(isinstance(v, str) and v.strip() for v in data.values()):
            raise DatasetError(f"class-name file {path} must be a JSON object mapping a class folder or label to a non-empty name")
        return {str(k): v.strip() for k, v in data.items()}
    with open(path, encoding="utf-8") as f:
        names = [line.strip() for line in f if line.strip()]
    if not names:
        raise DatasetError(f"class-name file {path} is empty; write one class name per line (line 1 = label 0)")
    return names


def apply_classnames(keys: Sequence[str], default: Sequence[str], names: Optional[ClassNames], source: str) -> List[str]:
    """Name of each label: from the class-name file (by position, or by folder/label key), else ``default``."""
    if names is None:
        return list(default)
    if isinstance(names, list):
        if len(names) != len(keys):
            raise DatasetError(f"class-name file {source} has {len(names)} names but the data has {len(keys)} classes; write one name per class, in label order")
        return list(names)
    unknown = sorted(set(names) - set(keys))
    if unknown:
        raise DatasetError(f"class-name file {source} names classes the data does not have: {', '.join(unknown[:5])} (keys are class folders or labels)")
    return [names.get(k, d) for k, d in zip(keys, default)]


def _images_in(folder: str) -> List[str]:
    files = [n for n in listdir_nohidden(folder) if os.path.isfile(os.path.join(folder, n))]
    ignored = [n for n in files if not n.lower().endswith(IMAGE_EXTENSIONS)]
    if ignored:
        log.info("Ignoring %d non-image file(s) in %s, e.g. %s", len(ignored), folder, ignored[0])
    return [os.path.join(folder, n) for n in files if n.lower().endswith(IMAGE_EXTENSIONS)]


def _class_folders(folder: str) -> List[str]:
    return [c for c in listdir_nohidden(folder, dirs_only=True) if c not in RESERVED]


def read_folders(path: str, names: Optional[ClassNames] = None, names_source: str = "") -> Given:
    """Class folders under ``path``, or under ``path/train`` (+ optional ``val``, ``test``)."""
    top = _class_folders(path)
    split_dirs = [d for d in top if d in SPLIT_NAMES]
    if split_dirs and len(split_dirs) != len(top):
        others = [d for d in top if d not in SPLIT_NAMES]
        raise DatasetError(
            f"{path} mixes split folders ({', '.join(split_dirs)}) with other folders ({', '.join(others[:3])}): use either "
            "<class>/<image> or train/<class>/<image> (+ val/, test/)"
        )
    if split_dirs and "train" not in split_dirs:
        raise DatasetError(f"{path} has {' and '.join(d + '/' for d in split_dirs)} but no train/: put the training images in {os.path.join(path, 'train')}/<class>/")
    base = os.path.join(path, "train") if split_dirs else path
    classes = _class_folders(base)
    if not classes:
        raise DatasetError(f"no class folders found in {base}: put each class's images in {base}/<class name>/")
    classnames = apply_classnames(classes, classes, names, names_source)
    given: Given = {name: None for name in SPLIT_NAMES}
    for split in (SPLIT_NAMES if split_dirs else ("train",)):
        folder = os.path.join(path, split) if split_dirs else path
        if not os.path.isdir(folder):
            continue
        extra = sorted(set(_class_folders(folder)) - set(classes))
        if extra:
            raise DatasetError(f"{folder} has class folder(s) {', '.join(extra[:3])} that {base} does not have: every class needs training images")
        items: List[Datum] = []
        for label, cls in enumerate(classes):
            cls_dir = os.path.join(folder, cls)
            if not os.path.isdir(cls_dir):
                continue
            images = _images_in(cls_dir)
            if not images and split == "train":
                raise DatasetError(f"class folder {cls_dir} has no images (extensions {', '.join(IMAGE_EXTENSIONS)}): add some or remove it")
            items.extend(Datum(p, label, classnames[label]) for p in images)
        given[split] = items
    return given


def _relabel_names(given: Given, names: Optional[ClassNames], source: str) -> Given:
    """Apply a class-name file to items whose labels are already known (json, csv)."""
    if names is None:
        return given
    labels = sorted({d.label for items in given.values() if items for d in items})
    keys = [str(y) for y in labels]
    current = {d.label: d.classname for items in given.values() if items for d in items}
    renamed = dict(zip(labels, apply_classnames(keys, [current[y] for y in labels], names, source)))
    return {k: (None if v is None else [Datum(d.impath, d.label, renamed[d.label], d.domain) for d in v]) for k, v in given.items()}


def read_json(path: str, image_dir: str, names: Optional[ClassNames] = None, names_source: str = "") -> Given:
    """CoOp's split layout; missing or empty ``val``/``test`` are generated."""
    splits = read_split(path, image_dir, check_exists=False, required=("train",))
    given: Given = {name: ([Datum(os.path.normpath(d.impath), d.label, d.classname) for d in splits[name]] or None) for name in SPLIT_NAMES}
    if not given["train"]:
        raise DatasetError(f"split file {path} has no training images ('train' is empty)")
    return _relabel_names(given, names, names_source)


def read_csv(path: str, image_dir: str, names: Optional[ClassNames] = None, names_source: str = "") -> Given:
    """``path,label,classname[,split]`` rows (header required; label or classname may be left out)."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f)
        header = [h.strip().lower() for h in next(reader, [])]
        rows = [(i, row) for i, row in enumerate(reader, 2) if any(c.strip() for c in row)]
    if "path" not in header or not ({"label", "classname"} & set(header)):
        raise DatasetError(f"{path}: the first line must be a header with 'path' and 'label' and/or 'classname' (optionally 'split'), got {','.join(header) or 'nothing'}")
    col = {name: header.index(name) for name in ("path", "label", "classname", "split") if name in header}
    if "classname" not in col and names is None:
        raise DatasetError(f"{path} has no 'classname' column and DATASET.CUSTOM.CLASSNAMES_FILE is not set: the prompts need class names")
    records = []
    for lineno, row in rows:
        if len(row) != len(header):
            raise DatasetError(f"{path}:{lineno}: {len(row)} field(s), the header has {len(header)}")
        cell = {name: row[i].strip() for name, i in col.items()}
        if not cell["path"]:
            raise DatasetError(f"{path}:{lineno}: empty path")
        if "label" in cell:
            try:
                cell["label"] = int(cell["label"])
            except ValueError:
                raise DatasetError(f"{path}:{lineno}: label {cell['label']!r} is not an integer") from None
            if cell["label"] < 0:
                raise DatasetError(f"{path}:{lineno}: label {cell['label']} is negative")
        if "classname" in cell and not cell["classname"]:
            raise DatasetError(f"{path}:{lineno}: empty classname")
        split = cell.get("split", "train").lower() or "train"
        if split not in SPLIT_NAMES:
            raise DatasetError(f"{path}:{lineno}: split {cell['split']!r} is not one of train, val, test")
        records.append((split, cell))
    if not records:
        raise DatasetError(f"{path} has a header but no rows")
    if "label" not in col:
        order = {name: i for i, name in enumerate(sorted({c["classname"] for _, c in records}))}
        for _, c in records:
            c["label"] = order[c["classname"]]
    given: Given = {name: None for name in SPLIT_NAMES}
    for split, c in records:
        if given[split] is None:
            given[split] = []
        impath = os.path.normpath(os.path.join(image_dir, c["path"]))
        given[split].append(Datum(impath, c["label"], c.get("classname") or str(c["label"])))
    if not given["train"]:
        raise DatasetError(f"{path} has no training rows (split column empty or 'train')")
    return _relabel_names(given, names, names_source)


# ------------------------------------------------------------------- checks
def check_labels(splits: Dict[str, Optional[List[Datum]]], source: str) -> None:
    """One name per label, labels 0..C-1 all present in train, val/test only use train's labels."""
    names: Dict[int, str] = {}
    for items in splits.values():
        for d in items or []:
            if names.setdefault(d.label, d.classname) != d.classname:
                raise DatasetError(f"{source}: label {d.label} has two class names, {names[d.label]!r} and {d.classname!r}; give each label one name")
    train_labels = {d.label for d in splits["train"] or []}
    missing = sorted(set(range(max(train_labels) + 1)) - train_labels) if train_labels else []
    if missing:
        raise DatasetError(
            f"{source}: labels must be 0..C-1 with training images for each; label(s) {', '.join(map(str, missing[:5]))} have none"
        )
    for name in ("val", "test"):
        extra = sorted({d.label for d in splits.get(name) or []} - train_labels)
        if extra:
            raise DatasetError(f"{source}: {name} has label(s) {', '.join(map(str, extra[:5]))} with no training images")


def complete_splits(given: Given, seed: int, val_fraction: float, test_fraction: float) -> Splits:
    """Cut the splits that are not given from train, per class, with a private seeded random state."""
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ConfigError(
            f"DATASET.CUSTOM.VAL_FRACTION ({val_fraction}) and TEST_FRACTION ({test_fraction}) must be in (0, 1) "
            "and sum to less than 1 (the rest is train)"
        )
    train = list(given["train"] or [])
    out: Splits = {name: list(given[name] or []) for name in SPLIT_NAMES}
    state = random.getstate()
    try:
        random.seed(seed)
        if given["val"] is None and given["test"] is None:
            groups = [(label, items[0].classname, [d.impath for d in items]) for label, items in sorted(group_by_label(train).items())]
            out = split_groups(groups, p_trn=1 - val_fraction - test_fraction, p_val=val_fraction)
        elif given["val"] is None:
            out["train"], out["val"] = split_trainval(train, p_val=val_fraction)
        elif given["test"] is None:
            out["train"], out["test"] = split_trainval(train, p_val=test_fraction)
    finally:
        random.setstate(state)
    return out


def split_mismatch(stored: Splits, given: Given) -> str:
    """How a stored generated split disagrees with the data it was made from ("" when it agrees)."""

    def keys(items):  # class names are not compared: renaming a class keeps the split (see load_splits)
        return {(os.path.normpath(d.impath), d.label) for d in items}

    pool = [name for name in SPLIT_NAMES if name == "train" or given[name] is None]
    pairs = [(keys(d for name in pool for d in stored[name]), keys(given["train"] or []), "train" if len(pool) == 1 else "+".join(pool))]
    pairs += [(keys(stored[name]), keys(given[name]), name) for name in SPLIT_NAMES if name not in pool]
    for have, want, what in pairs:
        if have != want:
            added, removed = sorted(want - have), sorted(have - want)
            parts = [f"{len(added)} image(s) new or relabelled"] if added else []
            parts += [f"{len(removed)} image(s) gone or relabelled"] if removed else []
            return f"{what}: {' and '.join(parts)} since it was made, e.g. {(added or removed)[0][0]}"
    return ""


# -------------------------------------------------------------------- dataset
class CustomDataset(DatasetBase):
    """The generic dataset behind ``DATASET.NAME "Custom"``; the registered class lives in datasets/custom.py."""

    def locate(self, cfg) -> None:
        c = cfg.DATASET.CUSTOM
        if not c.PATH:
            raise ConfigError(f"DATASET.CUSTOM.PATH is empty: set it to your image folder, split JSON or CSV (see {EXAMPLE})")
        path = os.path.expanduser(c.PATH)
        if not os.path.isabs(path):
            if not cfg.DATASET.ROOT:
                raise ConfigError(f"DATASET.CUSTOM.PATH {c.PATH!r} is relative but DATASET.ROOT is empty: pass --root, or give an absolute path")
            path = os.path.join(os.path.expanduser(cfg.DATASET.ROOT), path)
        self.source_path = os.path.abspath(path)
        self.root = os.path.abspath(os.path.expanduser(cfg.DATASET.ROOT)) if cfg.DATASET.ROOT else os.path.dirname(self.source_path)
        self.format = resolve_format(self.source_path, c.FORMAT)
        is_folder = self.format == "folders"
        self.dataset_dir = self.source_path if is_folder else os.path.dirname(self.source_path)
        image_dir = os.path.expanduser(c.IMAGE_DIR) if c.IMAGE_DIR else ""
        self.image_dir = self.dataset_dir if is_folder or not image_dir else os.path.normpath(os.path.join(self.dataset_dir, image_dir))
        stem = os.path.splitext(os.path.basename(self.source_path))[0] if not is_folder else os.path.basename(self.source_path)
        default_split = f"split_{stem}_seed{int(c.SPLIT_SEED)}_val{float(c.VAL_FRACTION):g}_test{float(c.TEST_FRACTION):g}.json"
        self.split_path = os.path.join(self.dataset_dir, os.path.expanduser(c.SPLIT_FILE) if c.SPLIT_FILE else default_split)
        self.built_split_path = self.split_path  # the generated split is the one built here
        self.split_fewshot_dir = os.path.join(self.dataset_dir, "split_fewshot", os.path.splitext(os.path.basename(self.split_path))[0])
        self.classnames_file = ""
        if c.CLASSNAMES_FILE:
            names = os.path.expanduser(c.CLASSNAMES_FILE)
            self.classnames_file = names if os.path.isabs(names) else os.path.join(self.dataset_dir, names)

    def doctor_command(self) -> str:
        c = self.cfg.DATASET.CUSTOM
        opts = ["DATASET.CUSTOM.PATH", c.PATH]
        for key in ("FORMAT", "IMAGE_DIR", "CLASSNAMES_FILE", "SPLIT_FILE"):
            if c[key] and c[key] != "auto":
                opts += [f"DATASET.CUSTOM.{key}", str(c[key])]
        for key in ("SPLIT_SEED", "VAL_FRACTION", "TEST_FRACTION"):
            opts += [f"DATASET.CUSTOM.{key}", str(c[key])]
        root = f" --root {shlex.quote(self.root)}" if getattr(self, "root", "") else ""
        return f"{DOCTOR} Custom{root} --opts {' '.join(shlex.quote(o) for o in opts)}"

    def prepare(self) -> None:
        if not os.path.exists(self.source_path):
            raise DatasetError(f"DATASET.CUSTOM.PATH not found: {self.source_path} (relative paths are under DATASET.ROOT)")
        expected_dir = self.format == "folders"
        if expected_dir != os.path.isdir(self.source_path):
            what = "a folder" if expected_dir else f"a .{self.format} file"
            raise DatasetError(f"DATASET.CUSTOM.FORMAT is {self.format} but {self.source_path} is not {what}")
        if self.format != "folders" and not os.path.isdir(self.image_dir):
            raise DatasetError(f"image folder not found: {self.image_dir} (DATASET.CUSTOM.IMAGE_DIR, relative to {self.dataset_dir})")

    def read_source(self) -> Given:
        """The splits the data gives (None where a split must be generated), labels checked."""
        names = read_classnames_file(self.classnames_file) if self.classnames_file else None
        reader = {"folders": lambda: read_folders(self.source_path, names, self.classnames_file),
                  "json": lambda: read_json(self.source_path, self.image_dir, names, self.classnames_file),
                  "csv": lambda: read_csv(self.source_path, self.image_dir, names, self.classnames_file)}[self.format]
        given = reader()
        check_labels(given, self.source_path)
        return given

    def build_split(self) -> Splits:
        c = self.cfg.DATASET.CUSTOM
        given = self.read_source()
        if all(given[name] is not None for name in SPLIT_NAMES):
            return {name: list(given[name]) for name in SPLIT_NAMES}
        return complete_splits(given, int(c.SPLIT_SEED), float(c.VAL_FRACTION), float(c.TEST_FRACTION))

    def procedure(self) -> str:
        c = self.cfg.DATASET.CUSTOM
        return (f"per-class random cut of train into val {float(c.VAL_FRACTION):g} / test {float(c.TEST_FRACTION):g} of each class "
                "where the data gives no val/test (DATASET.CUSTOM.SPLIT_SEED)")

    def load_splits(self, write: bool = True, check_exists: bool = True) -> Splits:
        given = self.read_source()
        seed = int(self.cfg.DATASET.CUSTOM.SPLIT_SEED)
        if all(given[name] is not None for name in SPLIT_NAMES):
            splits: Splits = {name: list(given[name]) for name in SPLIT_NAMES}
            source_file = self.source_path if os.path.isfile(self.source_path) else None
            self._split_provenance = provenance(source_file, GIVEN, f"as given by DATASET.CUSTOM.PATH ({self.format})", None)
        elif os.path.isfile(self.split_path):
            splits = read_split(self.split_path, self.image_dir, check_exists=False)
            problem = split_mismatch(splits, given)
            if problem:
                raise DatasetError(
                    f"generated split {self.split_path} no longer matches {self.source_path} ({problem}); "
                    "delete it to make a new one (or restore the data it was made from)"
                )
            log.info("Reusing the generated split %s", self.split_path)
            names = {d.label: d.classname for d in given["train"]}
            if any(names[d.label] != d.classname for items in splits.values() for d in items):
                splits = {name: with_classnames(items, names) for name, items in splits.items()}
                if write:
                    write_split(splits, self.split_path, self.image_dir)
                    log.info("Class names changed since the split was made: updated them in %s", self.split_path)
            self._split_provenance = provenance(self.split_path, BUILT_HERE, self.procedure(), seed)
        else:
            c = self.cfg.DATASET.CUSTOM
            splits = complete_splits(given, int(c.SPLIT_SEED), float(c.VAL_FRACTION), float(c.TEST_FRACTION))
            if write:
                self._write_generated(splits, given)
            self._split_provenance = provenance(self.split_path if write else None, BUILT_HERE, self.procedure(), seed)
        if check_exists:
            check_images_exist(self.source_path, splits)
        return splits

    def _write_generated(self, splits: Splits, given: Given) -> None:
        made = [name for name in SPLIT_NAMES if given[name] is None]
        try:
            write_split(splits, self.split_path, self.image_dir)
        except OSError as exc:
            raise DatasetError(
                f"cannot write the generated split to {self.split_path} ({exc.strerror or exc}); "
                "set DATASET.CUSTOM.SPLIT_FILE to a writable path"
            ) from None
        c = self.cfg.DATASET.CUSTOM
        log.info(
            "Generated %s from train (seed %d, per class, val %.0f%%, test %.0f%%) and saved the split to %s: "
            "it is reused from now on and can be shared with the data",
            " and ".join(made), int(c.SPLIT_SEED), float(c.VAL_FRACTION) * 100, float(c.TEST_FRACTION) * 100, self.split_path,
        )

    def templates(self, mode: str = "single") -> List[str]:
        if mode != "single":
            seven = get_templates(self.templates_file(), "", "ensemble")
            if mode == "ensemble":
                return seven
            get_templates(self.templates_file(), "", mode)  # an unknown mode fails here, naming the modes
            return coop_ensemble(seven, self.templates("single"), type(self).__name__)
        templates = list(self.cfg.DATASET.CUSTOM.TEMPLATES)
        bad = [t for t in templates if not isinstance(t, str) or t.count("{}") != 1]
        if not templates or bad:
            raise ConfigError(
                f"DATASET.CUSTOM.TEMPLATES must be a non-empty list of prompts with one {{}} slot for the class name, "
                f"e.g. ['a photo of a {{}}.']; got {bad[0] if bad else templates!r}"
            )
        return templates

