"""The model layer that CoOp builds on, on every backbone family's offline model: prompt layouts, the
text tower on embeddings, checkpoint contents."""
from __future__ import annotations

import json
import os

import pytest
import torch

from clip_adapter.errors import ConfigError
from clip_adapter.models.prompt_learner import PromptLearner, PromptTextEncoder
from conftest import TINY_BACKBONES, load_tiny

CLASSES = ["apple", "sea_turtle", "golden retriever dog"]
FAMILIES = [pytest.param((f, n), id=n) for f, n, _ in TINY_BACKBONES]


@pytest.fixture(scope="module", params=FAMILIES)
def backbone(request):
    return load_tiny(*request.param)


@pytest.fixture(scope="module")
def openai_tiny():
    return load_tiny("openai", "tiny")


def test_text_encoder_on_embeddings_equals_encode_text(backbone):
    """Running the tower on looked-up embeddings is exactly the model's own encode_text."""
    tokens = backbone.tokenize(["a photo of a apple.", "itap of a sea turtle.", "x"])
    with torch.no_grad():
        ours = PromptTextEncoder(backbone)(backbone.token_embedding(tokens).type(backbone.text_dtype), tokens)
        theirs = backbone.model.encode_text(tokens)
    assert torch.equal(ours, theirs)


def test_openai_family_is_the_clip_packages_own_numbers(openai_tiny):
    """Unchanged results: the family's encode_text/encode_image are the clip package's CLIP methods."""
    tokens = openai_tiny.tokenize(["a photo of a dog.", "a"])
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(openai_tiny.encode_text(tokens), openai_tiny.model.encode_text(tokens))
        assert torch.equal(openai_tiny.encode_image(images), openai_tiny.model.encode_image(images))


def test_ctx_init_reproduces_the_template(backbone):
    pl = PromptLearner(backbone, CLASSES, n_ctx=16, ctx_init="a photo of a")
    assert pl.n_ctx == 4  # from the phrase, not N_CTX
    tokens = backbone.tokenize([f"a photo of a {c.replace('_', ' ')}." for c in CLASSES])
    with torch.no_grad():
        expected = backbone.token_embedding(tokens)
        got = pl()
    assert torch.equal(pl.tokenized_prompts, tokens)
    assert torch.equal(got, expected)


def test_ctx_init_with_csc_learns_one_shared_context(openai_tiny, caplog):
    """CoOp takes its class-specific branch only for a random init: CTX_INIT + CSC True is shared."""
    with caplog.at_level("WARNING"):
        pl = PromptLearner(openai_tiny, CLASSES, n_ctx=16, ctx_init="a photo of a", csc=True)
    assert pl.ctx.shape == (4, 64) and not pl.csc
    assert [r.getMessage() for r in caplog.records if "CSC True has no effect" in r.getMessage()] != []


def coop_reference_prompts(pl, name_lens):
    """CoOp's PromptLearner.forward, written out from its trainers/coop.py: the per-class loop over
    token_prefix (SOS), the context and token_suffix, slicing the class as suffix[:name_len]."""
    ctx = pl.ctx if pl.ctx.dim() == 3 else pl.ctx.unsqueeze(0).expand(pl.n_cls, -1, -1)
    prefix, suffix, half = pl.token_prefix, pl.token_suffix, pl.n_ctx // 2
    rows = []
    for i, n in enumerate(name_lens):
        cls_i, rest_i = suffix[i, :n], suffix[i, n:]
        if pl.position == "end":
            parts = [prefix[i], ctx[i], suffix[i]]
        elif pl.position == "middle":
            parts = [prefix[i], ctx[i, :half], cls_i, ctx[i, half:], rest_i]
        else:
            parts = [prefix[i], cls_i, ctx[i], rest_i]
        rows.append(torch.cat(parts))
    return torch.stack(rows)


