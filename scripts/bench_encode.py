#!/usr/bin/env python
"""Benchmark: is an encoder pass through the feature cache as cheap as the encoder alone?

    python scripts/bench_encode.py              # ~2-3 min on two CPU cores
    python scripts/bench_encode.py --device cuda --images 2048 --workers 8   # wherever a GPU is

The real RN50 architecture at 224 px with random weights (built and saved as bench_cache.py does,
loaded through the project's OpenAI backbone loader), over synthetic 224-px JPEGs. Measured side by side in
this one process, in alternating rounds (medians reported), so that other work on the machine
slows every figure alike:

* model-only: the image encoder on pre-decoded tensors already on the device (its ceiling);
* data pipeline alone: decoding + transforms through the project's loader, no encoder, for test
  views and for training views, unseeded and seeded per (image, view) (what seeding costs);
* cache fill: ``FeatureCache.features`` into an empty cache, test views and training views: decoding,
  transforms, batching, device copies, the encoder and the shard writes, as a cold run pays them;
  with the share of that time spent inside the encoder (measured within the same fill, so free of
  the encoder's own run-to-run variation, which on a busy machine is larger than the pipeline).

Each cache-fill figure is also given as a fraction of model-only (1.0 = the pipeline adds nothing),
and the last line reads ``train/test throughput ratio: <r>`` (1.0 = a seeded training view costs
what a test view costs). On the CPU without workers the ratios compare throughputs per second of
this process's CPU time, which hold while other jobs share the machine; otherwise per second of
wall time. On CUDA the fill uses ``--workers`` DataLoader workers, pinned memory and non-blocking
copies, so its fraction of model-only is how busy the data pipeline keeps the GPU.
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from typing import Callable, Dict, List, Optional

os.environ.setdefault("TQDM_DISABLE", "1")  # before tqdm is imported (it reads the variable then)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_cache import random_rn50  # noqa: E402  (the same random RN50 file as the cache benchmark)

from clip_adapter.config import get_cfg_default, setup_cfg  # noqa: E402
from clip_adapter.data.datum import Datum  # noqa: E402
from clip_adapter.data.loader import build_loader  # noqa: E402
from clip_adapter.data.transforms import build_transform, transform_spec  # noqa: E402
from clip_adapter.features import FeatureCache, ViewSeeds  # noqa: E402
from clip_adapter.backbones import BackboneSpec, load_backbone  # noqa: E402
from clip_adapter.backbones.preprocess import resolve_input  # noqa: E402
from clip_adapter.plugins import load_all  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAINER_CFG = os.path.join(REPO, "configs", "trainers", "CLIP_Adapter", "rn50.yaml")


def write_jpegs(folder: str, n: int, size: int) -> List[Datum]:
    """``n`` photo-like JPEGs of ``size`` x ``size`` px (quality 90), written once per folder."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.RandomState(0)
    items = []
    for i in range(n):
        path = os.path.join(folder, f"{i:05d}.jpg")
        if not os.path.isfile(path):
            noise = rng.randint(0, 256, size=(size // 8, size // 8, 3), dtype=np.uint8)
            Image.fromarray(noise).resize((size, size), Image.BICUBIC).save(path, quality=90)  # smooth, compresses like a photo
        items.append(Datum(path, i % 10, f"class{i % 10}"))
    return items


def make_encoder(backbone, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    """The image encoder as the trainers call it: inference mode, on the device in the backbone's
    image precision, fp32 out, synchronised."""

    def encode(images: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            feats = backbone.encode_image(images.to(device, non_blocking=True)).float()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return feats

    return encode


class Clock:
    """Wall time and this process's CPU time (all its threads) of a block.

    On a shared machine the wall clock also counts the time other jobs hold the cores; CPU time
    counts only the work done here, so ratios of CPU-time throughputs hold under load. It misses
    DataLoader worker processes, so it is used only when there are none."""

    def __enter__(self) -> "Clock":
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def model_only(encode, items: List[Datum], tfm, batch: int, device: torch.device) -> Clock:
    """The encoder alone: every image decoded and transformed beforehand, already on the device."""
    pixels = torch.stack([tfm(Image.open(d.impath).convert("RGB")) for d in items]).to(device)
    with Clock() as clock:
        for start in range(0, len(items), batch):
            encode(pixels[start : start + batch])
    return clock


def pipeline_only(items: List[Datum], tfm, batch: int, workers: int, view: Optional[int]) -> Clock:
    """Decoding + transforms through the project's loader, the encoder left out, on one torch thread
    as in a DataLoader worker (two threads spinning on tiny tensors would measure OpenMP, not the pipeline)."""
    seeds = ViewSeeds([d.impath for d in items], [view] * len(items)) if view is not None else None
    loader = build_loader(items, tfm, batch, shuffle=False, num_workers=workers, seed_for=seeds)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with Clock() as clock:
            for _ in loader:
                pass
    finally:
        torch.set_num_threads(threads)
    return clock


class TimedEncoder:
    """The encoder with a stopwatch: how much of a cache fill is spent inside it."""

    def __init__(self, encode: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.encode, self.wall, self.cpu = encode, 0.0, 0.0

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        with Clock() as clock:
            out = self.encode(images)
        self.wall += clock.wall
        self.cpu += clock.cpu
        return out


def cache_fill(cache: FeatureCache, timed: TimedEncoder, items: List[Datum], tfm, spec: str, view: Optional[int]) -> Clock:
    """Filling an empty cache namespace (asserts every image really was encoded); the clock also
    carries the encoder's share of it (``encoder_wall``/``encoder_cpu``)."""
    before = cache.encoded_images
    timed.wall = timed.cpu = 0.0
    with Clock() as clock:
        cache.features(items, tfm, spec, view, desc="bench")
    assert cache.encoded_images - before == len(items), "the cache was not empty"
    clock.encoder_wall, clock.encoder_cpu = timed.wall, timed.cpu
    return clock


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=0, help="images per measurement (default: 32 on CPU, 1024 on CUDA)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians are reported")
    p.add_argument("--batch-size", type=int, default=0, help="encoder batch (default: 16 on CPU, FEATURES.BATCH_SIZE on CUDA)")
    p.add_argument("--workers", type=int, default=-1, help="DataLoader workers (default: 0 on CPU, DATALOADER.NUM_WORKERS of rn50.yaml on CUDA)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--prec", default="", help="fp32 or fp16 (default: fp16 on CUDA as FEATURES.PREC, fp32 on CPU)")
    p.add_argument("--image-size", type=int, default=224, help="side of the synthetic JPEGs")
    p.add_argument("--workdir", default="", help="weights, images and caches (default: a temporary folder)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    warnings.simplefilter("ignore", FutureWarning)

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    load_all(quiet=True)  # the trainers' config nodes (rn50.yaml sets TRAINER.CLIP_ADAPTER)
    defaults = setup_cfg("", TRAINER_CFG, {}, [])
    n = args.images or (1024 if cuda else 32)
    batch = args.batch_size or (int(get_cfg_default().FEATURES.BATCH_SIZE) if cuda else 16)
    workers = args.workers if args.workers >= 0 else (int(defaults.DATALOADER.NUM_WORKERS) if cuda else 0)
    prec = args.prec or ("fp16" if cuda else "fp32")
    work = args.workdir or tempfile.mkdtemp(prefix="bench_encode_")
    os.makedirs(work, exist_ok=True)

    weights = random_rn50(os.path.join(work, "clip-rn50-random.pt"))
    if prec == "fp16" and not cuda:
        raise SystemExit("--prec fp16 needs --device cuda")
    backbone = load_backbone(BackboneSpec("openai", weights), device)
    backbone.set_image_precision(prec)
    encode = make_encoder(backbone, device)
    items = write_jpegs(os.path.join(work, f"jpeg{args.image_size}"), n, args.image_size)
    pixels, _ = resolve_input(defaults, backbone.preprocess, backbone.identity.label)  # as a trainer resolves them
    tfm_test, tfm_train = build_transform(defaults, False, pixels), build_transform(defaults, True, pixels)
    spec_test, spec_train = transform_spec(defaults, False, pixels), transform_spec(defaults, True, pixels)

    print(f"machine: {os.cpu_count()} CPU cores visible, torch {torch.__version__} with {torch.get_num_threads()} threads, "
          f"device {device}{' (' + torch.cuda.get_device_name(device) + ')' if cuda else ''}, load average {os.getloadavg()[0]:.2f} at start")
    print(f"RN50 architecture, random weights, {prec}; {n} synthetic {args.image_size}-px JPEGs per measurement; "
          f"batch {batch}; {workers} DataLoader worker(s); {args.rounds} alternating round(s), medians")

    encode(torch.zeros(2, 3, 224, 224, device=device))  # warm-up (allocator, kernels)
    pipeline_only(items[:batch], tfm_train, batch, 0, 0)
    many = items * max(1, 512 // n)  # the pipeline alone is fast: more images steady its figure
    timings: Dict[str, List[Clock]] = {}
    for r in range(args.rounds):
        caches = os.path.join(work, f"caches-{r}")
        shutil.rmtree(caches, ignore_errors=True)
        timed = TimedEncoder(encode)
        cache = FeatureCache(caches, backbone.encoder_id, timed, device, prec, batch_size=batch, num_workers=workers, dim=backbone.embed_dim)
        for name, count, measure in (
            ("model", n, lambda: model_only(encode, items, tfm_test, batch, device)),
            ("pipe_test", len(many), lambda: pipeline_only(many, tfm_test, batch, workers, None)),
            ("pipe_train", len(many), lambda: pipeline_only(many, tfm_train, batch, workers, 0)),
            ("pipe_unseeded", len(many), lambda: pipeline_only(many, tfm_train, batch, workers, None)),
            ("fill_test", n, lambda: cache_fill(cache, timed, items, tfm_test, spec_test, None)),
            ("fill_train", n, lambda: cache_fill(cache, timed, items, tfm_train, spec_train, 0)),
        ):
            clock = measure()
            clock.count = count
            timings.setdefault(name, []).append(clock)
        shutil.rmtree(caches, ignore_errors=True)

    # throughput in images per second of wall time, and per second of this process's CPU time
    use_cpu = workers == 0 and not cuda
    rate = {k: {"wall": statistics.median(c.count / c.wall for c in v), "cpu": statistics.median(c.count / c.cpu for c in v)} for k, v in timings.items()}
    basis = "cpu" if use_cpu else "wall"

    def line(label: str, key: str, versus: str = "", what: str = "") -> str:
        out = f"{label:48s} {rate[key]['wall']:8.1f} images/s wall, {rate[key]['cpu']:8.1f} per CPU-second"
        if versus:
            out += f"  = {rate[key][basis] / rate[versus][basis]:.2f}{what}"
        if key.startswith("fill"):  # measured within the same fill, so free of the encoder's run-to-run noise
            share = statistics.median(getattr(c, f"encoder_{basis}") / getattr(c, basis) for c in timings[key])
            out += f"; {100 * share:.1f}% of it inside the encoder"
        return out

    print()
    print(line(f"model only (pre-decoded tensors on {device}):", "model"))
    print(line("data pipeline alone, test views:", "pipe_test"))
    print(line("data pipeline alone, training views unseeded:", "pipe_unseeded", "pipe_test", "x test views"))
    print(line("data pipeline alone, training views (seeded):", "pipe_train", "pipe_unseeded", "x unseeded"))
    print(line("cache fill, test views:", "fill_test", "model", " of model-only"))
    print(line("cache fill, training views:", "fill_train", "model", " of model-only"))
    print(f"load average {os.getloadavg()[0]:.2f} at the end; ratios use "
          + ("CPU time (all work in this process; robust to other jobs on the machine)" if use_cpu else "wall time"))
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    print(f"train/test throughput ratio: {rate['fill_train'][basis] / rate['fill_test'][basis]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
