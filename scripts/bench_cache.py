#!/usr/bin/env python
"""Benchmark: CLIP-Adapter from cached features vs the paper's loop (``FEATURES.MODE exact``).

    python scripts/bench_cache.py            # ~6-7 min on two free CPU cores

Both modes train the real ``CLIP_Adapter`` trainer (configs/trainers/CLIP_Adapter/rn50.yaml: the
paper's 200 epochs, batch 32, SGD + cosine) in this one process, on the same synthetic dataset,
with the real RN50 architecture at 224 px and random weights (written once as a state dict and
loaded through the same ``clip.load`` path as real weights: a forward pass costs the same). It
prints image-encoder passes, wall time, time outside the encoder and peak memory per mode, the
line ``speedup: <X>x (cached vs exact, same epochs)``, and a projection of the whole
11-dataset x 5-shot x 3-seed x 3-method sweep from the measured per-image encoder cost and the
datasets' split sizes (``SPLITS`` below).

The dataset is small (4 classes x 2 shots, 2 test images per class) so that 200 exact-mode
epochs fit in minutes on a CPU; ``--exact-epochs N`` runs fewer exact epochs and extrapolates,
and says so in every line that uses the extrapolation. One-off process costs (imports, hashing the
weights file) are paid before either mode is timed (``warm_process``), so the mode measured first is
not charged for both.
"""
from __future__ import annotations

import argparse
import gc
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
import warnings
from typing import Dict, List, Optional

import numpy as np
import torch
from PIL import Image
from tabulate import tabulate

from clip_adapter.plugins import load_all as register_all
from clip_adapter.config import get_cfg_default, setup_cfg
from clip_adapter.data.dataset_base import DatasetBase
from clip_adapter.data.datum import Datum
from clip_adapter.registry import DATASETS, TRAINERS
from clip_adapter.utils import atomic_torch_save, set_random_seed

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAINER_CFG = os.path.join(REPO, "configs", "trainers", "CLIP_Adapter", "rn50.yaml")

# The RN50 CLIP's hyperparameters (as clip.model.build_model infers them from the released weights).
RN50_ARCH = dict(
    embed_dim=1024,
    image_resolution=224,
    vision_layers=(3, 4, 6, 3),
    vision_width=64,
    vision_patch_size=None,
    context_length=77,
    vocab_size=49408,
    transformer_width=512,
    transformer_heads=8,
    transformer_layers=12,
)

# Split sizes (classes, train, val, test) of the 11 datasets, from CoOp's split_zhou files (CoOp,
# IJCV 2022, Table 6). ImageNet has no val split of its own: its few-shot val is its test set.
SPLITS = {
    "ImageNet": (1000, 1_281_167, 0, 50_000),
    "Caltech101": (100, 4_128, 1_649, 2_465),
    "OxfordPets": (37, 2_944, 736, 3_669),
    "StanfordCars": (196, 6_509, 1_635, 8_041),
    "OxfordFlowers": (102, 4_093, 1_633, 2_463),
    "Food101": (101, 50_500, 20_200, 30_300),
    "FGVCAircraft": (100, 3_334, 3_333, 3_333),
    "SUN397": (397, 15_880, 3_970, 19_850),
    "DescribableTextures": (47, 2_820, 1_128, 1_692),
    "EuroSAT": (10, 13_500, 5_400, 8_100),
    "UCF101": (101, 7_639, 1_898, 3_783),
}
SHOTS = (1, 2, 4, 8, 16)
SEEDS = 3
BATCH = 32  # training batch of every method; Dassl drops the last partial batch
CLIP_ADAPTER_EPOCHS = 200  # every dataset and shot count (configs/trainers/CLIP_Adapter/rn50.yaml)


def coop_epochs(dataset: str, shots: int) -> int:
    """CoOp's published schedule: ImageNet 50 epochs; others 50 (1 shot), 100 (2-4), 200 (8-16)."""
    if dataset == "ImageNet":
        return 50
    return 50 if shots == 1 else 100 if shots <= 4 else 200


