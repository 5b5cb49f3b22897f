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
from clip_adapter.utils import cap_workers

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
    """Datums -> {"img", "label", "index", "impath"}; ``transform_for(index)`` lets each item have its own seeded transform."""

    def __init__(self, items: Sequence[Datum], transform: Callable, seed_for: Optional[Callable[[int], int]] = None) -> None:
        self.items = list(items)
        self.transform = transform
        self.seed_for = seed_for

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        item = self.items[index]
        img = read_image(item.impath)
        if self.seed_for is not None:
            # Seed the global torch RNG that torchvision's random transforms draw from, so a
            # (image, view) pair always gets the same crop and flip, in any process or order.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed_for(index))
                tensor = self.transform(img)
        else:
            tensor = self.transform(img)
        return {"img": tensor, "label": item.label, "index": index, "impath": item.impath}


def build_loader(
    items: Sequence[Datum],
    transform: Callable,
    batch_size: int,
    shuffle: bool,
    num_workers: int = 0,
    seed_for: Optional[Callable[[int], int]] = None,
    generator: Optional[torch.Generator] = None,
    drop_last: bool = False,
) -> DataLoader:
    return DataLoader(
        ImageList(items, transform, seed_for),
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=cap_workers(num_workers),
        drop_last=drop_last,
        generator=generator,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=False,
    )
