"""The one dataset base class: a subclass states only where its files are and what is particular.

Reading the split file, building it when it is missing, few-shot sampling and base/new
subsampling all happen here, once, for every dataset.
"""
from __future__ import annotations

import inspect
import logging
import os
import random
import shlex
from typing import Any, Dict, List, Optional

from clip_adapter.data.build import drop_unreadable, require_readable
from clip_adapter.data.datum import Datum
from clip_adapter.data.fewshot import load_or_sample_fewshot
from clip_adapter.data.splits import (
    BUILT_HERE,
    DOCTOR,
    COOP,
    add_doctor_hint,
    built_split_name,
    check_images_exist,
    provenance,
    read_split_with_meta,
    write_split,
    written_by_this_project,
)
from clip_adapter.data.subsample import subsample_classes
from clip_adapter.data.templates import get_templates
from clip_adapter.errors import DatasetError

log = logging.getLogger(__name__)


def duplicate_classnames(lab2cname: Dict[int, str]) -> Dict[str, List[int]]:
    """Class names held by more than one label -> those labels (ImageNet's CLIP list: missile, sunglasses)."""
    labels: Dict[str, List[int]] = {}
    for label in sorted(lab2cname):
        labels.setdefault(lab2cname[label], []).append(label)
    return {name: labs for name, labs in labels.items() if len(labs) > 1}


def with_classnames(items: List[Datum], names: Dict[int, str]) -> List[Datum]:
    """``items`` with each label's class name taken from ``names`` (label -> name)."""
    return [d if names.get(d.label, d.classname) == d.classname else Datum(d.impath, d.label, names[d.label], d.domain) for d in items]


def describe_duplicates(shared: Dict[str, List[int]], limit: int = 5) -> str:
    parts = [f"{name!r} (labels {', '.join(map(str, labs))})" for name, labs in list(shared.items())[:limit]]
    return ", ".join(parts) + (f" and {len(shared) - limit} more" if len(shared) > limit else "")


