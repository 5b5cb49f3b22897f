"""Fetch a dataset into CoOp's layout: resumable, checksummed, and never half-extracted.

Each dataset class lists its :class:`Resource` entries (where a file comes from and what it
provides under the dataset folder); this module does the rest, the same way for all of them:

* HTTP(S) downloads go to ``<file>.part`` and resume with an HTTP ``Range`` request after an
  interruption; Google-Drive files (CoOp's split files, UCF101's mid-frames) go through ``gdown``
  with its own resume. Progress: a bar on a terminal, a few log lines in a log (``clip_adapter.progress``).
* Checksums (md5 as torchvision publishes them, or sha256) are verified; a mismatch deletes the
  file and says so. Without a known checksum the file's sha256 is logged so it can be pinned.
* Archives are extracted (torchvision's ``extract_archive``) into a hidden temporary folder inside
  the dataset folder, and each wanted member is then moved into place with one ``os.replace``, so
  a folder such as ``images/`` only ever appears complete. A crash leaves a ``.extract-*``
  folder that the next run removes, plus the ``.part`` file it resumes from.
* Every resource whose targets already exist is skipped, so the command is safe to rerun.

URLs can be redirected without touching the code: ``URL_OVERRIDES`` (file name -> URL) or the
environment variable ``CLIP_ADAPTER_DATA_MIRROR`` (every file fetched from ``<mirror>/<file name>``),
which is how the tests serve small archives from a local HTTP server.

ImageNet and data without a working public source are not fetched: the command prints what to
download and where to put it (``manual_download`` on the dataset class).

Command line (the app layer; it imports the registered datasets)::

    clip-adapter download caltech101 oxford_pets --root $DATA
    clip-adapter download all --root $DATA
    clip-adapter download --list
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import logging
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from clip_adapter.errors import DatasetError, UserError

log = logging.getLogger(__name__)

MIRROR_ENV = "CLIP_ADAPTER_DATA_MIRROR"
# File name -> URL: takes precedence over the mirror and the built-in URL (tests patch this).
URL_OVERRIDES: Dict[str, str] = {}
GDRIVE = "gdrive:"
DOWNLOADS = ".downloads"
EXTRACT_PREFIX = ".extract-"
CHUNK = 1 << 20
TIMEOUT_S = 60


@dataclass(frozen=True)
class Resource:
    """One file to fetch and what it provides under the dataset folder.

    A plain file sets ``dest``; an archive sets ``members`` = ((path inside the archive, path under
    the dataset folder), ...). A member path is also looked up under the archive's single top-level
    folder, so archives with or without a wrapping folder both work. ``inner`` names an archive
    inside the archive to extract in turn (Caltech101's zip holds a tar.gz). ``copy_from`` (a path
    under DATASET.ROOT) provides ``dest`` by copying when present (ImageNet's classnames.txt).
    """

    url: str
    filename: str
    dest: str = ""
    members: Tuple[Tuple[str, str], ...] = ()
    inner: str = ""
    md5: str = ""
    sha256: str = ""
    copy_from: str = ""

    def targets(self) -> List[str]:
        return [self.dest] if self.dest else [dst for _, dst in self.members]


def gdrive_file(file_id: str, filename: str) -> Resource:
    """A file CoOp hosts on Google Drive (split files, class-name lists), placed as ``filename``."""
    return Resource(GDRIVE + file_id, filename, dest=filename)


# CLIP's ImageNet class names as CoOp distributes them; the variants copy ImageNet's when present.
IMAGENET_CLASSNAMES = Resource(
    GDRIVE + "1-61f_ol79pViBFDG_IDlUQSwoLcn2XXF", "classnames.txt", dest="classnames.txt", copy_from="imagenet/classnames.txt"
)


@dataclass
class Report:
    """What one dataset's download did; ``manual_missing`` lists paths the user must still provide."""

    dataset: str
    dataset_dir: str
    fetched: List[str] = field(default_factory=list)
    present: List[str] = field(default_factory=list)
    manual_missing: List[str] = field(default_factory=list)


# ------------------------------------------------------------------ low level
def resolve_url(res: Resource) -> str:
    if res.filename in URL_OVERRIDES:
        return URL_OVERRIDES[res.filename]
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    if mirror:
        return f"{mirror.rstrip('/')}/{res.filename}"
    return res.url


def _gdrive_page(file_id: str) -> str:
    return f"https://drive.google.com/file/d/{file_id}/view"


def http_download(url: str, path: str, desc: str = "") -> None:
    """Download ``url`` to ``path`` through ``path.part``, resuming a partial file with HTTP Range."""
    from clip_adapter.progress import progress

    part = path + ".part"
    have = os.path.getsize(part) if os.path.isfile(part) else 0
    headers = {"User-Agent": "clip-adapter-downloader", "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:
            # Nothing beyond what we hold: the partial file is whole (the checksum decides).
            os.replace(part, path)
            return
        raise DatasetError(f"download failed: {url} answered HTTP {exc.code} {exc.reason}; check the URL or set {MIRROR_ENV}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DatasetError(f"cannot reach {url} ({reason}); check the network (or set {MIRROR_ENV}) and run the command again") from None
    with resp:
        start = 0
        if have and resp.status == 206:
            content_range = resp.headers.get("Content-Range", "")
            if not content_range.startswith(f"bytes {have}-"):
                os.remove(part)
                raise DatasetError(f"{url} resumed at an unexpected offset ({content_range!r}); removed {part}, run the command again")
            start = have
            log.info("Resuming %s at %d bytes", os.path.basename(path), have)
        elif have:
            log.info("%s ignored the resume request: downloading %s from the start", url, os.path.basename(path))
        length = resp.headers.get("Content-Length")
        total = start + int(length) if length is not None else None
        with open(part, "ab" if start else "wb") as f, progress(
            total=total, initial=start, unit="B", unit_scale=True, desc=desc or os.path.basename(path)
        ) as bar:
            try:
                while True:
                    block = resp.read(CHUNK)
                    if not block:
                        break
                    f.write(block)
                    bar.update(len(block))
            except (OSError, http.client.HTTPException):
                pass  # reported below with the byte count
        got = os.path.getsize(part)
    if total is not None and got < total:
        raise DatasetError(
            f"download of {url} was interrupted at {got} of {total} bytes; the partial file {part} is kept: "
            "run the same command again to resume"
        )
    os.replace(part, path)


def gdrive_download(file_id: str, path: str) -> None:
    """A Google-Drive file through gdown (which resumes its own partial file)."""
    import gdown

    try:
        out = gdown.download(id=file_id, output=path, quiet=False, resume=True)
    except Exception as exc:  # gdown raises its own and requests' errors
        out = None
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    else:
        reason = "no file returned"
    if not out or not os.path.isfile(path):
        raise DatasetError(
            f"Google Drive download of {os.path.basename(path)} failed ({reason}); download it by hand from "
            f"{_gdrive_page(file_id)} and put it at {path}, then run the command again"
        )


def file_digest(path: str, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def verify(path: str, res: Resource, url: str) -> None:
    """Check md5 (torchvision's check) and/or sha256; a mismatch deletes the file and raises."""
    from torchvision.datasets.utils import check_integrity

    problems = []
    if res.md5 and not check_integrity(path, res.md5):
        problems.append(f"md5 {file_digest(path, 'md5')} != expected {res.md5}")
    if res.sha256:
        got = file_digest(path, "sha256")
        if got != res.sha256:
            problems.append(f"sha256 {got} != expected {res.sha256}")
    if problems:
        os.remove(path)
        raise DatasetError(
            f"checksum mismatch for {os.path.basename(path)} from {url} ({'; '.join(problems)}); the file was deleted: "
            "run the command again (if it repeats, the source serves a different file: report it)"
        )
    if not (res.md5 or res.sha256):
        log.info("%s: no published checksum; sha256 %s", os.path.basename(path), file_digest(path, "sha256"))


def fetch(res: Resource, downloads_dir: str) -> str:
    """The verified file in ``downloads_dir`` (reused if it is already there and intact)."""
    os.makedirs(downloads_dir, exist_ok=True)
    path = os.path.join(downloads_dir, res.filename)
    url = resolve_url(res)
    if os.path.isfile(path):
        try:
            verify(path, res, url)
            return path
        except DatasetError:
            log.warning("%s is corrupt: downloading it again", path)
    if url.startswith(GDRIVE):
        gdrive_download(url[len(GDRIVE):], path)
    else:
        http_download(url, path)
    verify(path, res, url)
    return path


@contextlib.contextmanager
def _safe_tar_extraction():
    """Refuse tar members that would land outside the target folder (absolute paths, '..', devices)."""
    old = getattr(tarfile.TarFile, "extraction_filter", None)
    if hasattr(tarfile, "data_filter"):
        tarfile.TarFile.extraction_filter = staticmethod(tarfile.data_filter)
    try:
        yield
    finally:
        tarfile.TarFile.extraction_filter = old


def extract(archive: str, to_dir: str) -> None:
    from torchvision.datasets.utils import extract_archive

    log.info("Extracting %s (large archives take minutes)", os.path.basename(archive))
    try:
        with _safe_tar_extraction():
            extract_archive(archive, to_dir)
    except (tarfile.TarError, OSError, EOFError, ValueError, RuntimeError) as exc:
        raise DatasetError(f"cannot extract {archive} ({type(exc).__name__}: {exc}); delete it and run the command again") from None


def _locate(tree: str, member: str, archive: str) -> str:
    direct = os.path.join(tree, member)
    if os.path.exists(direct):
        return direct
    top = [n for n in os.listdir(tree) if not n.startswith(".")]
    if len(top) == 1 and os.path.isdir(os.path.join(tree, top[0])):
        nested = os.path.join(tree, top[0], member)
        if os.path.exists(nested):
            return nested
    raise DatasetError(f"archive {os.path.basename(archive)} has no {member!r} (it holds {sorted(top)[:5]}); the source changed: report it")


def install(res: Resource, path: str, dataset_dir: str) -> None:
    """Put a fetched file (or an archive's members) into the dataset folder, each by one rename."""
    if res.dest:
        target = os.path.join(dataset_dir, res.dest)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=EXTRACT_PREFIX, dir=dataset_dir)
        os.close(fd)
        try:
            shutil.copyfile(path, tmp)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        return
    tmp = tempfile.mkdtemp(prefix=EXTRACT_PREFIX, dir=dataset_dir)
    try:
        extract(path, tmp)
        tree = tmp
        if res.inner:
            inner_tree = os.path.join(tmp, EXTRACT_PREFIX + "inner")
            os.makedirs(inner_tree)
            extract(_locate(tmp, res.inner, path), inner_tree)
            tree = inner_tree
        for member, dst in res.members:
            target = os.path.join(dataset_dir, dst)
            if os.path.exists(target):
                continue
            source = _locate(tree, member, path)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.replace(source, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ----------------------------------------------------------------- per dataset
def _present(dataset_dir: str, rel: str) -> bool:
    return os.path.exists(os.path.join(dataset_dir, rel))


def manual_missing(cls, root: str) -> List[str]:
    """Paths a manual dataset still lacks (empty once the user has put the data in place)."""
    dataset_dir = os.path.join(root, cls.dataset_dir)
    paths = list(getattr(cls, "manual_paths", ()) or ()) or ([cls.image_dir] if cls.manual_download else [])
    return [os.path.join(dataset_dir, p) for p in paths if not _present(dataset_dir, p)]


def manual_instructions(cls, root: str) -> str:
    dataset_dir = os.path.join(root, cls.dataset_dir)
    text = cls.manual_download.format(root=root, dataset_dir=dataset_dir).strip()
    return f"{cls.__name__} must be downloaded by hand:\n{text}"


def download_dataset(cls, root: str, keep_archives: bool = False) -> Report:
    """Fetch every missing resource of dataset class ``cls`` under ``root``; safe to rerun."""
    from filelock import FileLock

    root = os.path.abspath(os.path.expanduser(root))
    dataset_dir = os.path.join(root, cls.dataset_dir)
    report = Report(cls.__name__, dataset_dir)
    if all(_present(dataset_dir, t) for res in cls.resources for t in res.targets()) and not manual_missing(cls, root):
        # Complete: touch nothing (the folder may be a read-only shared copy).
        report.present = [t for res in cls.resources for t in res.targets()]
        return report
    os.makedirs(dataset_dir, exist_ok=True)
    downloads_dir = os.path.join(dataset_dir, DOWNLOADS)
    with FileLock(os.path.join(dataset_dir, ".download.lock")):
        for name in os.listdir(dataset_dir):  # leftovers of an interrupted extraction
            if name.startswith(EXTRACT_PREFIX):
                path = os.path.join(dataset_dir, name)
                if os.path.isdir(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    os.remove(path)
        for res in cls.resources:
            targets = res.targets()
            if all(_present(dataset_dir, t) for t in targets):
                report.present.extend(targets)
                continue
            if res.copy_from and os.path.isfile(os.path.join(root, res.copy_from)):
                install(res, os.path.join(root, res.copy_from), dataset_dir)
                log.info("Copied %s from %s", res.dest, os.path.join(root, res.copy_from))
                report.fetched.extend(targets)
                continue
            path = fetch(res, downloads_dir)
            install(res, path, dataset_dir)
            report.fetched.extend(targets)
            if not keep_archives:
                os.remove(path)
        if os.path.isdir(downloads_dir) and not os.listdir(downloads_dir):
            os.rmdir(downloads_dir)
    report.manual_missing = manual_missing(cls, root)
    if report.manual_missing:
        log.warning("%s", manual_instructions(cls, root))
    return report


# ------------------------------------------------------------------------- CLI
def _norm(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def find_dataset(name: str):
    """A registered dataset by class name, CoOp config name (``oxford_pets``) or folder name (``dtd``)."""
    from clip_adapter.registry import DATASETS

    if name in DATASETS:
        return DATASETS.get(name)
    wanted = _norm(name)
    for key in DATASETS.names():
        cls = DATASETS.get(key)
        if wanted in (_norm(key), _norm(cls.dataset_dir)):
            return cls
    return DATASETS.get(name)  # raises, listing the known names


def downloadable() -> List[type]:
    from clip_adapter.registry import DATASETS

    classes = [DATASETS.get(k) for k in DATASETS.names()]
    return [c for c in classes if c.resources or c.manual_download]
