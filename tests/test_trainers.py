"""Every registered trainer on the tiny CLIP and the smoke data: gradients, equivalences, round trips, CLI."""
from __future__ import annotations

import json
import os
import re

import pytest
import torch

from clip_adapter.plugins import load_all as register_all
from clip_adapter.config import get_cfg_default, setup_cfg
from clip_adapter.engine.denormals import flush_denormal_enabled
from clip_adapter.errors import CheckpointError, ConfigError
from clip_adapter.registry import TRAINERS
from clip_adapter.utils import set_random_seed
from conftest import SMOKE_DS, TINY_BACKBONES, spy_splits, trainer_cfg

register_all()


def build(name, data_root, out, *opts, cfg="tiny", shots=4, seed=1):
    """A built trainer, exactly as the CLI builds it (same config merge, same single seeding)."""
    config = setup_cfg(
        SMOKE_DS,
        trainer_cfg(name, cfg),
        {"DATASET.ROOT": data_root, "OUTPUT_DIR": str(out), "TRAINER.NAME": name, "SEED": seed},
        ["DATASET.NUM_SHOTS", str(shots), *opts],
    )
    set_random_seed(seed)
    return TRAINERS.get(name)(config).build()


def clip_snapshot(trainer):
    return {k: v.detach().clone() for k, v in trainer.clip_model.state_dict().items()}


def read_results(folder):
    with open(os.path.join(folder, "results.json"), encoding="utf-8") as f:
        return json.load(f)


def ckpt_state(path):
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


# ------------------------------------------------------------- every trainer
def random_inputs(trainer, n):
    """What the trainer's forward_backward/logits take: raw features, or images (input_kind "images")."""
    if trainer.input_kind == "images":
        res = trainer.clip_info.input_resolution
        return torch.randn(n, 3, res, res)
    assert trainer.input_kind == "features", trainer.input_kind
    return torch.randn(n, trainer.clip_info.embed_dim) * 5


@pytest.mark.slow
@pytest.mark.parametrize("cfg", [c for _, _, c in TINY_BACKBONES])
@pytest.mark.parametrize("name", TRAINERS.names())
def test_every_trainer_trains_only_its_own_parameters(name, cfg, data_root, tmp_path):
    """timm-style, on every backbone family's offline model: forward + backward on random inputs
    (features, or images for a trainer whose gradient passes through the image tower); trainable
    params get gradients and move, the backbone gets no gradient and stays bit-identical. A trainer
    that declares the families it supports is refused in one line on the others."""
    family, model = next((f, n) for f, n, c in TINY_BACKBONES if c == cfg)
    families = TRAINERS.get(name).backbone_families
    if families and family not in families:
        with pytest.raises(ConfigError, match=f"{name} runs on the .* backbone famil"):
            build(name, data_root, tmp_path / "out", "MODEL.BACKBONE.FAMILY", family, "MODEL.BACKBONE.NAME", model)
        return
    assert os.path.isfile(trainer_cfg(name, cfg)), f"{name} needs configs/trainers/{name}/{cfg}.yaml"
    trainer = build(name, data_root, tmp_path / "out", cfg=cfg)
    before = clip_snapshot(trainer)
    assert not any(p.requires_grad for p in trainer.clip_model.parameters())
    torch.manual_seed(0)
    feats = random_inputs(trainer, 8)
    labels = torch.randint(len(trainer.classnames), (8,))
    params = {f"{m}.{n}": p for m, mod in trainer.trainable_modules().items() for n, p in mod.named_parameters()}
    if trainer.uses_training_data:
        assert params, f"{name} trains but registered no trainable module"
    if params:
        start = {k: p.detach().clone() for k, p in params.items()}
        trainer.set_mode(True)
        out = trainer.forward_backward((feats, labels))
        assert torch.isfinite(torch.tensor(out["loss"]))
        for key, p in params.items():
            assert p.grad is not None, f"{key} got no gradient"
        assert any(not torch.equal(p, start[k]) for k, p in params.items()), "an optimiser step changed nothing"
    else:
        assert trainer.logits(feats).shape == (8, len(trainer.classnames))
    for key, p in trainer.clip_model.named_parameters():
        assert p.grad is None, f"CLIP parameter {key} got a gradient"
    after = trainer.clip_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "a CLIP weight changed"


