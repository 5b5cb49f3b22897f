"""Turn lists of datums into image tensors: the only place images are decoded."""
from __future__ import annotations

import logging
from typing import Callable, List, Optional, Sequence

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset

from clip_adapter.data.datum import Datum
from clip_adapter.data.splits import DOCTOR
from clip_adapter.errors import DatasetError
from clip_adapter.utils import cap_workers, intra_op_threads

log = logging.getLogger(__name__)


def read_image(path: str) -> Image.Image:
    """Open an image as RGB; a corrupt or missing file fails with its path and the fix."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (FileNotFoundError, UnidentifiedImageError, OSError) as exc:
        raise DatasetError(
            f"cannot read image {path} ({type(exc).__name__}: {exc}); replace or remove it "
            f"(`{DOCTOR} <dataset> --root <DATA>` lists every unreadable file; DATASET.SKIP_BAD_IMAGES True skips them)"
        ) from None


class ImageList(Dataset):
    """Datums -> {"img", "label", "index", "impath"}; with ``seed_for`` item i's random transform is seeded by ``seed_for(i)``.

    A transform with ``accepts_generator`` (``data.transforms.ViewTransform``) gets a fresh
    ``torch.Generator`` seeded for the item, so a (image, view) pair has the same crop and flip in
    any process, worker or order, and the global RNG is never touched. Any other callable runs with
    torch's CPU generator seeded for the item and restored afterwards (only the CPU generator:
    ``torch.manual_seed`` would also seed every lazy accelerator generator, which once cost more
    than decoding the image).
    """

    def __init__(self, items: Sequence[Datum], transform: Callable, seed_for: Optional[Callable[[int], int]] = None) -> None:
        self.items = list(items)
        self.transform = transform
        self.seed_for = seed_for

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        item = self.items[index]
        img = read_image(item.impath)
        if self.seed_for is None:
            tensor = self.transform(img)
        elif getattr(self.transform, "accepts_generator", False):
            tensor = self.transform(img, generator=torch.Generator().manual_seed(self.seed_for(index)))
        else:
            with torch.random.fork_rng(devices=[]):
                torch.default_generator.manual_seed(self.seed_for(index))
                tensor = self.transform(img)
        return {"img": tensor, "label": item.label, "index": index, "impath": item.impath}


class _OneThreadBatches:
    """A loader iterator whose batches are made on one intra-op thread.

    Why: without workers the batches are decoded and transformed in this process, between encoder
    passes, with torch's full thread pool; on tensors of one image each operation then pays a
    parallel region, which on a busy machine costs 5 ms instead of 0.1 (a tenth of an RN50 cache
    fill on two cores; see ``utils.intra_op_threads``). DataLoader workers run on one thread too.
    """

    def __init__(self, it) -> None:
        self.it = it

    def __iter__(self) -> "_OneThreadBatches":
        return self

    def __next__(self):
        with intra_op_threads(1):
            return next(self.it)


class ImageLoader(DataLoader):
    """``DataLoader`` that makes its batches on one thread when it has no workers (``_OneThreadBatches``)."""

    def __iter__(self):
        it = super().__iter__()
        return it if self.num_workers > 0 else _OneThreadBatches(it)


def build_loader(
    items: Sequence[Datum],
    transform: Callable,
    batch_size: int,
    shuffle: bool,
    num_workers: int = 0,
    seed_for: Optional[Callable[[int], int]] = None,
    generator: Optional[torch.Generator] = None,
    drop_last: bool = False,
    pin_memory: Optional[bool] = None,
) -> DataLoader:
    """A loader over ``ImageList``; ``pin_memory`` (default: when CUDA is present) lets the consumer
    copy batches to the GPU with ``non_blocking=True`` while workers decode the next ones; without
    workers, batches are made on one thread (``ImageLoader``)."""
    return ImageLoader(
        ImageList(items, transform, seed_for),
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=cap_workers(num_workers),
        drop_last=drop_last,
        generator=generator,
        pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
        persistent_workers=False,
    )
