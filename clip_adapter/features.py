"""The frozen-encoder feature cache: every image view is encoded once, ever, and reused.

Why: CLIP is frozen in every method here, so an image view always maps to the same feature.
Encoding it again each epoch, seed, shot count and method (what the reference code does) is
where nearly all the compute goes.

Layout: ``<cache_dir>/<namespace>/shard-<checksum>.npz`` and ``<cache_dir>/text/<key>.npz``.
A namespace is one (encoder id = backbone name + weights checksum, transform spec, view index,
precision, cache format, torchvision/Pillow versions); inside it rows are keyed per image by
``absolute path | size | mtime``, so every seed, shot count, base/new half and trainer that touches
an image reuses its row, and a modified or touched image gets a new row (only that image).
What an augmented view looks like does not depend on where the data lives: its crop/flip seed comes
from the image's path relative to DATASET.ROOT (``view_seed``), so the same data under another root
trains on the same crops (only the cache rows, keyed by absolute path, are made anew). Keys are
stored as one UTF-8 JSON text (a uint8 array): fixed-width '<U' strings took four bytes per character
of the longest key, more than the features themselves.

Features are stored *raw* (the encoder's output before L2 normalisation, fp32): CLIP-Adapter's
residual blend acts on raw features, and each consumer normalises where its method says so.

Integrity: files are ``.npz`` read with ``allow_pickle=False`` (nothing is unpickled), written to
a temporary name and renamed (atomic), and carry a SHA-256 of their content (for shards also in
the file name). A truncated, edited or misshapen file is detected, reported with one warning,
deleted and re-encoded. Concurrency: a per-namespace file lock is held while encoding, so a
second process waits, rescans and finds the work done instead of repeating it.

Reads: indexing a namespace reads only the shards' keys; a shard's features are read and
checksummed when first gathered, and kept in a per-process memo (keyed by path, size and mtime, so a
replaced file is read again) up to ``SHARD_MEMO_BYTES``; shards this process wrote are never read back.
"""
from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import sys
import time
from collections import OrderedDict
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import PIL
import torch
from filelock import FileLock, Timeout

from clip_adapter.data.datum import Datum
from clip_adapter.data.loader import build_loader
from clip_adapter.errors import DatasetError
from clip_adapter.progress import progress
from clip_adapter.utils import _atomic_replace, atomic_write_json

log = logging.getLogger(__name__)

# Bump when the file layout, the key or the view-seeding rule changes: old entries are then ignored.
# 3: view seeds from the path relative to DATASET.ROOT (was: the absolute path).
# 4: keys as a UTF-8 JSON blob (2 and 3: fixed-width '<U' strings).
CACHE_FORMAT = 4
# Older formats whose deterministic-view (val/test, centre view) shards are converted instead of
# re-encoded: their rows differ only in how keys are stored. Augmented views are never converted, so
# a change of the view-seeding rule (format 3) can never carry stale crops over.
CONVERTIBLE_FORMATS = (3, 2)
# Rows per shard: bounds the memory of a pending write and of reading one shard back.
SHARD_ROWS = 4096
# Verified shards kept in memory per process (most recently used first out of budget).
SHARD_MEMO_BYTES = 512 << 20


def _major_minor(version: str) -> str:
    return ".".join(version.split("+")[0].split(".")[:2])


def _torchvision_version() -> str:
    """torchvision's version without importing it (its import costs about a second; a warm run needs none)."""
    module = sys.modules.get("torchvision")
    if module is not None:
        return module.__version__
    from importlib.metadata import version

    return version("torchvision")


# Decoding and resizing code can change pixels between releases (torchvision 0.17 changed the
# antialias default), so features made with other versions are never mixed in.
LIBRARY_TAG = f"torchvision={_major_minor(_torchvision_version())};pillow={_major_minor(PIL.__version__)}"


def image_key(impath: str) -> str:
    """What identifies an image's pixels without reading them: path, size and modification time."""
    try:
        st = os.stat(impath)
    except OSError as exc:
        raise DatasetError(f"cannot read image {impath} ({type(exc).__name__}: {exc.strerror}); restore it or remove it from the split") from None
    return f"{os.path.abspath(impath)}|{st.st_size}|{st.st_mtime_ns}"


