"""Log to stdout and to ``<output_dir>/log.txt`` (appending, so a resumed run keeps its history)."""
from __future__ import annotations

import logging
import os
import sys

FORMAT = "%(message)s"
_HANDLER_TAG = "_clip_adapter_handler"


def setup_logging(output_dir: str | None = None, verbose: bool = True) -> None:
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, _HANDLER_TAG, False):
            root.removeHandler(h)
            h.close()
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    stream = logging.StreamHandler(sys.stdout)
    stream.setFormatter(logging.Formatter(FORMAT))
    setattr(stream, _HANDLER_TAG, True)
    root.addHandler(stream)
    if output_dir:
        os.makedirs(output_dir, exist_ok=True)
        fh = logging.FileHandler(os.path.join(output_dir, "log.txt"), encoding="utf-8")
        fh.setFormatter(logging.Formatter(FORMAT))
        setattr(fh, _HANDLER_TAG, True)
        root.addHandler(fh)


def close_logging() -> None:
    """Detach and close the handlers ``setup_logging`` added (before a run folder is removed)."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, _HANDLER_TAG, False):
            root.removeHandler(h)
            h.close()
