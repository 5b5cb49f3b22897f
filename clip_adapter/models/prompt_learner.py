"""CoOp's learnable prompt context and the text encoder that runs the backbone's text tower on it.

A prompt is ``<prefix> ctx_1 .. ctx_M <class name tokens> . <end> <pad>`` in token-embedding space,
where ``<prefix>`` is the tokenizer's start token (CLIP's ``[SOS]``) or nothing (tokenizers without
one, e.g. SigLIP's); only the M context vectors train (one shared set, or one set per class with
``csc``). The class name can sit at the ``end`` (as above), in the ``middle`` of the context or at the
``front``. All three layouts are one gather over the same ``[prefix | ctx | name . end pad]``
sequence, so the end token, where a CLIP text tower reads the sentence feature, never moves.

With ``ctx_init`` (e.g. ``"a photo of a"``) CoOp's rule applies exactly (its trainers/coop.py):

* the number of context vectors is the number of *words*, ``len(ctx_init.split(" "))`` (after
  ``_`` -> space), whatever N_CTX says;
* they start as the token embeddings of the phrase's first that-many *tokens*, and the prompt is
  tokenised from the whole phrase: ``[SOS] <phrase tokens> <class name> . [EOS]``, of which the
  first n_ctx token positions are learned and the rest stay fixed. For a phrase whose words are
  one token each ("a photo of a") that is the whole phrase; for one with a word of two BPE tokens
  ("itap of a": it|ap|of|a) it is 3 vectors over "it ap of", and "a" stays a fixed token.
  Either way, before training the prompts *are* the hand-written template and the text features
  equal CLIP's zero-shot ones;
* the context is one shared set even with CSC True (CoOp's class-specific branch is only taken
  for random init); the one line logged at build says so.

In the ``middle``/``front`` layouts the "class name" is the first ``len(tokens(name))`` tokens after
the learned context, as in CoOp's loop, which with fixed leftover phrase tokens is not only the name;
kept so a CTX_INIT run matches CoOp's. The fixed token embeddings are non-persistent buffers:
checkpoints hold only the context, as in CoOp.

Everything model-specific (tokenizer, special tokens, context length, attention mask, pooling) comes
from the backbone (``clip_adapter.backbones``), so the same learner is CoOp on OpenAI's CLIP, on
open_clip's LAION models and on SigLIP (whose text tower has no causal mask: there the context also
sees the tokens after it, which is that model's own text encoding, not an error).
"""
from __future__ import annotations

import logging
from typing import List, Sequence

import torch
from torch import nn

from clip_adapter.backbones import PromptTooLong, as_backbone
from clip_adapter.errors import ConfigError

log = logging.getLogger(__name__)

POSITIONS = ("end", "middle", "front")


