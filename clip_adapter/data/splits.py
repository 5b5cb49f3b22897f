"""CoOp's split files: ``{"train"|"val"|"test": [[relative_path, label, classname], ...]}``.

Paths are stored relative to the dataset's image folder so that one file works on every machine;
the same reader serves every dataset.

Provenance: CoOp publishes ``split_zhou_<Name>.json``; a split this project builds (when that file
is missing) is saved as ``split_built_<Name>.json`` (``built_split_name``), never under CoOp's name,
in the same layout plus a ``"_built"`` entry saying how it was made (CoOp's readers ignore it).
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

from clip_adapter.data.datum import Datum
from clip_adapter.errors import DatasetError
from clip_adapter.utils import atomic_write_text

SPLIT_NAMES = ("train", "val", "test")
DOCTOR = "python -m clip_adapter.app.doctor"  # an app tool: the data layer only prints its command
# The generic pointer (used where the dataset is unknown, e.g. an image failing to decode).
DOCTOR_HINT = f"run `{DOCTOR}` to diagnose"
BUILT_PREFIX = "split_built_"
BUILT_KEY = "_built"  # how a split built here was made: {"by", "procedure", "seed"}
COOP = "coop"  # provenance "source": CoOp's published split file
BUILT_HERE = "built here"  # ... made by this project (from the annotations, or a custom dataset's cut)
GIVEN = "given"  # ... a custom dataset whose files give every split


def built_split_name(dataset: str) -> str:
    """The file a split built by this project is saved as: ``split_built_<Name>.json`` (never CoOp's name)."""
    return f"{BUILT_PREFIX}{dataset}.json"


def written_by_this_project(path: str) -> bool:
    """Whether a split file has ``write_split``'s layout (2-space indent, an entry per line) rather than
    the ``json.dump(indent=4)`` layout of CoOp's published files: how a split an earlier version of
    this project built and saved under CoOp's name is told apart from CoOp's own."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        return False
    return head.startswith(b'{\n  "')


def provenance(path: Optional[str], source: str, procedure: str, seed: Optional[int]) -> Dict[str, Any]:
    """What a run records about its split: file name, sha256, source (COOP, BUILT_HERE or GIVEN), procedure, seed."""
    from clip_adapter.data.download import file_digest

    exists = bool(path) and os.path.isfile(path)  # type: ignore[arg-type]
    return {
        "file": os.path.basename(path) if exists else None,  # type: ignore[arg-type]
        "sha256": file_digest(path, "sha256") if exists else None,  # type: ignore[arg-type]
        "source": source,
        "procedure": procedure,
        "seed": seed,
    }


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
    return read_split_with_meta(filepath, path_prefix, check_exists, required)[0]


def read_split_with_meta(
    filepath: str, path_prefix: str, check_exists: bool = True, required: Sequence[str] = SPLIT_NAMES
) -> Tuple[Dict[str, List[Datum]], Dict[str, Any]]:
    """``read_split`` plus the file's ``"_built"`` record ({} in CoOp's files), from one parse."""
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
    meta = raw.get(BUILT_KEY)
    return out, (dict(meta) if isinstance(meta, dict) else {})


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


def write_split(splits: Dict[str, List[Datum]], filepath: str, path_prefix: str, built: Optional[Dict[str, Any]] = None) -> None:
    """Write a split file atomically in CoOp's layout (paths relative to ``path_prefix``).

    One entry per line: a readable diff, and a file a third the size of an indented dump
    (ImageNet's 1.3M entries). ``built`` (how the split was made) goes first, as ``"_built"``.
    """
    blocks = [f'  "{BUILT_KEY}": {json.dumps(built)}'] if built is not None else []
    for name in SPLIT_NAMES:
        rows = [json.dumps([to_relative(d.impath, path_prefix), d.label, d.classname]) for d in splits.get(name, [])]
        body = ("\n    " + ",\n    ".join(rows) + "\n  ") if rows else ""
        blocks.append(f'  "{name}": [{body}]')
    atomic_write_text(filepath, "{\n" + ",\n".join(blocks) + "\n}\n")