# ----------------------------------------------------------------------- synthetic data
@DATASETS.register()
class BenchSynth(DatasetBase):
    """Photo-sized JPEGs (320x256, so decoding and resizing cost what they cost on real data)."""

    dataset_dir = "bench_synth"
    image_dir = "images"
    split_file = ""
    layout = {"classes": 4, "train": 2, "test": 2}

    def prepare(self) -> None:
        marker = os.path.join(self.dataset_dir, "done")
        if os.path.isfile(marker):
            return
        rng = np.random.RandomState(0)
        for split in ("train", "test"):
            for c in range(self.layout["classes"]):
                folder = os.path.join(self.image_dir, split, f"class{c}")
                os.makedirs(folder, exist_ok=True)
                for i in range(self.layout[split]):
                    pixels = rng.randint(0, 256, size=(256, 320, 3), dtype=np.uint8)
                    pixels[..., c % 3] //= 2  # a little class signal; accuracy is not the point
                    Image.fromarray(pixels).save(os.path.join(folder, f"{i:03d}.jpg"), quality=90)
        open(marker, "w").close()

    def build_split(self) -> Dict[str, List[Datum]]:
        out: Dict[str, List[Datum]] = {"val": []}
        for split in ("train", "test"):
            out[split] = [
                Datum(os.path.join(self.image_dir, split, f"class{c}", f"{i:03d}.jpg"), c, f"class{c}")
                for c in range(self.layout["classes"])
                for i in range(self.layout[split])
            ]
        return out

    def templates(self, mode: str = "single") -> List[str]:
        return ["a photo of a {}."]


def random_rn50(path: str) -> str:
    """RN50's architecture with random weights, saved as a state dict once (seeded: same bytes each time)."""
    if not os.path.isfile(path):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import clip
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = clip.model.CLIP(**RN50_ARCH)
        atomic_torch_save({k: v.detach().clone() for k, v in model.state_dict().items()}, path)
    return path


# ------------------------------------------------------------------------ measurement
def warm_process(weights: str) -> None:
    """What a process pays once, whichever mode runs first: the clip package and its tokenizer (the
    text classifier), torchvision (the first decoded image), the weights file's checksum and its
    pages. Both modes then start from a warm process and a cold feature cache, so the mode measured
    first is not charged for the second."""
    from clip_adapter.backbones import BackboneSpec, load_backbone
    from clip_adapter.backbones.openai import _clip

    _clip().tokenize(["warm-up"])
    import torchvision.transforms  # noqa: F401

    backbone = load_backbone(BackboneSpec("openai", weights))
    del backbone
    gc.collect()


