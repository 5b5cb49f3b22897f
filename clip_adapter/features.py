"""The frozen-encoder feature cache: every image view is encoded once, ever, and reused.

Layout: ``<cache_dir>/<namespace>/shard-<checksum>.npz``. A namespace is one (encoder id =
backbone name + weights checksum, transform spec, view index, precision); inside it, rows are keyed
per image by ``absolute path | size | mtime``, so every seed, shot count, base/new half and trainer
that touches an image reuses its row. Features are stored *raw* (before L2 normalisation, fp32):
adapters act on raw features and each consumer normalises where its method says so.

Shards are ``.npz`` files read with ``allow_pickle=False`` (nothing is unpickled), written to a
temporary name and renamed, named by the checksum of their content so that a truncated or edited
shard is detected, dropped with a warning and re-encoded. A per-namespace file lock makes a second
process wait for the first and then find everything encoded, so parallel runs never corrupt the
cache and do not repeat work.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from filelock import FileLock
from tqdm import tqdm

from clip_adapter.data.datum import Datum
from clip_adapter.data.loader import build_loader
from clip_adapter.utils import _atomic_replace, atomic_write_json

log = logging.getLogger(__name__)

SHARD_ROWS = 4096


def image_key(impath: str) -> str:
    """What identifies an image's pixels without reading them: path, size and modification time."""
    st = os.stat(impath)
    return f"{os.path.abspath(impath)}|{st.st_size}|{st.st_mtime_ns}"


