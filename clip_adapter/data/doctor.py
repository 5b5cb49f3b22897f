"""The dataset doctor: everything that can be wrong with a dataset on disk, in one table, with the fix.

::

    python -m clip_adapter.data.doctor [NAME ...] --root $DATA [--opts KEY VALUE ...]
    python -m clip_adapter.data.doctor --sort-imagenet-val $DATA/imagenet/images/val --devkit ILSVRC2012_devkit_t12.tar.gz

NAME is a registered dataset (``Caltech101``), a dataset config name (``caltech101``, or your
``configs/datasets/my_data.yaml`` as ``my_data``) or a dataset YAML path; without names every
registered dataset is checked. Per dataset it reports: found / missing / incomplete; image counts per
split against what the split file lists; unreadable images (each is decoded exactly as a run decodes
it); ImageNet's validation folder left flat (and the command that sorts it); the class-name file and
class names shared by several labels; stale few-shot files. Then the feature cache: shards that fail
their checksum, namespaces of an old cache format, rows for images that changed. Every problem comes
with what to delete or rebuild; ``--fix`` deletes what is safe to delete (it is all rebuilt on the next
run). Nothing else is ever written: missing split files are built in memory, not saved.

Exit status: 0 when every dataset asked about is usable, 1 when one is not (without names, only
datasets whose folder exists count), 2 on a usage error. Runs print this command with every dataset
error. This is an entry point (like ``download``): it imports the config and the registered datasets.
"""
from __future__ import annotations

import argparse
import csv
import glob
import io
import json
import logging
import os
import random
import re
import shlex
import shutil
import sys
import tarfile
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from clip_adapter.data.build import find_classnames_file, find_unreadable
from clip_adapter.data.dataset_base import DatasetBase, describe_duplicates, duplicate_classnames
from clip_adapter.data.fewshot import read_fewshot, stale_fewshot
from clip_adapter.data.splits import DOCTOR, SPLIT_NAMES
from clip_adapter.errors import DatasetError, UserError

log = logging.getLogger(__name__)

SHOW = 3  # example paths per problem
STATUS_ORDER = ("ok", "warning", "broken", "incomplete", "missing")
USABLE = ("ok", "warning")
IMAGENET_VAL_RE = re.compile(r"^ILSVRC2012_val_(\d{8})\.(jpeg|jpg|png)$", re.IGNORECASE)
DEVKIT = "ILSVRC2012_devkit_t12.tar.gz"
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


@dataclass
class Finding:
    """One problem: ``level`` error (the dataset cannot be used as is), warning or note; and the fix."""

    level: str
    text: str
    fix: str = ""
    delete: Tuple[str, ...] = ()  # what --fix removes (files or folders that are rebuilt automatically)


@dataclass
class Report:
    dataset: str
    folder: str = ""
    status: str = "ok"
    counts: Dict[str, Tuple[int, int]] = field(default_factory=dict)  # split -> (found, listed)
    checked_images: int = 0
    unreadable: int = 0
    classes: str = ""
    fewshot: str = ""
    val_is_test: bool = False  # ImageNet: its val split is its test split (as in CoOp)
    findings: List[Finding] = field(default_factory=list)

    def add(self, level: str, text: str, fix: str = "", status: str = "", delete: Sequence[str] = ()) -> None:
        self.findings.append(Finding(level, text, fix, tuple(delete)))
        new = status or {"error": "broken", "warning": "warning"}.get(level, "ok")
        if STATUS_ORDER.index(new) > STATUS_ORDER.index(self.status):
            self.status = new

    @property
    def usable(self) -> bool:
        return self.status in USABLE


def _examples(paths: Sequence[str]) -> str:
    return ", ".join(paths[:SHOW]) + (f" (+{len(paths) - SHOW} more)" if len(paths) > SHOW else "")


# -------------------------------------------------------------------- ImageNet val
def flat_images(folder: str) -> List[str]:
    """Image files sitting directly in ``folder`` (where class folders belong)."""
    if not os.path.isdir(folder):
        return []
    return sorted(n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTS) and os.path.isfile(os.path.join(folder, n)))


def find_devkit(*folders: str) -> str:
    for folder in folders:
        for candidate in (os.path.join(folder, DEVKIT), os.path.join(folder, "ILSVRC2012_devkit_t12")):
            if os.path.exists(candidate):
                return candidate
    return ""


