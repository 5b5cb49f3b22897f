"""The model layer that CoOp builds on: prompt layouts, the text tower on embeddings, checkpoint contents."""
from __future__ import annotations

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


def test_ctx_init_with_csc_learns_one_shared_context(tiny_clip, caplog):
    """CoOp takes its class-specific branch only for a random init: CTX_INIT + CSC True is shared."""
    with caplog.at_level("WARNING"):
        pl = PromptLearner(tiny_clip, CLASSES, n_ctx=16, ctx_init="a photo of a", csc=True)
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
def test_ctx_init_with_a_two_token_word_counts_words_as_coop(tiny_clip, position):
    """"itap of a" is 3 words but 4 BPE tokens (it|ap|of|a): CoOp learns 3 vectors initialised from
    the tokens it, ap, of; "a" stays a fixed token of the prompt, so the start is the template."""
    phrase = "itap of a"
    assert len(_tokens(phrase)) == 4 and len(phrase.split(" ")) == 3
    pl = PromptLearner(tiny_clip, CLASSES, n_ctx=16, ctx_init=phrase, class_token_position=position)
    assert pl.n_ctx == 3 and pl.ctx.shape == (3, 64)
    clip = _clip()
    with torch.no_grad():
        phrase_emb = tiny_clip.token_embedding(clip.tokenize(phrase))[0]
        assert torch.equal(pl.ctx, phrase_emb[1:4])  # it, ap, of
        tokens = clip.tokenize([f"{phrase} {c.replace('_', ' ')}." for c in CLASSES])
        assert torch.equal(pl.tokenized_prompts, tokens)
        expected = coop_reference_prompts(pl, [len(_tokens(c.replace("_", " "))) for c in CLASSES])
        assert torch.equal(pl(), expected)
        if position == "end":  # untrained, the prompt is the template itself
            assert torch.equal(pl(), tiny_clip.token_embedding(tokens))


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
