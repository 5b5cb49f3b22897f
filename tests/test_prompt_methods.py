"""CoCoOp, KgCoOp, ProGrad and MaPLe against their formulas written out here, on hand-made tensors and
tiny random CLIPs; the images-in engine path; base-to-novel through train.py for every method."""
from __future__ import annotations

import json
import os

import pytest
import torch
import torch.nn.functional as F

from clip_adapter.config import setup_cfg
from clip_adapter.errors import ConfigError
from clip_adapter.backbones.openai import OpenAIBackbone, _clip
from clip_adapter.models.deep_prompts import MultiModalPromptLearner, vision_tower_deep
from clip_adapter.models.prompt_learner import ConditionalPromptLearner, PromptLearner, PromptTextEncoder
from clip_adapter.registry import TRAINERS
from clip_adapter.utils import set_random_seed
from conftest import SMOKE_DS, trainer_cfg

CLASSES = ["apple", "sea_turtle", "golden retriever dog"]
METHODS = ["CoCoOp", "KgCoOp", "ProGrad", "MaPLe"]


@pytest.fixture(scope="module")
def tiny_clip():
    """The offline OpenAI-format tiny CLIP model (behind its backbone, as ``trainer.clip_model`` is)."""
    from conftest import load_tiny

    return load_tiny("openai", "tiny").model


def small_clip(vision_layers=3, text_layers=3, resnet=False):
    """An in-memory clip.model.CLIP with 3 layers per tower (room for a prompt depth below the top)."""
    torch.manual_seed(0)
    vision = dict(vision_layers=(1, 1, 1, 1), vision_width=8, vision_patch_size=None) if resnet else \
        dict(vision_layers=vision_layers, vision_width=64, vision_patch_size=8)
    model = _clip().model.CLIP(embed_dim=32, image_resolution=32, context_length=77, vocab_size=49408,
                               transformer_width=64, transformer_heads=4, transformer_layers=text_layers, **vision)
    model = model.float().eval().requires_grad_(False)
    OpenAIBackbone.from_model(model, "small-test-vit")  # behind the seam, as a loaded model is
    return model


def build(name, data_root, out, *opts, shots=4, seed=1):
    cfg = setup_cfg(SMOKE_DS, trainer_cfg(name), {"DATASET.ROOT": data_root, "OUTPUT_DIR": str(out), "TRAINER.NAME": name,
                                                   "SEED": seed}, ["DATASET.NUM_SHOTS", str(shots), *opts])
    set_random_seed(seed)
    return TRAINERS.get(name)(cfg).build()


def unit(x):
    return x / x.norm(dim=-1, keepdim=True)