@pytest.mark.parametrize("position", ["end", "middle", "front"])
def test_ctx_init_with_a_two_token_word_counts_words_as_coop(openai_tiny, position):
    """"itap of a" is 3 words but 4 BPE tokens (it|ap|of|a): CoOp learns 3 vectors initialised from
    the tokens it, ap, of; "a" stays a fixed token of the prompt, so the start is the template."""
    phrase = "itap of a"
    assert len(openai_tiny.token_ids(phrase)) == 4 and len(phrase.split(" ")) == 3
    pl = PromptLearner(openai_tiny, CLASSES, n_ctx=16, ctx_init=phrase, class_token_position=position)
    assert pl.n_ctx == 3 and pl.ctx.shape == (3, 64)
    with torch.no_grad():
        phrase_emb = openai_tiny.token_embedding(openai_tiny.tokenize([phrase]))[0]
        assert torch.equal(pl.ctx, phrase_emb[1:4])  # it, ap, of
        tokens = openai_tiny.tokenize([f"{phrase} {c.replace('_', ' ')}." for c in CLASSES])
        assert torch.equal(pl.tokenized_prompts, tokens)
        expected = coop_reference_prompts(pl, [len(openai_tiny.token_ids(c.replace("_", " "))) for c in CLASSES])
        assert torch.equal(pl(), expected)
        if position == "end":  # untrained, the prompt is the template itself
            assert torch.equal(pl(), openai_tiny.token_embedding(tokens))