@pytest.mark.slow
@pytest.mark.parametrize("name", TRAINERS.names())
def test_every_trainer_runs_through_the_cli(name, run_train, tmp_path):
    """train.py on smoke/tiny; a trained model then reproduces its test accuracy with --eval-only."""
    out = tmp_path / name
    assert run_train(out, name) == 0
    res = read_results(out)
    assert res["trainer"] == name and res["dataset"] == "Smoke" and 0.0 <= res["accuracy"] <= 100.0
    assert res["total"] == 100
    if res["epochs"]:
        again = tmp_path / f"{name}-eval"
        assert run_train(again, name, extra=["--eval-only", "--model-dir", str(out)]) == 0
        for key in ("accuracy", "correct", "macro_f1"):
            assert read_results(again)[key] == res[key]


# ---------------------------------------------------------------- equivalences
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["visual", "text", "both"])
def test_clip_adapter_alpha_zero_is_zero_shot(kind, data_root, tmp_path):
    zs = build("ZeroshotCLIP", data_root, tmp_path / "zs")
    feats, _ = zs.split_features("test")
    expected = zs.logits(feats)
    ad = build("CLIP_Adapter", data_root, tmp_path / "ad", "TRAINER.CLIP_ADAPTER.TYPE", kind, "TRAINER.CLIP_ADAPTER.RATIO", "0.0")
    with torch.no_grad():
        assert torch.equal(ad.logits(feats), expected)
        assert torch.equal(ad.predict("test")[0], zs.predict("test")[0])
        ad.ratio = 0.5  # the same adapter blended in: now the logits must move
        assert not torch.allclose(ad.logits(feats), expected)


# CoOp's trainers/zsclip.py (CUSTOM_TEMPLATES) and trainers/imagenet_templates.py
# (IMAGENET_TEMPLATES_SELECT), written out here so the test does not depend on the project's data files.
COOP_CUSTOM_TEMPLATES = {
    "OxfordPets": "a photo of a {}, a type of pet.",
    "OxfordFlowers": "a photo of a {}, a type of flower.",
    "FGVCAircraft": "a photo of a {}, a type of aircraft.",
    "DescribableTextures": "{} texture.",
    "EuroSAT": "a centered satellite photo of {}.",
    "StanfordCars": "a photo of a {}.",
    "Food101": "a photo of {}, a type of food.",
    "SUN397": "a photo of a {}.",
    "Caltech101": "a photo of a {}.",
    "UCF101": "a photo of a person doing {}.",
    "ImageNet": "a photo of a {}.",
    "ImageNetSketch": "a photo of a {}.",
    "ImageNetV2": "a photo of a {}.",
    "ImageNetA": "a photo of a {}.",
    "ImageNetR": "a photo of a {}.",
}
COOP_IMAGENET_TEMPLATES_SELECT = [
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
]


@pytest.mark.parametrize("dataset", sorted(COOP_CUSTOM_TEMPLATES))
def test_zeroshot_clip2_prompts_are_coops(dataset):
    """ZeroshotCLIP2 = CoOp's: the seven, plus the dataset's own template unless DATASET.NAME is ImageNet."""
    from clip_adapter.registry import DATASETS

    cls = DATASETS.get(dataset)
    expected = COOP_IMAGENET_TEMPLATES_SELECT + ([] if dataset == "ImageNet" else [COOP_CUSTOM_TEMPLATES[dataset]])
    assert cls.__new__(cls).templates(TRAINERS.get("ZeroshotCLIP2").template_mode) == expected
    # ZeroshotCLIP is CoOp's single CUSTOM_TEMPLATES prompt
    assert cls.__new__(cls).templates(TRAINERS.get("ZeroshotCLIP").template_mode) == [COOP_CUSTOM_TEMPLATES[dataset]]


def test_zeroshot_clip2_run_uses_eight_prompts(data_root, tmp_path):
    zs2 = build("ZeroshotCLIP2", data_root, tmp_path / "zs2")
    assert zs2.templates == COOP_IMAGENET_TEMPLATES_SELECT + ["a photo of a {}."]


