#!/usr/bin/env python
"""Benchmark: what each frozen-feature method costs on a warm feature cache, 16 shots.

    python scripts/bench_methods.py            # a few minutes on two free CPU cores (stderr: progress bars)

Every method runs as the real registered trainer with its RN50 config
(configs/trainers/<method>/rn50.yaml: the reference's epochs, grids and views) on synthetic data, with
the RN50 architecture at 224 px and random weights (built as scripts/bench_cache.py builds them:
``random_rn50``), in this one process. For each method it prints the wall time of ``train()`` plus the
test evaluation on a warm cache (CLIP loading excluded: every method pays it alike) and its ratio to
the part of that time spent reading the method's features from the cache (``FeatureCache.features``:
the K augmented views of the training images and the val/test features it touches). A ratio near 1
means the method itself costs about what reading its inputs costs.

The cache is warmed first by one untimed run of each method. By default the warming encoder is a
stand-in of RN50's width (a fixed random projection of the 8x8-pooled pixels of each augmented view:
deterministic, cheap, and the cache files have exactly the shapes RN50's would), because encoding the
~5,000 views of the default data with RN50 on a CPU takes about an hour and is what bench_cache.py
measures; ``--encode`` warms with the RN50 encoder itself. The timed runs never encode (the line
``image-encoder passes in the timed runs`` says so).
"""
from __future__ import annotations

import argparse
import gc
import logging
import os
import shutil
import sys
import tempfile
import time
from typing import Dict, List, Optional

import torch
from tabulate import tabulate

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_cache import BenchSynth, random_rn50, timed  # noqa: E402  (scripts/ is not a package)

