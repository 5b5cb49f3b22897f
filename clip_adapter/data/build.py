"""Building a split from raw annotations: the few procedures CoOp's datasets share, written once.

CoOp's dataset files each carry a copy (or borrow a sibling's) of three procedures; here each
exists once and a dataset file only says which one it uses and with what:

* :func:`split_class_folders` / :func:`split_groups` -- per class, ``random.shuffle`` the images
  and cut them 50% train / 20% val / 30% test (``round`` for train and val, the rest is test);
  DTD, Caltech101, Food101, EuroSAT (class folders) and OxfordFlowers (a label file).
* :func:`split_trainval` -- per class, ``random.shuffle`` a trainval list and move
  ``round(n * 0.2)`` items to val; OxfordPets, StanfordCars, SUN397, UCF101.
* :func:`read_imagenet_classnames` / :func:`read_wnid_folders` -- ImageNet's ``classnames.txt``
  (``<wnid> <class name>``) and class folders named by WordNet id; ImageNet and its variants.

The draws use the global ``random`` module in CoOp's order, so the run's seed (set once by the
CLI before the dataset is built) decides the split exactly as in CoOp. One deliberate change:
directory listings are sorted before shuffling. CoOp shuffles ``os.listdir`` order, which differs
between file systems, so its own rebuilt splits are not reproducible; sorting makes ours so. The
published ``split_zhou_*.json`` files, which every dataset reads first, are unaffected.
"""
from __future__ import annotations

import logging
import os
import random
from collections import OrderedDict
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from clip_adapter.data.datum import Datum
from clip_adapter.data.fewshot import group_by_label
from clip_adapter.errors import DatasetError
from clip_adapter.progress import progress

log = logging.getLogger(__name__)

Splits = Dict[str, List[Datum]]

# What each procedure does, in a few words: a built split's provenance (DatasetBase.split_procedure).
CLASS_FOLDERS_PROCEDURE = "CoOp's per-class random 50/20/30 train/val/test cut of the sorted class folders (split_class_folders)"
GROUPS_PROCEDURE = "CoOp's per-class random 50/20/30 train/val/test cut of the labelled images (split_groups)"
TRAINVAL_PROCEDURE = "CoOp's per-class random 20% val cut of the official train list; the official test list (split_trainval)"
LISTING_PROCEDURE = "the class folders as found on disk, sorted (no random draw)"


def listdir_nohidden(path: str, dirs_only: bool = False) -> List[str]:
    """Sorted names in ``path`` that do not start with a dot (optionally folders only)."""
    if not os.path.isdir(path):
        raise DatasetError(f"folder not found: {path}; check DATASET.ROOT and the dataset's layout (see the datasets section of the README)")
    names = [n for n in os.listdir(path) if not n.startswith(".")]
    if dirs_only:
        names = [n for n in names if os.path.isdir(os.path.join(path, n))]
    return sorted(names)


def split_groups(groups: Iterable[Tuple[int, str, List[str]]], p_trn: float = 0.5, p_val: float = 0.2) -> Splits:
    """CoOp's per-class three-way split of ``(label, classname, impaths)`` groups, in the order given.

    Each group's list is shuffled in place with ``random.shuffle``; the first ``round(n * p_trn)``
    go to train, the next ``round(n * p_val)`` to val and the rest to test.
    """
    log.info("Splitting into %.0f%% train, %.0f%% val and %.0f%% test", p_trn * 100, p_val * 100, (1 - p_trn - p_val) * 100)
    out: Splits = {"train": [], "val": [], "test": []}
    for label, classname, impaths in groups:
        random.shuffle(impaths)
        n_total = len(impaths)
        n_train = round(n_total * p_trn)
        n_val = round(n_total * p_val)
        if n_train <= 0 or n_val <= 0 or n_total - n_train - n_val <= 0:
            raise DatasetError(
                f"class {classname!r} has only {n_total} image(s): too few to split into train/val/test "
                "(add images or remove the class folder)"
            )
        for name, chunk in (
            ("train", impaths[:n_train]),
            ("val", impaths[n_train : n_train + n_val]),
            ("test", impaths[n_train + n_val :]),
        ):
            out[name].extend(Datum(impath=p, label=label, classname=classname) for p in chunk)
    return out


def split_class_folders(
    image_dir: str,
    p_trn: float = 0.5,
    p_val: float = 0.2,
    ignored: Sequence[str] = (),
    new_cnames: Optional[Mapping[str, str]] = None,
) -> Splits:
    """One folder per class under ``image_dir``: sorted folder names (minus ``ignored``) give labels 0..C-1.

    ``new_cnames`` renames a folder's class name (the label still follows the folder's sort position).
    """
    categories = [c for c in listdir_nohidden(image_dir, dirs_only=True) if c not in set(ignored)]
    if not categories:
        raise DatasetError(f"no class folders found in {image_dir}; extract the dataset's images there")
    new_cnames = dict(new_cnames or {})
    groups = []
    for label, category in enumerate(categories):
        folder = os.path.join(image_dir, category)
        impaths = [os.path.join(folder, name) for name in listdir_nohidden(folder)]
        groups.append((label, new_cnames.get(category, category), impaths))
    return split_groups(groups, p_trn, p_val)


