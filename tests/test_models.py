"""The model layer that CoOp builds on: prompt layouts, the text tower on embeddings, checkpoint contents."""
from __future__ import annotations

import json
import os

import pytest
import torch

from clip_adapter.errors import ConfigError
from clip_adapter.models.clip_loader import _clip, load_clip
from clip_adapter.models.prompt_learner import PromptLearner, PromptTextEncoder

CLASSES = ["apple", "sea_turtle", "golden retriever dog"]


@pytest.fixture(scope="module")
def tiny_clip():
    model, _ = load_clip("tiny")
    return model


def _tokens(text: str) -> list:
    return _clip().clip._tokenizer.encode(text)


def test_text_encoder_on_embeddings_equals_encode_text(tiny_clip):
    """Running the tower on looked-up embeddings is exactly CLIP's encode_text."""
    clip = _clip()
    tokens = clip.tokenize(["a photo of a apple.", "itap of a sea turtle.", "x"])
    with torch.no_grad():
        ours = PromptTextEncoder(tiny_clip)(tiny_clip.token_embedding(tokens).type(tiny_clip.dtype), tokens)
        theirs = tiny_clip.encode_text(tokens)
    assert torch.equal(ours, theirs)


def test_ctx_init_reproduces_the_template(tiny_clip):
    pl = PromptLearner(tiny_clip, CLASSES, n_ctx=16, ctx_init="a photo of a")
    assert pl.n_ctx == 4  # from the phrase, not N_CTX
    tokens = _clip().tokenize([f"a photo of a {c.replace('_', ' ')}." for c in CLASSES])
    with torch.no_grad():
        expected = tiny_clip.token_embedding(tokens)
        got = pl()
    assert torch.equal(pl.tokenized_prompts, tokens)
    assert torch.equal(got, expected)


@pytest.mark.parametrize("csc", [False, True])
@pytest.mark.parametrize("position", ["end", "middle", "front"])
def test_prompt_layouts(tiny_clip, position, csc):
    """Each layout puts SOS, the context halves and the class tokens where CoOp puts them."""
    torch.manual_seed(0)
    m = 4
    pl = PromptLearner(tiny_clip, CLASSES, n_ctx=m, csc=csc, class_token_position=position)
    assert pl.ctx.shape == ((len(CLASSES), m, 64) if csc else (m, 64))
    out = pl()
    assert out.shape == (len(CLASSES), 77, 64)
    emb = tiny_clip.token_embedding
    for i, name in enumerate(CLASSES):
        ctx = pl.ctx[i] if csc else pl.ctx
        name_ids = torch.tensor(_tokens(name.replace("_", " ")))
        n = len(name_ids)
        sos = emb(pl.tokenized_prompts[i, :1])
        name_emb = emb(name_ids)
        rest = emb(pl.tokenized_prompts[i, 1 + m + n :])
        if position == "end":
            parts = [sos, ctx, name_emb, rest]
        elif position == "middle":
            parts = [sos, ctx[: m // 2], name_emb, ctx[m // 2 :], rest]
        else:
            parts = [sos, name_emb, ctx, rest]
        assert torch.equal(out[i], torch.cat(parts)), (position, name)
    # the EOS token, where CLIP reads the feature, is where tokenize put it
    eos = pl.tokenized_prompts.argmax(dim=-1)
    assert torch.equal(out[torch.arange(len(CLASSES)), eos], emb(pl.tokenized_prompts[torch.arange(len(CLASSES)), eos]))


def test_gradient_reaches_only_the_context(tiny_clip):
    pl = PromptLearner(tiny_clip, CLASSES, n_ctx=2, class_token_position="middle")
    enc = PromptTextEncoder(tiny_clip)
    enc(pl(), pl.tokenized_prompts).sum().backward()
    assert pl.ctx.grad is not None and pl.ctx.grad.abs().sum() > 0
    assert all(p.grad is None for p in tiny_clip.parameters())


def test_checkpoint_holds_only_the_context(tiny_clip):
    pl = PromptLearner(tiny_clip, CLASSES, n_ctx=3, csc=True)
    assert list(pl.state_dict()) == ["ctx"]


def test_bad_prompt_settings(tiny_clip):
    with pytest.raises(ConfigError, match="CLASS_TOKEN_POSITION"):
        PromptLearner(tiny_clip, CLASSES, class_token_position="top")
    with pytest.raises(ConfigError, match="longer than CLIP's 77 tokens"):
        PromptLearner(tiny_clip, ["word " * 70], n_ctx=16)
    with pytest.raises(ConfigError, match="N_CTX"):
        PromptLearner(tiny_clip, CLASSES, n_ctx=0)


def test_half_precision_clip_trains_a_half_context(tiny_clip):
    """PREC fp16 (CUDA in practice; the dtype plumbing is the same on CPU): clip's convert_weights
    makes the transformer fp16 but leaves the token embedding fp32; prompts must follow the former."""
    import copy

    half = copy.deepcopy(tiny_clip)
    _clip().model.convert_weights(half)
    assert half.dtype == torch.float16 and half.token_embedding.weight.dtype == torch.float32
    pl = PromptLearner(half, CLASSES, ctx_init="a photo of a")
    assert pl.ctx.dtype == torch.float16
    out = PromptTextEncoder(half)(pl(), pl.tokenized_prompts)
    assert out.dtype == torch.float16
    out.float().sum().backward()
    assert pl.ctx.grad is not None and torch.isfinite(pl.ctx.grad).all()
    with torch.no_grad():
        torch.testing.assert_close(out.float(), tiny_clip.encode_text(pl.tokenized_prompts), atol=1e-2, rtol=1e-2)


# ------------------------------------------------------------------------ loading
def test_loading_is_clip_load_without_the_clip_package_import(tmp_path):
    """load_clip builds the model clip.load builds (clip/model.py's classes, same weights) from that
    file alone: neither torchvision nor the tokenizer is imported (a warm run needs neither), and a
    later ``import clip`` is a normal import."""
    import subprocess
    import sys

    code = r"""
import inspect, json, sys, warnings
import torch
from clip_adapter.cli import register_all
from clip_adapter.models.clip_loader import load_clip
register_all()  # every trainer and dataset module, the feature cache, the transforms
model, info = load_clip("tiny")
ok = {"torchvision": "torchvision" in sys.modules, "clip_package": "clip.clip" in sys.modules}
warnings.simplefilter("ignore")
import clip
theirs, _ = clip.load(info.weights_path, device="cpu", jit=False)
ok["same_class"] = inspect.getsourcefile(type(model)) == inspect.getsourcefile(clip.model.CLIP) and type(model).__name__ == "CLIP"
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
    from clip_adapter.models.clip_loader import _released_weights

    assert _released_weights() == _clip().clip._MODELS