def view_seed(impath: str, view: int) -> int:
    """The seed of view ``view`` of an image: the same crop/flip in every run, process and order."""
    digest = hashlib.sha256(f"{os.path.abspath(impath)}#{view}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


def _content_checksum(keys: np.ndarray, feats: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update("\n".join(keys.tolist()).encode())
    h.update(np.ascontiguousarray(feats).tobytes())
    return h.hexdigest()[:32]


class FeatureCache:
    """Encode-once storage of image features for one frozen encoder.

    ``encode`` maps a batch of image tensors (on ``device``) to features; it is the only place the
    image encoder runs, and ``encoded_images`` counts how many images went through it.
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
    ) -> None:
        self.root = os.path.abspath(root)
        self.encoder_id = encoder_id
        self.encode = encode
        self.device = torch.device(device)
        self.precision = precision
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.encoded_images = 0
        self._index: Dict[str, Dict[str, Tuple[str, int]]] = {}
        self._verified: Dict[str, bool] = {}

    # ------------------------------------------------------------ layout
    def namespace(self, spec: str, view: Optional[int]) -> str:
        ident = f"{self.encoder_id}\n{spec}\nview={view}\nprec={self.precision}"
        name = hashlib.sha256(ident.encode()).hexdigest()[:20]
        folder = os.path.join(self.root, name)
        meta = os.path.join(folder, "meta.json")
        if not os.path.isfile(meta):
            os.makedirs(folder, exist_ok=True)
            atomic_write_json(meta, {"encoder": self.encoder_id, "transform": spec, "view": view, "precision": self.precision})
        return folder

    def _load_shard(self, path: str) -> Optional[Tuple[np.ndarray, np.ndarray]]:
        """Read and verify one shard; a damaged one is removed (so it gets rebuilt) and reported."""
        try:
            with np.load(path, allow_pickle=False) as z:
                keys, feats = z["keys"], z["feats"]
            ok = feats.ndim == 2 and len(keys) == len(feats)
            if ok and not self._verified.get(path):
                expected = os.path.basename(path)[len("shard-") : -len(".npz")]
                ok = _content_checksum(keys, feats) == expected
        except Exception as exc:  # truncated zip, bad header, missing member: all mean "rebuild"
            log.warning("feature cache shard %s is unreadable (%s: %s): rebuilding it", path, type(exc).__name__, exc)
            ok = False
        if not ok:
            log.warning("feature cache shard %s failed its checksum/shape check: rebuilding it", path)
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            return None
        self._verified[path] = True
        return keys, feats

    def _scan(self, folder: str) -> Dict[str, Tuple[str, int]]:
        index: Dict[str, Tuple[str, int]] = {}
        for name in sorted(os.listdir(folder)):
            if not (name.startswith("shard-") and name.endswith(".npz")):
                continue
            path = os.path.join(folder, name)
            loaded = self._load_shard(path)
            if loaded is None:
                continue
            for row, key in enumerate(loaded[0].tolist()):
                index.setdefault(key, (path, row))
        self._index[folder] = index
        return index

    def _write_shard(self, folder: str, keys: List[str], feats: np.ndarray) -> None:
        karr = np.array(keys)
        checksum = _content_checksum(karr, feats)
        path = os.path.join(folder, f"shard-{checksum}.npz")
        _atomic_replace(path, lambda f: np.savez(f, keys=karr, feats=feats))
        self._verified[path] = True
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
        """Features of ``items`` (fp32, CPU, one row per item in order), encoding only what is missing.

        ``view=None`` is the deterministic view (val/test, or the centre view of a training image);
        ``view=k`` is augmented view k, whose random transform is seeded by (image, k).
        """
        if not items:
            return torch.empty(0, 0)
        folder = self.namespace(spec, view)
        keys = [image_key(d.impath) for d in items]
        index = self._index.get(folder) or self._scan(folder)
        if any(k not in index for k in keys):
            with FileLock(os.path.join(folder, ".lock")):
                index = self._scan(folder)  # another process may have filled it meanwhile
                missing = sorted({i for i, k in enumerate(keys) if k not in index}, key=lambda i: keys[i])
                unique: Dict[str, int] = {}
                for i in missing:
                    unique.setdefault(keys[i], i)
                if unique:
                    self._encode_missing(folder, [items[i] for i in unique.values()], list(unique), transform, view, desc)
                    index = self._index[folder]
        return self._gather(index, keys)

    def _encode_missing(self, folder, items, keys, transform, view, desc) -> None:
        seed_for = None
        if view is not None:
            seed_for = lambda i: view_seed(items[i].impath, view)  # noqa: E731
        loader = build_loader(items, transform, self.batch_size, shuffle=False, num_workers=self.num_workers, seed_for=seed_for)
        label = desc or ("view %d" % view if view is not None else "deterministic view")
        buf_keys: List[str] = []
        buf: List[np.ndarray] = []
        with torch.inference_mode():
            for batch in tqdm(loader, desc=f"Encoding {label}", unit="batch", leave=False, disable=len(loader) < 2):
                feats = self.encode(batch["img"].to(self.device)).float().cpu().numpy()
                self.encoded_images += feats.shape[0]
                buf.append(feats)
                buf_keys += [keys[i] for i in batch["index"].tolist()]
                if len(buf_keys) >= SHARD_ROWS:
                    self._write_shard(folder, buf_keys, np.concatenate(buf))
                    buf_keys, buf = [], []
        if buf_keys:
            self._write_shard(folder, buf_keys, np.concatenate(buf))
        log.info("Encoded %d image(s) (%s) into %s", len(keys), label, folder)

    def _gather(self, index: Dict[str, Tuple[str, int]], keys: List[str]) -> torch.Tensor:
        by_shard: Dict[str, List[Tuple[int, int]]] = {}
        for pos, key in enumerate(keys):
            path, row = index[key]
            by_shard.setdefault(path, []).append((pos, row))
        out: Optional[np.ndarray] = None
        for path, pairs in by_shard.items():
            loaded = self._load_shard(path)
            if loaded is None:
                raise RuntimeError(f"feature cache shard {path} vanished or broke while reading; rerun to rebuild it")
            feats = loaded[1]
            if out is None:
                out = np.empty((len(keys), feats.shape[1]), dtype=np.float32)
            pos, rows = zip(*pairs)
            out[list(pos)] = feats[list(rows)]
        return torch.from_numpy(out)


def text_cache_key(encoder_id: str, classnames: Sequence[str], templates: Sequence[str]) -> str:
    return hashlib.sha256(json.dumps([encoder_id, list(classnames), list(templates)]).encode()).hexdigest()[:24]


def cached_text_classifier(
    cache_root: str, encoder_id: str, classnames: Sequence[str], templates: Sequence[str], compute: Callable[[], torch.Tensor]
) -> torch.Tensor:
    """The fixed-prompt text classifier, stored once per (backbone, class names, templates)."""
    folder = os.path.join(os.path.abspath(cache_root), "text")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, text_cache_key(encoder_id, classnames, templates) + ".npy")
    if os.path.isfile(path):
        try:
            arr = np.load(path, allow_pickle=False)
            if arr.ndim == 2 and arr.shape[0] == len(classnames):
                return torch.from_numpy(arr)
        except (OSError, ValueError) as exc:
            log.warning("text feature cache %s is unreadable (%s): rebuilding it", path, exc)
    weights = compute().float().cpu()
    _atomic_replace(path, lambda f: np.save(f, weights.numpy()))
    return weights


def default_cache_dir(cfg) -> str:
    """FEATURES.CACHE_DIR, else ``feature_cache`` beside the output root (shared by every run under it)."""
    if cfg.FEATURES.CACHE_DIR:
        return os.path.abspath(os.path.expanduser(cfg.FEATURES.CACHE_DIR))
    env = os.environ.get("CLIP_ADAPTER_FEATURE_CACHE")
    if env:
        return os.path.abspath(env)
    out = os.path.abspath(cfg.OUTPUT_DIR)
    parts = out.split(os.sep)
    # output/<dataset>/<trainer>/<cfg>/seedN -> output/feature_cache: the nearest "output" ancestor
    for i in range(len(parts) - 1, 0, -1):
        if parts[i] == "output":
            return os.sep.join(parts[: i + 1] + ["feature_cache"])
    return os.path.join(os.path.dirname(out), "feature_cache")