class DatasetBase:
    """Subclasses set ``dataset_dir``, ``image_dir``, ``split_file`` and may override ``build_split``.

    ``test_only`` datasets (distribution-shift targets) have no train split of their own.

    The split comes from CoOp's published file (``split_file``) when present, else from the split
    this project built earlier (``split_built_<Name>.json``), else ``build_split()`` makes it and it
    is saved under that built name. ``split_provenance`` says which, for results.json.
    """

    dataset_dir: str = ""
    image_dir: str = "images"
    # The split file CoOp publishes (split_zhou_<Name>.json), "" when it publishes none. Only ever read.
    split_file: str = ""
    # How ``build_split`` makes the split (recorded in a built split file and in its provenance).
    split_procedure: str = ""
    # Save a built split (and read it back later)? False where building is a cheap deterministic
    # read of official lists or folders that also sets attributes (ImageNet-A/-R's label maps).
    save_built_split: bool = True
    # Key into the templates.json next to the subclass's module; defaults to the class name.
    template_key: str = ""
    test_only: bool = False
    # ImageNet (as in CoOp): no val split of its own; the test set (ImageNet's val) serves as val,
    # and few-shot sampling draws train only.
    val_is_test: bool = False
    # Printed when the folder is missing: how to get the data.
    download_hint: str = ""
    # What `download()` fetches (clip_adapter.data.download.Resource entries) and, for data that
    # must be fetched by hand (licence, dead links), the instructions printed instead.
    resources: tuple = ()
    manual_download: str = ""
    # Paths (under the dataset folder) the manual steps must provide; default: the image folder.
    manual_paths: tuple = ()

    def __init__(self, cfg) -> None:
        self.cfg = cfg
        try:
            self._build(cfg)
        except DatasetError as exc:
            # Every dataset error of a run ends with the doctor command for this dataset.
            raise DatasetError(add_doctor_hint(str(exc), self.doctor_command())) from None

    @classmethod
    def at(cls, cfg) -> "DatasetBase":
        """An instance with only its paths set (nothing read, nothing written): what the doctor inspects."""
        obj = cls.__new__(cls)
        obj.cfg = cfg
        obj.locate(cfg)
        return obj

    def _build(self, cfg) -> None:
        self.locate(cfg)
        self.prepare()
        splits = self.load_splits()
        train, val, test = splits["train"], splits["val"], splits["test"]
        if self.val_is_test:
            val = test
        val_full = val  # the whole val split, kept for SELECTION.PROTOCOL full_val (engine/selection.py)

        num_shots = int(cfg.DATASET.NUM_SHOTS)
        if num_shots >= 1 and not self.test_only:
            subset = load_or_sample_fewshot(
                train, None if self.val_is_test else val, num_shots, int(cfg.SEED), self.split_fewshot_dir, self.image_dir
            )
            # The split names the classes; a few-shot file only selects images (its names may predate a rename).
            names = {d.label: d.classname for d in train + val}
            train = with_classnames(subset["train"], names)
            val = test if self.val_is_test else with_classnames(subset["val"], names)
        if self.test_only:
            train, val, test = subsample_classes(test, test, test, subsample=cfg.DATASET.SUBSAMPLE_CLASSES)
            val_full = val
        else:
            train, val, test, val_full = subsample_classes(train, val, test, val_full, subsample=cfg.DATASET.SUBSAMPLE_CLASSES)
        if getattr(cfg.DATASET, "SKIP_BAD_IMAGES", False):
            train, val, test, val_full = drop_unreadable(train, val, test, val_full)
        else:  # every unreadable image named now, not one at a time after training
            require_readable({"train": train, "val": val, "test": test})
        self.train_x: List[Datum] = train
        self.val: List[Datum] = val
        self.test: List[Datum] = test
        # The whole val split (the few-shot ``val`` is drawn from it; for val_is_test datasets: test).
        self.val_full: List[Datum] = val_full
        self._lab2cname = self._build_lab2cname(test if self.test_only else train)
        shared = duplicate_classnames(self._lab2cname)
        if shared:
            log.warning(
                "%s: %d class name(s) shared by several labels: %s. They stay separate classes (the text "
                "classifier is positional, one row per label), but their prompts are identical, so a "
                "prompt-only classifier cannot tell them apart (as in CLIP's evaluation)",
                type(self).__name__, len(shared), describe_duplicates(shared),
            )

    # -------------------------------------------------------------- hooks
    def locate(self, cfg) -> None:
        """Set ``root``, ``dataset_dir``, ``image_dir``, ``split_path`` (CoOp's), ``built_split_path`` and
        ``split_fewshot_dir`` from the config; reads nothing."""
        if not cfg.DATASET.ROOT:
            raise DatasetError(f"DATASET.ROOT is empty: pass --root /path/to/datasets (or set DATA in the scripts) for {type(self).__name__}")
        root = os.path.abspath(os.path.expanduser(cfg.DATASET.ROOT))
        self.root = root
        self.dataset_dir = os.path.join(root, type(self).dataset_dir)
        self.image_dir = os.path.join(self.dataset_dir, type(self).image_dir)
        self.split_path = os.path.join(self.dataset_dir, self.split_file) if self.split_file else ""
        self.built_split_path = os.path.join(self.dataset_dir, built_split_name(type(self).__name__))
        self.split_fewshot_dir = os.path.join(self.dataset_dir, "split_fewshot")

    def doctor_command(self) -> str:
        """The doctor command that checks this dataset (printed with every dataset error)."""
        root = getattr(self, "root", "") or os.path.abspath(os.path.expanduser(self.cfg.DATASET.ROOT or "")) or "$DATA"
        return f"{DOCTOR} {type(self).__name__} --root {shlex.quote(root)}"

    def prepare(self) -> None:
        """Make sure the files are there (downloading first when DATASET.DOWNLOAD), else fail naming the path."""
        if getattr(self.cfg.DATASET, "DOWNLOAD", False):
            self.download()
        for folder in (self.dataset_dir, self.image_dir):
            if not os.path.isdir(folder):
                hint = self.download_hint or f"clip-adapter download {type(self).__name__} --root {self.root}"
                raise DatasetError(
                    f"dataset folder not found: {folder}; get it with: {hint} (or set DATASET.DOWNLOAD True), "
                    f"or point --root at the folder that holds {type(self).dataset_dir}/"
                )

    def download(self) -> None:
        """Fetch what ``resources`` lists (idempotent: present parts are skipped; partial files resume)."""
        from clip_adapter.data.download import download_dataset

        download_dataset(type(self), self.root)

    def load_splits(self, write: bool = True, check_exists: bool = True) -> Dict[str, List[Datum]]:
        """CoOp's split file, else the one built here earlier, else ``build_split()``'s (then saved
        as ``split_built_<Name>.json``); sets ``split_provenance``.

        ``write=False, check_exists=False`` is the doctor's read-only look: nothing is written and
        missing images are counted by the caller instead of raising.
        """
        for path in (self.split_path, self.built_split_path if self.save_built_split else ""):
            if path and os.path.isfile(path):
                splits, meta = read_split_with_meta(path, self.image_dir, check_exists=check_exists)
                self._split_provenance = self._provenance_of(path, meta)
                return splits
        before = random.getstate()
        splits = self.build_split()
        # The split depends on the seed only if the procedure drew from the global RNG (the CLI seeded
        # it with the run's seed before building the dataset, as CoOp's train.py does).
        seed = int(self.cfg.SEED) if random.getstate() != before and int(self.cfg.SEED) >= 0 else None
        how = {"by": "clip_adapter (not CoOp's published split)", "procedure": self.procedure(), "seed": seed}
        if check_exists:
            check_images_exist(f"the {type(self).__name__} annotations", splits)
        written = None
        if write and self.save_built_split:
            write_split(splits, self.built_split_path, self.image_dir, built=how)
            written = self.built_split_path
            log.info("Built the %s split here and saved it to %s: %s%s%s", type(self).__name__, written, how["procedure"],
                     f", seed {seed}" if seed is not None else "",
                     f". CoOp's {self.split_file} is read instead once it is there" if self.split_file else "")
        self._split_provenance = provenance(written, BUILT_HERE, how["procedure"], seed)
        return splits

    def procedure(self) -> str:
        return self.split_procedure or f"{type(self).__name__}.build_split from the dataset's annotations"

    def _provenance_of(self, path: str, meta: Dict[str, Any]) -> Dict[str, Any]:
        if path == self.built_split_path:
            return provenance(path, BUILT_HERE, str(meta.get("procedure", self.procedure())), meta.get("seed"))
        if written_by_this_project(path):
            log.warning(
                "%s has this project's layout, not that of CoOp's published file: an earlier version built it here and "
                "saved it under CoOp's name. Rename it to %s to keep this split, or delete it and fetch CoOp's "
                "(clip-adapter download %s --root %s)",
                path, built_split_name(type(self).__name__), type(self).__name__, shlex.quote(self.root),
            )
            return provenance(path, BUILT_HERE, "unknown: built by an earlier version of this project, saved under CoOp's name", None)
        return provenance(path, COOP, "CoOp's published split file", None)

    @property
    def split_provenance(self) -> Optional[Dict[str, Any]]:
        """Where the split came from (None before ``load_splits``): ``{"file", "sha256", "source": "coop" |
        "built here", "procedure", "seed"}``; ``file`` is None for a split built but not saved."""
        prov = getattr(self, "_split_provenance", None)
        return dict(prov) if prov is not None else None

    def build_split(self) -> Dict[str, List[Datum]]:
        raise DatasetError(f"split file not found: {self.split_path or self.built_split_path}; download CoOp's split_zhou file into {self.dataset_dir}")

    # --------------------------------------------------------- properties
    @staticmethod
    def _build_lab2cname(items: List[Datum]) -> Dict[int, str]:
        return {label: name for label, name in sorted({(d.label, d.classname) for d in items})}

    @property
    def lab2cname(self) -> Dict[int, str]:
        return dict(self._lab2cname)

    @property
    def classnames(self) -> List[str]:
        return [self._lab2cname[k] for k in sorted(self._lab2cname)]

    @property
    def num_classes(self) -> int:
        return (max(self._lab2cname) + 1) if self._lab2cname else 0

    @classmethod
    def templates_file(cls) -> str:
        return os.path.join(os.path.dirname(inspect.getfile(cls)), "templates.json")

    def templates(self, mode: str = "single") -> List[str]:
        return get_templates(self.templates_file(), self.template_key or type(self).__name__, mode)

    def splits(self) -> Dict[str, List[Datum]]:
        return {"train": self.train_x, "val": self.val, "test": self.test}