class PromptLearner(nn.Module):
    """Learnable context vectors -> prompt embeddings ``[n_cls, context_length, width]``."""

    def __init__(
        self,
        backbone,
        classnames: Sequence[str],
        n_ctx: int = 16,
        ctx_init: str = "",
        csc: bool = False,
        class_token_position: str = "end",
    ) -> None:
        """``backbone``: a ``clip_adapter.backbones.Backbone`` (or the frozen model it loaded)."""
        super().__init__()
        if class_token_position not in POSITIONS:
            raise ConfigError(f"TRAINER.COOP.CLASS_TOKEN_POSITION must be one of {', '.join(POSITIONS)}, got {class_token_position!r}")
        backbone = as_backbone(backbone)
        embed = backbone.token_embedding
        dtype = backbone.text_dtype  # the transformer's dtype (fp16 after a half conversion); embeddings may stay fp32
        width = embed.weight.shape[1]
        context_length = backbone.context_length
        p = backbone.prefix_tokens
        names = [c.replace("_", " ") for c in classnames]
        n_cls = len(names)

        phrase = ctx_init.replace("_", " ")
        if phrase.strip():
            n_ctx = len(phrase.split(" "))  # CoOp: words, not tokens
            with torch.no_grad():
                tokens = backbone.tokenize([phrase]).to(embed.weight.device)
                init = embed(tokens)[0, p : p + n_ctx].detach().clone()
            if csc:
                log.warning("TRAINER.COOP.CSC True has no effect with TRAINER.COOP.CTX_INIT %r: one shared context is learned, "
                            "as in CoOp (class-specific contexts need a random init, CTX_INIT \"\")", ctx_init)
                csc = False
            prefix = phrase
        else:
            if n_ctx < 1:
                raise ConfigError(f"TRAINER.COOP.N_CTX must be >= 1 without CTX_INIT, got {n_ctx}")
            init = torch.empty((n_cls, n_ctx, width) if csc else (n_ctx, width), dtype=dtype, device=embed.weight.device)
            nn.init.normal_(init, std=0.02)
            prefix = " ".join(["X"] * n_ctx)
        self.ctx = nn.Parameter(init.to(dtype))
        self.n_ctx = n_ctx
        self.n_cls = n_cls
        self.n_prefix = p
        self.csc = csc
        self.position = class_token_position
        self.init_phrase = prefix

        prompts = [f"{prefix} {name}." for name in names]
        try:
            tokenized = backbone.tokenize(prompts)
        except PromptTooLong:
            longest = max(names, key=lambda n: len(backbone.token_ids(n)))
            raise ConfigError(
                f"the prompt for class {longest!r} is longer than the text encoder's {context_length} tokens with {n_ctx} "
                "context tokens; lower TRAINER.COOP.N_CTX or shorten the class name"
            ) from None
        tokenized = tokenized.to(embed.weight.device)
        with torch.no_grad():
            embedding = embed(tokenized).type(dtype)
        # Fixed parts, rebuilt from the class names on load: never saved (CoOp drops them too).
        self.register_buffer("token_prefix", embedding[:, :p].clone(), persistent=False)
        self.register_buffer("token_suffix", embedding[:, p + n_ctx :].clone(), persistent=False)
        self.register_buffer("tokenized_prompts", tokenized, persistent=False)
        lens = [len(backbone.token_ids(n)) for n in names]
        self.register_buffer("order", self._token_order(lens, context_length), persistent=False)

    def _token_order(self, name_lens: List[int], length: int) -> torch.Tensor:
        """Per class, the source index of every output token in the ``end`` layout [prefix|ctx|name|rest]."""
        rows = []
        m, p = self.n_ctx, self.n_prefix
        for n in name_lens:
            sos, ctx, name = list(range(p)), list(range(p, p + m)), list(range(p + m, p + m + n))
            rest = list(range(p + m + n, length))
            if self.position == "end":
                row = sos + ctx + name + rest
            elif self.position == "middle":
                half = m // 2
                row = sos + ctx[:half] + name + ctx[half:] + rest
            else:
                row = sos + name + ctx + rest
            rows.append(row)
        return torch.tensor(rows, dtype=torch.long)

    def forward(self) -> torch.Tensor:
        ctx = self.ctx if self.csc else self.ctx.unsqueeze(0).expand(self.n_cls, -1, -1)
        prompts = torch.cat([self.token_prefix, ctx, self.token_suffix], dim=1)
        if self.position == "end":
            return prompts
        index = self.order.unsqueeze(-1).expand(-1, -1, prompts.shape[-1])
        return torch.gather(prompts, 1, index)


class PromptTextEncoder(nn.Module):
    """The backbone's text tower applied to prompt *embeddings* (what ``encode_text`` does after its
    lookup), with the model's own attention mask, positional embedding, pooling and projection.

    It holds a reference to the frozen backbone, no parameters; it is never registered for checkpoints.
    """

    def __init__(self, backbone) -> None:
        super().__init__()
        self._backbone = as_backbone(backbone)  # not a module attribute: its weights are not this module's
        self.dtype = self._backbone.text_dtype

    def forward(self, prompts: torch.Tensor, tokenized_prompts: torch.Tensor) -> torch.Tensor:
        return self._backbone.encode_text_embeddings(prompts, tokenized_prompts)