def sort_command(val_dir: str, devkit: str = "") -> str:
    source = f"--devkit {shlex.quote(devkit)}" if devkit else f"--devkit /path/to/{DEVKIT}"
    return f"{DOCTOR} --sort-imagenet-val {shlex.quote(val_dir)} {source}"


def _devkit_member(devkit: str, rel: str) -> bytes:
    """A file of the ILSVRC2012 devkit, from the .tar.gz or from its extracted folder."""
    if os.path.isdir(devkit):
        for base in (devkit, os.path.join(devkit, "ILSVRC2012_devkit_t12")):
            path = os.path.join(base, rel)
            if os.path.isfile(path):
                with open(path, "rb") as f:
                    return f.read()
        raise UserError(f"{devkit} has no {rel}: pass the ILSVRC2012 devkit (ILSVRC2012_devkit_t12/ or {DEVKIT})")
    if not os.path.isfile(devkit):
        raise UserError(f"devkit not found: {devkit} (download {DEVKIT} from image-net.org, next to the validation tar)")
    try:
        with tarfile.open(devkit) as tar:
            for member in tar.getmembers():
                if member.isfile() and member.name.replace("\\", "/").endswith("/" + rel):
                    return tar.extractfile(member).read()
    except tarfile.TarError as exc:
        raise UserError(f"cannot read {devkit} ({exc}); re-download {DEVKIT}") from None
    raise UserError(f"{devkit} has no {rel}: is it the ILSVRC2012 devkit ({DEVKIT})?")


def devkit_val_labels(devkit: str) -> Dict[int, str]:
    """Validation image number (1..50000) -> WordNet id, from the devkit's meta.mat and ground truth."""
    from scipy.io import loadmat

    try:
        synsets = loadmat(io.BytesIO(_devkit_member(devkit, "data/meta.mat")), squeeze_me=True)["synsets"]
        id_to_wnid = {
            int(i): str(w) for i, w, n in zip(synsets["ILSVRC2012_ID"], synsets["WNID"], synsets["num_children"]) if int(n) == 0
        }
    except (KeyError, ValueError, TypeError) as exc:
        raise UserError(f"{devkit}: data/meta.mat is not the ILSVRC2012 synset table ({exc})") from None
    truth = _devkit_member(devkit, "data/ILSVRC2012_validation_ground_truth.txt").decode().split()
    try:
        return {n: id_to_wnid[int(c)] for n, c in enumerate(truth, 1)}
    except (KeyError, ValueError) as exc:
        raise UserError(f"{devkit}: the ground truth names a class id missing from meta.mat ({exc})") from None


def labels_file_val_labels(path: str) -> Dict[str, str]:
    """Image file stem -> WordNet id from ``<file> <wnid>`` lines or Kaggle's LOC_val_solution.csv."""
    if not os.path.isfile(path):
        raise UserError(f"labels file not found: {path}")
    out: Dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        first = f.readline()
        f.seek(0)
        if first.lower().startswith("imageid,"):
            for row in csv.DictReader(f):
                out[os.path.splitext(row["ImageId"])[0]] = row["PredictionString"].split()[0]
        else:
            for lineno, line in enumerate(f, 1):
                parts = line.split()
                if not parts:
                    continue
                if len(parts) != 2 or not parts[1].startswith("n"):
                    raise UserError(f"{path}:{lineno}: expected '<image file> <wnid>', got {line.strip()!r}")
                out[os.path.splitext(os.path.basename(parts[0]))[0]] = parts[1]
    return out


def sort_imagenet_val(val_dir: str, devkit: str = "", labels: str = "", dry_run: bool = False) -> int:
    """Move each flat ``ILSVRC2012_val_*.JPEG`` into ``val_dir/<wnid>/``; returns how many moved.

    Every image's class is looked up before anything moves (an unknown image stops it with its name),
    and a rerun after an interruption moves only what is still flat.
    """
    from tqdm import tqdm

    if not os.path.isdir(val_dir):
        raise UserError(f"validation folder not found: {val_dir}")
    if bool(devkit) == bool(labels):
        raise UserError("give the ground truth with exactly one of --devkit (the ILSVRC2012 devkit) or --labels (a '<file> <wnid>' list or Kaggle's LOC_val_solution.csv)")
    names = flat_images(val_dir)
    if devkit:
        by_number = devkit_val_labels(devkit)
        lookup = {}
        for name in names:
            m = IMAGENET_VAL_RE.match(name)
            if m and int(m.group(1)) in by_number:
                lookup[name] = by_number[int(m.group(1))]
    else:
        by_stem = labels_file_val_labels(labels)
        lookup = {n: by_stem[os.path.splitext(n)[0]] for n in names if os.path.splitext(n)[0] in by_stem}
    unknown = [n for n in names if n not in lookup]
    if unknown:
        raise UserError(f"no class for {len(unknown)} image(s) in {val_dir}, e.g. {_examples(unknown)}; nothing was moved")
    for name in tqdm(names, desc="sorting ImageNet val", disable=len(names) < 1000 or dry_run):
        target = os.path.join(val_dir, lookup[name], name)
        if dry_run:
            print(f"{os.path.join(val_dir, name)} -> {target}")
            continue
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.replace(os.path.join(val_dir, name), target)
    return len(names)


