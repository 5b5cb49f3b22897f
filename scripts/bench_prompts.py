#!/usr/bin/env python
"""Benchmark: CoCoOp's cost per training step with cached vs freshly encoded image features.

    python scripts/bench_prompts.py                 # ViT-B/16, 10 classes, batch 1: ~2 min on two CPU cores
    python scripts/bench_prompts.py --arch rn50 --classes 20 --batch 4

Both modes run the real ``CoCoOp`` trainer (configs/trainers/CoCoOp/vit_b16.yaml: batch 1, 4
context tokens from "a photo of a") on the same synthetic photo-sized JPEGs, with the real
architecture at 224 px and random weights (written once as a state dict and loaded through the
same ``clip.load`` path as real weights: a pass costs what it costs with the released weights).
``cached`` trains on the feature cache (filled before timing: a cost paid once per image view,
ever); ``exact`` (``FEATURES.MODE exact``) decodes, augments and encodes each batch's images
every step, as CoCoOp's own loop does. A step = producing the batch + ``forward_backward``.

It prints the mean step time per mode, the ratio ``exact / cached``, the split of a step into the
image side and the text side, and the activation memory autograd holds per prompt (measured with
saved-tensor hooks on one step), from which docs/prompt-methods.md states CoCoOp's memory per batch.
The text side grows linearly with the class count while the image side does not: the line
``at C classes`` extrapolates the ratio to other class counts from the measured per-class cost.
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
import warnings
from typing import Dict, List

import numpy as np
import torch
from PIL import Image

from clip_adapter.config import setup_cfg
from clip_adapter.data.dataset_base import DatasetBase
from clip_adapter.data.datum import Datum
from clip_adapter.plugins import load_all as register_all
from clip_adapter.registry import DATASETS, TRAINERS
from clip_adapter.utils import atomic_torch_save, set_random_seed

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# clip.model.CLIP hyperparameters of the released models (as clip.model.build_model infers them).
TEXT = dict(context_length=77, vocab_size=49408, transformer_width=512, transformer_heads=8, transformer_layers=12)
ARCHS = {
    "vit_b16": dict(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768, vision_patch_size=16, **TEXT),
    "rn50": dict(embed_dim=1024, image_resolution=224, vision_layers=(3, 4, 6, 3), vision_width=64, vision_patch_size=None, **TEXT),
}


@DATASETS.register()
class PromptBenchSynth(DatasetBase):
    """Photo-sized random JPEGs (320x256), ``classes`` classes x ``shots`` training images."""

    dataset_dir = "prompt_bench_synth"
    image_dir = "images"
    split_file = ""
    layout = {"classes": 10, "shots": 2}

    def prepare(self) -> None:
        marker = os.path.join(self.dataset_dir, f"done-{self.layout['classes']}-{self.layout['shots']}")
        if os.path.isfile(marker):
            return
        rng = np.random.RandomState(0)
        for c in range(self.layout["classes"]):
            folder = os.path.join(self.image_dir, f"class{c}")
            os.makedirs(folder, exist_ok=True)
            for i in range(self.layout["shots"]):
                pixels = rng.randint(0, 256, size=(256, 320, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(os.path.join(folder, f"{i:03d}.jpg"), quality=90)
        open(marker, "w").close()

    def build_split(self) -> Dict[str, List[Datum]]:
        train = [Datum(os.path.join(self.image_dir, f"class{c}", f"{i:03d}.jpg"), c, f"class {c}")
                 for c in range(self.layout["classes"]) for i in range(self.layout["shots"])]
        return {"train": train, "val": [], "test": train[:1]}

    def templates(self, mode: str = "single") -> List[str]:
        return ["a photo of a {}."]


def random_weights(arch: str, path: str) -> str:
    """The architecture with random weights (seeded), saved once in fp16 as a state dict clip.load reads."""
    if not os.path.isfile(path):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import clip
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = clip.model.CLIP(**ARCHS[arch])
        atomic_torch_save({k: v.detach().half() for k, v in model.state_dict().items()}, path)
    return path


def build(mode: str, args, root: str, weights: str, work: str):
    cfg = setup_cfg(
        "",
        os.path.join(REPO, "configs", "trainers", "CoCoOp", "vit_b16.yaml"),
        {"DATASET.ROOT": root, "OUTPUT_DIR": os.path.join(work, "out", mode), "SEED": 1, "TRAINER.NAME": "CoCoOp",
         "MODEL.BACKBONE.NAME": weights},
        ["DATASET.NAME", "PromptBenchSynth", "DATASET.NUM_SHOTS", "0", "FEATURES.MODE", mode, "FEATURES.TRAIN_VIEWS", "1",
         "FEATURES.CACHE_DIR", os.path.join(work, "cache"), "DATALOADER.NUM_WORKERS", "0",
         "DATALOADER.TRAIN_X.BATCH_SIZE", str(args.batch), "USE_CUDA", str(args.device == "cuda")],
    )
    set_random_seed(1)
    return TRAINERS.get("CoCoOp")(cfg).build()


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(trainer, steps: int) -> Dict[str, float]:
    """Mean seconds per step over ``steps`` steps after one warm-up step, and the image-encoder share."""
    trainer.set_mode(True)
    batches = iter(trainer.train_batches(0))
    sync(trainer.device)
    trainer.forward_backward(next(batches))  # warm-up (allocator, kernels)
    enc0 = trainer.encoder_stats["seconds"]
    t0 = time.perf_counter()
    for _ in range(steps):
        batch = next(batches)
        trainer.forward_backward(batch)
    sync(trainer.device)
    total = (time.perf_counter() - t0) / steps
    return {"step": total, "encoder": (trainer.encoder_stats["seconds"] - enc0) / steps}


def saved_bytes_per_prompt(trainer, trim: bool, prompts: int = 2) -> Dict[str, float]:
    """Activation bytes autograd keeps for backward per prompt in the text tower (a CoCoOp prompt
    conditioned on one image), with the tower trimmed to the last EOS or over all 77 tokens.
    Distinct storages are counted once; CLIP's and the prompt learner's own weights are not counted
    (they are in memory anyway)."""
    weights = {t.untyped_storage().data_ptr() for m in (trainer.clip_model, trainer.prompt_learner) for t in m.parameters()}
    weights |= {t.untyped_storage().data_ptr() for m in (trainer.clip_model, trainer.prompt_learner) for t in m.buffers()}
    seen: Dict[int, int] = {}

    def pack(t: torch.Tensor):
        try:
            key = t.untyped_storage().data_ptr()
            if key not in weights:
                seen[key] = max(seen.get(key, 0), t.untyped_storage().nbytes())
        except (RuntimeError, NotImplementedError):
            pass
        return t

    pl = trainer.prompt_learner
    feats = torch.randn(1, trainer.clip_info.embed_dim, device=trainer.device)
    encoder = type(trainer.text_encoder)(trainer.clip_model, trim=trim)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        batch = pl(feats / feats.norm(dim=-1, keepdim=True))[0, :prompts]
        out = encoder(batch, pl.tokenized_prompts[:prompts])
    del out
    tokens = int(pl.tokenized_prompts[:prompts].argmax(-1).max()) + 1 if trim else pl.tokenized_prompts.shape[1]
    return {"per_prompt": sum(seen.values()) / prompts, "tokens": tokens}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", choices=sorted(ARCHS), default="vit_b16")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--batch", type=int, default=1, help="images per step (CoCoOp: 1)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--workdir", default="", help="keep weights and data here (default: a temporary folder)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    register_all(quiet=True)
    work = args.workdir or tempfile.mkdtemp(prefix="bench_prompts_")
    try:
        PromptBenchSynth.layout = {"classes": args.classes, "shots": max(2, args.batch * (args.steps + 1))}
        weights = random_weights(args.arch, os.path.join(work, f"random_{args.arch}.pt"))
        root = os.path.join(work, "data")
        results = {}
        for mode in ("cached", "exact"):
            trainer = build(mode, args, root, weights, work)
            if mode == "cached":
                trainer.train_view_features()  # the cache fill: once per image view, not per step
                memory = [saved_bytes_per_prompt(trainer, trim) for trim in (True, False)]
            results[mode] = time_steps(trainer, args.steps)
            del trainer
        cached, exact = results["cached"]["step"], results["exact"]["step"]
        image = exact - cached  # what encoding each batch adds
        per_class = cached / args.classes
        print(f"CoCoOp step, {args.arch} (random weights), {args.classes} classes, batch {args.batch}, {args.device}, "
              f"{torch.get_num_threads()} threads, mean of {args.steps} steps:")
        print(f"  cached features: {cached:.3f} s/step   (text side: {per_class * 1000:.1f} ms per class)")
        print(f"  fresh encoding:  {exact:.3f} s/step   (image encoder {results['exact']['encoder']:.3f} s of it)")
        print(f"  ratio exact / cached: {exact / cached:.2f}x")
        for c in (10, 50, 100, 500):
            print(f"  at {c} classes (extrapolated, text side linear in C): {(image + per_class * c) / (per_class * c):.2f}x")
        dtype = "fp32" if args.device != "cuda" else "fp16"
        for m in memory:
            print(f"  text-tower activations held for backward: {m['per_prompt'] / 2 ** 20:.2f} MiB per prompt at "
                  f"{m['tokens']} tokens ({dtype}); x B images x C classes per step")
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