def split_trainval(trainval: Sequence[Datum], p_val: float = 0.2) -> Tuple[List[Datum], List[Datum]]:
    """CoOp's train/val split: per label (order of first appearance) shuffle and move ``round(n * p_val)`` to val."""
    log.info("Splitting trainval into %.0f%% train and %.0f%% val", (1 - p_val) * 100, p_val * 100)
    train: List[Datum] = []
    val: List[Datum] = []
    for label, group in group_by_label(trainval).items():
        idxs = list(range(len(group)))
        n_val = round(len(idxs) * p_val)
        if n_val <= 0:
            raise DatasetError(
                f"class {group[0].classname!r} (label {label}) has only {len(group)} trainval image(s): "
                f"too few to hold out {p_val:.0%} for validation"
            )
        random.shuffle(idxs)
        for n, idx in enumerate(idxs):
            (val if n < n_val else train).append(group[idx])
    return train, val


def read_lines(path: str) -> List[str]:
    """Non-empty stripped lines of an annotation text file; a missing file names itself."""
    if not os.path.isfile(path):
        raise DatasetError(f"annotation file not found: {path}; the dataset folder is incomplete (re-extract or re-download it)")
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def bad_line(path: str, lineno: int, line: str, expected: str) -> DatasetError:
    return DatasetError(f"{path}:{lineno}: cannot parse {line!r}, expected {expected}; the file is corrupt, re-download it")


def read_imagenet_classnames(path: str) -> "OrderedDict[str, str]":
    """``classnames.txt`` (``<wnid> <class name>`` per line, file order kept) -> {wnid: class name}."""
    names: "OrderedDict[str, str]" = OrderedDict()
    for lineno, line in enumerate(read_lines(path), 1):
        parts = line.split(" ")
        if len(parts) < 2:
            raise bad_line(path, lineno, line, "'<wnid> <class name>'")
        names[parts[0]] = " ".join(parts[1:])
    return names


def find_classnames_file(dataset_dir: str, root: str) -> str:
    """The dataset's own ``classnames.txt``, else ImageNet's (CoOp asks to copy it; we also look there)."""
    candidates = [os.path.join(dataset_dir, "classnames.txt"), os.path.join(root, "imagenet", "classnames.txt")]
    for path in candidates:
        if os.path.isfile(path):
            return path
    raise DatasetError(
        f"ImageNet class names not found: put classnames.txt in {candidates[0]} or {candidates[1]} "
        f"(clip-adapter download ImageNet --root {root} fetches it)"
    )


def read_wnid_folders(image_dir: str, classnames: Mapping[str, str], source: str = "classnames.txt") -> Tuple[List[Datum], List[str]]:
    """Class folders named by WordNet id; label = the folder's position in sorted order.

    Returns the items and the folder (wnid) of each label.
    """
    items: List[Datum] = []
    folders = listdir_nohidden(image_dir, dirs_only=True)
    if not folders:
        raise DatasetError(f"no class folders found in {image_dir}; extract the images there")
    for label, wnid in enumerate(folders):
        if wnid not in classnames:
            raise DatasetError(f"class folder {os.path.join(image_dir, wnid)} is not listed in {source}; use ImageNet's classnames.txt")
        folder = os.path.join(image_dir, wnid)
        items.extend(Datum(os.path.join(folder, name), label, classnames[wnid]) for name in listdir_nohidden(folder))
    return items, folders


def wnid_test_split(image_dir: str, dataset_dir: str, root: str) -> Tuple[Splits, List[int]]:
    """A test-only ImageNet variant in WordNet-id folders (Sketch, A, R), as CoOp reads them.

    Labels are the sorted folders' positions (0..199 for the 200-class A and R), class names come
    from ImageNet's ``classnames.txt``; also returned: each label's ImageNet (1000-way) label.
    """
    names_file = find_classnames_file(dataset_dir, root)
    classnames = read_imagenet_classnames(names_file)
    items, folders = read_wnid_folders(image_dir, classnames, names_file)
    return {"train": [], "val": [], "test": items}, imagenet_label_map(folders, classnames)


def imagenet_label_map(wnids: Sequence[str], classnames: Mapping[str, str]) -> List[int]:
    """For a subset of ImageNet classes (ImageNet-A/R), each subset label's index among ImageNet's 1000 labels."""
    full = sorted(classnames)
    position = {wnid: i for i, wnid in enumerate(full)}
    return [position[w] for w in wnids]