# ------------------------------------------------------------------------- CoCoOp
def test_cocoop_context_is_ctx_plus_meta_net_of_each_image(tiny_clip):
    torch.manual_seed(0)
    pl = ConditionalPromptLearner(tiny_clip, CLASSES, embed_dim=64, n_ctx=4)
    assert set(pl.state_dict()) == {"ctx", "meta_net.linear1.weight", "meta_net.linear1.bias",
                                    "meta_net.linear2.weight", "meta_net.linear2.bias"}  # CoCoOp's keys
    f = unit(torch.randn(3, 64))
    out = pl(f)
    assert out.shape == (3, len(CLASSES), 77, 64)
    l1, l2 = pl.meta_net.linear1, pl.meta_net.linear2
    plain = pl()  # the unshifted prompts [C, L, w]
    for i in range(3):
        shift = torch.relu(f[i] @ l1.weight.t() + l1.bias) @ l2.weight.t() + l2.bias  # Linear -> ReLU -> Linear
        for c in range(len(CLASSES)):
            torch.testing.assert_close(out[i, c, 1:5], pl.ctx + shift, rtol=0, atol=1e-6)
            assert torch.equal(out[i, c, :1], plain[c, :1]) and torch.equal(out[i, c, 5:], plain[c, 5:])
    assert l1.weight.shape == (64 // 16, 64) and l2.weight.shape == (64, 64 // 16)


def test_cocoop_logits_follow_the_per_image_formula_in_any_chunking(data_root, tmp_path):
    """logits_i = scale * norm(f_i) . norm(text(ctx + meta_net(norm f_i)))^T, one image at a time
    through the full (untrimmed) tower; TEXT_CHUNK and the backward grouping change nothing."""
    tr = build("CoCoOp", data_root, tmp_path / "a", "TRAINER.COCOOP.TEXT_CHUNK", "7")
    torch.manual_seed(1)
    feats = torch.randn(5, 64) * 3
    labels = torch.randint(10, (5,))
    pl, full = tr.prompt_learner, PromptTextEncoder(tr.clip_model)
    rows = []
    for i in range(5):
        f = unit(feats[i : i + 1])
        txt = unit(full(pl(f)[0], pl.tokenized_prompts))
        rows.append(tr.logit_scale * f @ txt.t())
    expected = torch.cat(rows)
    with torch.no_grad():
        torch.testing.assert_close(tr.logits(feats), expected, rtol=0, atol=1e-4)
    # the grouped backward (TEXT_CHUNK 7 < 10 classes: one image per group) = the whole batch's gradient
    tr.zero_grads()
    F.cross_entropy(tr.logits(feats), labels).backward()
    whole = [p.grad.clone() for p in pl.parameters()]
    for group in tr.optimizer("prompt_learner").param_groups:
        group["lr"] = 0.0  # the step leaves the weights alone: compare the gradients it used
    tr.forward_backward((feats, labels))
    for p, g in zip(pl.parameters(), whole):
        torch.testing.assert_close(p.grad, g, rtol=1e-4, atol=1e-6)


def test_cocoop_bad_text_chunk_is_one_line(run_train, tmp_path, capsys):
    assert run_train(tmp_path / "bad", "CoCoOp", "TRAINER.COCOOP.TEXT_CHUNK", "0") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "TRAINER.COCOOP.TEXT_CHUNK must be >= 1" in err[0]


# ------------------------------------------------------------------------- KgCoOp
def test_kgcoop_term_on_hand_made_tensors():
    from clip_adapter.trainers.kgcoop import text_knowledge_distance

    a = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    b = torch.tensor([[4.0, 3.0], [0.0, 2.0]])
    # cos = 24/25 and 0 -> 1 - mean = 1 - 0.48
    assert text_knowledge_distance(a, b).item() == pytest.approx(1 - (24 / 25 + 0) / 2)
    assert text_knowledge_distance(a, a).item() == pytest.approx(0.0, abs=1e-7)


def test_kgcoop_loss_is_ce_plus_w_times_the_distance_to_the_handcrafted_prompt(data_root, tmp_path):
    tr = build("KgCoOp", data_root, tmp_path / "kg", "TRAINER.COOP.W", "3.0")
    # CTX_INIT "a photo of a" *is* the dataset's template: the knowledge term starts at zero
    with torch.no_grad():
        w = tr.class_text_features()
        assert (1 - (w * tr.text_weights).sum(1).mean()).abs().item() < 1e-6
        tr.prompt_learner.ctx.add_(0.05 * torch.randn_like(tr.prompt_learner.ctx))
        w = tr.class_text_features()
        torch.manual_seed(2)
        feats, labels = torch.randn(6, 64), torch.randint(10, (6,))
        expected = F.cross_entropy(tr.logit_scale * unit(feats) @ w.t(), labels) + 3.0 * (1 - (w * unit(tr.text_weights)).sum(1).mean())
    out = tr.forward_backward((feats, labels))
    assert out["loss"] == pytest.approx(expected.item(), rel=1e-5)
    assert out["kg"] > 0 and tr.result_fields() == {"W": 3.0}


# ------------------------------------------------------------------------ ProGrad
def test_prograd_projection_on_hand_made_vectors():
    from clip_adapter.trainers.prograd import project_gradient

    g, r = torch.tensor([1.0, 2.0]), torch.tensor([-1.0, 0.0])  # conflict: g . r = -1
    out = project_gradient(g, r, lam=1.0)
    torch.testing.assert_close(out, g - (g @ r / (r @ r)) * r)  # = [0, 2]
    assert out @ r == 0
    torch.testing.assert_close(project_gradient(g, r, lam=0.5), torch.tensor([0.5, 2.0]))
    agree = torch.tensor([1.0, 1.0])  # no conflict: g . r = 3 > 0, unchanged
    assert torch.equal(project_gradient(g, agree), g)
    torch.testing.assert_close(project_gradient(g, agree, always=True), g - 1.5 * agree)  # vertical_grad
    assert torch.equal(project_gradient(g, torch.zeros(2)), g)


def test_prograd_distillation_is_kl_from_zero_shot_to_the_student():
    """The cross-entropy form has KL(p_zs || p_student)'s gradient: they differ by T^2 * H(p_zs)."""
    from clip_adapter.trainers.prograd import distill_loss

    torch.manual_seed(0)
    s, t, temp = torch.randn(4, 6, requires_grad=True), torch.randn(4, 6), 2.0
    p = F.softmax(t / temp, -1)
    kl = F.kl_div(F.log_softmax(s / temp, -1), p, reduction="batchmean") * temp ** 2
    entropy = -(p * p.log()).sum(1).mean() * temp ** 2
    torch.testing.assert_close(distill_loss(s, t, temp), kl + entropy)
    g1, = torch.autograd.grad(distill_loss(s, t, temp), s)
    g2, = torch.autograd.grad(kl, s)
    torch.testing.assert_close(g1, g2)


@pytest.mark.parametrize("loss, case", [("prograd", "conflict"), ("prograd", "agree"), ("vertical_grad", "agree")])
def test_prograd_step_uses_the_projected_cross_entropy_gradient(loss, case, data_root, tmp_path):
    """One ProGrad step on the tiny model: the context's gradient is g_ce projected off g_kl when they
    conflict (random labels here), g_ce itself when they agree (the zero-shot prediction's labels);
    vertical_grad projects either way."""
    from clip_adapter.trainers.prograd import distill_loss

    tr = build("ProGrad", data_root, tmp_path / loss, "LOSS.NAME", loss, "LOSS.LAMBDA", "0.7", "LOSS.T", "2.0")
    ctx = tr.prompt_learner.ctx
    torch.manual_seed(3)
    feats = torch.randn(8, 64) * 4
    teacher = tr.logit_scale * unit(feats) @ tr.teacher_text.t()
    labels = torch.randint(10, (8,)) if case == "conflict" else teacher.argmax(1)
    student = tr.logits(feats)
    g_ce, = torch.autograd.grad(F.cross_entropy(student, labels), ctx, retain_graph=True)
    g_kl, = torch.autograd.grad(distill_loss(student, teacher, 2.0), ctx)
    assert bool((g_ce * g_kl).sum() < 0) == (case == "conflict")
    if loss == "vertical_grad" or case == "conflict":
        expected = g_ce - 0.7 * ((g_ce * g_kl).sum() / (g_kl * g_kl).sum()) * g_kl
    else:
        expected = g_ce
    before = ctx.detach().clone()
    tr.forward_backward((feats, labels))
    torch.testing.assert_close(ctx.grad, expected, rtol=1e-4, atol=1e-7)
    assert not torch.equal(ctx, before)


def test_prograd_pads_the_phrase_into_the_last_context_slots(tiny_clip):
    pl = PromptLearner(tiny_clip, CLASSES, n_ctx=6, ctx_init="a photo of a", init_rule="pad")
    phrase = tiny_clip.token_embedding(_clip().tokenize("a photo of a"))[0, 1:5]
    assert pl.n_ctx == 6 and torch.equal(pl.ctx[:2], torch.zeros(2, 64)) and torch.equal(pl.ctx[2:], phrase)
    assert torch.equal(pl.tokenized_prompts, _clip().tokenize([f"X X a photo of a {c.replace('_', ' ')}." for c in CLASSES]))
    with pytest.raises(ConfigError, match="N_CTX \\(3\\) must be at least the 4 tokens"):
        PromptLearner(tiny_clip, CLASSES, n_ctx=3, ctx_init="a photo of a", init_rule="pad")


def test_prograd_bad_loss_name(run_train, tmp_path, capsys):
    assert run_train(tmp_path / "bad", "ProGrad", "LOSS.NAME", "progard") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "LOSS.NAME must be one of prograd, vertical_grad, kd" in err[0]


# -------------------------------------------------------------------------- MaPLe
def test_maple_learns_the_first_phrase_tokens_and_keeps_the_rest_as_text(tiny_clip):
    pl = MultiModalPromptLearner(tiny_clip, CLASSES, n_ctx=2, ctx_init="a photo of a", depth=2)
    tokens = _clip().tokenize([f"a photo of a {c.replace('_', ' ')}." for c in CLASSES])
    assert torch.equal(pl.tokenized_prompts, tokens)
    assert torch.equal(pl.ctx, tiny_clip.token_embedding(tokens)[0, 1:3])
    assert torch.equal(pl()[0], tiny_clip.token_embedding(tokens))  # before training: the template itself
    keys = set(pl.state_dict())
    assert keys == {"ctx", "proj.weight", "proj.bias", "compound_prompts_text.0",
                    "compound_prompt_projections.0.weight", "compound_prompt_projections.0.bias"}  # MaPLe's names


def test_maple_towers_without_prompts_are_clips_encoders(tiny_clip):
    torch.manual_seed(0)
    images = torch.randn(3, 3, 32, 32)
    assert torch.equal(vision_tower_deep(tiny_clip.visual, images), tiny_clip.encode_image(images))
    pl = MultiModalPromptLearner(tiny_clip, CLASSES, n_ctx=2, ctx_init="a photo of a", depth=1)  # J = 1: shallow
    prompts, shallow, deep_text, deep_vision = pl()
    assert deep_text == [] and deep_vision == [] and shallow.shape == (2, 64)
    for trim in (False, True):
        got = PromptTextEncoder(tiny_clip, trim=trim)(prompts, pl.tokenized_prompts, deep=deep_text)
        want = tiny_clip.encode_text(pl.tokenized_prompts)
        if trim:
            torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
        else:
            assert torch.equal(got, want)


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_maple_prompts_sit_in_layers_below_j_coupled_text_to_vision(depth):
    """Before block i < J the context positions hold P_i (text) and F_i(P_i) (vision, the last n
    tokens); at i >= J they hold what block i-1 produced; layer 0 gets ctx and proj(ctx)."""
    model = small_clip()
    torch.manual_seed(1)
    pl = MultiModalPromptLearner(model, CLASSES, n_ctx=2, ctx_init="", depth=depth)
    prompts, shallow, deep_text, deep_vision = pl()
    assert len(deep_text) == depth - 1
    for f, p, v in zip(pl.compound_prompt_projections, pl.compound_prompts_text, deep_vision):
        torch.testing.assert_close(v, p @ f.weight.t() + f.bias)  # the coupling function F_i
    seen = {"text": {}, "vision": {}}

    def spy(tower, i):
        def hook(_module, args, output):
            seen[tower][i] = (args[0].detach().clone(), output.detach().clone())
        return hook

    handles = [b.register_forward_hook(spy("text", i)) for i, b in enumerate(model.transformer.resblocks)]
    handles += [b.register_forward_hook(spy("vision", i)) for i, b in enumerate(model.visual.transformer.resblocks)]
    images = torch.randn(2, 3, 32, 32)
    PromptTextEncoder(model)(prompts, pl.tokenized_prompts, deep=deep_text)
    vision_tower_deep(model.visual, images, shallow, deep_vision)
    for h in handles:
        h.remove()
    n = 2
    text_in0 = seen["text"][0][0]  # LND
    torch.testing.assert_close(text_in0[1 : 1 + n], (pl.ctx + model.positional_embedding[1 : 1 + n]).unsqueeze(1).expand(-1, 3, -1))
    vis_in0 = seen["vision"][0][0]
    torch.testing.assert_close(vis_in0[-n:], model.visual.ln_pre(shallow).unsqueeze(1).expand(-1, 2, -1))
    for i in range(1, 3):
        t_in, t_prev = seen["text"][i][0], seen["text"][i - 1][1]
        v_in, v_prev = seen["vision"][i][0], seen["vision"][i - 1][1]
        assert torch.equal(t_in[:1], t_prev[:1]) and torch.equal(t_in[1 + n :], t_prev[1 + n :])
        assert torch.equal(v_in[:-n], v_prev[:-n])
        if i < depth:
            assert torch.equal(t_in[1 : 1 + n], deep_text[i - 1].unsqueeze(1).expand(-1, 3, -1))
            assert torch.equal(v_in[-n:], deep_vision[i - 1].unsqueeze(1).expand(-1, 2, -1))
        else:
            assert torch.equal(t_in, t_prev) and torch.equal(v_in, v_prev)


def test_maple_refuses_resnets_and_impossible_depths():
    with pytest.raises(ConfigError, match="needs an OpenAI CLIP ViT.*ModifiedResNet.*MODEL.BACKBONE.NAME"):
        MultiModalPromptLearner(small_clip(resnet=True), CLASSES)
    with pytest.raises(ConfigError, match="PROMPT_DEPTH must be in 1..3"):
        MultiModalPromptLearner(small_clip(), CLASSES, depth=4)
    with pytest.raises(ConfigError, match="PROMPT_DEPTH must be in 1..2"):
        MultiModalPromptLearner(small_clip(vision_layers=2), CLASSES, depth=0)
    model = small_clip()  # three layers: at most two deep prompts per tower
    pl = MultiModalPromptLearner(model, CLASSES, n_ctx=2, ctx_init="", depth=3)
    prompts, shallow, deep_text, deep_vision = pl()
    with pytest.raises(ValueError, match="3 deep prompts for a text tower of 3 layers"):
        PromptTextEncoder(model)(prompts, pl.tokenized_prompts, deep=[*deep_text, deep_text[0]])
    with pytest.raises(ValueError, match="3 deep prompts for a vision tower of 3 layers"):
        vision_tower_deep(model.visual, torch.randn(1, 3, 32, 32), shallow, [*deep_vision, deep_vision[0]])


def test_images_trainer_gets_the_planned_crops_and_evaluates_through_its_tower(data_root, tmp_path):
    """input_kind images: train_batches yields (images, labels) in the epoch plan's order with view e
    (fresh crops every epoch, the same crops on a replay); predict runs the prompted image tower."""
    tr = build("MaPLe", data_root, tmp_path / "m", shots=2)
    assert tr.input_kind == "images"
    items = tr.dm.dataset.train_x
    order, views = tr.epoch_plan(0)
    assert views.tolist() == [0] * len(order)
    assert tr.epoch_plan(3)[1].tolist() == [3] * len(order)
    first = list(tr.train_batches(0))
    again = list(tr.train_batches(0))
    other = list(tr.train_batches(1))
    res = tr.clip_info.input_resolution
    assert first[0][0].shape == (4, 3, res, res)
    assert torch.equal(torch.cat([y for _, y in first]).cpu(), torch.tensor([items[i].label for i in order.tolist()]))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, again))
    assert not torch.equal(first[0][0], other[0][0])
    before = tr.encoder_stats["images"]
    logits, labels = tr.predict("test")
    assert logits.shape == (100, 10) and tr.encoder_stats["images"] - before == 100
    with torch.no_grad():
        images = torch.cat([x for x, _ in tr.eval_batches("test")])
        torch.testing.assert_close(logits, tr.cosine_logits(tr.image_features(images), tr.class_text_features()))
    from pathlib import Path

    assert not list(Path(tr.cache.root).rglob("shard-*"))  # no image feature was cached for it


