"""Weights files shared by every backbone family: where they live, their checksum, and what is wrong
with a file that does not load.

A weights file that cannot be read (truncated by an interrupted download, an HTML error or login page
saved under the weights' name, another architecture's weights) must end a run with one line that
names the file and the fix, never a traceback; in particular never torch's advice to retry with
``weights_only=False``, which would execute arbitrary code from a file that is already known to be
wrong. No torch import here: the checksum is also what the results tool names a weights file by.
"""
from __future__ import annotations

import hashlib
import os
import zipfile
from functools import lru_cache
from typing import Optional

from clip_adapter.errors import UserError


class WeightsError(UserError):
    """A weights file that is missing, damaged or of another architecture."""


def default_weights_dir(cache_dir: str = "") -> str:
    """MODEL.BACKBONE.CACHE_DIR, else $CLIP_ADAPTER_WEIGHTS, else ``~/.cache/clip`` (the clip package's folder)."""
    return os.path.abspath(os.path.expanduser(cache_dir or os.environ.get("CLIP_ADAPTER_WEIGHTS", "~/.cache/clip")))


@lru_cache(maxsize=None)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_sha256(path: str) -> str:
    """The file's sha256 (hex), computed once per process for an unchanged file."""
    path = os.path.realpath(path)
    st = os.stat(path)
    return _sha256(path, st.st_size, st.st_mtime_ns)


def sniff_problem(path: str) -> Optional[str]:
    """What is visibly wrong with a weights file before any loader sees it (None: nothing visible).

    torch's zip format (and TorchScript archives) keep their directory at the end of the file, so a
    truncated download fails ``zipfile.is_zipfile``; a page saved instead of the weights starts with ``<``.
    """
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if size == 0:
        return "is empty"
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype", b"<html", b"<?xml", b"<head", b"<body")) or b"<html" in text[:200]:
        return "is an HTML page (an error or login page saved under the weights' name), not weights"
    if head.startswith(b"PK\x03\x04") and not zipfile.is_zipfile(path):
        return f"is truncated (an interrupted download? {size:,} bytes, the archive's end is missing)"
    return None


def load_failure(path: str, what: str, exc: BaseException, fix: str) -> WeightsError:
    """The one-line error for a file that ``what`` (a loader) could not load.

    The library's own message is kept when it is short and safe to act on; torch's unpickling errors
    (which suggest ``weights_only=False``) are summarised instead.
    """
    problem = sniff_problem(path)
    if problem is None:
        detail = " ".join(str(exc).split())
        if not detail or "weights_only" in detail or "pickle" in detail.lower() or len(detail) > 200:
            detail = type(exc).__name__
        else:
            detail = f"{type(exc).__name__}: {detail}"
        problem = f"could not be loaded as {what} ({detail})"
    return WeightsError(f"weights file {path} {problem}; {fix}")


def check_file(path: str, fix: str) -> None:
    """Refuse a visibly broken weights file (empty, HTML, truncated archive) with one line."""
    problem = sniff_problem(path)
    if problem:
        raise WeightsError(f"weights file {path} {problem}; {fix}")