@pytest.mark.parametrize("csc", [False, True])
@pytest.mark.parametrize("position", ["end", "middle", "front"])
def test_prompt_layouts(backbone, position, csc):
    """Each layout puts the start token, the context halves and the class tokens where CoOp puts them."""
    torch.manual_seed(0)
    m, width, length = 4, backbone.token_embedding.weight.shape[1], backbone.context_length
    pl = PromptLearner(backbone, CLASSES, n_ctx=m, csc=csc, class_token_position=position)
    assert pl.ctx.shape == ((len(CLASSES), m, width) if csc else (m, width))
    out = pl()
    assert out.shape == (len(CLASSES), length, width)
    emb, p = backbone.token_embedding, backbone.prefix_tokens
    assert p == 1  # the offline models use CLIP's tokenizer, which starts with a start token
    for i, name in enumerate(CLASSES):
        ctx = pl.ctx[i] if csc else pl.ctx
        name_ids = torch.tensor(backbone.token_ids(name.replace("_", " ")))
        n = len(name_ids)
        sos = emb(pl.tokenized_prompts[i, :p])
        name_emb = emb(name_ids)
        rest = emb(pl.tokenized_prompts[i, p + m + n :])
        if position == "end":
            parts = [sos, ctx, name_emb, rest]
        elif position == "middle":
            parts = [sos, ctx[: m // 2], name_emb, ctx[m // 2 :], rest]
        else:
            parts = [sos, name_emb, ctx, rest]
        assert torch.equal(out[i], torch.cat(parts)), (position, name)
    # the end token, where a CLIP text tower reads the feature, is where tokenize put it
    eos = pl.tokenized_prompts.argmax(dim=-1)
    assert torch.equal(out[torch.arange(len(CLASSES)), eos], emb(pl.tokenized_prompts[torch.arange(len(CLASSES)), eos]))


def test_gradient_reaches_only_the_context(backbone):
    pl = PromptLearner(backbone, CLASSES, n_ctx=2, class_token_position="middle")
    enc = PromptTextEncoder(backbone)
    enc(pl(), pl.tokenized_prompts).sum().backward()
    assert pl.ctx.grad is not None and pl.ctx.grad.abs().sum() > 0
    assert all(p.grad is None for p in backbone.model.parameters())


def test_checkpoint_holds_only_the_context(backbone):
    pl = PromptLearner(backbone, CLASSES, n_ctx=3, csc=True)
    assert list(pl.state_dict()) == ["ctx"]


def test_bad_prompt_settings(backbone):
    with pytest.raises(ConfigError, match="CLASS_TOKEN_POSITION"):
        PromptLearner(backbone, CLASSES, class_token_position="top")
    with pytest.raises(ConfigError, match=f"longer than the text encoder's {backbone.context_length} tokens"):
        PromptLearner(backbone, ["word " * 70], n_ctx=16)
    with pytest.raises(ConfigError, match="N_CTX"):
        PromptLearner(backbone, CLASSES, n_ctx=0)


def test_the_model_itself_is_accepted_where_a_backbone_is_expected(openai_tiny):
    """Trainers written against ``self.clip_model`` keep working: the model leads back to its backbone."""
    a = PromptLearner(openai_tiny.model, CLASSES, ctx_init="a photo of a")
    b = PromptLearner(openai_tiny, CLASSES, ctx_init="a photo of a")
    assert torch.equal(a(), b())
    with pytest.raises(TypeError, match="Backbone"):
        PromptLearner(torch.nn.Linear(2, 2), CLASSES)


def test_half_precision_clip_trains_a_half_context(openai_tiny):
    """PREC fp16 (CUDA in practice; the dtype plumbing is the same on CPU): clip's convert_weights
    makes the transformer fp16 but leaves the token embedding fp32; prompts must follow the former."""
    import copy

    from clip_adapter.backbones.openai import _clip

    half = copy.deepcopy(openai_tiny)
    _clip().model.convert_weights(half.model)
    assert half.text_dtype == torch.float16 and half.token_embedding.weight.dtype == torch.float32
    pl = PromptLearner(half, CLASSES, ctx_init="a photo of a")
    assert pl.ctx.dtype == torch.float16
    out = PromptTextEncoder(half)(pl(), pl.tokenized_prompts)
    assert out.dtype == torch.float16
    out.float().sum().backward()
    assert pl.ctx.grad is not None and torch.isfinite(pl.ctx.grad).all()
    with torch.no_grad():
        torch.testing.assert_close(out.float(), openai_tiny.encode_text(pl.tokenized_prompts), atol=1e-2, rtol=1e-2)
    # FEATURES.PREC fp32 next to a half text tower (CoOp PREC fp16): the text side keeps its own precision
    half.set_image_precision("fp32")
    assert half.image_dtype == torch.float32 and half.text_dtype == torch.float16
    assert PromptTextEncoder(half)(pl(), pl.tokenized_prompts).dtype == torch.float16


def test_trimmed_text_tower_equals_the_full_one(openai_tiny):
    """Running only up to the last EOS (causal attention) gives CLIP's features, and its gradients."""
    pl = PromptLearner(openai_tiny, CLASSES + ["a much longer class name with many words"], n_ctx=4)
    full, trim = PromptTextEncoder(openai_tiny), PromptTextEncoder(openai_tiny, trim=True)
    a = full(pl(), pl.tokenized_prompts)
    ga = torch.autograd.grad(a.sum(), pl.ctx)[0]
    b = trim(pl(), pl.tokenized_prompts)
    gb = torch.autograd.grad(b.sum(), pl.ctx)[0]
    torch.testing.assert_close(b, a, rtol=0, atol=1e-5)
    torch.testing.assert_close(gb, ga, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(trim.encode_chunked(pl(), pl.tokenized_prompts, 1), a, rtol=0, atol=1e-5)


# ------------------------------------------------------------------------ loading
def test_loading_is_clip_load_without_the_clip_package_import(tmp_path):
    """The OpenAI family builds the model clip.load builds (clip/model.py's classes, same weights) from that
    file alone: neither torchvision nor the tokenizer is imported (a warm run needs neither), and a
    later ``import clip`` uses that very module (one CLIP class, so isinstance checks hold)."""
    import subprocess
    import sys

    code = r"""
import json, sys, warnings
import torch
from clip_adapter.plugins import load_all
from clip_adapter.backbones import BackboneSpec, load_backbone
load_all(quiet=True)  # every trainer and dataset module, the feature cache, the transforms
backbone = load_backbone(BackboneSpec("openai", "tiny"))
model = backbone.model
ok = {"torchvision": "torchvision" in sys.modules, "clip_package": "clip.clip" in sys.modules}
warnings.simplefilter("ignore")
import clip
theirs, _ = clip.load(backbone.identity.path, device="cpu", jit=False)
ok["same_class"] = type(model) is clip.model.CLIP and type(model.visual) is clip.model.VisionTransformer
ok["same_weights"] = all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), theirs.float().state_dict().values()))
ok["same_keys"] = list(model.state_dict()) == list(theirs.state_dict())
print(json.dumps(ok))
"""
    env = dict(os.environ, CLIP_ADAPTER_WEIGHTS=str(tmp_path / "weights"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {
        "torchvision": False, "clip_package": False, "same_class": True, "same_weights": True, "same_keys": True}


def test_released_weights_table_is_read_from_the_package_source():
    from clip_adapter.backbones.openai import _clip, published

    assert published() == _clip().clip._MODELS