from clip_adapter.config import setup_cfg  # noqa: E402
from clip_adapter.data.datum import Datum  # noqa: E402
from clip_adapter.plugins import load_all as register_all  # noqa: E402
from clip_adapter.registry import DATASETS, TRAINERS  # noqa: E402
from clip_adapter.utils import set_random_seed  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The frozen-feature methods, and CLIP-Adapter for scale. LinearProbeCLIP (scikit-learn's lbfgs, 15 fits
# of 1024-dim logistic regression) can be added with --methods; on the stand-in features it runs for minutes.
METHODS = ["TipAdapter", "TipAdapterF", "GDA", "LPpp", "CLAP", "ZSLP", "TaskRes", "CLIP_Adapter"]
EMBED_DIM = 1024  # RN50's


@DATASETS.register()
class BenchMethods(BenchSynth):
    """BenchSynth with a val split (the selection protocol's few-shot val is drawn from it)."""

    dataset_dir = "bench_methods"
    layout = {"classes": 10, "train": 16, "val": 8, "test": 10}

    def prepare(self) -> None:
        marker = os.path.join(self.dataset_dir, "done")
        if os.path.isfile(marker):
            return
        import numpy as np
        from PIL import Image

        rng = np.random.RandomState(0)
        for split in ("train", "val", "test"):
            for c in range(self.layout["classes"]):
                folder = os.path.join(self.image_dir, split, f"class{c}")
                os.makedirs(folder, exist_ok=True)
                for i in range(self.layout[split]):
                    pixels = rng.randint(0, 256, size=(256, 320, 3), dtype=np.uint8)
                    pixels[..., c % 3] //= 2 + c // 3  # some class signal; accuracy is not the point
                    Image.fromarray(pixels).save(os.path.join(folder, f"{i:03d}.jpg"), quality=90)
        open(marker, "w").close()

    def build_split(self) -> Dict[str, List[Datum]]:
        return {
            split: [Datum(os.path.join(self.image_dir, split, f"class{c}", f"{i:03d}.jpg"), c, f"class{c}")
                    for c in range(self.layout["classes"]) for i in range(self.layout[split])]
            for split in ("train", "val", "test")
        }


class StandIn:
    """A deterministic stand-in image encoder of RN50's width: a fixed random projection of 8x8-pooled pixels."""

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.proj = torch.randn(3 * 8 * 8, EMBED_DIM, generator=g)
        self.calls = 0

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        self.calls += int(images.shape[0])
        pooled = torch.nn.functional.adaptive_avg_pool2d(images.float().cpu(), 8).flatten(1)
        return pooled @ self.proj


def make_trainer(name: str, args, root: str, weights: str, work: str, tag: str):
    out = os.path.join(work, "out", f"{name}-{tag}")
    shutil.rmtree(out, ignore_errors=True)
    cfg = setup_cfg(
        "",
        os.path.join(REPO, "configs", "trainers", name, "rn50.yaml"),
        {"DATASET.ROOT": root, "OUTPUT_DIR": out, "SEED": 1, "TRAINER.NAME": name, "MODEL.BACKBONE.NAME": weights},
        ["DATASET.NAME", "BenchMethods", "DATASET.NUM_SHOTS", str(args.shots), "FEATURES.CACHE_DIR", os.path.join(work, "cache"),
         "SELECTION.PROTOCOL", args.protocol, "DATALOADER.NUM_WORKERS", str(args.workers), "USE_CUDA", str(args.cuda)],
    )
    set_random_seed(1)
    gc.collect()
    trainer = TRAINERS.get(name)(cfg).build()
    return trainer


def run_method(name: str, args, root: str, weights: str, work: str, standin: Optional[StandIn]) -> dict:
    # warm-up: one untimed run fills the cache with every view this method reads
    warm = make_trainer(name, args, root, weights, work, "warm")
    if standin is not None:
        warm.cache.encode = standin
    warm.train()
    warm.evaluate("test", quiet=True)
    del warm
    trainer = make_trainer(name, args, root, weights, work, "timed")
    guard = StandIn()
    trainer.cache.encode = guard  # would count any encoding in the timed run (there is none on a warm cache)
    timers = {"read": 0.0}
    trainer.cache.features = timed(trainer.cache.features, timers, "read")
    t0 = time.perf_counter()
    trainer.train()
    metrics = trainer.evaluate("test", quiet=True)
    wall = time.perf_counter() - t0
    views = trainer._train_views.shape[0] if trainer._train_views is not None else 0
    record = trainer.selection_record()
    result = {
        "method": name,
        "wall": wall,
        "read": timers["read"],
        "views": views,
        "n_train": len(trainer.dm.dataset.train_x),
        "encoded": guard.calls + trainer.encoder_stats["images"],
        "tried": sum(len(s["tried"]) for s in record["searches"]),
        "accuracy": metrics["accuracy"],
        "epochs": int(trainer.cfg.OPTIM.MAX_EPOCH) if trainer.trains_in_epochs else 0,
    }
    del trainer
    return result


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", default=" ".join(METHODS), help="registered trainers to run (space-separated)")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--shots", type=int, default=16)
    p.add_argument("--val-per-class", type=int, default=8)
    p.add_argument("--test-per-class", type=int, default=10)
    p.add_argument("--protocol", default="fewshot_val", help="SELECTION.PROTOCOL")
    p.add_argument("--encode", action="store_true", help="warm the cache with the RN50 encoder itself (slow on a CPU)")
    p.add_argument("--workers", type=int, default=0, help="DATALOADER.NUM_WORKERS")
    p.add_argument("--cuda", action="store_true", help="allow CUDA (default: CPU)")
    p.add_argument("--workdir", default="", help="where the weights, images and cache go (default: a temporary folder)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TQDM_DISABLE", "1")

    register_all()
    BenchMethods.layout = {"classes": args.classes, "train": args.shots, "val": args.val_per_class, "test": args.test_per_class}
    work = args.workdir or tempfile.mkdtemp(prefix="bench_methods_")
    os.makedirs(work, exist_ok=True)
    root = os.path.join(work, "data")
    weights = random_rn50(os.path.join(work, "clip-rn50-random.pt"))
    standin = None if args.encode else StandIn()
    print(f"machine: {os.cpu_count()} CPU cores visible, torch {torch.__version__} with {torch.get_num_threads()} threads, "
          f"load average {os.getloadavg()[0]:.2f} at start")
    print(f"data: {args.classes} classes x {args.shots} shots, val {args.val_per_class}/class (few-shot val: min(shots, 4)/class), "
          f"test {args.test_per_class}/class; RN50 architecture (random weights); SELECTION.PROTOCOL {args.protocol}; cache warmed by "
          f"{'the RN50 encoder' if args.encode else 'a stand-in encoder of RN50 width (see the docstring)'}")

    rows, results = [], []
    for name in args.methods.split():
        r = run_method(name, args, root, weights, work, standin)
        results.append(r)
        reads = f"{r['views']} x {r['n_train']} views" if r["views"] else f"{r['n_train']} centre views"
        rows.append([r["method"], reads, r["epochs"] or "one step", r["tried"], f"{r['wall']:.2f}", f"{r['read']:.2f}",
                     f"{r['wall'] / max(r['read'], 1e-9):.1f}x", f"{r['accuracy']:.1f}"])
        print(f"  {name}: {r['wall']:.2f}s", flush=True)
    print()
    print(tabulate(rows, headers=["method", "training features read", "epochs", "values tried", "wall s (train + test eval)",
                                  "feature reads s", "wall / reads", "test acc % (meaningless)"], tablefmt="github"))
    print(f"image-encoder passes in the timed runs: {sum(r['encoded'] for r in results)} (warm cache)")
    print(f"load average {os.getloadavg()[0]:.2f} at the end (other work on the machine inflates every time)")
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