# ------------------------------------------------------------------- datasets
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
    get = f"python -m clip_adapter.data.download {name} --root {shlex.quote(ds.root)}"
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
    source = ds.split_path if ds.split_path and os.path.isfile(ds.split_path) else "the annotations"
    missing = _split_counts(splits, report)
    if missing:
        fix = "restore them (or check --root)"
        if source != "the annotations":
            fix += f", or delete {source} to rebuild it from what is there (then it is not CoOp's split)"
        report.add("error", f"{len(missing)} image(s) listed in {source} are missing: {_examples(missing)}", fix)
    elif ds.split_path and not os.path.isfile(ds.split_path) and any(getattr(r, "dest", "") == type(ds).split_file for r in type(ds).resources):
        report.add("note", f"no split file {ds.split_path}: the first run builds one from the annotations (not CoOp's)",
                   f"to use CoOp's split: python -m clip_adapter.data.download {type(ds).__name__} --root {shlex.quote(ds.root)}")

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


# ---------------------------------------------------------------- feature cache
def check_feature_cache(cache_dir: str) -> Tuple[List[List[str]], List[Finding]]:
    """Rows (namespace, transform, view, shards, rows, damaged, stale rows) and findings; writes nothing."""
    import numpy as np

    from clip_adapter import features as F

    rows: List[List[str]] = []
    findings: List[Finding] = []

    def verify(path: str, expected: str = "") -> Tuple[str, Optional[list]]:
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {name: z[name] for name in z.files}
        except Exception as exc:  # truncated zip, bad header, pickled object: all mean "damaged"
            return f"unreadable ({type(exc).__name__})", None
        stored = str(arrays.pop("checksum", ""))
        if not stored:
            return "no checksum", None
        if F._checksum(arrays) != stored:
            return "checksum mismatch", None
        if expected and stored != expected:
            return "content does not match the checksum in its name", None
        keys = arrays.get("keys")
        try:
            return "", (F.decode_keys(keys) if keys is not None else [])
        except ValueError as exc:
            return f"unreadable keys ({exc})", None

    for entry in sorted(os.listdir(cache_dir)):
        folder = os.path.join(cache_dir, entry)
        if not os.path.isdir(folder):
            continue
        if entry == "text":
            damaged = [p for p in sorted(glob.glob(os.path.join(folder, "*.npz"))) if verify(p)[0]]
            for p in damaged:
                findings.append(Finding("warning", f"text classifier file {p} fails its checksum", f"delete it (recomputed on the next run): rm {shlex.quote(p)}", (p,)))
            continue
        try:
            with open(os.path.join(folder, "meta.json"), encoding="utf-8") as f:
                meta = json.load(f)
        except (OSError, ValueError):
            meta = {}
        if meta.get("format") != F.CACHE_FORMAT:
            why = f"cache format {meta.get('format')}, this version writes {F.CACHE_FORMAT}" if meta else "no readable meta.json"
            findings.append(Finding("warning", f"feature-cache folder {folder} is never read ({why})", f"delete it: rm -r {shlex.quote(folder)}", (folder,)))
            rows.append([entry, meta.get("encoder", "?"), short_spec(meta.get("transform", "")), _view(meta.get("view")), "-", "-", "-", "old format"])
            continue
        shards = sorted(glob.glob(os.path.join(folder, "shard-*.npz")))
        n_rows, damaged, stale = 0, [], 0
        for path in shards:
            problem, keys = verify(path, os.path.basename(path)[len("shard-"):-len(".npz")])
            if problem:
                damaged.append(path)
                findings.append(Finding("warning", f"feature-cache shard {path}: {problem}",
                                        f"delete it (its images are re-encoded on the next run, which would also delete it): rm {shlex.quote(path)}", (path,)))
                continue
            n_rows += len(keys)
            for key in keys:
                impath = key.rsplit("|", 2)[0]
                try:
                    current = F.image_key(impath)
                except OSError:
                    current = ""
                stale += current != key
        if stale:
            findings.append(Finding("note", f"{folder}: {stale} row(s) for images that changed or are gone (never read again; harmless)",
                                    f"only to reclaim the space: rm -r {shlex.quote(folder)} (what is still needed is re-encoded)"))
        rows.append([entry, meta.get("encoder", "?"), short_spec(meta.get("transform", "")), _view(meta.get("view")),
                     str(len(shards)), str(n_rows), str(len(damaged)), str(stale)])
    return rows, findings