@pytest.mark.slow
def test_coop_ctx_init_starts_at_the_zero_shot_template(data_root, tmp_path):
    zs = build("ZeroshotCLIP", data_root, tmp_path / "zs")
    assert zs.templates == ["a photo of a {}."]
    feats, _ = zs.split_features("test")
    for csc in ("False", "True"):
        coop = build("CoOp", data_root, tmp_path / f"coop{csc}", "TRAINER.COOP.CTX_INIT", "a photo of a", "TRAINER.COOP.CSC", csc)
        # CoOp: the context comes from the phrase's 4 words and is shared even with CSC True
        assert tuple(coop.prompt_learner.ctx.shape) == (4, coop.clip_model.ln_final.weight.shape[0])
        assert TRAINERS.get("CoOp").transfer_blocker(coop.cfg) is None
        with torch.no_grad():
            torch.testing.assert_close(coop.class_text_features(), zs.text_weights, rtol=0, atol=1e-6)
            torch.testing.assert_close(coop.logits(feats), zs.logits(feats), rtol=0, atol=1e-4)
    # a random context is not the template
    coop = build("CoOp", data_root, tmp_path / "rand")
    with torch.no_grad():
        assert not torch.allclose(coop.class_text_features(), zs.text_weights, atol=1e-3)


@pytest.mark.slow
def test_coop_amp_step_scales_and_updates_the_context(data_root, tmp_path):
    """The PREC amp branch (autocast + GradScaler), exercised on CPU's autocast since CUDA is absent here."""
    coop = build("CoOp", data_root, tmp_path / "amp")
    assert coop.precision == "fp32" and coop.scaler is None  # fp16 asked for, no CUDA: fp32
    coop.precision, coop.scaler = "amp", torch.amp.GradScaler("cpu")
    before = coop.prompt_learner.ctx.detach().clone()
    out = coop.forward_backward((torch.randn(8, coop.clip_info.embed_dim), torch.randint(10, (8,))))
    assert torch.isfinite(torch.tensor(out["loss"]))
    assert not torch.equal(coop.prompt_learner.ctx, before)
    assert all(p.grad is None for p in coop.clip_model.parameters())


def _write_clip(path, **arch):
    """A small clip.model.CLIP of a given shape, saved as a state dict that clip.load accepts."""
    from clip_adapter.backbones.openai import _clip

    base = dict(context_length=77, vocab_size=49408, transformer_width=64, transformer_heads=1, transformer_layers=1)
    torch.manual_seed(0)
    model = _clip().model.CLIP(**base, **arch)
    torch.save({k: v.float() for k, v in model.state_dict().items()}, path)
    return str(path)


