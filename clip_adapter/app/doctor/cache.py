"""The feature cache, checked: shards that fail their checksum, namespaces of an old cache format,
rows for images that changed since they were encoded. Reads only; ``--fix`` deletes what is listed."""
from __future__ import annotations

import glob
import json
import os
import shlex
from typing import List, Optional, Tuple

from clip_adapter.app.doctor.findings import Finding

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

