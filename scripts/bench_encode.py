#!/usr/bin/env python
"""Benchmark: is an encoder pass through the feature cache as cheap as the encoder alone?

    python scripts/bench_encode.py              # ~2-3 min on two CPU cores
    python scripts/bench_encode.py --device cuda --images 2048 --workers 8   # wherever a GPU is

The real RN50 architecture at 224 px with random weights (built and saved as bench_cache.py does,
loaded through the project's ``load_clip``), over synthetic 224-px JPEGs. Measured side by side in
this one process, in alternating rounds (medians reported), so that other work on the machine
slows every figure alike:

* model-only: the image encoder on pre-decoded tensors already on the device (its ceiling);
* data pipeline alone: decoding + transforms through the project's loader, no encoder, for test
  views and for seeded training views (what seeding an augmented view costs);
* cache fill: ``FeatureCache.features`` into an empty cache, test views and training views: decoding,
  transforms, batching, device copies, the encoder and the shard writes, as a cold run pays them.

Each cache-fill figure is also given as a fraction of model-only (1.0 = the pipeline adds nothing),
and the last line reads ``train/test throughput ratio: <r>`` (1.0 = a seeded training view costs
what a test view costs). On CUDA the fill uses ``--workers`` DataLoader workers, pinned memory and
non-blocking copies, so its fraction of model-only is how busy the data pipeline keeps the GPU.
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

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_cache import random_rn50  # noqa: E402  (the same random RN50 file as the cache benchmark)

from clip_adapter.config import get_cfg_default, setup_cfg  # noqa: E402
from clip_adapter.data.datum import Datum  # noqa: E402
from clip_adapter.data.loader import build_loader  # noqa: E402
from clip_adapter.data.transforms import build_transform, transform_spec  # noqa: E402
from clip_adapter.features import FeatureCache, ViewSeeds  # noqa: E402
from clip_adapter.models.clip_loader import load_clip  # noqa: E402

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


def make_encoder(model, device: torch.device, dtype: torch.dtype) -> Callable[[torch.Tensor], torch.Tensor]:
    """The image encoder as the trainers call it: inference mode, device and dtype, fp32 out, synchronised."""

    def encode(images: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            feats = model.encode_image(images.to(device, dtype, non_blocking=True)).float()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return feats

    return encode


def model_only(encode, items: List[Datum], tfm, batch: int, device: torch.device) -> float:
    """Images/s of the encoder alone: every image decoded and transformed beforehand, on the device."""
    pixels = torch.stack([tfm(Image.open(d.impath).convert("RGB")) for d in items]).to(device)
    t0 = time.perf_counter()
    for start in range(0, len(items), batch):
        encode(pixels[start : start + batch])
    return len(items) / (time.perf_counter() - t0)


def pipeline_only(items: List[Datum], tfm, batch: int, workers: int, view: Optional[int], passes: int = 1) -> float:
    """Images/s of decoding + transforms through the project's loader, the encoder left out
    (``passes`` times over the images: this part is fast, so a longer run steadies the figure)."""
    items = list(items) * passes
    seeds = ViewSeeds([d.impath for d in items], [view] * len(items)) if view is not None else None
    loader = build_loader(items, tfm, batch, shuffle=False, num_workers=workers, seed_for=seeds)
    t0 = time.perf_counter()
    for _ in loader:
        pass
    return len(items) / (time.perf_counter() - t0)


def cache_fill(cache: FeatureCache, items: List[Datum], tfm, spec: str, view: Optional[int]) -> float:
    """Images/s of filling an empty cache namespace (asserts every image really was encoded)."""
    before = cache.encoded_images
    t0 = time.perf_counter()
    cache.features(items, tfm, spec, view, desc="bench")
    seconds = time.perf_counter() - t0
    assert cache.encoded_images - before == len(items), "the cache was not empty"
    return len(items) / seconds


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=0, help="images per measurement (default: 32 on CPU, 1024 on CUDA)")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds; medians are reported")
    p.add_argument("--batch-size", type=int, default=0, help="encoder batch (default: 16 on CPU, FEATURES.BATCH_SIZE on CUDA)")
    p.add_argument("--workers", type=int, default=-1, help="DataLoader workers (default: 0 on CPU, DATALOADER.NUM_WORKERS of rn50.yaml on CUDA)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--prec", default="", help="fp32 or fp16 (default: fp16 on CUDA as FEATURES.PREC, fp32 on CPU)")
    p.add_argument("--image-size", type=int, default=224, help="side of the synthetic JPEGs")
    p.add_argument("--workdir", default="", help="weights, images and caches (default: a temporary folder)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TQDM_DISABLE", "1")
    warnings.simplefilter("ignore", FutureWarning)

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    defaults = setup_cfg("", TRAINER_CFG, {}, [])
    n = args.images or (1024 if cuda else 32)
    batch = args.batch_size or (int(get_cfg_default().FEATURES.BATCH_SIZE) if cuda else 16)
    workers = args.workers if args.workers >= 0 else (int(defaults.DATALOADER.NUM_WORKERS) if cuda else 0)
    prec = args.prec or ("fp16" if cuda else "fp32")
    work = args.workdir or tempfile.mkdtemp(prefix="bench_encode_")
    os.makedirs(work, exist_ok=True)

    weights = random_rn50(os.path.join(work, "clip-rn50-random.pt"))
    model, info = load_clip(weights, device)
    dtype = torch.float32
    if prec == "fp16":
        if not cuda:
            raise SystemExit("--prec fp16 needs --device cuda")
        from clip_adapter.models.clip_loader import clip_model_module

        clip_model_module().convert_weights(model.visual)
        dtype = torch.float16
    encode = make_encoder(model, device, dtype)
    items = write_jpegs(os.path.join(work, f"jpeg{args.image_size}"), n, args.image_size)
    tfm_test, tfm_train = build_transform(defaults, is_train=False), build_transform(defaults, is_train=True)
    spec_test, spec_train = transform_spec(defaults, is_train=False), transform_spec(defaults, is_train=True)

    print(f"machine: {os.cpu_count()} CPU cores visible, torch {torch.__version__} with {torch.get_num_threads()} threads, "
          f"device {device}{' (' + torch.cuda.get_device_name(device) + ')' if cuda else ''}, load average {os.getloadavg()[0]:.2f} at start")
    print(f"RN50 architecture, random weights, {prec}; {n} synthetic {args.image_size}-px JPEGs per measurement; "
          f"batch {batch}; {workers} DataLoader worker(s); {args.rounds} alternating round(s), medians")

    encode(torch.zeros(2, 3, 224, 224, device=device))  # warm-up (allocator, kernels)
    pipeline_only(items[:batch], tfm_train, batch, 0, 0)
    passes = max(1, 512 // n)
    figures: Dict[str, List[float]] = {}
    for r in range(args.rounds):
        caches = os.path.join(work, f"caches-{r}")
        shutil.rmtree(caches, ignore_errors=True)
        cache = FeatureCache(caches, info.encoder_id, encode, device, prec, batch_size=batch, num_workers=workers, dim=info.embed_dim)
        for name, measure in (
            ("model", lambda: model_only(encode, items, tfm_test, batch, device)),
            ("pipe_test", lambda: pipeline_only(items, tfm_test, batch, workers, None, passes)),
            ("pipe_train", lambda: pipeline_only(items, tfm_train, batch, workers, 0, passes)),
            ("fill_test", lambda: cache_fill(cache, items, tfm_test, spec_test, None)),
            ("fill_train", lambda: cache_fill(cache, items, tfm_train, spec_train, 0)),
        ):
            figures.setdefault(name, []).append(measure())
        shutil.rmtree(caches, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in figures.items()}
    spread = lambda k: f"(rounds: {', '.join(f'{x:.1f}' for x in figures[k])})"  # noqa: E731

    print()
    print(f"model only (pre-decoded tensors on {device}):   {med['model']:8.1f} images/s {spread('model')}")
    print(f"data pipeline alone, test views:                {med['pipe_test']:8.1f} images/s {spread('pipe_test')}")
    print(f"data pipeline alone, training views (seeded):   {med['pipe_train']:8.1f} images/s {spread('pipe_train')}"
          f" = {med['pipe_train'] / med['pipe_test']:.2f}x test views")
    print(f"cache fill, test views:                         {med['fill_test']:8.1f} images/s {spread('fill_test')}"
          f" = {med['fill_test'] / med['model']:.2f} of model-only")
    print(f"cache fill, training views:                     {med['fill_train']:8.1f} images/s {spread('fill_train')}"
          f" = {med['fill_train'] / med['model']:.2f} of model-only")
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    print(f"train/test throughput ratio: {med['fill_train'] / med['fill_test']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
