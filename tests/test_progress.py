"""Progress: bars on a terminal only, a few plain lines in logs; DataLoader workers capped at the CPUs."""
from __future__ import annotations

import io
import logging
import os

import pytest

from clip_adapter import utils
from clip_adapter.progress import LogProgress, progress


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_no_bar_in_a_log_only_a_line_per_tenth(caplog):
    stream = io.StringIO()  # a log file: not a terminal
    with caplog.at_level(logging.INFO, logger="clip_adapter.progress"):
        bar = progress(range(1000), desc="Encoding view 0", unit="batch", stream=stream)
        assert isinstance(bar, LogProgress)
        assert sum(1 for _ in bar) == 1000
    assert stream.getvalue() == ""  # nothing drawn
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 10 and all("\r" not in line for line in lines)
    assert lines[0].startswith("Encoding view 0: 100/1000 batch (10%)") and "left" in lines[0]
    assert lines[-1].startswith("Encoding view 0: 1000/1000 batch (100%)")


def test_a_bar_on_a_terminal():
    stream = Tty()
    for _ in progress(range(50), desc="Epochs", unit="ep", stream=stream):
        pass
    assert "Epochs" in stream.getvalue() and "\r" in stream.getvalue()


def test_manual_updates_postfix_unknown_total_and_small_loops(caplog, monkeypatch):
    stream = io.StringIO()
    with caplog.at_level(logging.INFO, logger="clip_adapter.progress"):
        with progress(total=None, desc="file.tar", unit="B", unit_scale=True, stream=stream, interval_s=0) as bar:
            bar.update(3 * 1024 * 1024)
            bar.set_postfix(loss="0.1234")
            bar.update(1024)
        for _ in progress(range(1), desc="one batch", stream=stream):  # below min_total: silent
            pass
        for _ in progress(range(5), desc="few", min_total=10, stream=stream):
            pass
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("file.tar: 3.0M B") and lines[1].endswith("loss=0.1234")
    assert not [line for line in lines if line.startswith(("one batch", "few"))]
    assert stream.getvalue() == ""


def test_workers_capped_at_usable_cpus_and_said_once(monkeypatch, caplog):
    monkeypatch.setattr(utils, "_worker_cap_said", False)
    monkeypatch.setattr(utils, "usable_cpus", lambda: 2)
    with caplog.at_level(logging.INFO, logger="clip_adapter.utils"):
        assert utils.cap_workers(8) == 2
        assert utils.cap_workers(8) == 2
        assert utils.cap_workers(2) == 2 and utils.cap_workers(0) == 0
    said = [r.getMessage() for r in caplog.records if "NUM_WORKERS" in r.getMessage()]
    assert said == ["DATALOADER.NUM_WORKERS is 8 but this process can use 2 CPU(s): using 2 worker(s)"]


def test_the_loader_builds_with_the_cap(monkeypatch):
    from clip_adapter.data.loader import build_loader

    monkeypatch.setattr(utils, "_worker_cap_said", True)
    loader = build_loader([], lambda img: img, 4, shuffle=False, num_workers=10_000)
    assert loader.num_workers == utils.usable_cpus()
    if hasattr(os, "sched_getaffinity"):
        assert utils.usable_cpus() == len(os.sched_getaffinity(0))


@pytest.mark.parametrize("name", ["engine/trainer.py", "features.py", "data/build.py", "app/doctor/imagenet_val.py", "data/download.py"])
def test_tqdm_only_through_the_helper(name):
    """Every loop that showed a tqdm bar now goes through clip_adapter.progress (sweep.py has its own tty-only bar)."""
    src = open(os.path.join(os.path.dirname(utils.__file__), name), encoding="utf-8").read()
    assert "tqdm" not in src and "progress(" in src