# Per format: how its files start, and how a complete file ends. A file that does not end so was cut
# short (or carries trailing bytes, which is legal: such files are then decoded to tell).
_MARKERS = (
    (b"\xff\xd8\xff", b"\xff\xd9"),  # JPEG: SOI ... EOI
    (b"\x89PNG\r\n\x1a\n", b"IEND\xaeB`\x82"),  # PNG: signature ... IEND chunk
    (b"GIF8", b";"),  # GIF: header ... trailer
)


def looks_complete(path: str) -> bool:
    """A cheap check (a few bytes at each end, no decoding): True when the file starts as a JPEG,
    PNG, GIF, WebP or BMP and is as long as its end marker or header says. False means "decode it
    to tell": not an image, cut short (a truncated download or copy), trailing bytes, another format."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(12)
            for magic, tail in _MARKERS:
                if head.startswith(magic):
                    f.seek(max(0, size - len(tail)))
                    return f.read(len(tail)) == tail
    except OSError:
        return False
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":  # RIFF: bytes 4..8 hold the size of what follows
        return size == int.from_bytes(head[4:8], "little") + 8
    if head[:2] == b"BM" and len(head) >= 6:  # BMP: bytes 2..6 hold the file size
        return size >= int.from_bytes(head[2:6], "little")
    return False


def find_unreadable(
    paths: Sequence[str], workers: int = 8, desc: str = "checking images", min_progress: int = 1000, quick: bool = False
) -> List[str]:
    """The paths among ``paths`` that fail to decode (read exactly as a run reads them), in sorted order.

    ``quick``: decode only the files ``looks_complete`` doubts (seconds for a dataset instead of a
    full decode; what a run checks before training). Without it every file is decoded (the doctor).
    """
    from concurrent.futures import ThreadPoolExecutor

    from clip_adapter.data.loader import read_image

    def _ok(path: str) -> bool:
        if quick and looks_complete(path):
            return True
        try:
            read_image(path)
            return True
        except DatasetError:
            return False

    paths = sorted(set(paths))
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        ok = list(progress(pool.map(_ok, paths), total=len(paths), desc=desc, unit="image", min_total=min_progress))
    return [p for p, good in zip(paths, ok) if not good]


def require_readable(splits: Mapping[str, Sequence[Datum]], workers: int = 8) -> None:
    """Before anything trains: every image the run will read opens and is complete, else one error naming them all.

    A run decodes its test images only after training; a truncated one found there wastes the
    whole run and names one file at a time. This check (``find_unreadable(quick=True)``) finds
    them all at the start.
    """
    paths = sorted({d.impath for items in splits.values() for d in items})
    bad = find_unreadable(paths, workers, desc="checking images", min_progress=5000, quick=True)
    if not bad:
        return
    bad_set = set(bad)
    where, seen = [], []
    for name, items in splits.items():
        n = sum(d.impath in bad_set for d in items)
        if n and not any(items == other for other in seen):  # ImageNet's val is its test; a test-only set's three are one
            where.append(f"{name} {n}")
        seen.append(items)
    shown = ", ".join(bad[:5]) + (f" (+{len(bad) - 5} more)" if len(bad) > 5 else "")
    raise DatasetError(
        f"{len(bad)} of the {len(paths)} images this run reads are unreadable (truncated, empty or not images; "
        f"{', '.join(where)}): {shown}. Replace them with good copies, or set DATASET.SKIP_BAD_IMAGES True to leave them out"
    )


def drop_unreadable(*splits: Sequence[Datum], workers: int = 8) -> List[List[Datum]]:
    """Decode every image once and drop the ones that fail (``DATASET.SKIP_BAD_IMAGES``), saying how many.

    Without the flag a bad image stops the run at decode time with its path; with it the run goes
    on without that image, and the log says which and how many were left out.
    """
    paths = {d.impath for split in splits for d in split}
    bad = find_unreadable(sorted(paths), workers)
    if bad:
        log.warning(
            "DATASET.SKIP_BAD_IMAGES: skipped %d unreadable image(s), e.g. %s", len(bad), ", ".join(bad[:3])
        )
    else:
        log.info("DATASET.SKIP_BAD_IMAGES: all %d images are readable", len(paths))
    bad_set = set(bad)
    return [[d for d in split if d.impath not in bad_set] for split in splits]


def load_mat(path: str, key: str):
    """One variable of a MATLAB annotation file (Stanford Cars, Oxford Flowers), via scipy."""
    if not os.path.isfile(path):
        raise DatasetError(f"annotation file not found: {path}; the dataset folder is incomplete (re-extract or re-download it)")
    from scipy.io import loadmat

    try:
        data = loadmat(path)
    except Exception as exc:  # scipy raises several unrelated types for a bad file
        raise DatasetError(f"cannot read {path} ({type(exc).__name__}: {exc}); re-download it") from None
    if key not in data:
        raise DatasetError(f"{path} has no variable {key!r}; it is not the expected annotation file")
    return data[key]
