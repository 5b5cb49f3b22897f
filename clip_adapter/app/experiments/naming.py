"""Variant names: the folder level (and table row label) that extra ``KEY VALUE`` opts make.

One implementation for the planner, which names run folders with it, and the results tables, which
label rows with it, so both always agree on what a variant is. It imports nothing heavy (the
tables start in a second).
"""
from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from typing import List, Sequence, Tuple

from clip_adapter.errors import UserError

# Keys the experiments set from their own arguments: never part of a run's variant, and refused as
# extra opts (pass them as the command's argument instead).
SCRIPT_KEYS = (
    "DATASET.NUM_SHOTS",
    "DATASET.SUBSAMPLE_CLASSES",
    "DATASET.ROOT",
    "SEED",
    "OUTPUT_DIR",
    "RESUME",
    "TRAINER.NAME",
    "EXPERIMENT.SOURCE",
    "EXPERIMENT.SWEEP_KEY",
)
# Keys that do not change a run's numbers, so they never make a new variant (folder, table row).
NEUTRAL_KEYS = (
    "FEATURES.CACHE_DIR",
    "FEATURES.BATCH_SIZE",
    "DATALOADER.NUM_WORKERS",
    "DATALOADER.TEST.BATCH_SIZE",
    "MODEL.BACKBONE.CACHE_DIR",
    "DATASET.DOWNLOAD",
    "DATASET.SKIP_BAD_IMAGES",
    "TRAIN.PRINT_FREQ",
    "TRAIN.CHECKPOINT_FREQ",
    "TRAIN.RESUME_SAVE_SECONDS",
    "VERBOSE",
)
# Short names in folder names, CoOp style (``nctx16_cscFalse_ctpend``); other keys use their last part.
SHORT_NAMES = {
    "TRAINER.COOP.N_CTX": "nctx",
    "TRAINER.COOP.CSC": "csc",
    "TRAINER.COOP.CLASS_TOKEN_POSITION": "ctp",
    "TRAINER.COOP.CTX_INIT": "ctxinit",
    "TRAINER.CLIP_ADAPTER.RATIO": "ratio",
    "TRAINER.CLIP_ADAPTER.REDUCTION": "red",
    "TRAINER.CLIP_ADAPTER.TYPE": "type",
    "OPTIM.MAX_EPOCH": "ep",
    "OPTIM.LR": "lr",
    "DATALOADER.TRAIN_X.BATCH_SIZE": "bs",
}
MAX_SUFFIX = 64


def opt_pairs(opts: Sequence[str], source: str) -> "OrderedDict[str, str]":
    """``KEY VALUE ...`` -> an ordered mapping; the last of a repeated key wins, as in the config merge."""
    opts = [str(o) for o in opts]
    if len(opts) % 2:
        raise UserError(f"{source}: KEY VALUE pairs expected, got an odd number of items: {' '.join(opts)}")
    pairs: "OrderedDict[str, str]" = OrderedDict()
    for key, value in zip(opts[0::2], opts[1::2]):
        pairs.pop(key, None)
        pairs[key] = value
    return pairs


def variant_pairs(opts: Sequence[str], forbid_script_keys: bool = False, source: str = "extra opts") -> List[Tuple[str, str]]:
    """The ``KEY VALUE`` overrides that define a variant of a configuration, in a fixed order."""
    pairs = opt_pairs(opts, source)
    out = []
    for key, value in pairs.items():
        if key in SCRIPT_KEYS:
            if forbid_script_keys:
                raise UserError(f"{source}: {key} is set by the script from its arguments; pass it there, not as an extra opt")
            continue
        if key in NEUTRAL_KEYS:
            continue
        out.append((key, value))
    order = list(SHORT_NAMES)  # CoOp's order first (nctx, csc, ctp), then the others by key
    return sorted(out, key=lambda kv: (order.index(kv[0]) if kv[0] in order else len(order), kv[0]))


def variant_suffix(opts: Sequence[str], forbid_script_keys: bool = False, source: str = "extra opts") -> str:
    """A short, stable name for extra opts: ``nctx16_cscFalse_ctpend``; a hash when that is ambiguous or long.

    The same opts (in any order) always give the same name; the planner uses it as a folder level
    and the tables as part of the row label, so both agree on what a variant is.
    """
    pairs = variant_pairs(opts, forbid_script_keys, source)
    if not pairs:
        return ""
    names = [SHORT_NAMES.get(k) or k.rsplit(".", 1)[-1].lower().replace("_", "") for k, _ in pairs]
    values = [re.sub(r"[^A-Za-z0-9.+-]+", "_", v).strip("_") or "none" for _, v in pairs]
    readable = "_".join(n + v for n, v in zip(names, values))
    if len(set(names)) == len(names) and len(readable) <= MAX_SUFFIX:
        return readable
    canonical = "\n".join(f"{k}={v}" for k, v in pairs)
    return "opts-" + hashlib.sha1(canonical.encode("utf-8")).hexdigest()[:10]