def view_identity(impath: str, root: str = "") -> str:
    """What names an image for its view seeds: its '/'-separated path relative to ``root`` (DATASET.ROOT).

    Relative, so that copying or moving the data folder (another --root, another machine) keeps every
    crop; the absolute path only when there is no root to be relative to.
    """
    path = os.path.abspath(os.path.expanduser(impath))
    if root:
        path = os.path.relpath(path, os.path.abspath(os.path.expanduser(root)))
    return path.replace(os.sep, "/")


def view_seed(impath: str, view: int, root: str = "") -> int:
    """The seed of augmented view ``view`` of an image: the same crop/flip in every run, process,
    order and data location (see ``view_identity``)."""
    digest = hashlib.sha256(f"{view_identity(impath, root)}#{view}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


class ViewSeeds:
    """``index -> view_seed(paths[index], views[index], root)``; a class, not a lambda, so spawn-started
    DataLoader workers can pickle it."""

    def __init__(self, paths: Sequence[str], views: Sequence[int], root: str = "") -> None:
        self.paths = list(paths)
        self.views = list(views)
        self.root = root

    def __call__(self, index: int) -> int:
        return view_seed(self.paths[index], self.views[index], self.root)


def encode_keys(keys: Sequence[str]) -> np.ndarray:
    """Row keys as one UTF-8 JSON text in a uint8 array (any character a path may hold survives)."""
    return np.frombuffer(json.dumps(list(keys), ensure_ascii=False).encode("utf-8"), dtype=np.uint8)


def decode_keys(arr: np.ndarray) -> List[str]:
    """The inverse of ``encode_keys``; ValueError when the array is not such a text."""
    if arr.dtype != np.uint8 or arr.ndim != 1:
        raise ValueError(f"keys stored as {arr.dtype} of shape {arr.shape}, expected a uint8 text")
    try:
        keys = json.loads(arr.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"keys are not a JSON text ({exc})") from None
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise ValueError("keys are not a list of strings")
    return keys


# ------------------------------------------------------------------ verified .npz files
def _checksum(arrays: Dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        arr = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{arr.dtype.str}|{arr.shape}\n".encode())
        h.update(arr.tobytes())
    return h.hexdigest()[:32]


def save_verified(path: str, arrays: Dict[str, np.ndarray], checksum: str = "") -> str:
    """Write ``arrays`` plus their checksum (computed unless given) atomically; returns the checksum."""
    checksum = checksum or _checksum(arrays)
    _atomic_replace(path, lambda f: np.savez(f, checksum=np.array(checksum), **arrays))
    return checksum


def load_verified(
    path: str, check: Callable[[Dict[str, np.ndarray]], str] = lambda a: "", expected: str = "", trusted: bool = False
) -> Optional[Dict[str, np.ndarray]]:
    """Read a file written by ``save_verified``; None (after one warning, file deleted) when it is damaged.

    ``check(arrays)`` returns "" when the shapes are what the caller expects, else what is wrong;
    ``expected`` is the checksum the file must carry (shards: the one in their name). ``trusted``
    skips recomputing the checksum (this process verified these very bytes before).
    """
    problem = ""
    arrays: Dict[str, np.ndarray] = {}
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {name: z[name] for name in z.files}
        stored = str(arrays.pop("checksum", ""))
        if not stored:
            problem = "no checksum"
        elif not trusted and _checksum(arrays) != stored:
            problem = "checksum mismatch"
        elif expected and stored != expected:
            problem = "content does not match the checksum in its name"
        else:
            problem = check(arrays)
    except FileNotFoundError:
        return None  # another process removed it after finding it damaged
    except Exception as exc:  # truncated zip, bad header, missing member, pickled object: all mean "rebuild"
        problem = f"unreadable ({type(exc).__name__}: {exc})"
    if problem:
        log.warning("feature cache file %s is damaged (%s): deleting it; its features will be re-encoded", path, problem)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        return None
    return arrays


def _locked(lock_path: str, what: str) -> FileLock:
    """The lock, acquired; says so in the log when another process holds it (a run is not hung)."""
    lock = FileLock(lock_path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("Another process is encoding %s; waiting for it (lock %s)", what, lock_path)
        lock.acquire()
    return lock


class _ShardMemo:
    """Shards this process has verified: (keys, features) of the most recent ones within a byte
    budget, and the identity of every verified file, so a shard is read and checksummed once.

    Identity is (path, size, mtime_ns): a shard replaced or edited since is read and verified again.
    """

    def __init__(self) -> None:
        self.rows: "OrderedDict[Tuple[str, int, int], Tuple[List[str], np.ndarray]]" = OrderedDict()
        self.verified: set = set()
        self.bytes = 0

    @staticmethod
    def identity(path: str) -> Optional[Tuple[str, int, int]]:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        return (path, st.st_size, st.st_mtime_ns)

    def get(self, ident) -> Optional[Tuple[List[str], np.ndarray]]:
        hit = self.rows.get(ident)
        if hit is not None:
            self.rows.move_to_end(ident)
        return hit

    def put(self, ident, keys: List[str], feats: np.ndarray) -> None:
        self.verified.add(ident)
        if ident in self.rows or feats.nbytes > SHARD_MEMO_BYTES:
            return
        self.rows[ident] = (keys, feats)
        self.bytes += feats.nbytes
        while self.bytes > SHARD_MEMO_BYTES:
            _, (_, old) = self.rows.popitem(last=False)
            self.bytes -= old.nbytes

    def drop(self, path: str) -> None:
        for ident in [i for i in self.rows if i[0] == path]:
            self.bytes -= self.rows.pop(ident)[1].nbytes
        self.verified = {i for i in self.verified if i[0] != path}

    def clear(self) -> None:
        self.rows.clear()
        self.verified.clear()
        self.bytes = 0


_MEMO = _ShardMemo()


def clear_shard_memo() -> None:
    """Forget every shard read in this process (what a new process starts with)."""
    _MEMO.clear()


class FeatureCache:
    """Encode-once storage of raw image features for one frozen encoder.

    ``encode`` maps a batch of image tensors (on ``device``) to features; the cache calls it only
    for (image, view) pairs it has never stored. ``encoded_images`` counts images it encoded.
    ``seed_root`` (DATASET.ROOT) is what augmented views' seeds are relative to (``view_identity``).
    """

    def __init__(
        self,
        root: str,
        encoder_id: str,
        encode: Callable[[torch.Tensor], torch.Tensor],
        device: torch.device | str = "cpu",
        precision: str = "fp32",
        batch_size: int = 128,
        num_workers: int = 0,
        dim: Optional[int] = None,
        seed_root: str = "",
    ) -> None:
        self.root = os.path.abspath(root)
        self.seed_root = seed_root
        self.encoder_id = encoder_id
        self.encode = encode
        self.device = torch.device(device)
        self.precision = precision
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.dim = dim
        self.encoded_images = 0
        # namespace folder -> {image key: (shard path, row)}; shard path -> its keys (shards never change)
        self._index: Dict[str, Dict[str, Tuple[str, int]]] = {}
        self._shard_keys: Dict[str, List[str]] = {}

    # ------------------------------------------------------------ layout
    def _folder(self, fmt: int, spec: str, view: Optional[int]) -> str:
        ident = f"format={fmt}\n{self.encoder_id}\n{spec}\nview={view}\nprec={self.precision}\n{LIBRARY_TAG}"
        return os.path.join(self.root, hashlib.sha256(ident.encode()).hexdigest()[:20])

    def namespace(self, spec: str, view: Optional[int]) -> str:
        """The folder for one (encoder, transform, view, precision); created with a readable meta.json
        (and, the first time, filled from the same namespace of an older cache format, see ``_adopt``)."""
        folder = self._folder(CACHE_FORMAT, spec, view)
        meta = os.path.join(folder, "meta.json")
        if not os.path.isfile(meta):
            os.makedirs(folder, exist_ok=True)
            with _locked(os.path.join(folder, ".lock"), f"the conversion of {folder}"):
                if not os.path.isfile(meta):
                    self._adopt(folder, spec, view)
                    atomic_write_json(meta, {
                        "format": CACHE_FORMAT, "encoder": self.encoder_id, "transform": spec, "view": view,
                        "precision": self.precision, "libraries": LIBRARY_TAG, "features": "raw (not L2-normalised), float32",
                    })
        return folder

    def _adopt(self, folder: str, spec: str, view: Optional[int]) -> None:
        """A new namespace whose older-format twin exists: convert the deterministic view's shards
        (same rows, keys stored anew), leave augmented views to be re-encoded; one log line either way."""
        for fmt in CONVERTIBLE_FORMATS:
            old = self._folder(fmt, spec, view)
            shards = sorted(glob.glob(os.path.join(old, "shard-*.npz")))
            if not shards:
                continue
            if view is not None:
                log.info("Feature cache: %s holds view %d in cache format %d; augmented views are re-encoded in format %d "
                         "(delete the old folder to free its space)", old, view, fmt, CACHE_FORMAT)
                continue
            t0, rows = time.time(), 0
            for path in shards:
                arrays = load_verified(path)
                keys, feats = (arrays or {}).get("keys"), (arrays or {}).get("feats")
                if keys is None or feats is None or keys.dtype.kind != "U" or feats.ndim != 2 or len(keys) != len(feats):
                    continue  # damaged or foreign: those rows are simply encoded again
                self._write_shard(folder, keys.tolist(), np.ascontiguousarray(feats, dtype=np.float32))
                rows += len(keys)
            log.info("Feature cache: converted %d row(s) of %s from cache format %d to %d in %.1fs (the old folder can be deleted)",
                     rows, old, fmt, CACHE_FORMAT, time.time() - t0)

    def _check_shard(self, a: Dict[str, np.ndarray]) -> str:
        keys, feats = a.get("keys"), a.get("feats")
        if keys is None or feats is None or set(a) != {"keys", "feats"}:
            return f"members {sorted(a)}, expected keys and feats"
        if feats.ndim != 2 or feats.dtype != np.float32:
            return f"features of shape {feats.shape} {feats.dtype}"
        try:
            n = len(decode_keys(keys))
        except ValueError as exc:
            return str(exc)
        if n != len(feats):
            return f"{n} keys for {len(feats)} rows"
        if self.dim is not None and feats.shape[1] != self.dim:
            return f"feature width {feats.shape[1]}, encoder gives {self.dim}"
        return ""

    def _read_shard(self, path: str) -> Optional[Tuple[List[str], np.ndarray]]:
        """A shard's (keys, features), verified once per process (``_MEMO``); None when it is damaged or gone."""
        ident = _MEMO.identity(path)
        hit = _MEMO.get(ident) if ident else None
        if hit is None:
            arrays = None
            if ident is not None:
                expected = os.path.basename(path)[len("shard-") : -len(".npz")]
                arrays = load_verified(path, self._check_shard, expected=expected, trusted=ident in _MEMO.verified)
            if arrays is None:
                self._forget(path)
                return None
            hit = (decode_keys(arrays["keys"]), arrays["feats"])
            _MEMO.put(ident, *hit)
        self._shard_keys[path] = hit[0]
        return hit

    def _peek_keys(self, path: str) -> Optional[List[str]]:
        """A shard's keys alone (indexing needs no features): from the memo, else only the keys member
        is read, unverified (the gather that uses a row verifies the whole file); None when unreadable."""
        ident = _MEMO.identity(path)
        hit = _MEMO.get(ident) if ident else None
        if hit is not None:
            return hit[0]
        try:
            with np.load(path, allow_pickle=False) as z:
                return decode_keys(z["keys"])
        except Exception:  # damaged in any way: the full read says how, once
            return None

    def _forget(self, path: str) -> None:
        _MEMO.drop(path)
        self._shard_keys.pop(path, None)
        for index in self._index.values():
            for key in [k for k, (p, _) in index.items() if p == path]:
                del index[key]

    def _scan(self, folder: str) -> Dict[str, Tuple[str, int]]:
        """Index every valid shard in ``folder``; only shards not seen before are read."""
        index = self._index.setdefault(folder, {})
        for name in sorted(os.listdir(folder)):
            if not (name.startswith("shard-") and name.endswith(".npz")):
                continue
            path = os.path.join(folder, name)
            if path in self._shard_keys:
                continue
            keys = self._peek_keys(path)
            if keys is None:
                loaded = self._read_shard(path)
                if loaded is None:
                    continue
                keys = loaded[0]
            self._shard_keys[path] = keys
            for row, key in enumerate(keys):
                index.setdefault(key, (path, row))
        return index

    def _write_shard(self, folder: str, keys: List[str], feats: np.ndarray) -> None:
        karr = encode_keys(keys)
        checksum = _checksum({"keys": karr, "feats": feats})
        path = os.path.join(folder, f"shard-{checksum}.npz")
        save_verified(path, {"keys": karr, "feats": feats}, checksum)
        ident = _MEMO.identity(path)
        if ident is not None:
            _MEMO.put(ident, list(keys), feats)
        self._shard_keys[path] = list(keys)
        index = self._index.setdefault(folder, {})
        for row, key in enumerate(keys):
            index.setdefault(key, (path, row))

    # ----------------------------------------------------------- public
    def features(
        self,
        items: Sequence[Datum],
        transform: Callable,
        spec: str,
        view: Optional[int] = None,
        desc: str = "",
    ) -> torch.Tensor:
        """Raw features of ``items`` ([len(items), D] fp32 on CPU, in order), encoding only what is missing.

        ``view=None`` is the deterministic view (val/test, or the centre view of a training image);
        ``view=k`` is augmented view k, whose random transform is seeded by (image, k).
        """
        if not items:
            return torch.empty(0, self.dim or 0)
        folder = self.namespace(spec, view)
        keys = [image_key(d.impath) for d in items]
        for _ in range(3):  # a shard found damaged while gathering is re-encoded, then gathered again
            index = self._index.get(folder)
            if index is None or any(k not in index for k in keys):
                index = self._scan(folder)
            if any(k not in index for k in keys):
                with _locked(os.path.join(folder, ".lock"), desc or f"view {view}"):
                    index = self._scan(folder)  # another process may have filled it meanwhile
                    unique: Dict[str, Datum] = {}
                    for k, d in zip(keys, items):
                        if k not in index:
                            unique.setdefault(k, d)
                    if unique:
                        self._encode_missing(folder, list(unique.values()), list(unique), transform, view, desc)
            out = self._gather(folder, keys)
            if out is not None:
                return out
        raise RuntimeError(f"feature cache folder {folder} keeps losing shards while reading; is another program deleting files in it?")

    def _encode_missing(self, folder: str, items: List[Datum], keys: List[str], transform: Callable, view: Optional[int], desc: str) -> None:
        """Encode ``items`` in batches and stream them to shards of at most SHARD_ROWS rows."""
        seed_for = ViewSeeds([d.impath for d in items], [view] * len(items), self.seed_root) if view is not None else None
        workers = self.num_workers if len(items) > self.batch_size else 0  # one batch: workers cost more than they save
        loader = build_loader(items, transform, self.batch_size, shuffle=False, num_workers=workers, seed_for=seed_for,
                              pin_memory=self.device.type == "cuda")
        label = desc or ("view %d" % view if view is not None else "deterministic view")
        buf_keys: List[str] = []
        buf: List[np.ndarray] = []
        t0 = time.time()
        with torch.inference_mode():
            for batch in progress(loader, desc=f"Encoding {label}", unit="batch", leave=False):
                feats = self.encode(batch["img"].to(self.device, non_blocking=True)).float().cpu().numpy()
                if feats.ndim != 2 or (self.dim is not None and feats.shape[1] != self.dim):
                    raise RuntimeError(f"image encoder returned features of shape {feats.shape}, expected [batch, {self.dim}]")
                self.encoded_images += feats.shape[0]
                buf.append(feats)
                buf_keys += [keys[i] for i in batch["index"].tolist()]
                if len(buf_keys) >= SHARD_ROWS:
                    self._write_shard(folder, buf_keys, np.concatenate(buf))
                    buf_keys, buf = [], []
        if buf_keys:
            self._write_shard(folder, buf_keys, np.concatenate(buf))
        log.info("Encoded %d image(s) (%s) in %.1fs into %s", len(keys), label, time.time() - t0, folder)

    def _gather(self, folder: str, keys: List[str]) -> Optional[torch.Tensor]:
        """Rows for ``keys`` in order; None when a shard turned out damaged (it is then forgotten)."""
        index = self._index[folder]
        by_shard: Dict[str, List[Tuple[int, int]]] = {}
        for pos, key in enumerate(keys):
            path, row = index[key]
            by_shard.setdefault(path, []).append((pos, row))
        out: Optional[np.ndarray] = None
        for path, pairs in by_shard.items():
            loaded = self._read_shard(path)
            if loaded is None:
                return None
            feats = loaded[1]
            if out is None:
                out = np.empty((len(keys), feats.shape[1]), dtype=np.float32)
            pos, rows = zip(*pairs)
            out[list(pos)] = feats[list(rows)]
        return torch.from_numpy(out)


# ------------------------------------------------------------------- text classifier
def text_cache_key(encoder_id: str, classnames: Sequence[str], templates: Sequence[str], precision: str = "fp32") -> str:
    ident = [CACHE_FORMAT, encoder_id, precision, list(classnames), list(templates)]
    return hashlib.sha256(json.dumps(ident).encode()).hexdigest()[:24]


def cached_text_classifier(
    cache_root: str,
    encoder_id: str,
    classnames: Sequence[str],
    templates: Sequence[str],
    compute: Callable[[], torch.Tensor],
    precision: str = "fp32",
) -> torch.Tensor:
    """The fixed-prompt text classifier [C, D], stored once per (backbone, precision, class names, templates).

    Same guarantees as image shards: atomic, checksummed, no pickle, one process computes while
    another waits for it.
    """
    folder = os.path.join(os.path.abspath(cache_root), "text")
    os.makedirs(folder, exist_ok=True)
    key = text_cache_key(encoder_id, classnames, templates, precision)
    path = os.path.join(folder, key + ".npz")

    def check(a: Dict[str, np.ndarray]) -> str:
        w = a.get("weights")
        ok = w is not None and w.ndim == 2 and w.shape[0] == len(classnames) and w.dtype == np.float32
        return "" if ok else f"weights of shape {None if w is None else w.shape}, expected [{len(classnames)}, D] float32"

    def load() -> Optional[torch.Tensor]:
        if not os.path.isfile(path):
            return None
        arrays = load_verified(path, check)
        return None if arrays is None else torch.from_numpy(arrays["weights"])

    weights = load()
    if weights is not None:
        return weights
    with _locked(os.path.join(folder, key + ".lock"), "the text classifier"):
        weights = load()
        if weights is None:
            weights = compute().float().cpu().contiguous()
            save_verified(path, {"weights": weights.numpy(), "classnames": np.array(list(classnames))})
    return weights


def default_cache_dir(cfg) -> str:
    """FEATURES.CACHE_DIR, else $CLIP_ADAPTER_FEATURE_CACHE, else ``feature_cache`` in the output root.

    The output root is the nearest ``output`` ancestor of OUTPUT_DIR (``output/<dataset>/<trainer>/
    .../seedN`` -> ``output/feature_cache``), so every run under it shares one cache.
    """
    if cfg.FEATURES.CACHE_DIR:
        return os.path.abspath(os.path.expanduser(cfg.FEATURES.CACHE_DIR))
    env = os.environ.get("CLIP_ADAPTER_FEATURE_CACHE")
    if env:
        return os.path.abspath(os.path.expanduser(env))
    out = os.path.abspath(cfg.OUTPUT_DIR)
    parts = out.split(os.sep)
    for i in range(len(parts) - 1, 0, -1):
        if parts[i] == "output":
            return os.sep.join(parts[: i + 1] + ["feature_cache"])
    return os.path.join(os.path.dirname(out), "feature_cache")