def short_spec(spec: str) -> str:
    """``test;preset=clip;size=(224, 224);...`` -> ``test preset=clip size=(224, 224)`` (meta.json has the rest)."""
    parts = spec.split(";")
    keep = [p for p in parts[1:] if p.split("=")[0] in ("preset", "size")]
    return " ".join(parts[:1] + keep) if spec else "?"


def _view(view) -> str:
    return "deterministic" if view is None else str(view)


def default_cache_dir() -> str:
    env = os.environ.get("CLIP_ADAPTER_FEATURE_CACHE", "")
    if env:
        return os.path.abspath(os.path.expanduser(env))
    guess = os.path.abspath(os.path.join("output", "feature_cache"))
    return guess if os.path.isdir(guess) else ""


# ------------------------------------------------------------------------- CLI
def _repo_dataset_config(name: str) -> str:
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = os.path.join(here, "configs", "datasets", f"{name}.yaml")
    return path if os.path.isfile(path) else ""


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


def _cell(found_listed: Optional[Tuple[int, int]]) -> str:
    if not found_listed:
        return "-"
    found, listed = found_listed
    return str(listed) if found == listed else f"{found}/{listed}"


def render(reports: Sequence[Report], fmt: str = "github") -> str:
    from tabulate import tabulate

    rows = [
        [r.dataset, r.status, r.folder, _cell(r.counts.get("train")),
         "= test" if r.val_is_test and r.counts else _cell(r.counts.get("val")), _cell(r.counts.get("test")),
         f"{r.unreadable}/{r.checked_images}" if r.checked_images else "-", r.classes or "-", r.fewshot or "-"]
        for r in reports
    ]
    headers = ["dataset", "status", "folder", "train", "val", "test", "unreadable", "classes", "few-shot files"]
    return tabulate(rows, headers=headers, tablefmt=fmt, disable_numparse=True)


def render_findings(reports: Sequence[Report], show_missing: bool = True) -> str:
    """Each dataset's problems and fixes; datasets that are simply absent only when ``show_missing``."""
    lines = []
    for r in reports:
        shown = r.findings if (show_missing or r.status != "missing") else []
        if not shown:
            continue
        lines.append(f"{r.dataset} [{r.status}]")
        for f in shown:
            lines.append(f"  {f.level}: {f.text}")
            if f.fix:
                lines.append(f"    fix: {f.fix}")
    return "\n".join(lines)


