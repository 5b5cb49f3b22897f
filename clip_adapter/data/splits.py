"""CoOp's split files: ``{"train"|"val"|"test": [[relative_path, label, classname], ...]}``.

Paths are stored relative to the dataset's image folder so that one file works on every machine;
the same reader serves every dataset.
"""
from __future__ import annotations

import json
import os
from typing import Dict, List, Sequence

from clip_adapter.data.datum import Datum
from clip_adapter.errors import DatasetError
from clip_adapter.utils import atomic_write_text

SPLIT_NAMES = ("train", "val", "test")
DOCTOR = "python -m clip_adapter.app.doctor"  # an app tool: the data layer only prints its command
# The generic pointer (used where the dataset is unknown, e.g. an image failing to decode).
DOCTOR_HINT = f"run `{DOCTOR}` to diagnose"


def add_doctor_hint(message: str, command: str = DOCTOR) -> str:
    """``message`` ending with the doctor command (``command`` names the dataset and root); said once."""
    if DOCTOR_HINT in message:
        message = message.replace(DOCTOR_HINT, f"run `{command}` to diagnose")
    elif DOCTOR not in message:
        message = f"{message.rstrip('. ')}; `{command}` checks the whole dataset"
    return message


def read_split(
    filepath: str, path_prefix: str, check_exists: bool = True, required: Sequence[str] = SPLIT_NAMES
) -> Dict[str, List[Datum]]:
    """Read a split file; every malformed entry or missing image is reported with the file's name.

    A split named in SPLIT_NAMES but not in ``required`` may be absent (an empty list then): a
    user's own split file may give train only (``clip_adapter.data.custom`` completes it).
    """
    if not os.path.isfile(filepath):
        raise DatasetError(f"split file not found: {filepath}")
    try:
        with open(filepath, encoding="utf-8") as f:
            raw = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"split file {filepath} is not valid JSON ({exc}); delete it to rebuild it, or fetch CoOp's copy") from None
    if not isinstance(raw, dict) or any(k not in raw for k in required):
        raise DatasetError(
            f"split file {filepath} has the wrong format: expected a JSON object with keys {', '.join(required)} "
            "holding [relative_path, label, classname] lists (CoOp's split_zhou_*.json layout)"
        )
    out: Dict[str, List[Datum]] = {}
    for name in SPLIT_NAMES:
        if name not in raw:
            out[name] = []
            continue
        if not isinstance(raw[name], list):
            raise DatasetError(f"split file {filepath}: {name!r} is {type(raw[name]).__name__}, expected a list of [relative_path, label, classname]")
        items = []
        for i, entry in enumerate(raw[name]):
            if not (isinstance(entry, (list, tuple)) and len(entry) == 3):
                raise DatasetError(
                    f"split file {filepath}: entry {i} of {name!r} is {entry!r}, expected [relative_path, label, classname]"
                )
            impath, label, classname = entry
            try:
                label = int(label)
            except (TypeError, ValueError):
                raise DatasetError(f"split file {filepath}: entry {i} of {name!r} has a non-integer label {label!r}") from None
            items.append(Datum(impath=os.path.join(path_prefix, impath), label=label, classname=str(classname)))
        out[name] = items
    if check_exists:
        check_images_exist(filepath, out)
    return out


def check_images_exist(source: str, splits: Dict[str, List[Datum]]) -> None:
    missing = [d.impath for items in splits.values() for d in items if not os.path.exists(d.impath)]
    if missing:
        first = ", ".join(missing[:3])
        raise DatasetError(
            f"{source} references {len(missing)} missing image(s), e.g. {first}; check DATASET.ROOT, or {DOCTOR_HINT}"
        )


def to_relative(impath: str, path_prefix: str) -> str:
    rel = os.path.relpath(impath, path_prefix)
    return rel.replace(os.sep, "/")


def write_split(splits: Dict[str, List[Datum]], filepath: str, path_prefix: str) -> None:
    """Write a split file atomically in CoOp's layout (paths relative to ``path_prefix``).

    One entry per line: a readable diff, and a file a third the size of an indented dump
    (ImageNet's 1.3M entries).
    """
    blocks = []
    for name in SPLIT_NAMES:
        rows = [json.dumps([to_relative(d.impath, path_prefix), d.label, d.classname]) for d in splits.get(name, [])]
        body = ("\n    " + ",\n    ".join(rows) + "\n  ") if rows else ""
        blocks.append(f'  "{name}": [{body}]')
    atomic_write_text(filepath, "{\n" + ",\n".join(blocks) + "\n}\n")
