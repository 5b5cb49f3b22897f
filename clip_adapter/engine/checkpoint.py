"""Dassl-layout checkpoints: ``<dir>/<module>/model.pth.tar-<epoch>`` and ``model-best.pth.tar``.

Loaded with ``weights_only=True`` so a checkpoint handed over by someone else cannot run code.
"""
from __future__ import annotations

import glob
import os
import re
from typing import Dict, Optional

from clip_adapter.errors import CheckpointError
from clip_adapter.utils import atomic_torch_save, atomic_write_text

LATEST_FILE = "checkpoint"
BEST_NAME = "model-best.pth.tar"


def epoch_name(epoch: int) -> str:
    return f"model.pth.tar-{epoch}"


def save_checkpoint(state: Dict, module_dir: str, filename: str, update_pointer: bool = True) -> str:
    path = os.path.join(module_dir, filename)
    atomic_torch_save(state, path)
    if update_pointer:
        atomic_write_text(os.path.join(module_dir, LATEST_FILE), filename + "\n")
    return path


def load_checkpoint(path: str) -> Dict:
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    import torch  # here, not at module level: the sweep and CLI parse configs without paying for torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling refused, truncated file, ...
        raise CheckpointError(f"cannot load checkpoint {path} ({type(exc).__name__}: {exc}); it may be corrupt: retrain or restore it") from None


def latest_checkpoint(module_dir: str) -> Optional[str]:
    """The newest epoch checkpoint in a module folder (the ``checkpoint`` pointer, else the highest epoch)."""
    pointer = os.path.join(module_dir, LATEST_FILE)
    if os.path.isfile(pointer):
        with open(pointer, encoding="utf-8") as f:
            name = f.read().strip()
        if name and os.path.isfile(os.path.join(module_dir, name)):
            return os.path.join(module_dir, name)
    found = []
    for path in glob.glob(os.path.join(module_dir, "model.pth.tar-*")):
        m = re.search(r"model\.pth\.tar-(\d+)$", path)
        if m:
            found.append((int(m.group(1)), path))
    return max(found)[1] if found else None


def find_model_file(model_dir: str, module: str, epoch: Optional[int]) -> str:
    """The file ``--model-dir``/``--load-epoch`` mean, or a one-line error naming what is missing."""
    module_dir = os.path.join(model_dir, module)
    if epoch is not None and epoch > 0:
        path = os.path.join(module_dir, epoch_name(epoch))
    else:
        path = os.path.join(module_dir, BEST_NAME)
        if not os.path.isfile(path):
            path = latest_checkpoint(module_dir) or path
    if not os.path.isfile(path):
        raise CheckpointError(
            f"no checkpoint for {module!r} in {model_dir} (looked for {path}); train first or pass the run folder that has it as --model-dir"
        )
    return path