# --------------------------------------------------------- configs and end to end
def test_the_method_configs_and_the_reference_file_names_load():
    import glob
    import os

    from conftest import REPO

    for method in METHODS:
        files = sorted(glob.glob(str(REPO / "configs" / "trainers" / method / "*.yaml")))
        assert {"tiny.yaml", "vit_b16.yaml"} <= {os.path.basename(f) for f in files}
        for path in files:
            setup_cfg("", path, {"TRAINER.NAME": method})
    cfg = setup_cfg("", trainer_cfg("CoCoOp", "vit_b16_c4_ep10_batch1_ctxv1"))
    assert (cfg.TRAINER.COCOOP.N_CTX, cfg.TRAINER.COCOOP.CTX_INIT, cfg.DATALOADER.TRAIN_X.BATCH_SIZE) == (4, "a photo of a", 1)
    cfg = setup_cfg("", trainer_cfg("MaPLe", "vit_b16_c2_ep5_batch4_2ctx"))
    assert (cfg.TRAINER.MAPLE.PROMPT_DEPTH, cfg.OPTIM.LR, cfg.OPTIM.MAX_EPOCH) == (9, 0.0035, 5)
    assert setup_cfg("", trainer_cfg("MaPLe", "vit_b16_c2_ep5_batch4_2ctx_cross_datasets")).TRAINER.MAPLE.PROMPT_DEPTH == 3


