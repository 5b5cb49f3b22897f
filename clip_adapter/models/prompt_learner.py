"""CoOp's learnable prompt context and the text encoder that runs CLIP's transformer on it.

A prompt is ``[SOS] ctx_1 .. ctx_M <class name tokens> . [EOS] <pad>`` in token-embedding space;
only the M context vectors train (one shared set, or one set per class with ``csc``). The class
name can sit at the ``end`` (as above), in the ``middle`` of the context or at the ``front``. All
three layouts are one gather over the same ``[SOS | ctx | name . EOS pad]`` sequence, so the EOS
position, which CLIP reads the text feature from, never moves.

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
"""
from __future__ import annotations

import logging
from typing import List, Sequence

import torch
from torch import nn

from clip_adapter.errors import ConfigError
from clip_adapter.models.clip_loader import _clip

log = logging.getLogger(__name__)

POSITIONS = ("end", "middle", "front")


def _token_count(text: str) -> int:
    return len(_clip().clip._tokenizer.encode(text))


class PromptLearner(nn.Module):
    """Learnable context vectors -> prompt embeddings ``[n_cls, context_length, width]``."""

    def __init__(
        self,
        clip_model,
        classnames: Sequence[str],
        n_ctx: int = 16,
        ctx_init: str = "",
        csc: bool = False,
        class_token_position: str = "end",
    ) -> None:
        super().__init__()
        if class_token_position not in POSITIONS:
            raise ConfigError(f"TRAINER.COOP.CLASS_TOKEN_POSITION must be one of {', '.join(POSITIONS)}, got {class_token_position!r}")
        clip = _clip()
        embed = clip_model.token_embedding
        dtype = clip_model.dtype  # the transformer's dtype (fp16 after clip's convert_weights); embeddings stay fp32
        width = embed.weight.shape[1]
        context_length = clip_model.positional_embedding.shape[0]
        names = [c.replace("_", " ") for c in classnames]
        n_cls = len(names)

        phrase = ctx_init.replace("_", " ")
        if phrase.strip():
            n_ctx = len(phrase.split(" "))  # CoOp: words, not tokens
            with torch.no_grad():
                tokens = clip.tokenize(phrase, context_length=context_length).to(embed.weight.device)
                init = embed(tokens)[0, 1 : 1 + n_ctx].detach().clone()
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
        self.csc = csc
        self.position = class_token_position
        self.init_phrase = prefix

        prompts = [f"{prefix} {name}." for name in names]
        try:
            tokenized = clip.tokenize(prompts, context_length=context_length)
        except RuntimeError:
            longest = max(names, key=_token_count)
            raise ConfigError(
                f"the prompt for class {longest!r} is longer than CLIP's {context_length} tokens with {n_ctx} context "
                "tokens; lower TRAINER.COOP.N_CTX or shorten the class name"
            ) from None
        tokenized = tokenized.to(embed.weight.device)
        with torch.no_grad():
            embedding = embed(tokenized).type(dtype)
        # Fixed parts, rebuilt from the class names on load: never saved (CoOp drops them too).
        self.register_buffer("token_prefix", embedding[:, :1].clone(), persistent=False)
        self.register_buffer("token_suffix", embedding[:, 1 + n_ctx :].clone(), persistent=False)
        self.register_buffer("tokenized_prompts", tokenized, persistent=False)
        self.register_buffer("order", self._token_order([_token_count(n) for n in names], context_length), persistent=False)

    def _token_order(self, name_lens: List[int], length: int) -> torch.Tensor:
        """Per class, the source index of every output token in the ``end`` layout [SOS|ctx|name|rest]."""
        rows = []
        m = self.n_ctx
        for n in name_lens:
            sos, ctx, name = [0], list(range(1, 1 + m)), list(range(1 + m, 1 + m + n))
            rest = list(range(1 + m + n, length))
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
    """CLIP's text tower applied to prompt *embeddings* (what ``encode_text`` does after its lookup).

    It holds references to the frozen CLIP's modules; it is never registered for checkpoints.
    """

    def __init__(self, clip_model) -> None:
        super().__init__()
        self.transformer = clip_model.transformer
        self.positional_embedding = clip_model.positional_embedding
        self.ln_final = clip_model.ln_final
        self.text_projection = clip_model.text_projection
        self.dtype = clip_model.dtype

    def forward(self, prompts: torch.Tensor, tokenized_prompts: torch.Tensor) -> torch.Tensor:
        x = prompts + self.positional_embedding.type(self.dtype)
        x = x.permute(1, 0, 2)  # NLD -> LND, as CLIP's transformer expects
        x = self.transformer(x)
        x = x.permute(1, 0, 2)
        x = self.ln_final(x).type(self.dtype)
        eot = tokenized_prompts.argmax(dim=-1)  # the EOS token has the largest id
        return x[torch.arange(x.shape[0], device=x.device), eot] @ self.text_projection
