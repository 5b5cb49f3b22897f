"""Dataset checks: everything that can be wrong with one dataset on disk (layout, image counts
against the split file, unreadable images, class names, stale few-shot files), as a Report.

Each check only reads (missing split files are built in memory, not saved); :func:`resolve` turns a
registered name, a dataset config name or a YAML path into the dataset instance to check.
"""
from __future__ import annotations

import glob
import os
import random
import shlex
from typing import List, Sequence

from clip_adapter.app.doctor.findings import Report, _examples
from clip_adapter.app.doctor.imagenet_val import find_devkit, flat_images, sort_command
from clip_adapter.data.build import find_classnames_file, find_unreadable
from clip_adapter.data.dataset_base import DatasetBase, describe_duplicates, duplicate_classnames
from clip_adapter.data.fewshot import read_fewshot, stale_fewshot
from clip_adapter.data.splits import BUILT_HERE, SPLIT_NAMES
from clip_adapter.errors import DatasetError, UserError

def _split_counts(splits, report: Report) -> List[str]:
    missing: List[str] = []
    for name in SPLIT_NAMES:
        items = splits.get(name) or []
        absent = [d.impath for d in items if not os.path.isfile(d.impath)]
        missing += absent
        report.counts[name] = (len(items) - len(absent), len(items))
    return missing


def _classnames_source(ds: DatasetBase) -> str:
    """The class-name file a dataset reads, when it reads one (ImageNet and its variants, Custom)."""
    if getattr(ds, "classnames_file", ""):
        return ds.classnames_file
    if any(getattr(r, "dest", "") == "classnames.txt" for r in type(ds).resources):
        try:
            return find_classnames_file(ds.dataset_dir, ds.root)
        except DatasetError:
            return ""
    return ""


def _check_layout(ds: DatasetBase, report: Report) -> bool:
    """Folders present? False when nothing more can be checked."""
    from clip_adapter.data.custom import CustomDataset
    from clip_adapter.data.download import manual_missing

    cls = type(ds)
    name = cls.__name__
    get = f"clip-adapter download {name} --root {shlex.quote(ds.root)}"
    if isinstance(ds, CustomDataset):
        try:
            ds.prepare()
        except DatasetError as exc:
            report.add("error", str(exc), "fix DATASET.CUSTOM.PATH / IMAGE_DIR in your dataset YAML", status="missing")
            return False
        return True
    if cls.manual_download:
        get += " (it prints the manual steps for what it cannot fetch)"
    if not os.path.isdir(ds.dataset_dir):
        if type(ds).prepare is not DatasetBase.prepare:  # generated on first use (Smoke)
            report.add("note", f"{ds.dataset_dir} is not there yet: the first run makes it")
        else:
            report.add("error", f"dataset folder not found: {ds.dataset_dir}", get, status="missing")
        return False
    absent = sorted({p for p in [ds.image_dir] + manual_missing(cls, ds.root) if not os.path.exists(p)})
    if absent:
        report.add("error", f"incomplete: {_examples(absent)} not found", get, status="incomplete")
    if name == "ImageNet":
        _check_imagenet_folders(ds, report)
    return report.status not in ("incomplete", "missing")


def _check_imagenet_folders(ds: DatasetBase, report: Report) -> None:
    val = os.path.join(ds.image_dir, "val")
    flat = flat_images(val)
    if flat:
        devkit = find_devkit(ds.dataset_dir, ds.root)
        report.add(
            "error",
            f"{val} is flat ({len(flat)} images, no class folders): ImageNet's validation tar unpacks that way, and "
            "the test set would come out empty",
            f"sort it into class folders: {sort_command(val, devkit)} "
            "(or --labels LOC_val_solution.csv from Kaggle's copy)",
            status="incomplete",
        )
    train = os.path.join(ds.image_dir, "train")
    tars = sorted(glob.glob(os.path.join(train, "*.tar")))
    if tars:
        report.add(
            "error",
            f"{train} holds {len(tars)} unextracted class archive(s), e.g. {os.path.basename(tars[0])}",
            f"extract each into its class folder: cd {shlex.quote(train)} && for f in *.tar; do d=${{f%.tar}}; "
            'mkdir -p "$d" && tar -xf "$f" -C "$d" && rm "$f"; done',
            status="incomplete",
        )


def _check_fewshot(ds: DatasetBase, splits, report: Report) -> None:
    folder = ds.split_fewshot_dir
    if not os.path.isdir(folder):
        report.fewshot = "none"
        return
    files = sorted(glob.glob(os.path.join(folder, "shot_*-seed_*.json")))
    pickles = sorted(glob.glob(os.path.join(folder, "*.pkl")))
    val = None if ds.val_is_test else splits["val"]
    names = ("train",) if ds.val_is_test else ("train", "val")
    bad = 0
    for path in files:
        try:
            subset = read_fewshot(path, names, ds.image_dir)
        except DatasetError as exc:
            bad += 1
            report.add("error", str(exc).split("; ")[0], f"delete it (resampled on the next run): rm {shlex.quote(path)}", delete=[path])
            continue
        stale = stale_fewshot(subset, splits["train"], val)
        if stale:
            bad += 1
            report.add(
                "error",
                f"stale few-shot file {path}: {len(stale)} image(s) not in the current split (e.g. {stale[0]}); "
                "it was sampled from another split and runs with its shots/seed stop on it",
                f"delete it (resampled on the next run): rm {shlex.quote(path)}",
                delete=[path],
            )
    if pickles:
        report.add("note", f"{len(pickles)} pickled few-shot file(s) from CoOp in {folder} are ignored (pickles are never loaded)",
                   "safe to delete", delete=pickles)
    report.fewshot = f"{len(files)}" + (f" ({bad} stale)" if bad else "")