@pytest.mark.parametrize(
    "arch",
    [
        # RN50-shaped: a ModifiedResNet with attention pooling projecting to 1024
        dict(embed_dim=1024, image_resolution=32, vision_layers=(1, 1, 1, 1), vision_width=8, vision_patch_size=None),
        # ViT-B-shaped: a vision transformer projecting to 512
        dict(embed_dim=512, image_resolution=32, vision_layers=1, vision_width=64, vision_patch_size=16),
    ],
    ids=["rn50-shaped-1024", "vit-b-shaped-512"],
)
@pytest.mark.slow
def test_adapter_width_follows_the_backbone(arch, data_root, tmp_path):
    weights = _write_clip(tmp_path / "clip.pt", **arch)
    trainer = build("CLIP_Adapter", data_root, tmp_path / "out", "MODEL.BACKBONE.NAME", weights, "TRAINER.CLIP_ADAPTER.TYPE", "both")
    width = arch["embed_dim"]
    assert trainer.clip_info.embed_dim == width
    for module in trainer.trainable_modules().values():
        assert module.fc[0].weight.shape == (width // 4, width)
        assert module.fc[2].weight.shape == (width, width // 4)
    feats, _ = trainer.split_features("test")  # the real encoder, end to end
    assert feats.shape == (100, width)
    assert trainer.logits(feats).shape == (100, 10)


# ----------------------------------------------------------------- round trips
@pytest.fixture(scope="module")
def adapter_run(data_root, tmp_path_factory):
    """One CLIP_Adapter run with both adapters (TYPE both), trained through the CLI."""
    from clip_adapter.app.train import main

    out = tmp_path_factory.mktemp("adapter_run")
    argv = ["--root", data_root, "--seed", "1", "--trainer", "CLIP_Adapter", "--dataset-config-file", SMOKE_DS,
            "--config-file", trainer_cfg("CLIP_Adapter"), "--output-dir", str(out), "DATASET.NUM_SHOTS", "8",
            "TRAINER.CLIP_ADAPTER.TYPE", "both"]
    assert main(argv) == 0
    return out


@pytest.mark.slow
def test_clip_adapter_eval_only_reproduces_the_test_accuracy(adapter_run, run_train, data_root, tmp_path):
    b = tmp_path / "eval"
    assert run_train(b, "CLIP_Adapter", "TRAINER.CLIP_ADAPTER.TYPE", "both", shots=8, extra=["--eval-only", "--model-dir", str(adapter_run)]) == 0
    ra, rb = read_results(adapter_run), read_results(b)
    for key in ("accuracy", "correct", "macro_f1"):
        assert ra[key] == rb[key]
    assert rb["eval_only"] and rb["model_dir"] == str(adapter_run)
    # the loaded weights are the trained ones (not a fresh initialisation), alpha included
    fresh = build("CLIP_Adapter", data_root, tmp_path / "fresh", "TRAINER.CLIP_ADAPTER.TYPE", "both", "TRAINER.CLIP_ADAPTER.RATIO", "0.7", shots=8)
    start = {n: {k: v.clone() for k, v in m.state_dict().items()} for n, m in fresh.trainable_modules().items()}
    fresh.load_model(str(adapter_run))
    assert fresh.ratio == 0.2  # the alpha it was trained with, stored in the checkpoint
    assert set(fresh.trainable_modules()) == {"clip_adapter", "text_adapter"}
    for name, module in fresh.trainable_modules().items():
        saved = ckpt_state(adapter_run / name / "model.pth.tar-15")
        assert saved["blend_ratio"].item() == 0.2
        for key, value in module.state_dict().items():
            assert torch.equal(value, saved[key])
            assert not torch.equal(value, start[name][key])


def test_init_weights_loads_an_adapter(adapter_run, data_root, tmp_path):
    path = adapter_run / "clip_adapter" / "model.pth.tar-15"
    saved = ckpt_state(path)
    for source in (str(path), str(adapter_run)):  # a checkpoint file or a run folder
        trainer = build("CLIP_Adapter", data_root, tmp_path / "b", "MODEL.INIT_WEIGHTS", source, "TRAINER.CLIP_ADAPTER.RATIO", "0.5")
        state = trainer.visual_adapter.state_dict()
        assert all(torch.equal(state[k], saved[k]) for k in state)
        assert trainer.ratio == 0.5  # starting weights only: the configured alpha still applies
    # a checkpoint of another module is refused, not silently ignored
    other = tmp_path / "other.pth.tar"
    torch.save({"state_dict": {"weight": torch.zeros(10, 64), "bias": torch.zeros(10)}, "epoch": 1}, other)
    with pytest.raises(CheckpointError, match="fc.0.weight"):
        build("CLIP_Adapter", data_root, tmp_path / "c", "MODEL.INIT_WEIGHTS", str(other))


# ---------------------------------------------------- selection on validation
@pytest.mark.slow
def test_alpha_search_trains_per_value_and_selects_on_val(data_root, tmp_path, monkeypatch):
    out = tmp_path / "search"
    trainer = build("CLIP_Adapter", data_root, out, "TRAINER.CLIP_ADAPTER.SEARCH_RATIOS", "[0.0, 0.6]", "OPTIM.MAX_EPOCH", "4", shots=8)
    seen = spy_splits(trainer, monkeypatch)
    trainer.train()
    assert "test" not in seen
    with open(out / "alpha_search.json", encoding="utf-8") as f:
        record = json.load(f)
    accs = {r["value"]: r["score"] for r in record["tried"]}
    assert set(accs) == {0.0, 0.6} and record["knob"] == "TRAINER.CLIP_ADAPTER.RATIO"
    assert accs[record["chosen"]] == max(accs.values())
    assert trainer.ratio == record["chosen"]
    assert trainer.selection_record() == {"protocol": "fewshot_val", "searches": [record]}
    record["best"] = record["chosen"]
    # alpha 0 trains nothing that matters: its val accuracy is zero-shot's
    zs = build("ZeroshotCLIP", data_root, tmp_path / "zs", shots=8)
    assert accs[0.0] == zs.evaluate("val", quiet=True)["accuracy"]
    # the deployed checkpoint carries the chosen alpha, and the candidates are kept for inspection
    assert ckpt_state(out / "clip_adapter" / "model.pth.tar-4")["blend_ratio"].item() == record["best"]
    assert (out / "alpha_search" / "ratio_0.6" / "clip_adapter" / "model.pth.tar-4").is_file()


def test_search_refuses_a_validation_split_that_is_the_test_set(data_root, tmp_path):
    trainer = build("CLIP_Adapter", data_root, tmp_path / "a", "TRAINER.CLIP_ADAPTER.SEARCH_RATIOS", "[0.2, 0.4]")
    trainer.dm.dataset.val_is_test = True
    with pytest.raises(ConfigError, match="validation split is its test set"):
        trainer.train()
    probe = build("LinearProbeCLIP", data_root, tmp_path / "b")
    probe.dm.dataset.val_is_test = True
    with pytest.raises(ConfigError, match="C cannot be chosen"):
        probe.train()


@pytest.mark.slow
def test_val_that_is_the_test_split_is_scored_once(data_root, tmp_path, monkeypatch):
    """ImageNet's val is its test set: the end of a run reads and scores those images once, and the
    streamed metrics equal the ones of the whole logits matrix."""
    from clip_adapter.engine.evaluator import classification_metrics

    trainer = build("CLIP_Adapter", data_root, tmp_path / "a", "DATALOADER.TEST.BATCH_SIZE", "7", "OPTIM.MAX_EPOCH", "2")
    trainer.train()
    ds = trainer.dm.dataset
    ds.val, ds.val_is_test = ds.test, True
    scored, gathered = [], []
    predict_batches, gather = trainer.predict_batches, trainer.cache._gather
    monkeypatch.setattr(trainer, "predict_batches", lambda split: scored.append(split) or predict_batches(split))
    monkeypatch.setattr(trainer.cache, "_gather", lambda folder, keys: gathered.append(len(keys)) or gather(folder, keys))
    test, val = trainer.final_metrics(with_val=True)
    assert scored == ["test"] and gathered == [len(ds.test)]
    assert val["accuracy"] == test["accuracy"] and val["macro_f1"] == test["macro_f1"]
    whole = classification_metrics(*trainer.predict("test"), ds.classnames, per_class=bool(trainer.cfg.TEST.PER_CLASS_RESULT))
    assert test == whole
    # a val split of its own is scored on its own
    other = build("CLIP_Adapter", data_root, tmp_path / "b")
    scored.clear()
    predict_batches = other.predict_batches
    monkeypatch.setattr(other, "predict_batches", lambda split: scored.append(split) or predict_batches(split))
    other.final_metrics(with_val=True)
    assert scored == ["val", "test"]


@pytest.mark.slow
def test_linear_probe_follows_coops_search_on_val(data_root, tmp_path, monkeypatch):
    out = tmp_path / "lp"
    trainer = build("LinearProbeCLIP", data_root, out, "TRAINER.LINEAR_PROBE.C_GRID", "[100.0, 0.01, 1e-06]", "TRAINER.LINEAR_PROBE.SEARCH_STEPS", "2")
    seen = spy_splits(trainer, monkeypatch)
    trainer.train()
    assert set(seen) == {"train", "val"}
    with open(out / "c_search.json", encoding="utf-8") as f:
        record = json.load(f)
    assert trainer.selection_record() == {"protocol": "fewshot_val", "searches": [record]}
    tried = [{"C": t["value"], "val_accuracy": t["score"]} for t in record["tried"]]
    record["best"] = record["chosen"]
    assert [t["C"] for t in tried[:3]] == [100.0, 0.01, 1e-06]
    assert len(tried) == 3 + 2 * 2  # the grid, then two ends per bisection step
    coarse = max(tried[:3], key=lambda t: t["val_accuracy"])  # first of the best, as np.argmax
    assert tried[3]["C"] == pytest.approx(coarse["C"] / 10) and tried[4]["C"] == pytest.approx(coarse["C"] * 10)
    assert record["best"] in [t["C"] for t in tried[-2:]]
    # the deployed head reproduces scikit-learn's predictions at the chosen C
    from clip_adapter.trainers.linear_probe import fit_logreg

    xtr, ytr = trainer._numpy("train")
    xte, _ = trainer._numpy("test")
    clf = fit_logreg(xtr, ytr, record["best"], 1000)
    logits, _ = trainer.predict("test")
    assert torch.equal(logits.argmax(1), torch.as_tensor(clf.predict(xte)))


def test_linear_probe_head_matches_sklearn_including_binary():
    import numpy as np

    from clip_adapter.trainers.linear_probe import as_linear, fit_logreg

    rng = np.random.RandomState(0)
    x = rng.randn(60, 5)
    for labels, num_classes in ((rng.randint(0, 3, 60), 3), (rng.randint(0, 2, 60) * 2, 4)):
        # the second case is binary with classes {0, 2} of 4: classes 1 and 3 must never win
        clf = fit_logreg(x, labels, 1.0, 1000)
        head = as_linear(clf, num_classes, 5)
        pred = head(torch.as_tensor(x, dtype=torch.float32)).argmax(1).numpy()
        assert (pred == clf.predict(x)).all()


# ---------------------------------------------------------------- bad inputs
@pytest.mark.parametrize(
    "opts, message",
    [
        (("TRAINER.CLIP_ADAPTER.TYPE", "textual"), "TYPE must be one of visual, text, both"),
        (("TRAINER.CLIP_ADAPTER.RATIO", "1.5"), r"RATIO must be an alpha in \[0, 1\]"),
        (("TRAINER.CLIP_ADAPTER.REDUCTION", "1000"), "REDUCTION"),
        (("TRAINER.CLIP_ADAPTER.SEARCH_RATIOS", "[0.2, 2.0]"), "SEARCH_RATIOS"),
    ],
)
def test_bad_clip_adapter_settings_fail_with_one_line(opts, message, run_train, tmp_path, capsys):
    assert run_train(tmp_path / "bad", "CLIP_Adapter", *opts) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    assert re.search(message, err[0]), err[0]


def test_ratio_table_lookup():
    from clip_adapter.trainers.clip_adapter import resolve_ratio

    cfg = get_cfg_default()
    cfg.DATASET.NAME = "DescribableTextures"
    assert resolve_ratio(cfg) == (0.2, "TRAINER.CLIP_ADAPTER.RATIO")
    cfg.TRAINER.CLIP_ADAPTER.RATIO = -1.0
    with pytest.raises(ConfigError, match="no entry for 'DescribableTextures'"):
        resolve_ratio(cfg)
    cfg.merge_from_file(trainer_cfg("CLIP_Adapter", "rn50"))
    assert resolve_ratio(cfg) == (0.6, "TRAINER.CLIP_ADAPTER.RATIO_TABLE.DescribableTextures")
    cfg.DATASET.NAME = "MyOwnData"
    assert resolve_ratio(cfg)[0] == 0.2


def test_backbone_configs_share_one_alpha_table():
    tables = []
    for name in ("rn50", "rn101", "vit_b32", "vit_b16"):
        cfg = get_cfg_default()
        cfg.merge_from_file(trainer_cfg("CLIP_Adapter", name))
        assert cfg.TRAINER.CLIP_ADAPTER.RATIO < 0 and cfg.OPTIM.MAX_EPOCH == 200
        tables.append(dict(cfg.TRAINER.CLIP_ADAPTER.RATIO_TABLE))
    assert all(t == tables[0] for t in tables)
    assert {"ImageNet", "Caltech101", "DescribableTextures", "EuroSAT", "DEFAULT"} <= set(tables[0])


# ------------------------------------------------------------------- subnormal floats
def subnormal_entries(trainer):
    return sum(int(((t != 0) & (t.abs() < torch.finfo(t.dtype).tiny)).sum()) for t in trainer.training_state() if t.is_floating_point())


def run_with_dead_units(data_root, out, monkeypatch=None):
    """CLIP-Adapter whose first 8 hidden units start dead with subnormal weights, as weight decay
    leaves them after tens of thousands of steps (a 200-epoch ImageNet-size run); 40 steps on."""
    trainer = build("CLIP_Adapter", data_root, out, "OPTIM.MAX_EPOCH", "20", "OPTIM.WEIGHT_DECAY", "5e-4", shots=8)
    fc = trainer.visual_adapter.fc
    with torch.no_grad():
        fc[0].weight[:8] = torch.linspace(-3e-39, 3e-39, fc[0].weight[:8].numel()).view(8, -1)
        fc[2].weight[:, :8] = 0.0  # nothing downstream: only weight decay moves those weights
    assert subnormal_entries(trainer) > 0
    modes = []
    step = trainer.forward_backward

    def recording(batch):
        modes.append(flush_denormal_enabled())
        return step(batch)

    trainer.forward_backward = recording
    trainer.train()
    return trainer, modes


def test_cpu_training_carries_no_subnormal_floats_and_restores_the_flush_mode(data_root, tmp_path, monkeypatch):
    """The mechanism, asserted (timing-free): without the two measures subnormal weights/momentum
    persist to the end of the run; with them none is left, and the CPU mode is restored after."""
    import clip_adapter.engine.trainer as engine

    with monkeypatch.context() as m:  # neither measure: the slow state is really reached
        m.setattr(torch, "set_flush_denormal", lambda on: False)
        m.setattr(engine, "zero_subnormals", lambda tensors: 0)
        control, modes = run_with_dead_units(data_root, tmp_path / "control")
        assert subnormal_entries(control) > 0 and not any(modes)

    assert not flush_denormal_enabled()
    trainer, modes = run_with_dead_units(data_root, tmp_path / "flushed")
    assert subnormal_entries(trainer) == 0
    assert modes and all(modes) and not flush_denormal_enabled()
    # the weights that matter trained the same way (only values below 1.2e-38 differ)
    torch.testing.assert_close(trainer.visual_adapter.fc[0].weight[8:], control.visual_adapter.fc[0].weight[8:], rtol=1e-5, atol=1e-6)


def test_flush_mode_is_restored_when_training_fails(data_root, tmp_path):
    trainer = build("CLIP_Adapter", data_root, tmp_path / "a", "OPTIM.MAX_EPOCH", "2")

    def boom(batch):
        raise RuntimeError("boom")

    trainer.forward_backward = boom
    with pytest.raises(RuntimeError, match="boom"):
        trainer.train()
    assert not flush_denormal_enabled()


def test_step_mode_covers_the_steps_never_the_image_encoder(data_root, tmp_path):
    """Exact mode encodes images between steps: those passes run in the normal mode (flushing off, all
    threads), so their features are bit for bit what a cache fill computes; CLIP-Adapter's steps run
    flushed and on one thread (small operations, see TrainerBase.step_threads)."""
    trainer = build("CLIP_Adapter", data_root, tmp_path / "a", "OPTIM.MAX_EPOCH", "2", "FEATURES.MODE", "exact", shots=8)
    seen = {"encoder": [], "step": []}
    encode, step = trainer.encode_images, trainer.forward_backward
    mode = lambda: (flush_denormal_enabled(), torch.get_num_threads())  # noqa: E731
    trainer.encode_images = lambda images: seen["encoder"].append(mode()) or encode(images)
    trainer.forward_backward = lambda batch: seen["step"].append(mode()) or step(batch)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        trainer.train()
        assert seen["encoder"] and set(seen["encoder"]) == {(False, 2)}
        assert seen["step"] and set(seen["step"]) == {(True, 1)}
        assert mode() == (False, 2)
    finally:
        torch.set_num_threads(threads)
