"""Backbone families behind one seam: the same weights give the same numbers through either family,
text towers keep their own masks, identities name weights by checksum, bad files and mismatched
inputs end in one line, and runs work offline on every family's tiny model."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from clip_adapter.backbones import BackboneSpec, load_backbone
from clip_adapter.backbones.weights import WeightsError
from clip_adapter.config import get_cfg_default
from clip_adapter.errors import ConfigError
from clip_adapter.models.prompt_learner import PromptLearner, PromptTextEncoder
from clip_adapter.models.text import encode_text_classifier
from conftest import REPO, SMOKE_DS, TINY_BACKBONES, load_tiny, trainer_cfg

CLASSES = ["apple", "sea turtle", "golden retriever dog", "fern"]
TEMPLATES = ["a photo of a {}.", "itap of a {}."]
# fp32 on CPU; the two families run the same weights through different attention code
# (sequence-first vs batch-first nn.MultiheadAttention), so equal up to float rounding
ATOL, RTOL = 1e-5, 1e-4


def _logits(backbone, img, txt):
    img = img / img.norm(dim=-1, keepdim=True)
    txt = txt / txt.norm(dim=-1, keepdim=True)
    return backbone.logit_scale * img @ txt.t() + backbone.logit_bias


def _openai_weights_in_open_clip(tmp_path, weights: str):
    """An OpenAI-format state dict of the tiny architecture as an open_clip ``local-dir`` model: the
    architecture in open_clip's config terms (OpenAI's CLIP uses QuickGELU and 64-wide attention heads:
    both OpenAI-format loaders infer the head count as width // 64)."""
    from clip_adapter.backbones.openai import TINY_ARCH as A

    folder = tmp_path / "openai-tiny-in-open_clip"
    folder.mkdir()
    cfg = {"model_cfg": {
        "embed_dim": A["embed_dim"], "quick_gelu": True,
        "vision_cfg": {"image_size": A["image_resolution"], "layers": A["vision_layers"], "width": A["vision_width"],
                       "patch_size": A["vision_patch_size"], "head_width": 64},
        "text_cfg": {"context_length": A["context_length"], "vocab_size": A["vocab_size"], "width": A["transformer_width"],
                     "heads": A["transformer_width"] // 64, "layers": A["transformer_layers"]},
    }}
    (folder / "open_clip_config.json").write_text(json.dumps(cfg))
    shutil.copy(weights, folder / "open_clip_pytorch_model.bin")
    return load_backbone(BackboneSpec("open_clip", f"local-dir:{folder}"))


# ------------------------------------------------------------------ equivalence
@pytest.mark.slow
def test_openai_weights_give_the_same_numbers_through_both_families(tmp_path):
    # OpenAI's released weights are fp16 values, and the clip package's build_model rounds every weight
    # to fp16 on load; the tiny random weights are made fp16-exact so both families load the same values
    state = torch.load(load_tiny("openai", "tiny").weights_path, map_location="cpu", weights_only=True)
    weights = tmp_path / "tiny-fp16-values.pt"
    torch.save({k: v.half().float() if v.is_floating_point() else v for k, v in state.items()}, weights)
    oa = load_backbone(BackboneSpec("openai", str(weights)))
    oc = _openai_weights_in_open_clip(tmp_path, str(weights))
    assert oc.identity.family == "open_clip" and oc.identity.sha256 == oa.identity.sha256
    assert (oc.embed_dim, oc.context_length, oc.prefix_tokens, oc.logit_bias) == (oa.embed_dim, oa.context_length, 1, 0.0)
    assert oc.logit_scale == oa.logit_scale and oc.preprocess == oa.preprocess
    images = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    tokens = oa.tokenize([t.format(c) for c in CLASSES for t in TEMPLATES])
    assert torch.equal(tokens, oc.tokenize([t.format(c) for c in CLASSES for t in TEMPLATES]))
    with torch.no_grad():
        img_a, img_c = oa.encode_image(images), oc.encode_image(images)
        torch.testing.assert_close(img_c, img_a, atol=ATOL, rtol=RTOL)
        torch.testing.assert_close(oc.encode_text(tokens), oa.encode_text(tokens), atol=ATOL, rtol=RTOL)
        # open_clip's own reading of an OpenAI state dict builds the same model as the local-dir config
        from open_clip.model import build_model_from_openai_state_dict

        state = torch.load(oa.weights_path, map_location="cpu", weights_only=True)
        own = build_model_from_openai_state_dict(state, quick_gelu=True, cast_dtype=None).float()
        torch.testing.assert_close(own.encode_image(images), img_c, atol=ATOL, rtol=RTOL)
        # zero-shot logits (the text classifier, CLIP's template ensemble)
        zs_a = _logits(oa, img_a, encode_text_classifier(oa, CLASSES, TEMPLATES, "cpu"))
        zs_c = _logits(oc, img_c, encode_text_classifier(oc, CLASSES, TEMPLATES, "cpu"))
        torch.testing.assert_close(zs_c, zs_a, atol=ATOL * oa.logit_scale, rtol=RTOL)
        assert torch.equal(zs_c.argmax(1), zs_a.argmax(1))
        # prompt-learner logits: the same learned context through each family's text tower
        torch.manual_seed(0)
        pl_a = PromptLearner(oa, CLASSES, n_ctx=4, class_token_position="middle")
        pl_c = PromptLearner(oc, CLASSES, n_ctx=4, class_token_position="middle")
        pl_c.ctx.copy_(pl_a.ctx)
        torch.testing.assert_close(pl_c(), pl_a(), atol=0, rtol=0)
        txt_a = PromptTextEncoder(oa)(pl_a(), pl_a.tokenized_prompts)
        txt_c = PromptTextEncoder(oc)(pl_c(), pl_c.tokenized_prompts)
        torch.testing.assert_close(_logits(oc, img_c, txt_c), _logits(oa, img_a, txt_a), atol=ATOL * oa.logit_scale, rtol=RTOL)


# ------------------------------------------------------------------ text towers
@pytest.mark.slow
@pytest.mark.parametrize("family, name", [("openai", "tiny"), ("open_clip", "tiny-vit")])
def test_coop_prompts_use_the_causal_mask(family, name, monkeypatch):
    """With a causal mask, whatever follows the end token cannot change the sentence feature."""
    bb = load_tiny(family, name)
    pl = PromptLearner(bb, CLASSES, n_ctx=4)
    enc = PromptTextEncoder(bb)
    with torch.no_grad():
        prompts = pl()
        changed = prompts.clone()
        g = torch.Generator().manual_seed(0)
        for i, end in enumerate(pl.tokenized_prompts.argmax(dim=-1).tolist()):  # (not a constant: layer norms remove those)
            changed[i, end + 1 :] += torch.randn(changed[i, end + 1 :].shape, generator=g)
        assert torch.equal(enc(changed, pl.tokenized_prompts), enc(prompts, pl.tokenized_prompts))
        if family == "open_clip":  # the same tower without its mask (what reaching past the seam did) sees the change
            monkeypatch.setattr(bb._tower, "attn_mask", None)
            assert not torch.allclose(enc(changed, pl.tokenized_prompts), enc(prompts, pl.tokenized_prompts))


@pytest.mark.slow
def test_sigmoid_model_has_no_causal_mask_and_a_logit_bias():
    bb = load_tiny("open_clip", "tiny-sigmoid")
    assert bb.sigmoid and bb.logit_bias == -10.0 and bb.context_length == 32
    assert bb.preprocess.mean == (0.5, 0.5, 0.5) and bb.preprocess.resize_mode == "squash"
    pl = PromptLearner(bb, CLASSES, n_ctx=4)
    with torch.no_grad():
        prompts = pl()
        changed = prompts.clone()
        end = int(pl.tokenized_prompts[0].argmax())
        changed[0, end + 1] += torch.randn(changed.shape[-1], generator=torch.Generator().manual_seed(0))  # a padding position
        out, out2 = PromptTextEncoder(bb)(prompts, pl.tokenized_prompts), PromptTextEncoder(bb)(changed, pl.tokenized_prompts)
    assert not torch.allclose(out[0], out2[0]) and torch.equal(out[1:], out2[1:])


def test_prompt_learner_without_a_start_token():
    """A tokenizer without a start token (SigLIP's T5 sentencepiece): the context comes first."""
    bb = load_tiny("open_clip", "tiny-sigmoid")
    with_start = bb._tokenize

    def no_start(texts):
        t = with_start(texts)
        return torch.cat([t[:, 1:], torch.zeros_like(t[:, :1])], dim=1)

    bb._tokenize = no_start
    vars(bb).pop("prefix_tokens", None)  # found again from the tokenizer's output
    assert bb.prefix_tokens == 0
    pl = PromptLearner(bb, CLASSES, ctx_init="a photo of a")
    tokens = bb.tokenize([f"a photo of a {c}." for c in CLASSES])
    with torch.no_grad():
        assert torch.equal(pl(), bb.token_embedding(tokens))
    torch.manual_seed(0)
    front = PromptLearner(bb, CLASSES, n_ctx=2, class_token_position="front")
    n = len(bb.token_ids(CLASSES[0]))
    with torch.no_grad():
        assert torch.equal(front()[0, n : n + 2], front.ctx)
        assert torch.equal(front()[0, :n], bb.token_embedding(torch.tensor(bb.token_ids(CLASSES[0]))))


# ------------------------------------------------------------------ identity
def test_a_copy_of_published_openai_weights_is_named_as_those_weights(tmp_path, monkeypatch):
    """A file whose sha256 is in OpenAI's URLs is those weights: same name, same cache key, same row."""
    from clip_adapter.backbones import openai as fam

    tiny = load_tiny("openai", "tiny")
    url = f"https://openaipublic.azureedge.net/clip/models/{tiny.sha256}/TinyNet.pt"
    monkeypatch.setattr(fam, "published", lambda: {"TinyNet": url})
    monkeypatch.setitem(fam.KNOWN_ARCH, "TinyNet", (32, 64))
    fam.published_sha256.cache_clear()
    try:
        folder = tmp_path / "weights"
        folder.mkdir()
        shutil.copy(tiny.weights_path, folder / "TinyNet.pt")
        by_name = load_backbone(BackboneSpec("openai", "TinyNet", cache_dir=str(folder)))
        elsewhere = tmp_path / "downloads" / "my-copy.pt"
        elsewhere.parent.mkdir()
        shutil.copy(tiny.weights_path, elsewhere)
        by_path = load_backbone(BackboneSpec("openai", "TinyNet", weights=str(elsewhere)))
        legacy = load_backbone(BackboneSpec("openai", str(elsewhere)))  # a path as MODEL.BACKBONE.NAME, as before
        for other in (by_path, legacy):
            assert other.identity.record() == by_name.identity.record() and other.encoder_id == by_name.encoder_id
        assert by_name.identity.name == "TinyNet" and by_name.identity.label == "CLIP TinyNet (OpenAI)"
        with pytest.raises(WeightsError, match="holds OpenAI's TinyNet weights, not ViT-B/16; set MODEL.BACKBONE.NAME TinyNet"):
            load_backbone(BackboneSpec("openai", "ViT-B/16", weights=str(elsewhere)))
        # a file of no known weights is named by its checksum, and its own architecture
        other = tmp_path / "finetuned.pt"
        state = torch.load(tiny.weights_path, weights_only=True)
        state["visual.proj"] = state["visual.proj"] * 2.0
        torch.save(state, other)
        custom = load_backbone(BackboneSpec("openai", str(other)))
        assert custom.identity.weights.startswith("sha256:") and custom.identity.arch == "ViT-p8-w64-L2-32px"
        assert custom.encoder_id != by_name.encoder_id and custom.identity.name.startswith("openai:ViT-p8-w64-L2-32px:sha256:")
    finally:
        fam.published_sha256.cache_clear()


@pytest.mark.slow
def test_a_copy_of_an_open_clip_tags_weights_is_named_by_the_tag(tmp_path, monkeypatch):
    """open_clip's release file names carry a sha256 prefix: a copy given by path is that tag."""
    import open_clip
    from open_clip import pretrained

    tiny = load_tiny("open_clip", "tiny-vit")
    arch = "clip-adapter-test-tiny"
    config = tmp_path / f"{arch}.json"
    config.write_text(json.dumps(json.load(open(os.path.join(os.path.dirname(tiny.weights_path), "open_clip_config.json")))["model_cfg"]))
    open_clip.add_model_config(str(config))
    url = f"https://github.com/mlfoundations/open_clip/releases/download/v0/tiny-test-{tiny.sha256[:8]}.pt"
    monkeypatch.setitem(pretrained._PRETRAINED, arch, {"fakedata_e1": pretrained._pcfg(url=url)})
    folder = tmp_path / "weights"
    folder.mkdir()
    shutil.copy(tiny.weights_path, folder / os.path.basename(url))
    by_tag = load_backbone(BackboneSpec("open_clip", arch, "fakedata_e1", cache_dir=str(folder)))
    copy = tmp_path / "copy.bin"
    shutil.copy(tiny.weights_path, copy)
    by_path = load_backbone(BackboneSpec("open_clip", arch, str(copy), cache_dir=str(folder)))
    assert by_path.identity.record() == by_tag.identity.record() and by_path.encoder_id == by_tag.encoder_id
    assert by_tag.identity.name == f"open_clip:{arch}:fakedata_e1"
    with torch.no_grad():
        x = torch.randn(2, 3, 32, 32)
        assert torch.equal(by_tag.encode_image(x), tiny.encode_image(x))


def test_open_clip_configuration_errors():
    with pytest.raises(ConfigError, match="WEIGHTS is empty: open_clip would build ViT-B-32 with random weights.*laion2b_s34b_b79k"):
        load_backbone(BackboneSpec("open_clip", "ViT-B-32"))
    with pytest.raises(ConfigError, match="trained with QuickGELU.*set MODEL.BACKBONE.NAME ViT-B-32-quickgelu"):
        load_backbone(BackboneSpec("open_clip", "ViT-B-32", "openai"))
    with pytest.raises(ConfigError, match="unknown open_clip architecture 'ViT-B-33'"):
        load_backbone(BackboneSpec("open_clip", "ViT-B-33", "laion2b_s34b_b79k"))
    with pytest.raises(ConfigError, match="neither a pretrained tag of ViT-B-32"):
        load_backbone(BackboneSpec("open_clip", "ViT-B-32", "laion9b"))
    from clip_adapter.registry import RegistryError

    with pytest.raises(RegistryError, match="unknown backbone family 'timm'.* Known: open_clip, openai"):
        load_backbone(BackboneSpec("timm", "ViT-B-32"))


def test_offline_downloads_say_where_the_file_goes(tmp_path, monkeypatch):
    from clip_adapter.backbones.openai import _clip
    from open_clip import pretrained

    def offline(*a, **k):
        raise OSError("network unreachable")

    monkeypatch.setattr(_clip().clip, "_download", offline)
    with pytest.raises(WeightsError) as e:
        load_backbone(BackboneSpec("openai", "RN50", cache_dir=str(tmp_path)))
    assert f"put the file at {tmp_path}/RN50.pt (named RN50.pt, from https://openaipublic" in str(e.value)
    monkeypatch.setattr(pretrained, "download_pretrained", offline)
    with pytest.raises(WeightsError) as e:
        load_backbone(BackboneSpec("open_clip", "ViT-B-32", "laion2b_s34b_b79k", cache_dir=str(tmp_path)))
    assert (f"put the file at {tmp_path}/laion/CLIP-ViT-B-32-laion2B-s34B-b79K/open_clip_model.safetensors "
            "(from https://huggingface.co/laion/CLIP-ViT-B-32-laion2B-s34B-b79K)") in str(e.value)


# ------------------------------------------------------------------ bad files
def _test_arch(tmp_path, config_of: str) -> str:
    """Register tiny-vit's architecture with open_clip under a name (a built-in-style model name)."""
    import open_clip

    arch = "clip-adapter-test-badfiles"
    config = tmp_path / f"{arch}.json"
    config.write_text(json.dumps(json.load(open(os.path.join(os.path.dirname(config_of), "open_clip_config.json")))["model_cfg"]))
    open_clip.add_model_config(str(config))
    return arch


@pytest.mark.slow
@pytest.mark.parametrize("family", ["openai", "open_clip"])
def test_bad_weights_files_end_in_one_line(family, tmp_path):
    """Truncated, an HTML page saved as weights, another architecture: one line naming the file and the
    fix, never torch's advice to unpickle with weights_only=False."""
    good = load_tiny(family, "tiny" if family == "openai" else "tiny-vit").weights_path
    data = open(good, "rb").read()
    truncated, html = tmp_path / "truncated.pt", tmp_path / "page.pt"
    truncated.write_bytes(data[: len(data) // 3])
    html.write_text("<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body>Access denied</body></html>\n")
    other = load_tiny("open_clip", "tiny-sigmoid").weights_path  # another architecture's weights
    if family == "openai":
        cases = [(BackboneSpec("openai", "ViT-B/16", str(truncated)), truncated, "is truncated"),
                 (BackboneSpec("openai", str(html)), html, "is an HTML page"),
                 (BackboneSpec("openai", other), other, "could not be loaded as an OpenAI CLIP model")]
    else:
        arch = _test_arch(tmp_path, good)
        cases = [(BackboneSpec("open_clip", arch, str(truncated)), truncated, "is truncated"),
                 (BackboneSpec("open_clip", arch, str(html)), html, "is an HTML page"),
                 (BackboneSpec("open_clip", arch, other), other, f"does not fit open_clip's {arch}")]
    for spec, path, expected in cases:
        with pytest.raises(WeightsError) as e:
            load_backbone(spec)
        text = str(e.value)
        assert "\n" not in text and str(path) in text and expected in text, text
        assert "weights_only" not in text and ("; delete it" in text or "; pass" in text or "; set MODEL.BACKBONE" in text), text


# ------------------------------------------------------------------ configs and runs
BACKBONE_CONFIGS = ["rn50", "rn101", "vit_b32", "vit_b16", "vit_l14", "laion2b_vit_b32", "laion2b_vit_b16", "siglip_vit_b16"]


@pytest.mark.parametrize("trainer", ["ZeroshotCLIP", "ZeroshotCLIP2", "CLIP_Adapter", "CoOp", "LinearProbeCLIP"])
def test_backbone_configs_agree_with_their_weights(trainer):
    """Every backbone config of every trainer names weights whose input it states (checked without the weights)."""
    from clip_adapter.backbones.preprocess import preflight_input

    seen = set()
    for name in BACKBONE_CONFIGS:
        cfg = get_cfg_default()
        cfg.merge_from_file(trainer_cfg(trainer, name))
        spec = preflight_input(cfg)
        assert spec is not None, name
        seen.add((cfg.MODEL.BACKBONE.FAMILY, cfg.MODEL.BACKBONE.NAME, cfg.MODEL.BACKBONE.WEIGHTS))
        assert tuple(cfg.INPUT.SIZE) == spec.size
    assert ("open_clip", "ViT-B-16-SigLIP", "webli") in seen and ("openai", "ViT-L/14", "") in seen
    assert len(seen) == len(BACKBONE_CONFIGS)


def test_input_that_disagrees_with_the_weights_fails_before_anything_is_written(run_train, tmp_path, capsys):
    out = tmp_path / "size"
    assert run_train(out, "ZeroshotCLIP", "INPUT.SIZE", "(64, 64)", cfg="tiny_openclip") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "INPUT.SIZE (64, 64) disagrees with the input resolution (32, 32) of open_clip tiny-vit" in err[0]
    assert not out.exists()
    # SigLIP-style weights with CLIP's statistics (what CoOp's YAML files state): refused, naming both
    clip_stats = ["INPUT.PIXEL_MEAN", "[0.48145466, 0.4578275, 0.40821073]"]
    assert run_train(tmp_path / "mean", "ZeroshotCLIP", *clip_stats, cfg="tiny_siglip") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "disagrees with [0.5, 0.5, 0.5], the statistics open_clip tiny-sigmoid was trained with" in err[0]


def test_bad_weights_file_through_the_cli(run_train, tmp_path, capsys):
    bad = tmp_path / "ViT-B-16.pt"
    bad.write_text("<html><body>404 Not Found</body></html>")
    out = tmp_path / "run"
    assert run_train(out, "ZeroshotCLIP", "MODEL.BACKBONE.NAME", "ViT-B/16", "MODEL.BACKBONE.WEIGHTS", str(bad),
                     "INPUT.SIZE", "(224, 224)") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(bad) in err[0] and "HTML page" in err[0] and "Traceback" not in err[0]
    assert not out.exists()


def _results(folder):
    with open(os.path.join(folder, "results.json"), encoding="utf-8") as f:
        return json.load(f)


@pytest.mark.slow
def test_clip_adapter_on_open_clip_trains_evaluates_and_transfers_base_to_new(run_train, tmp_path):
    """main(argv) in-process on tiny_openclip: the few-shot run, its --eval-only reload, and
    base-to-novel (train on the base half, test on the new half)."""
    out = tmp_path / "fewshot"
    assert run_train(out, "CLIP_Adapter", cfg="tiny_openclip", shots=4) == 0
    res = _results(out)
    assert res["backbone"] == "open_clip:tiny-vit:random" and res["backbone_family"] == "open_clip"
    assert res["backbone_label"] == "tiny-vit (random open_clip model, offline check)" and res["offline_check"]
    assert res["encoder"].startswith("open_clip:tiny-vit:random@") and len(res["backbone_sha256"]) == 64
    again = tmp_path / "eval"
    assert run_train(again, "CLIP_Adapter", cfg="tiny_openclip", shots=4, extra=["--eval-only", "--model-dir", str(out)]) == 0
    assert _results(again)["accuracy"] == res["accuracy"]
    base = tmp_path / "base"
    assert run_train(base, "CLIP_Adapter", "DATASET.SUBSAMPLE_CLASSES", "base", cfg="tiny_openclip", shots=4) == 0
    new = tmp_path / "new"
    assert run_train(new, "CLIP_Adapter", "DATASET.SUBSAMPLE_CLASSES", "new", cfg="tiny_openclip", shots=4,
                     extra=["--eval-only", "--model-dir", str(base)]) == 0
    rec = _results(new)
    assert rec["subsample"] == "new" and rec["num_classes"] == 5 and rec["backbone"] == res["backbone"]


def test_siglip_logits_carry_the_bias(run_train, data_root, tmp_path):
    from test_trainers import build

    zs = build("ZeroshotCLIP", data_root, tmp_path / "zs", cfg="tiny_siglip")
    assert zs.logit_bias == -10.0 and "mean=[0.5, 0.5, 0.5]" in zs.spec_test
    feats, _ = zs.split_features("test")
    img = feats / feats.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(zs.logits(feats), zs.logit_scale * img @ zs.text_weights.t() - 10.0)


@pytest.mark.slow
def test_main_sh_runs_clip_adapter_on_the_open_clip_tiny_model(data_root, tmp_path):
    """The script entry point on the open_clip offline model (one seed)."""
    env = dict(os.environ, DATA=data_root, OUTPUT=str(tmp_path / "out"), PYTHON=sys.executable, SEEDS="1", PYTHONUNBUFFERED="1")
    env.pop("CLIP_ADAPTER_FEATURE_CACHE", None)
    proc = subprocess.run(["bash", str(REPO / "scripts" / "main.sh"), "smoke", "tiny_openclip", "4", "CLIP_Adapter"], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rec = _results(tmp_path / "out" / "smoke" / "CLIP_Adapter" / "tiny_openclip_4shots" / "seed1")
    assert rec["backbone"] == "open_clip:tiny-vit:random" and rec["config"] == "tiny_openclip"


def test_every_trainer_has_the_offline_configs_of_every_family():
    from clip_adapter.registry import TRAINERS

    for trainer in TRAINERS.names():
        families = TRAINERS.get(trainer).backbone_families  # () = every family
        for family, _, cfg in TINY_BACKBONES:
            if families and family not in families:
                continue
            assert os.path.isfile(trainer_cfg(trainer, cfg)), f"add configs/trainers/{trainer}/{cfg}.yaml (a copy of tiny.yaml)"
