"""The frozen-encoder feature cache: encode once, key correctly, survive damage and concurrency.

Cache-level tests drive ``FeatureCache`` with the real tiny CLIP (loaded through ``clip.load``)
and real torchvision transforms over a handful of PNGs written into ``tmp_path``; trainer-level
tests run the real CLI on the generated smoke dataset.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import SMOKE_DS, trainer_cfg
from PIL import Image

from clip_adapter import features as F
from clip_adapter.plugins import load_all as register_all
from clip_adapter.config import setup_cfg
from clip_adapter.data.datum import Datum
from clip_adapter.data.loader import build_loader
from clip_adapter.data.transforms import build_transform, transform_spec
from clip_adapter.errors import DatasetError
from clip_adapter.features import FeatureCache, ViewSeeds, cached_text_classifier, default_cache_dir, load_verified, view_seed
from conftest import TINY_INPUT_OPTS, load_tiny
from clip_adapter.registry import TRAINERS
from clip_adapter.engine.clip_trainer import ClipTrainer
from clip_adapter.utils import set_random_seed

N_IMAGES = 10


# ---------------------------------------------------------------------------- helpers
def write_images(folder, n=N_IMAGES, seed=0, size=40):
    os.makedirs(folder, exist_ok=True)
    rng = np.random.RandomState(seed)
    items = []
    for i in range(n):
        path = os.path.join(str(folder), f"img_{i:02d}.png")
        Image.fromarray(rng.randint(0, 256, size=(size, size, 3), dtype=np.uint8)).save(path)
        items.append(Datum(path, i % 3, f"class{i % 3}"))
    return items


def tiny_cfg(*opts):
    return setup_cfg(opts=[*TINY_INPUT_OPTS, *opts])


@pytest.fixture(scope="module")
def tiny():
    backbone = load_tiny()
    return backbone.model, backbone


@pytest.fixture
def images(tmp_path):
    return write_images(tmp_path / "images")


def make_cache(root, tiny, precision="fp32", batch_size=4):
    """A FeatureCache as a new process has it: nothing read yet (the per-process shard memo cleared)."""
    model, info = tiny
    F.clear_shard_memo()

    def encode(x):
        with torch.inference_mode():
            return model.encode_image(x).float()

    return FeatureCache(str(root), info.encoder_id, encode, "cpu", precision, batch_size=batch_size, dim=info.embed_dim)


def views_of(cache, items, cfg, k, train=True):
    tfm, spec = build_transform(cfg, is_train=train), transform_spec(cfg, is_train=train)
    return [cache.features(items, tfm, spec, v) for v in range(k)]


def shards(root):
    return sorted(os.path.join(d, f) for d, _, files in os.walk(root) for f in files if f.startswith("shard-"))


# ------------------------------------------------------------------------ encode once
@pytest.mark.slow
def test_second_run_encodes_nothing_and_returns_the_same_features(tmp_path, tiny, images):
    cfg = tiny_cfg()
    first = make_cache(tmp_path / "cache", tiny)
    test1 = first.features(images, build_transform(cfg, False), transform_spec(cfg, False))
    train1 = views_of(first, images, cfg, 3)
    assert first.encoded_images == 4 * N_IMAGES
    assert test1.shape == (N_IMAGES, tiny[1].embed_dim) and test1.dtype == torch.float32

    second = make_cache(tmp_path / "cache", tiny)  # a new process: nothing in memory
    test2 = second.features(images, build_transform(cfg, False), transform_spec(cfg, False))
    train2 = views_of(second, images, cfg, 3)
    assert second.encoded_images == 0
    assert torch.equal(test1, test2)
    assert all(torch.equal(a, b) for a, b in zip(train1, train2))
    # raw features (not normalised), different views really are different crops
    assert not torch.allclose(test1.norm(dim=-1), torch.ones(N_IMAGES))
    assert not torch.allclose(train1[0], train1[1])


def test_keys_are_per_image_so_subsets_share_rows(tmp_path, tiny, images):
    """Seeds/shots/base-new pick different subsets of one image list: only unseen images are encoded."""
    cfg = tiny_cfg()
    cache = make_cache(tmp_path / "cache", tiny)
    tfm, spec = build_transform(cfg, True), transform_spec(cfg, True)
    a = cache.features(images[:6], tfm, spec, 0)
    assert cache.encoded_images == 6
    b = cache.features(images[3:], tfm, spec, 0)  # "another seed": 3 shared, 4 new
    assert cache.encoded_images == 10
    assert torch.equal(a[3:], b[:3])
    reordered = cache.features(images[::-1] + images[:2], tfm, spec, 0)  # any order, duplicates allowed
    assert cache.encoded_images == 10
    full = cache.features(images, tfm, spec, 0)
    assert torch.equal(reordered[:N_IMAGES], full.flip(0)) and torch.equal(reordered[N_IMAGES:], full[:2])


@pytest.mark.slow
def test_views_are_seeded_by_image_and_view(tmp_path, tiny, images):
    """A cached view equals a fresh encode of the crop seeded by (image, view), in any batch/order."""
    cfg = tiny_cfg()
    cache = make_cache(tmp_path / "cache", tiny, batch_size=3)
    tfm, spec = build_transform(cfg, True), transform_spec(cfg, True)
    cached = cache.features(images, tfm, spec, 2)
    order = list(range(N_IMAGES))[::-1]
    picked = [images[i] for i in order]
    loader = build_loader(picked, tfm, 7, shuffle=False, seed_for=ViewSeeds([d.impath for d in picked], [2] * N_IMAGES))
    fresh = torch.cat([tiny[0].encode_image(b["img"]).float().detach() for b in loader])
    torch.testing.assert_close(fresh, cached[order], rtol=1e-5, atol=1e-5)
    assert view_seed(images[0].impath, 0) == view_seed(images[0].impath, 0) != view_seed(images[0].impath, 1)


def test_shards_stream_to_disk_in_bounded_rows(tmp_path, tiny, images, monkeypatch):
    monkeypatch.setattr(F, "SHARD_ROWS", 4)
    cfg = tiny_cfg()
    cache = make_cache(tmp_path / "cache", tiny, batch_size=2)
    feats = cache.features(images, build_transform(cfg, False), transform_spec(cfg, False))
    files = shards(tmp_path / "cache")
    rows = [len(F.decode_keys(np.load(p, allow_pickle=False)["keys"])) for p in files]
    assert sorted(rows) == [2, 4, 4]
    again = make_cache(tmp_path / "cache", tiny).features(images, build_transform(cfg, False), transform_spec(cfg, False))
    assert torch.equal(feats, again)


# ----------------------------------------------------------------------- invalidation
def test_changed_image_invalidates_only_that_image(tmp_path, tiny, images):
    cfg = tiny_cfg()
    tfm, spec = build_transform(cfg, False), transform_spec(cfg, False)
    before = make_cache(tmp_path / "cache", tiny).features(images, tfm, spec)

    st = os.stat(images[2].impath)
    os.utime(images[2].impath, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))  # touch
    Image.new("RGB", (40, 40), (200, 10, 10)).save(images[5].impath)  # new content
    cache = make_cache(tmp_path / "cache", tiny)
    after = cache.features(images, tfm, spec)
    assert cache.encoded_images == 2
    torch.testing.assert_close(after[2], before[2])  # same pixels, re-encoded because it may have changed
    assert not torch.allclose(after[5], before[5])
    keep = [i for i in range(N_IMAGES) if i not in (2, 5)]
    assert torch.equal(after[keep], before[keep])


@pytest.mark.slow
def test_changed_transform_precision_or_view_uses_a_separate_namespace(tmp_path, tiny, images):
    cfg = tiny_cfg()
    cache = make_cache(tmp_path / "cache", tiny)
    base = cache.features(images, build_transform(cfg, False), transform_spec(cfg, False))
    assert cache.encoded_images == N_IMAGES

    bilinear = tiny_cfg("INPUT.INTERPOLATION", "bilinear")
    other = cache.features(images, build_transform(bilinear, False), transform_spec(bilinear, False))
    assert cache.encoded_images == 2 * N_IMAGES and not torch.equal(base, other)
    scale = tiny_cfg("INPUT.RRCROP_SCALE", "(0.5, 1.0)")
    views_of(cache, images, cfg, 1)
    views_of(cache, images, scale, 1)
    assert cache.encoded_images == 4 * N_IMAGES

    half = make_cache(tmp_path / "cache", tiny, precision="fp16")
    half.features(images, build_transform(cfg, False), transform_spec(cfg, False))
    assert half.encoded_images == N_IMAGES

    # the original entries are untouched: switching back costs nothing
    again = make_cache(tmp_path / "cache", tiny)
    assert torch.equal(again.features(images, build_transform(cfg, False), transform_spec(cfg, False)), base)
    views_of(again, images, cfg, 1)
    assert again.encoded_images == 0


def test_changed_backbone_weights_invalidate_images_and_text(tmp_path, tiny, images):
    cfg = tiny_cfg()
    tfm, spec = build_transform(cfg, False), transform_spec(cfg, False)
    make_cache(tmp_path / "cache", tiny).features(images, tfm, spec)

    state = torch.load(tiny[1].weights_path, weights_only=True)
    state["visual.proj"] = state["visual.proj"] * 2.0  # a power of two: exact even through clip.load's fp16 round trip
    edited = tmp_path / "edited.pt"
    torch.save(state, edited)
    from clip_adapter.backbones import BackboneSpec, load_backbone

    edited_backbone = load_backbone(BackboneSpec("openai", str(edited)))
    other = (edited_backbone.model, edited_backbone)
    assert other[1].encoder_id != tiny[1].encoder_id
    cache = make_cache(tmp_path / "cache", other)
    feats = cache.features(images, tfm, spec)
    assert cache.encoded_images == N_IMAGES
    torch.testing.assert_close(feats, make_cache(tmp_path / "c2", tiny).features(images, tfm, spec) * 2.0)

    calls = []
    compute = lambda: calls.append(1) or torch.ones(2, 4)  # noqa: E731
    for info in (tiny[1], other[1], tiny[1], other[1]):
        cached_text_classifier(str(tmp_path / "cache"), info.encoder_id, ["a", "b"], ["a {}."], compute)
    assert len(calls) == 2


def test_text_classifier_is_cached_per_classnames_templates_and_precision(tmp_path):
    calls = []

    def compute(value):
        return lambda: calls.append(value) or torch.full((2, 4), float(value))

    root = str(tmp_path / "cache")
    w1 = cached_text_classifier(root, "enc", ["a", "b"], ["a {}."], compute(1))
    w2 = cached_text_classifier(root, "enc", ["a", "b"], ["a {}."], compute(2))
    assert calls == [1] and torch.equal(w1, w2)
    cached_text_classifier(root, "enc", ["b", "a"], ["a {}."], compute(3))
    cached_text_classifier(root, "enc", ["a", "b"], ["a photo of {}."], compute(4))
    cached_text_classifier(root, "enc", ["a", "b"], ["a {}."], compute(5), precision="fp16")
    assert calls == [1, 3, 4, 5]


# ------------------------------------------------------------------------ damaged files
def _one_warning(caplog):
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    return warnings[0].getMessage()


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncate", "edit_values", "garbage", "wrong_width"])
def test_damaged_shard_is_rebuilt_with_one_warning(tmp_path, tiny, images, monkeypatch, caplog, damage):
    monkeypatch.setattr(F, "SHARD_ROWS", 4)
    cfg = tiny_cfg()
    tfm, spec = build_transform(cfg, False), transform_spec(cfg, False)
    good = make_cache(tmp_path / "cache", tiny, batch_size=2).features(images, tfm, spec)
    victim = shards(tmp_path / "cache")[0]
    rows = len(F.decode_keys(np.load(victim, allow_pickle=False)["keys"]))
    raw = open(victim, "rb").read()
    if damage == "truncate":
        open(victim, "wb").write(raw[: len(raw) // 2])
    elif damage == "garbage":
        open(victim, "wb").write(b"\0" * len(raw))
    elif damage == "edit_values":  # a well-formed npz whose content no longer matches its checksum
        with np.load(victim, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        arrays["feats"] = arrays["feats"] + 1.0
        with open(victim, "wb") as f:
            np.savez(f, **arrays)
    else:  # self-consistent (checksum and name agree) but from an encoder of another width
        with np.load(victim, allow_pickle=False) as z:
            arrays = {"keys": z["keys"], "feats": z["feats"][:, :8].copy()}
        os.unlink(victim)
        victim = os.path.join(os.path.dirname(victim), f"shard-{F._checksum(arrays)}.npz")
        F.save_verified(victim, arrays)

    caplog.set_level(logging.WARNING, logger="clip_adapter.features")
    cache = make_cache(tmp_path / "cache", tiny, batch_size=2)
    rebuilt = cache.features(images, tfm, spec)
    assert victim in _one_warning(caplog)
    assert cache.encoded_images == rows
    torch.testing.assert_close(rebuilt, good)
    caplog.clear()
    assert torch.equal(make_cache(tmp_path / "cache", tiny).features(images, tfm, spec), rebuilt)
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


def test_damaged_text_cache_is_rebuilt(tmp_path, caplog):
    root = str(tmp_path / "cache")
    cached_text_classifier(root, "enc", ["a", "b"], ["{}"], lambda: torch.ones(2, 4))
    (path,) = [os.path.join(root, "text", f) for f in os.listdir(os.path.join(root, "text")) if f.endswith(".npz")]
    open(path, "r+b").truncate(30)
    caplog.set_level(logging.WARNING, logger="clip_adapter.features")
    w = cached_text_classifier(root, "enc", ["a", "b"], ["{}"], lambda: torch.full((2, 4), 2.0))
    assert path in _one_warning(caplog) and torch.equal(w, torch.full((2, 4), 2.0))


class _Boom:
    """Unpickling this would create a marker file: proves the cache never unpickles."""

    marker = ""

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_cache_files_are_never_unpickled(tmp_path, caplog):
    root = tmp_path / "cache"
    cached_text_classifier(str(root), "enc", ["a"], ["{}"], lambda: torch.ones(1, 4))
    (path,) = [p for p in (root / "text").iterdir() if p.suffix == ".npz"]
    _Boom.marker = str(tmp_path / "pwned")
    bomb = np.empty(1, dtype=object)
    bomb[0] = _Boom()
    with open(path, "wb") as f:
        np.savez(f, weights=bomb, checksum=np.array("x"))
    caplog.set_level(logging.WARNING, logger="clip_adapter.features")
    assert load_verified(str(path)) is None
    assert not os.path.exists(_Boom.marker) and not path.exists()


# ----------------------------------------------------------------------- concurrency
WORKER = r"""
import json, os, sys, time
import numpy as np, torch
from clip_adapter.config import setup_cfg
from clip_adapter.data.datum import Datum
from clip_adapter.data.transforms import build_transform, transform_spec
from clip_adapter.features import FeatureCache
from clip_adapter.backbones import BackboneSpec, load_backbone