def check_dataset(ds: DatasetBase, sample: int = 0, workers: int = 8) -> Report:
    """Everything about one dataset instance (made with ``DatasetBase.at``); writes nothing."""
    report = Report(type(ds).__name__, folder=getattr(ds, "dataset_dir", ""), val_is_test=ds.val_is_test)
    if not _check_layout(ds, report):
        return report
    state = random.getstate()  # split builders draw from the global RNG: leave the caller's untouched
    try:
        splits = ds.load_splits(write=False, check_exists=False)
    except UserError as exc:
        report.add("error", f"cannot read the split: {exc}", "see the message; the dataset section of the README lists each layout")
        return report
    finally:
        random.setstate(state)
    # The file the split was read from, in the order load_splits reads them (CoOp's, then one built here).
    built_path = getattr(ds, "built_split_path", "") if getattr(ds, "save_built_split", True) else ""
    source = next((p for p in (ds.split_path, built_path) if p and os.path.isfile(p)), "the annotations")
    prov = ds.split_provenance or {}
    coop_publishes = bool(type(ds).split_file) and any(getattr(r, "dest", "") == type(ds).split_file for r in type(ds).resources)
    fetch = f"clip-adapter download {type(ds).__name__} --root {shlex.quote(ds.root)}"
    missing = _split_counts(splits, report)
    if missing:
        fix = "restore them (or check --root)"
        if source != "the annotations":
            fix += f", or delete {source} to rebuild it from what is there" + (" (then it is not CoOp's split)" if source == ds.split_path else "")
        report.add("error", f"{len(missing)} image(s) listed in {source} are missing: {_examples(missing)}", fix)
    elif source == ds.split_path and prov.get("source") == BUILT_HERE:
        report.add("warning", f"{source} was built by an earlier version of this project (its layout is not CoOp's), "
                   "yet it carries CoOp's name", f"rename it to {os.path.basename(built_path) or 'split_built_<Name>.json'} "
                   f"to keep it, or delete it and fetch CoOp's: {fetch}")
    elif source == built_path and source != ds.split_path:
        seed = prov.get("seed")
        text = f"split {source} was built here ({prov.get('procedure', 'from the annotations')}{f', seed {seed}' if seed is not None else ''})"
        if coop_publishes:
            report.add("note", text + f", not CoOp's {type(ds).split_file}", f"to use CoOp's split (preferred once present): {fetch}")
        else:
            report.add("note", text)
    elif source == "the annotations" and coop_publishes:
        report.add("note", f"no split file {ds.split_path}: the first run builds one from the annotations and saves it as "
                   f"{os.path.basename(built_path)} (not CoOp's)", f"to use CoOp's split: {fetch}")

    paths = sorted({d.impath for items in splits.values() for d in items if os.path.isfile(d.impath)})
    if sample and len(paths) > sample:
        paths = sorted(random.Random(0).sample(paths, sample))
    bad = find_unreadable(paths, workers, desc=f"{report.dataset}: decoding images", min_progress=200)
    report.checked_images, report.unreadable = len(paths), len(bad)
    if bad:
        report.add(
            "error",
            f"{len(bad)} unreadable image(s) (of {len(paths)} decoded): {_examples(bad)}",
            "replace them with good copies, or train with DATASET.SKIP_BAD_IMAGES True to leave them out",
        )

    items = splits["test"] if ds.test_only else [d for name in SPLIT_NAMES for d in splits[name]]
    lab2cname = {d.label: d.classname for d in items}
    shared = duplicate_classnames(lab2cname)
    names_file = _classnames_source(ds)
    report.classes = f"{len(lab2cname)}" + (f" ({sum(len(v) for v in shared.values())} share {len(shared)} name(s))" if shared else "")
    if names_file:
        report.add("note", f"class names from {names_file}")
    if shared:
        where = f"rename one of each pair in {names_file}" if names_file else "give the classes distinct names"
        report.add(
            "warning",
            f"{len(shared)} class name(s) shared by several labels: {describe_duplicates(shared)}. Resolved by position: "
            "each label keeps its own classifier row and its own accuracy (nothing is merged), but their prompts are "
            "identical, so zero-shot scores cannot tell them apart (as in CLIP's own ImageNet evaluation)",
            f"to separate them, {where}",
        )
    _check_fewshot(ds, splits, report)
    return report


def _repo_dataset_config(name: str) -> str:
    """``configs/datasets/<name>.yaml`` from the repository's configs/ or a plugin's (first found)."""
    from clip_adapter.plugins import config_dirs

    for folder in config_dirs():
        path = os.path.join(folder, "datasets", f"{name}.yaml")
        if os.path.isfile(path):
            return path
    return ""


def resolve(name: str, root: str, opts: Sequence[str]) -> DatasetBase:
    """A dataset instance (paths only) for a registered name, a config name or a YAML path."""
    from clip_adapter.config import get_cfg_default, merge_from_file, merge_from_list
    from clip_adapter.data.download import find_dataset
    from clip_adapter.registry import DATASETS

    cfg = get_cfg_default()
    yaml_path = name if (name.endswith((".yaml", ".yml")) or os.path.isfile(name)) else _repo_dataset_config(name)
    if yaml_path:
        merge_from_file(cfg, yaml_path)
        cls = DATASETS.get(cfg.DATASET.NAME)
    else:
        cls = find_dataset(name)
        cfg.DATASET.NAME = cls.__name__
    cfg.DATASET.ROOT = root
    merge_from_list(cfg, list(opts), source="--opts")
    cfg.freeze()
    return cls.at(cfg)

