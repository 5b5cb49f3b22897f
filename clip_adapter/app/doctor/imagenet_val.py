"""ImageNet's validation folder: found flat (as its tar unpacks), and sorted into class folders from
the ILSVRC2012 devkit's ground truth or a labels file (``--sort-imagenet-val``)."""
from __future__ import annotations

import csv
import io
import os
import re
import shlex
import tarfile
from typing import Dict, List

from clip_adapter.app.doctor.findings import _examples
from clip_adapter.progress import progress
from clip_adapter.data.splits import DOCTOR
from clip_adapter.errors import UserError

IMAGENET_VAL_RE = re.compile(r"^ILSVRC2012_val_(\d{8})\.(jpeg|jpg|png)$", re.IGNORECASE)
DEVKIT = "ILSVRC2012_devkit_t12.tar.gz"
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


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
    for name in progress(names, desc="sorting ImageNet val", unit="image", min_total=1000, disable=dry_run):
        target = os.path.join(val_dir, lookup[name], name)
        if dry_run:
            print(f"{os.path.join(val_dir, name)} -> {target}")
            continue
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.replace(os.path.join(val_dir, name), target)
    return len(names)

