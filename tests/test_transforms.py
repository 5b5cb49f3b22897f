"""Seeded augmentation: a view is a function of its seed alone, costs no global seeding, and is the
crop torchvision's own classes give under the same seed."""
from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image

from clip_adapter.config import setup_cfg
from clip_adapter.data.datum import Datum
from clip_adapter.data.loader import ImageList, build_loader
from clip_adapter.data.transforms import build_transform
from clip_adapter.features import ViewSeeds
from conftest import TINY_INPUT_OPTS

# photo-like, tiny, square, and extreme aspect ratios (the last ones hit the centred-crop fallback)
SHAPES = [(256, 320), (40, 40), (300, 90), (90, 300), (17, 500)]


def cfg_for(transforms, size="(32, 48)"):
    return setup_cfg(opts=[*TINY_INPUT_OPTS, "INPUT.SIZE", size, "INPUT.TRANSFORMS", str(list(transforms)), "INPUT.CROP_PADDING", "4",
                           "INPUT.RRCROP_SCALE", "(0.08, 1.0)"])


def torchvision_reference(cfg):
    """What the project built before: torchvision's classes in a Compose, drawing from the global RNG."""
    size, interp = tuple(int(s) for s in cfg.INPUT.SIZE), T.InterpolationMode(cfg.INPUT.INTERPOLATION)
    choices = list(cfg.INPUT.TRANSFORMS)
    if "random_resized_crop" in choices:
        ops = [T.RandomResizedCrop(size, scale=tuple(cfg.INPUT.RRCROP_SCALE), interpolation=interp)]
    else:
        ops = [T.Resize(max(size), interpolation=interp), T.CenterCrop(size)]
        if "random_crop" in choices:
            ops.append(T.RandomCrop(size, padding=int(cfg.INPUT.CROP_PADDING)))
    if "random_flip" in choices:
        ops.append(T.RandomHorizontalFlip())
    ops.append(T.ToTensor())
    if "normalize" in choices:
        ops.append(T.Normalize(list(cfg.INPUT.PIXEL_MEAN), list(cfg.INPUT.PIXEL_STD)))
    return T.Compose(ops)


def pictures():
    rng = np.random.RandomState(0)
    return [Image.fromarray(rng.randint(0, 256, size=(h, w, 3), dtype=np.uint8)) for h, w in SHAPES]


@pytest.mark.parametrize("transforms", [
    ("random_resized_crop", "random_flip", "normalize"),
    ("random_crop", "random_flip", "normalize"),
    ("random_flip",),
])
def test_seeded_view_is_torchvisions_crop_under_the_same_seed(transforms):
    cfg = cfg_for(transforms)
    ours, reference = build_transform(cfg, is_train=True), torchvision_reference(cfg)
    for img in pictures():
        distinct = set()
        for seed in range(25):
            torch.manual_seed(seed)
            expected = reference(img)
            got = ours(img, torch.Generator().manual_seed(seed))
            assert torch.equal(got, expected), (transforms, img.size, seed)
            distinct.add(got.numpy().tobytes())
        assert len(distinct) > 1  # the seed really changes the view


def test_seeded_view_never_touches_the_global_generator():
    tfm = build_transform(cfg_for(("random_resized_crop", "random_flip")), is_train=True)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    for img in pictures():
        tfm(img, torch.Generator().manual_seed(7))
    assert torch.equal(torch.get_rng_state(), state)
    # without a generator the random operations draw from the global RNG, like torchvision's
    tfm(pictures()[0])
    assert not torch.equal(torch.get_rng_state(), state)


def write_items(folder, n=8):
    os.makedirs(folder, exist_ok=True)
    items = []
    for i, img in enumerate(pictures() * 2):
        path = os.path.join(str(folder), f"{i:02d}.png")
        img.save(path)
        items.append(Datum(path, i % 3))
    return items[:n]


def views_by_key(loader, views):
    out = {}
    for batch in loader:
        for img, index, path in zip(batch["img"], batch["index"].tolist(), batch["impath"]):
            out[(path, views[index])] = img
    return out


def test_same_seed_same_view_in_main_process_and_workers_in_any_order(tmp_path):
    """(image, view) -> one crop whether loaded in this process or in 2 DataLoader workers, in any order."""
    items = write_items(tmp_path / "img")
    tfm = build_transform(cfg_for(("random_resized_crop", "random_flip", "normalize")), is_train=True)
    # every image in views 0..2, in a given order
    pairs = [(d, v) for v in range(3) for d in items]
    forward = [d for d, _ in pairs], [v for _, v in pairs]
    backward = forward[0][::-1], forward[1][::-1]
    main = views_by_key(build_loader(forward[0], tfm, 5, shuffle=False, num_workers=0,
                                     seed_for=ViewSeeds([d.impath for d in forward[0]], forward[1])), forward[1])
    workers = views_by_key(build_loader(backward[0], tfm, 3, shuffle=False, num_workers=2,
                                        seed_for=ViewSeeds([d.impath for d in backward[0]], backward[1])), backward[1])
    shuffled = views_by_key(build_loader(forward[0], tfm, 4, shuffle=True, num_workers=2, generator=torch.Generator().manual_seed(5),
                                         seed_for=ViewSeeds([d.impath for d in forward[0]], forward[1])), forward[1])
    assert set(main) == set(workers) == set(shuffled) and len(main) == len(pairs)
    for key in main:
        assert torch.equal(main[key], workers[key]) and torch.equal(main[key], shuffled[key]), key
    # and the views of one image differ
    assert not torch.equal(main[(items[0].impath, 0)], main[(items[0].impath, 1)])


def test_plain_callable_is_seeded_too_and_the_global_state_restored(tmp_path):
    """A transform without ``accepts_generator`` (any torchvision Compose) gets the CPU generator
    seeded per item, and the caller's RNG stream continues as if nothing happened."""
    items = write_items(tmp_path / "img", 4)
    cfg = cfg_for(("random_resized_crop", "random_flip"))
    seeds = ViewSeeds([d.impath for d in items], [1] * len(items))
    plain, ours = ImageList(items, torchvision_reference(cfg), seeds), ImageList(items, build_transform(cfg, True), seeds)
    torch.manual_seed(0)
    expected_next = torch.rand(3)
    torch.manual_seed(0)
    for i in range(len(items)):
        assert torch.equal(plain[i]["img"], ours[i]["img"])
    assert torch.equal(torch.rand(3), expected_next)


def test_transform_pickles_as_its_steps():
    tfm = build_transform(cfg_for(("random_resized_crop", "random_flip", "normalize")), is_train=True)
    img = pictures()[0]
    first = tfm(img, torch.Generator().manual_seed(3))  # builds the torchvision operations
    clone = pickle.loads(pickle.dumps(tfm))
    assert clone._ops is None and clone.steps == tfm.steps
    assert torch.equal(clone(img, torch.Generator().manual_seed(3)), first)


def test_batches_without_workers_are_made_on_one_thread(tmp_path):
    """Decoding in this process between encoder passes: one intra-op thread while a batch is made
    (as in a DataLoader worker), the caller's thread count before and after."""
    items = write_items(tmp_path / "img", 4)
    seen = []

    def transform(img):
        seen.append(torch.get_num_threads())
        return torch.zeros(1)

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        batches = list(build_loader(items, transform, 2, shuffle=False))
        assert len(batches) == 2 and seen == [1] * 4 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