job = json.loads(sys.argv[1])
info = load_backbone(BackboneSpec("openai", "tiny"))
model = info.model

def encode(x):
    time.sleep(0.05)  # slow enough that the two processes really overlap
    with torch.inference_mode():
        return model.encode_image(x).float()

cfg = setup_cfg(opts=job["input_opts"])
items = [Datum(p, 0) for p in job["paths"]]
cache = FeatureCache(job["root"], info.encoder_id, encode, "cpu", "fp32", batch_size=2, dim=info.embed_dim)
open(job["ready"], "w").close()
while not all(os.path.exists(p) for p in job["all_ready"]):
    time.sleep(0.01)
feats = cache.features(items, build_transform(cfg, True), transform_spec(cfg, True), 0)
np.save(job["out"], feats.numpy())
print(json.dumps({"encoded": cache.encoded_images}))
"""


@pytest.mark.slow
def test_two_processes_share_one_cache_without_corruption_or_duplicate_work(tmp_path, tiny, images):
    root = str(tmp_path / "cache")
    subsets = {"a": images[:7], "b": images[3:]}  # overlapping, like two seeds of one dataset
    ready = {k: str(tmp_path / f"ready-{k}") for k in subsets}
    procs = {}
    for k, items in subsets.items():
        job = {"root": root, "paths": [d.impath for d in items], "ready": ready[k], "all_ready": list(ready.values()), "out": str(tmp_path / f"{k}.npy"), "input_opts": TINY_INPUT_OPTS}
        procs[k] = subprocess.Popen([sys.executable, "-c", WORKER, json.dumps(job)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    encoded = {}
    for k, p in procs.items():
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        encoded[k] = json.loads(out.strip().splitlines()[-1])["encoded"]
    assert sum(encoded.values()) == N_IMAGES, encoded  # the union, each image once

    # the cache is valid and complete: every shard verifies, no key twice, no temp files left
    keys = []
    for path in shards(root):
        arrays = load_verified(path)
        assert arrays is not None
        keys += F.decode_keys(arrays["keys"])
    assert len(keys) == len(set(keys)) == N_IMAGES
    assert not [f for _, _, files in os.walk(root) for f in files if f.endswith(".tmp")]
    cfg = tiny_cfg()
    check = make_cache(root, tiny)
    feats = check.features(images, build_transform(cfg, True), transform_spec(cfg, True), 0)
    assert check.encoded_images == 0
    torch.testing.assert_close(torch.from_numpy(np.load(tmp_path / "a.npy")), feats[:7])
    torch.testing.assert_close(torch.from_numpy(np.load(tmp_path / "b.npy")), feats[3:])


# ------------------------------------------------------------------- trainer level


def build_trainer(data_root, out, *opts, trainer="CLIP_Adapter", seed=1, shots=4):
    """What the CLI does up to training, keeping the trainer object so its counters can be read."""
    register_all()
    cli = {"DATASET.ROOT": data_root, "OUTPUT_DIR": str(out), "SEED": seed, "TRAINER.NAME": trainer}
    cfg = setup_cfg(SMOKE_DS, trainer_cfg(trainer), cli, ["DATASET.NUM_SHOTS", str(shots), *opts])
    set_random_seed(seed)
    return TRAINERS.get(trainer)(cfg).build()


@pytest.fixture
def count_encoder(monkeypatch):
    """Images through ClipTrainer.encode_images (the only place the image encoder runs), per run."""
    counts = []
    original = ClipTrainer.encode_images

    def counting(self, images):
        counts[-1] += int(images.shape[0])
        return original(self, images)

    monkeypatch.setattr(ClipTrainer, "encode_images", counting)

    def new_run():
        counts.append(0)
        return counts

    return new_run


def adapter_weights(out, epochs):
    ckpt = torch.load(os.path.join(str(out), "clip_adapter", f"model.pth.tar-{epochs}"), weights_only=True)
    return {k: v for k, v in ckpt["state_dict"].items() if k.startswith("fc.")}


@pytest.mark.slow
def test_cached_and_exact_mode_train_the_same_clip_adapter(tmp_path, run_train, count_encoder):
    """Same (image, view) sequence -> same adapter weights and test accuracy (fp32).

    Tolerance: weights within atol 1e-6 (on this CPU they agree bit for bit), accuracy and
    per-class accuracy identical. TRAIN_VIEWS = MAX_EPOCH makes cached mode use view e in
    epoch e, which is what exact mode encodes fresh every epoch.
    """
    shots, epochs, test_images = 8, 10, 100
    common = ["FEATURES.CACHE_DIR", str(tmp_path / "cache"), "TRAINER.CLIP_ADAPTER.PREC", "fp32", "OPTIM.MAX_EPOCH", str(epochs)]
    counts = count_encoder()
    assert run_train(tmp_path / "cached", "CLIP_Adapter", *common, "FEATURES.TRAIN_VIEWS", str(epochs), cfg="tiny", shots=shots) == 0
    count_encoder()
    assert run_train(tmp_path / "exact", "CLIP_Adapter", *common, "FEATURES.MODE", "exact", cfg="tiny", shots=shots) == 0
    count_encoder()
    assert run_train(tmp_path / "again", "CLIP_Adapter", *common, "FEATURES.TRAIN_VIEWS", str(epochs), cfg="tiny", shots=shots) == 0
    count_encoder()  # views 0..2 only, reused: shows the weights do depend on the view sequence
    assert run_train(tmp_path / "fewer", "CLIP_Adapter", *common, "FEATURES.TRAIN_VIEWS", "3", cfg="tiny", shots=shots) == 0

    n_train, n_val = 10 * shots, 10 * min(shots, 4)
    per_epoch = n_train - n_train % 32  # whole batches, as Dassl's training loader
    assert counts == [epochs * n_train + n_val + test_images, epochs * per_epoch + n_val + test_images, 0, 0]

    cached, exact, again, fewer = (adapter_weights(tmp_path / k, epochs) for k in ("cached", "exact", "again", "fewer"))
    assert set(cached) == set(exact) == {"fc.0.weight", "fc.2.weight"}
    for key in cached:
        torch.testing.assert_close(cached[key], exact[key], rtol=0, atol=1e-6)
        assert torch.equal(cached[key], again[key])
        assert (cached[key] - fewer[key]).abs().max() > 1e-4
    results = {k: json.load(open(tmp_path / k / "results.json")) for k in ("cached", "exact")}
    assert results["cached"]["features_mode"] == "cached" and results["exact"]["features_mode"] == "exact"
    for key in ("accuracy", "macro_f1", "val_accuracy", "per_class_accuracy"):
        assert results["cached"][key] == results["exact"][key], key


@pytest.mark.slow
def test_other_seed_encodes_only_its_new_images(tmp_path, data_root):
    opts = ["FEATURES.CACHE_DIR", str(tmp_path / "cache"), "OPTIM.MAX_EPOCH", "2", "FEATURES.TRAIN_VIEWS", "3"]
    runs = []
    for seed in (1, 2):
        t = build_trainer(data_root, tmp_path / f"seed{seed}", *opts, seed=seed)
        t.train()
        t.evaluate("val", quiet=True)
        t.evaluate("test", quiet=True)
        runs.append(t)
    first, second = runs
    new_train = {d.impath for d in second.dm.dataset.train_x} - {d.impath for d in first.dm.dataset.train_x}
    new_val = {d.impath for d in second.dm.dataset.val} - {d.impath for d in first.dm.dataset.val}
    assert 0 < len(new_train) < len(second.dm.dataset.train_x)
    assert first.encoder_stats["images"] == 3 * 40 + 40 + 100
    assert second.encoder_stats["images"] == 3 * len(new_train) + len(new_val)  # test set: shared


def test_epoch_plan_cycles_views_and_matches_exact_order(tmp_path, data_root):
    cached = build_trainer(data_root, tmp_path / "a", "FEATURES.TRAIN_VIEWS", "3", "DATALOADER.TRAIN_X.BATCH_SIZE", "16")
    exact = build_trainer(data_root, tmp_path / "b", "FEATURES.MODE", "exact", "DATALOADER.TRAIN_X.BATCH_SIZE", "16")
    for epoch in range(7):
        (o1, v1), (o2, v2) = cached.epoch_plan(epoch), exact.epoch_plan(epoch)
        assert torch.equal(o1, o2) and len(o1) == 32  # 40 images, batch 16: the last partial batch is dropped
        assert set(v1.tolist()) == {epoch % 3} and set(v2.tolist()) == {epoch}
    assert not torch.equal(cached.epoch_plan(0)[0], cached.epoch_plan(1)[0])
    assert torch.equal(cached.epoch_plan(4)[0], build_trainer(data_root, tmp_path / "c", "FEATURES.TRAIN_VIEWS", "3",
                                                              "DATALOADER.TRAIN_X.BATCH_SIZE", "16").epoch_plan(4)[0])
    with pytest.raises(Exception, match="TRAIN_VIEWS"):
        build_trainer(data_root, tmp_path / "d", "FEATURES.TRAIN_VIEWS", "0").epoch_plan(0)


def test_default_cache_dir(tmp_path, monkeypatch):
    cfg = setup_cfg(opts=["OUTPUT_DIR", str(tmp_path / "output" / "caltech101" / "CLIP_Adapter" / "seed1")])
    assert default_cache_dir(cfg) == str(tmp_path / "output" / "feature_cache")
    monkeypatch.setenv("CLIP_ADAPTER_FEATURE_CACHE", str(tmp_path / "env"))
    assert default_cache_dir(cfg) == str(tmp_path / "env")
    cfg = setup_cfg(opts=["OUTPUT_DIR", str(tmp_path / "runs" / "x"), "FEATURES.CACHE_DIR", str(tmp_path / "mine")])
    assert default_cache_dir(cfg) == str(tmp_path / "mine")


def test_missing_image_is_a_one_line_dataset_error(tmp_path, tiny, images):
    os.unlink(images[3].impath)
    cfg = tiny_cfg()
    with pytest.raises(DatasetError, match="img_03.png"):
        make_cache(tmp_path / "cache", tiny).features(images, build_transform(cfg, False), transform_spec(cfg, False))


# ------------------------------------------------------------ data location
def test_view_seeds_follow_the_image_within_the_root_not_the_root(tmp_path):
    a, b = tmp_path / "a", tmp_path / "elsewhere" / "b"
    pa, pb = str(a / "smoke" / "images" / "x.png"), str(b / "smoke" / "images" / "x.png")
    assert F.view_identity(pa, str(a)) == F.view_identity(pb, str(b)) == "smoke/images/x.png"
    assert view_seed(pa, 3, str(a)) == view_seed(pb, 3, str(b)) != view_seed(pb, 4, str(b))
    assert view_seed(pa, 3) != view_seed(pb, 3)  # without a root, the absolute path (the old rule) differs
    assert ViewSeeds([pa], [3], str(a))(0) == view_seed(pb, 3, str(b))


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["cached", "exact"])
def test_same_data_under_another_root_trains_the_same(tmp_path, run_train, mode):
    """The data copied to another --root: identical accuracy and identical adapter weights."""
    import shutil

    opts = ["OPTIM.MAX_EPOCH", "3", "FEATURES.MODE", mode]
    root_a, root_b = tmp_path / "a", tmp_path / "copy" / "b"
    assert run_train(tmp_path / "run_a" / "out", "CLIP_Adapter", *opts, shots=2, root=str(root_a)) == 0
    shutil.copytree(root_a / "smoke", root_b / "smoke")  # the images and the split/few-shot files as they are
    assert run_train(tmp_path / "run_b" / "out", "CLIP_Adapter", *opts, shots=2, root=str(root_b)) == 0
    results = [json.loads((tmp_path / run / "out" / "results.json").read_text()) for run in ("run_a", "run_b")]
    assert results[0]["accuracy"] == results[1]["accuracy"] and results[0]["correct"] == results[1]["correct"]
    ckpts = [tmp_path / run / "out" / "clip_adapter" / "model.pth.tar-3" for run in ("run_a", "run_b")]
    states = [torch.load(p, map_location="cpu", weights_only=True)["state_dict"] for p in ckpts]
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


# ------------------------------------------------------------- reads, layout, old formats
def test_each_shard_is_read_and_verified_once_per_process(tmp_path, tiny, images, monkeypatch):
    monkeypatch.setattr(F, "SHARD_ROWS", 4)
    cfg = tiny_cfg()
    tfm, spec = build_transform(cfg, False), transform_spec(cfg, False)
    hashed, reads = [], []
    checksum, load = F._checksum, F.load_verified
    monkeypatch.setattr(F, "_checksum", lambda a: hashed.append(1) or checksum(a))
    monkeypatch.setattr(F, "load_verified", lambda path, *a, **kw: reads.append(path) or load(path, *a, **kw))

    cold = make_cache(tmp_path / "cache", tiny, batch_size=2)
    first = cold.features(images, tfm, spec)
    assert len(shards(tmp_path / "cache")) == 3
    assert (len(hashed), reads) == (3, [])  # one checksum per written shard, nothing read back
    # the same process, another trainer, the val set a subset of the test set: no file read again
    again = FeatureCache(cold.root, cold.encoder_id, cold.encode, "cpu", "fp32", batch_size=2, dim=cold.dim)
    assert torch.equal(again.features(images, tfm, spec), first) and torch.equal(again.features(images[:4], tfm, spec), first[:4])
    assert (len(hashed), reads) == (3, [])

    hashed.clear()
    warm = make_cache(tmp_path / "cache", tiny)  # a new process
    for _ in range(2):
        assert torch.equal(warm.features(images, tfm, spec), first)
    assert sorted(reads) == shards(tmp_path / "cache") and len(hashed) == 3
    # a shard replaced on disk is read and verified again
    victim = shards(tmp_path / "cache")[0]
    st = os.stat(victim)
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    other = FeatureCache(warm.root, warm.encoder_id, warm.encode, "cpu", "fp32", dim=warm.dim)
    assert torch.equal(other.features(images, tfm, spec), first)
    assert reads.count(victim) == 2 and len(hashed) == 4


def test_keys_are_stored_compactly_as_utf8(tmp_path, tiny):
    items = write_images(tmp_path / "ïmages-ü" / ("deep" * 20), n=4)
    cfg = tiny_cfg()
    make_cache(tmp_path / "cache", tiny).features(items, build_transform(cfg, False), transform_spec(cfg, False))
    (path,) = shards(tmp_path / "cache")
    with np.load(path, allow_pickle=False) as z:
        keys, feats = z["keys"], z["feats"]
    expected = [F.image_key(d.impath) for d in items]
    assert keys.dtype == np.uint8 and F.decode_keys(keys) == expected
    assert keys.nbytes < 1.1 * sum(len(k.encode()) for k in expected) < np.array(expected).nbytes / 3.5
    with pytest.raises(ValueError, match="uint8"):
        F.decode_keys(np.array(expected))


def _as_old_format(cache, fmt, spec, view, feats, items):
    """Write ``feats`` as the format-2 and format-3 caches did: one shard, keys as fixed-width '<U' strings."""
    folder = cache._folder(fmt, spec, view)
    os.makedirs(folder)
    arrays = {"keys": np.array([F.image_key(d.impath) for d in items]), "feats": feats.numpy()}
    F.save_verified(os.path.join(folder, f"shard-{F._checksum(arrays)}.npz"), arrays)
    return folder


@pytest.mark.parametrize("fmt", F.CONVERTIBLE_FORMATS)
def test_older_cache_is_converted_for_fixed_views_and_re_encoded_for_augmented_ones(tmp_path, tiny, images, caplog, fmt):
    cfg = tiny_cfg()
    test_tfm, test_spec = build_transform(cfg, False), transform_spec(cfg, False)
    train_tfm, train_spec = build_transform(cfg, True), transform_spec(cfg, True)
    fresh = make_cache(tmp_path / "fresh", tiny)
    test_feats, view_feats = fresh.features(images, test_tfm, test_spec), fresh.features(images, train_tfm, train_spec, 0)

    cache = make_cache(tmp_path / "cache", tiny)
    old_test = _as_old_format(cache, fmt, test_spec, None, test_feats, images)
    old_view = _as_old_format(cache, fmt, train_spec, 0, view_feats, images)
    caplog.set_level(logging.INFO, logger="clip_adapter.features")
    assert torch.equal(cache.features(images, test_tfm, test_spec), test_feats)
    assert cache.encoded_images == 0
    assert torch.equal(cache.features(images, train_tfm, train_spec, 0), view_feats)
    assert cache.encoded_images == N_IMAGES
    lines = [r.getMessage() for r in caplog.records if f"cache format {fmt}" in r.getMessage()]
    assert len(lines) == 2 and "converted 10 row(s)" in lines[0] and old_test in lines[0]
    assert "re-encoded" in lines[1] and old_view in lines[1]
    # once converted, the next process reads the current format alone and says nothing more
    caplog.clear()
    again = make_cache(tmp_path / "cache", tiny)
    again.features(images, test_tfm, test_spec)
    again.features(images, train_tfm, train_spec, 0)
    assert again.encoded_images == 0 and not [r for r in caplog.records if f"format {fmt}" in r.getMessage()]