@pytest.mark.parametrize("method", METHODS)
def test_base_to_novel_for_three_seeds(method, run_train, tmp_path):
    """train.py on the base half, then --eval-only --model-dir on the new half, seeds 1-3 (CoCoOp's protocol)."""
    states = []
    for seed in (1, 2, 3):
        base, new = tmp_path / f"base{seed}", tmp_path / f"new{seed}"
        short = ["OPTIM.MAX_EPOCH", "1"]
        assert run_train(base, method, *short, "DATASET.SUBSAMPLE_CLASSES", "base", seed=seed, shots=2) == 0
        assert run_train(new, method, *short, "DATASET.SUBSAMPLE_CLASSES", "new", seed=seed, shots=2,
                         extra=("--eval-only", "--model-dir", str(base))) == 0
        rb, rn = (json.loads((d / "results.json").read_text()) for d in (base, new))
        assert (rb["subsample"], rb["num_classes"], rn["subsample"], rn["num_classes"]) == ("base", 5, "new", 5)
        assert rb["features_mode"] == ("images" if method == "MaPLe" else "cached")
        assert rn["total"] == 50 and rn["eval_only"] and rn["source"]["relation"] == "other classes"
        assert rn["source"]["seed"] == seed and 0 <= rn["accuracy"] <= 100
        (ckpt,) = base.glob("*/model.pth.tar-1")
        states.append(torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"])
    key = next(iter(states[0]))
    assert not torch.equal(states[0][key], states[1][key])  # the seeds train different prompts


@pytest.mark.slow
@pytest.mark.parametrize("name", METHODS)
def test_scripts_run_base_to_novel_then_three_seeds(name, data_root, tmp_path):
    """Through the CoOp-style scripts, offline: base2new_train.sh then base2new_test.sh (new and base
    classes), then main.sh for seeds 1 2 3; every run writes its results.json."""
    import json
    import subprocess
    import sys

    from conftest import REPO

    out = tmp_path / "output"
    env = {k: v for k, v in os.environ.items() if k not in ("CLIP_ADAPTER_FEATURE_CACHE", "SEEDS", "DRY_RUN")}
    env.update(DATA=data_root, OUTPUT=str(out), PYTHON=sys.executable, SHOTS="2")

    def script(*args, **extra):
        proc = subprocess.run(["bash", str(REPO / "scripts" / args[0]), *args[1:]], env=dict(env, **extra), cwd=tmp_path,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-1500:] + proc.stderr[-1500:]

    script("base2new_train.sh", "smoke", "1", name, "tiny")
    script("base2new_test.sh", "smoke", "1", name, "tiny")
    script("main.sh", "smoke", "tiny", "1", name, SEEDS="1 2 3")
    records = [json.loads(p.read_text()) for p in sorted(out.rglob("results.json"))]
    assert {r["trainer"] for r in records} == {name}
    assert sorted(r["subsample"] for r in records if r["eval_only"]) == ["base", "new"]
    assert sorted(r["seed"] for r in records if r["shots"] == 1 and not r["eval_only"]) == [1, 2, 3]