def apply_fixes(findings: Sequence[Finding]) -> List[str]:
    """Delete what the findings mark as safe to delete (all of it is rebuilt by the next run)."""
    done = []
    for f in findings:
        for path in f.delete:
            if os.path.isdir(path):
                shutil.rmtree(path)
            elif os.path.exists(path):
                os.remove(path)
            else:
                continue
            done.append(path)
    return done


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=DOCTOR, description=__doc__.split("\n")[0])
    p.add_argument("names", nargs="*", help="datasets: registered names, config names (caltech101, my_data) or dataset YAML paths; default: all")
    p.add_argument("--root", default=os.environ.get("DATA", ""), help="the folder that holds the datasets ($DATA)")
    p.add_argument("--opts", nargs="+", default=[], metavar="KEY VALUE", help="config overrides, e.g. DATASET.CUSTOM.PATH my_data")
    p.add_argument("--cache-dir", default=None, help="feature cache to check (default: $CLIP_ADAPTER_FEATURE_CACHE, else ./output/feature_cache)")
    p.add_argument("--sample", type=int, default=0, help="decode only this many images per dataset (default: all)")
    p.add_argument("--workers", type=int, default=8, help="threads decoding images")
    p.add_argument("--fix", action="store_true", help="delete stale few-shot files and damaged or stale cache files (rebuilt on the next run)")
    p.add_argument("--format", default="github", help="table format (tabulate's names)")
    p.add_argument("-v", "--verbose", action="store_true", help="without names: also say how to get each missing dataset")
    g = p.add_argument_group("sort ImageNet's flat validation folder into class folders")
    g.add_argument("--sort-imagenet-val", metavar="VAL_DIR", default="", help="the flat folder (e.g. $DATA/imagenet/images/val)")
    g.add_argument("--devkit", default="", help=f"{DEVKIT} (or its extracted folder): gives each image's class")
    g.add_argument("--labels", default="", help="instead of --devkit: '<image file> <wnid>' lines, or Kaggle's LOC_val_solution.csv")
    g.add_argument("--dry-run", action="store_true", help="print the moves only")
    return p


def run(args) -> int:
    if args.sort_imagenet_val:
        moved = sort_imagenet_val(args.sort_imagenet_val, args.devkit, args.labels, args.dry_run)
        verb = "would move" if args.dry_run else "moved"
        print(f"{verb} {moved} image(s) into class folders under {args.sort_imagenet_val}")
        if not args.dry_run and moved:
            print(f"next: {DOCTOR} ImageNet --root <DATA> (the first run then builds split_ImageNet.json)")
        return 0
    import clip_adapter.datasets  # noqa: F401  (registers the datasets: this is an entry point)
    from clip_adapter.registry import DATASETS

    if not args.root and not args.names:
        raise UserError("no --root given (and $DATA is not set): pass the folder that holds your datasets")
    root = os.path.abspath(os.path.expanduser(args.root)) if args.root else ""
    named = bool(args.names)
    names = args.names or [n for n in DATASETS.names() if n != "Custom" or any(o.startswith("DATASET.CUSTOM.PATH") for o in args.opts[0::2])]
    reports = []
    for name in names:
        try:
            ds = resolve(name, root, args.opts)
        except UserError as exc:
            if named:
                raise
            reports.append(Report(name, status="broken", findings=[Finding("error", str(exc))]))
            continue
        report = check_dataset(ds, sample=args.sample, workers=args.workers)
        label = os.path.splitext(os.path.basename(name))[0]
        if "".join(ch for ch in label.lower() if ch.isalnum()) not in (report.dataset.lower(), os.path.basename(ds.dataset_dir).lower().replace("-", "")):
            report.dataset = f"{report.dataset} ({label})"  # which of several Custom configs this row is
        reports.append(report)
    print(render(reports, args.format))
    details = render_findings(reports, show_missing=named or args.verbose)
    if details:
        print("\n" + details)
    absent = [r.dataset for r in reports if r.status == "missing"]
    if absent and not (named or args.verbose):
        print(f"\n{len(absent)} dataset(s) not under {root}: python -m clip_adapter.data.download --list says how to get each (-v: per dataset)")

    findings = [f for r in reports for f in r.findings]
    cache_dir = args.cache_dir if args.cache_dir is not None else default_cache_dir()
    if cache_dir:
        if not os.path.isdir(cache_dir):
            print(f"\nfeature cache {cache_dir}: not found (nothing cached yet)")
        else:
            from tabulate import tabulate

            rows, cache_findings = check_feature_cache(cache_dir)
            print(f"\nfeature cache {cache_dir}:")
            if rows:
                print(tabulate(rows, headers=["namespace", "encoder", "transform", "view", "shards", "rows", "damaged", "stale rows"], tablefmt=args.format, disable_numparse=True))
            else:
                print("(empty)")
            for f in cache_findings:
                print(f"  {f.level}: {f.text}" + (f"\n    fix: {f.fix}" if f.fix else ""))
            findings += cache_findings
    if args.fix:
        done = apply_fixes(findings)
        print("\n--fix: " + (f"deleted {len(done)}: {_examples(done)}" if done else "nothing to delete"))
    counted = [r for r in reports if named or r.status != "missing"]
    unusable = [r.dataset for r in counted if not r.usable]
    if unusable:
        print(f"\nunusable: {', '.join(unusable)}", file=sys.stderr)
        return 1
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        return run(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
