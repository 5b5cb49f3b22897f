"""Small helpers shared by every layer: atomic writes, seeding, device choice."""
from __future__ import annotations

import json
import logging
import os
import random
import tempfile
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

if TYPE_CHECKING:  # torch is imported where it is used, so JSON-only tools (results) start fast
    import torch

log = logging.getLogger(__name__)


def _atomic_replace(path: str, write) -> None:
    """Write through ``write(fileobj)`` into a temporary sibling, then rename over ``path``.

    A crash never leaves a half-written file under the final name, which is what lets a run
    folder's ``results.json`` mean "this run finished".
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str, text: str) -> None:
    _atomic_replace(path, lambda f: f.write(text.encode("utf-8")))


def atomic_write_json(path: str, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_write_bytes(path: str, data: bytes) -> None:
    _atomic_replace(path, lambda f: f.write(data))


def atomic_torch_save(obj: Any, path: str) -> None:
    import torch

    _atomic_replace(path, lambda f: torch.save(obj, f))


def set_random_seed(seed: int) -> None:
    """Seed every generator a run touches; negative means unseeded (Dassl's convention)."""
    if seed < 0:
        return
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def select_device(use_cuda: bool = True) -> torch.device:
    """CUDA when allowed and present, else Apple's MPS when present, else CPU."""
    import torch

    if use_cuda and torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if use_cuda and mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


@contextmanager
def intra_op_threads(threads: int) -> Iterator[None]:
    """torch's intra-op thread count set to ``threads`` inside the block (0: left as it is).

    For work made of many small operations (one image's transforms, an adapter's step): each
    operation split over threads pays a parallel region, and when other jobs share the cores a
    descheduled thread makes it cost milliseconds instead of microseconds (an RN50-wide adapter step:
    1.3 ms on one thread, 30-120 ms on two, on a busy two-core machine).
    """
    import torch

    before = torch.get_num_threads()
    if threads <= 0 or threads == before:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def resolve_precision(requested: str, device: torch.device) -> str:
    """fp16/amp only make sense on CUDA; elsewhere fall back to fp32 instead of crashing like CoOp."""
    requested = requested.lower()
    if requested not in ("fp16", "fp32", "amp"):
        raise ValueError(f"precision must be fp16, fp32 or amp, got {requested!r}")
    if device.type != "cuda":
        return "fp32"
    return requested


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, as torch's DataLoader counts them), else the machine's."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


_worker_cap_said = False


def cap_workers(requested: int) -> int:
    """``requested`` DataLoader workers, at most one per usable CPU; the first cap is logged once per process.

    More workers than CPUs only adds processes competing for the same cores, and torch's DataLoader
    prints a warning about it on every loader it builds (DATALOADER.NUM_WORKERS 8 on a 2-core machine).
    """
    global _worker_cap_said
    cpus = usable_cpus()
    if requested <= cpus:
        return requested
    if not _worker_cap_said:
        _worker_cap_said = True
        log.info("DATALOADER.NUM_WORKERS is %d but this process can use %d CPU(s): using %d worker(s)", requested, cpus, cpus)
    return cpus