class PeakRSS:
    """Peak resident memory of this process while in the block (sampled from /proc every 20 ms)."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()

    @staticmethod
    def rss() -> int:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:  # not Linux: the process-lifetime peak is the best available
            import resource

            scale = 1 if sys.platform == "darwin" else 1024
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(0.02)

    def __enter__(self) -> "PeakRSS":
        self.start = self.peak = self.rss()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())


def timed(fn, timers: Dict[str, float], key: str):
    """``fn`` that adds its run time to ``timers[key]`` (instance-level, this benchmark only)."""

    def wrapper(*a, **kw):
        t0 = time.perf_counter()
        try:
            return fn(*a, **kw)
        finally:
            timers[key] += time.perf_counter() - t0

    return wrapper


def run_mode(mode: str, args, root: str, weights: str, work: str, epochs: int) -> dict:
    out = os.path.join(work, "out", mode)
    shutil.rmtree(out, ignore_errors=True)
    cfg = setup_cfg(
        "",
        TRAINER_CFG,
        {"DATASET.ROOT": root, "OUTPUT_DIR": out, "SEED": 1, "TRAINER.NAME": "CLIP_Adapter", "MODEL.BACKBONE.NAME": weights},
        [
            "DATASET.NAME", "BenchSynth",
            "DATASET.NUM_SHOTS", "0",  # the generated train split is the few-shot set
            "FEATURES.MODE", mode,
            "FEATURES.TRAIN_VIEWS", str(args.views),
            # one cold cache per mode: each pays for its own text classifier and features
            "FEATURES.CACHE_DIR", os.path.join(work, f"cache-{mode}"),
            "OPTIM.MAX_EPOCH", str(epochs),
            "DATALOADER.NUM_WORKERS", str(args.workers),
            "USE_CUDA", str(args.cuda),
        ],
    )
    set_random_seed(1)
    gc.collect()  # the previous mode's trainer (and its CLIP) must not count against this one
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        trainer = TRAINERS.get("CLIP_Adapter")(cfg).build()
        timers = {"checkpoints": 0.0, "steps": 0.0}
        trainer.save_model = timed(trainer.save_model, timers, "checkpoints")
        trainer.forward_backward = timed(trainer.forward_backward, timers, "steps")
        trainer.train()
        metrics = trainer.evaluate("test", quiet=True)
        wall = time.perf_counter() - t0
    stats = trainer.encoder_stats
    info = {"load": trainer.clip_load_seconds, "n_train": len(trainer.dm.dataset.train_x), "n_test": len(trainer.dm.dataset.test), "device": str(trainer.device)}
    del trainer
    return {
        **info,
        "mode": mode,
        "epochs": epochs,
        "wall": wall,
        "encoded": stats["images"],
        "encoder_s": stats["seconds"],
        "text_s": stats["text_seconds"],
        "outside": wall - stats["seconds"] - stats["text_seconds"],
        "checkpoints_s": timers["checkpoints"],
        "steps_s": timers["steps"],
        "peak_mib": mem.peak / 2**20,
        "base_mib": mem.start / 2**20,
        "accuracy": metrics["accuracy"],
    }


# -------------------------------------------------------------------------- projection
def expected_union(per_class: float, draws: List[int]) -> float:
    """Expected number of distinct images of one class over independent few-shot draws of sizes ``draws``."""
    if per_class <= 0:
        return 0.0
    miss = 1.0
    for k in draws:
        miss *= max(0.0, 1.0 - min(k, per_class) / per_class)
    return per_class * (1.0 - miss)


def sweep_images(views: int) -> Dict[str, Dict[str, float]]:
    """Image-encoder passes of the sweep (CLIP-Adapter, CoOp, linear probe) per dataset, both ways.

    exact  = what the reference implementations run: per (shots, seed) run, every epoch encodes the
             epoch's images (whole batches) and the test set once; the linear probe encodes its
             train/val/test images once per run.
    cached = every distinct (image, view) once: the test set; the union of the few-shot val
             subsets; the union of the few-shot train subsets x (K augmented views + the centre
             view the linear probe uses). Subsets of different shots/seeds are independent draws
             (CoOp's sampler), so their union is estimated in expectation.
    The text encoder (run per step by CoOp in both modes) is not counted.
    """
    table = {}
    for name, (classes, train, val, test) in SPLITS.items():
        exact = 0.0
        for k in SHOTS:
            n = k * classes
            used = n - n % BATCH if n >= BATCH else n
            n_val = min(k, 4) * classes if val else 0
            exact += SEEDS * (CLIP_ADAPTER_EPOCHS * used + test)  # CLIP-Adapter
            exact += SEEDS * (coop_epochs(name, k) * used + test)  # CoOp
            exact += SEEDS * (n + n_val + test)  # linear probe: features once per run
        draws = [k for k in SHOTS for _ in range(SEEDS)]
        train_union = classes * expected_union(train / classes, draws)
        val_union = classes * expected_union(val / classes, [min(k, 4) for k in draws]) if val else 0.0
        cached = test + val_union + train_union * (views + 1)
        table[name] = {"exact": exact, "cached": cached}
    return table


def print_projection(per_image_s: float, views: int, device: str) -> None:
    table = sweep_images(views)
    rows = [[n, f"{SPLITS[n][0]}", f"{SPLITS[n][1]:,}", f"{SPLITS[n][2]:,}", f"{SPLITS[n][3]:,}", f"{t['exact']:,.0f}", f"{t['cached']:,.0f}", f"{t['exact'] / t['cached']:.1f}x"] for n, t in table.items()]
    exact = sum(t["exact"] for t in table.values())
    cached = sum(t["cached"] for t in table.values())
    rows.append(["total", "", "", "", "", f"{exact:,.0f}", f"{cached:,.0f}", f"{exact / cached:.1f}x"])
    print(f"\nProjected sweep: 11 datasets x {len(SHOTS)} shots x {SEEDS} seeds x 3 methods (CLIP-Adapter, CoOp, linear probe), K = {views} views")
    print(tabulate(rows, headers=["dataset", "classes", "train", "val", "test", "exact images", "cached images", "ratio"], tablefmt="github"))
    hours = lambda n: n * per_image_s / 3600  # noqa: E731
    print(f"measured image-encoder cost: {per_image_s * 1000:.1f} ms/image ({device})")
    print(f"projected sweep image-encoder time: exact {hours(exact):,.0f} h, cached {hours(cached):,.1f} h "
          f"-> sweep ratio {exact / cached:.1f}x (cached vs exact)")
    sens = [(k, exact / sum(t["cached"] for t in sweep_images(k).values())) for k in (1, 4, 7, 8, 10, 16, CLIP_ADAPTER_EPOCHS)]
    print("sweep ratio by FEATURES.TRAIN_VIEWS: " + ", ".join(f"K={k}: {r:.1f}x" for k, r in sens))


# ------------------------------------------------------------------------------- main
def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--classes", type=int, default=4)
    p.add_argument("--shots", type=int, default=2, help="training images per class")
    p.add_argument("--test-per-class", type=int, default=2)
    p.add_argument("--epochs", type=int, default=CLIP_ADAPTER_EPOCHS, help="both modes (the paper's 200)")
    p.add_argument("--exact-epochs", type=int, default=None, help="run fewer exact epochs and extrapolate (printed as such)")
    p.add_argument("--views", type=int, default=int(get_cfg_default().FEATURES.TRAIN_VIEWS), help="FEATURES.TRAIN_VIEWS (default: the config default)")
    p.add_argument("--workers", type=int, default=0, help="DATALOADER.NUM_WORKERS")
    p.add_argument("--cuda", action="store_true", help="allow CUDA (default: CPU, the machine the README numbers come from)")
    p.add_argument("--cached-only", action="store_true", help="measure cached mode alone (no speedup line; a quick check)")
    p.add_argument("--workdir", default="", help="where the weights, images and cache go (default: a temporary folder)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TQDM_DISABLE", "1")

    register_all()
    BenchSynth.layout = {"classes": args.classes, "train": args.shots, "test": args.test_per_class}
    work = args.workdir or tempfile.mkdtemp(prefix="bench_cache_")
    os.makedirs(work, exist_ok=True)
    root = os.path.join(work, "data")
    shutil.rmtree(root, ignore_errors=True)
    for mode in ("cached", "exact"):
        shutil.rmtree(os.path.join(work, f"cache-{mode}"), ignore_errors=True)  # cold: each mode pays for its features
    weights = random_rn50(os.path.join(work, "clip-rn50-random.pt"))
    exact_epochs = args.exact_epochs or args.epochs
    extrapolated = exact_epochs != args.epochs

    print(f"machine: {os.cpu_count()} CPU cores visible, torch {torch.__version__} with {torch.get_num_threads()} threads, "
          f"load average {os.getloadavg()[0]:.2f} at start")
    print(f"data: {args.classes} classes x {args.shots} train images, {args.classes * args.test_per_class} test images (320x256 JPEG -> 224 px); "
          f"RN50 architecture, random weights; {args.epochs} epochs; K = {args.views} cached views")

    t0 = time.perf_counter()
    warm_process(weights)
    print(f"process warm-up (imports, weights file hash, page cache; paid once, before either mode): {time.perf_counter() - t0:.1f}s")
    results = [run_mode("cached", args, root, weights, work, args.epochs)]
    if not args.cached_only:
        results.append(run_mode("exact", args, root, weights, work, exact_epochs))
    print(f"load average {os.getloadavg()[0]:.2f} at the end (other work on the machine inflates both modes' times)")
    cached, exact = results[0], results[-1]
    if extrapolated:
        # Fixed costs (CLIP load, text classifier, the test pass) once; everything else per epoch.
        e = exact
        scale = args.epochs / exact_epochs
        test_s = e["n_test"] * e["encoder_s"] / max(e["encoded"], 1)
        fixed = e["load"] + e["text_s"] + test_s
        exact = dict(
            e,
            mode=f"exact (EXTRAPOLATED from {exact_epochs} epochs)",
            epochs=args.epochs,
            wall=fixed + (e["wall"] - fixed) * scale,
            encoded=round(e["n_test"] + (e["encoded"] - e["n_test"]) * scale),
            encoder_s=test_s + (e["encoder_s"] - test_s) * scale,
            checkpoints_s=e["checkpoints_s"] * scale,
            steps_s=e["steps_s"] * scale,
        )
        exact["outside"] = exact["wall"] - exact["encoder_s"] - exact["text_s"]

    rows = []
    for r in (cached, exact) if not args.cached_only else (cached,):
        rows.append([r["mode"], r["device"], f"{r['encoded']:,}", f"{r['encoder_s']:.1f}", f"{r['text_s']:.1f}", f"{r['wall']:.1f}",
                     f"{r['outside']:.1f}", f"{r['load']:.1f}", f"{r['peak_mib']:,.0f} (+{r['peak_mib'] - r['base_mib']:,.0f})", f"{r['accuracy']:.1f}"])
    print()
    print(tabulate(rows, headers=["mode", "device", "image-encoder passes", "image encoder s", "text encoder s", "wall s",
                                  "outside encoders s", "(of which CLIP load s)", "peak RSS MiB (+ over start)", "test acc %"], tablefmt="github"))
    needed = cached["n_train"] * args.views + cached["n_test"]
    floor = cached["encoder_s"] + cached["text_s"]
    print(f"\ncached mode: {cached['encoded']} image-encoder passes = {cached['n_train']} train images x {args.views} views + {cached['n_test']} test "
          f"(needed: {needed})")
    for r in (cached, exact) if not args.cached_only else (cached,):
        other = r["outside"] - r["load"] - r["checkpoints_s"] - r["steps_s"]
        print(f"{r['mode']}: outside the encoders {r['outside']:.1f}s = CLIP load {r['load']:.1f} + {r['epochs']} per-epoch checkpoint writes "
              f"{r['checkpoints_s']:.1f} + adapter steps {r['steps_s']:.1f} + decoding, cache I/O, data, eval {other:.1f}")
    fixed = cached["load"] + cached["checkpoints_s"]
    print(f"cached wall / pure encoder time (the image views + class prompts it needs): {cached['wall'] / floor:.2f}x; "
          f"{(cached['wall'] - fixed) / floor:.2f}x without CLIP loading and checkpoint writes (the same in both modes, no feature work)")
    if args.cached_only:
        return 0
    note = f"; exact EXTRAPOLATED from {exact_epochs} measured epochs" if extrapolated else ""
    print(f"speedup: {exact['wall'] / cached['wall']:.1f}x (cached vs exact, same epochs{note})")

    per_image = (cached["encoder_s"] + results[1]["encoder_s"]) / max(cached["encoded"] + results[1]["encoded"], 1)
    print_projection(per_image, args.views, cached["device"])
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
