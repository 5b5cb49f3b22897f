"""The learnable prompt context of the prompt-learning methods and the text tower that runs on it.

A prompt is ``<prefix> ctx_1 .. ctx_M <class name tokens> . <end> <pad>`` in token-embedding space,
where ``<prefix>`` is the tokenizer's start token (CLIP's ``[SOS]``) or nothing (tokenizers without
one, e.g. SigLIP's); only the M context vectors train (one shared set, or one set per class with
``csc``). The class name can sit at the ``end`` (as above), in the ``middle`` of the context or at the
``front``. All three layouts are one gather over the same ``[prefix | ctx | name . end pad]``
sequence, so the end token, where a CLIP text tower reads the sentence feature, never moves.

With ``ctx_init`` (e.g. ``"a photo of a"``) the context starts from that phrase's token embeddings.
The methods differ only in how the phrase meets N_CTX (``init_rule``):

``phrase`` (CoOp, CoCoOp, KgCoOp: CoOp's trainers/coop.py rule, exactly)
    M = the number of *words*, ``len(ctx_init.split(" "))`` (after ``_`` -> space), whatever N_CTX
    says; the context starts as the token embeddings of the phrase's first M *tokens*, and the
    prompt is tokenised from the whole phrase, of which the first M token positions are learned and
    the rest stay fixed. For a phrase whose words are one token each ("a photo of a") that is the
    whole phrase; with a word of two BPE tokens ("itap of a": it|ap|of|a) it is 3 vectors over
    "it ap of", and "a" stays a fixed token. Either way, before training the prompts *are* the
    hand-written template. The context is one shared set even with CSC True (CoOp's class-specific
    branch is only taken for random init); one logged line says so.
``pad`` (ProGrad)
    M = N_CTX >= the phrase's tokens; the phrase fills the last context slots, the ones before it
    start at zero.
``head`` (MaPLe)
    M = N_CTX; when M <= the phrase's tokens, the first M phrase tokens are learnable and the rest
    of the phrase stays fixed text after them; a longer M starts at random.

In the ``middle``/``front`` layouts the "class name" is the first ``len(tokens(name))`` tokens after
the learned context, as in CoOp's loop, which with fixed leftover phrase tokens is not only the name;
kept so a CTX_INIT run matches CoOp's.

CoCoOp shifts the context per image (``ConditionalPromptLearner``): the prompts of a batch are
``[B, C, L, width]``, one set of class prompts per image. The fixed token embeddings are
non-persistent buffers: checkpoints hold only the learned tensors, as in CoOp.

Everything model-specific (tokenizer, special tokens, context length, attention mask, pooling) comes
from the backbone (``clip_adapter.backbones``), so the same learners run on OpenAI's CLIP, on
open_clip's LAION models and on SigLIP (whose text tower has no causal mask: there the context also
sees the tokens after it, which is that model's own text encoding, not an error). Deep prompts
(MaPLe) and the trimmed text pass need OpenAI's text tower internals and are refused elsewhere.
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from typing import List, Optional, Sequence

import torch
from torch import nn

from clip_adapter.backbones import PromptTooLong, as_backbone
from clip_adapter.errors import ConfigError

log = logging.getLogger(__name__)

POSITIONS = ("end", "middle", "front")
INIT_RULES = ("phrase", "pad", "head")


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
        init_rule: str = "phrase",
        node: str = "TRAINER.COOP",
    ) -> None:
        """``backbone``: a ``clip_adapter.backbones.Backbone`` (or the frozen model it loaded)."""
        super().__init__()
        if class_token_position not in POSITIONS:
            raise ConfigError(f"{node}.CLASS_TOKEN_POSITION must be one of {', '.join(POSITIONS)}, got {class_token_position!r}")
        if init_rule not in INIT_RULES:
            raise ValueError(f"init_rule must be one of {INIT_RULES}, got {init_rule!r}")
        backbone = as_backbone(backbone)
        embed = backbone.token_embedding
        dtype = backbone.text_dtype  # the transformer's dtype (fp16 after a half conversion); embeddings may stay fp32
        device = embed.weight.device
        width = embed.weight.shape[1]
        context_length = backbone.context_length
        p = backbone.prefix_tokens
        names = [c.replace("_", " ") for c in classnames]
        n_cls = len(names)

        phrase = ctx_init.replace("_", " ")
        k = len(backbone.token_ids(phrase.strip())) if phrase.strip() else 0
        if phrase.strip() and init_rule == "head" and n_ctx > k:
            phrase, k = "", 0  # MaPLe: a context longer than the phrase starts at random
        if phrase.strip():
            if init_rule == "phrase":
                n_ctx = len(phrase.split(" "))  # CoOp: words, not tokens
            with torch.no_grad():
                tokens = backbone.tokenize([phrase.strip()]).to(device)
                phrase_emb = embed(tokens)[0, p : p + max(k, n_ctx if init_rule == "phrase" else k)].detach().clone()
            if init_rule == "phrase":
                init, prefix = phrase_emb[:n_ctx], phrase
                if csc:
                    log.warning("%s.CSC True has no effect with %s.CTX_INIT %r: one shared context is learned, as in CoOp "
                                "(class-specific contexts need a random init, CTX_INIT \"\")", node, node, ctx_init)
                    csc = False
            elif init_rule == "pad":
                if n_ctx < k:
                    raise ConfigError(f"{node}.N_CTX ({n_ctx}) must be at least the {k} tokens of {node}.CTX_INIT {ctx_init!r}, "
                                      "which fill the last context slots; raise N_CTX or shorten CTX_INIT")
                init = torch.cat([torch.zeros(n_ctx - k, width, device=device), phrase_emb[:k]])
                prefix = " ".join(["X"] * (n_ctx - k) + [phrase.strip()])
            else:  # head
                if class_token_position != "end" and n_ctx < k:
                    raise ConfigError(f"{node}: a CTX_INIT longer than N_CTX keeps the rest of the phrase as text, "
                                      "which needs the class token at the end")
                init, prefix = phrase_emb[:n_ctx], phrase.strip()
                if csc:
                    init = init.unsqueeze(0).repeat(n_cls, 1, 1)
        else:
            if n_ctx < 1:
                raise ConfigError(f"{node}.N_CTX must be >= 1 without CTX_INIT, got {n_ctx}")
            init = torch.empty((n_cls, n_ctx, width) if csc else (n_ctx, width), dtype=dtype, device=device)
            nn.init.normal_(init, std=0.02)
            prefix = " ".join(["X"] * n_ctx)
        self.ctx = nn.Parameter(init.to(dtype))
        self.n_ctx = n_ctx
        self.n_cls = n_cls
        self.csc = csc
        self.position = class_token_position
        self.init_phrase = prefix
        self.width = width
        self.n_prefix = p

        prompts = [f"{prefix} {name}." for name in names]
        try:
            tokenized = backbone.tokenize(prompts)
        except PromptTooLong:
            longest = max(names, key=lambda n: len(backbone.token_ids(n)))
            raise ConfigError(
                f"the prompt for class {longest!r} is longer than the text encoder's {context_length} tokens with {n_ctx} "
                f"context tokens; lower {node}.N_CTX or shorten the class name"
            ) from None
        tokenized = tokenized.to(device)
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

    def assemble(self, ctx: torch.Tensor) -> torch.Tensor:
        """Prompts from context vectors: ``[n_ctx, w]`` or ``[C, n_ctx, w]`` -> ``[C, L, w]``;
        ``[B, C, n_ctx, w]`` (a context per image and class) -> ``[B, C, L, w]``."""
        if ctx.dim() == 2:
            ctx = ctx.unsqueeze(0).expand(self.n_cls, -1, -1)
        lead = ctx.shape[:-3]
        prefix = self.token_prefix.expand(*lead, -1, -1, -1)
        suffix = self.token_suffix.expand(*lead, -1, -1, -1)
        prompts = torch.cat([prefix, ctx.to(prefix.dtype), suffix], dim=-2)
        if self.position == "end":
            return prompts
        index = self.order.unsqueeze(-1).expand(*lead, -1, -1, prompts.shape[-1])
        return torch.gather(prompts, -2, index)

    def forward(self) -> torch.Tensor:
        return self.assemble(self.ctx)


class ConditionalPromptLearner(PromptLearner):
    """CoCoOp: the context shifted per image by a meta-net of the image feature.

    ``ctx_i = ctx + meta_net(f_i)`` with ``meta_net = Linear(D, D // 16) -> ReLU -> Linear(D // 16,
    width)`` on the *normalised* image feature f_i (as CoCoOp feeds it); the one shift is added to
    every context token. Module names follow CoCoOp's (``meta_net.linear1``/``linear2``), so its
    checkpoints' keys are these.
    """

    def __init__(self, backbone, classnames: Sequence[str], embed_dim: int, **kwargs) -> None:
        super().__init__(backbone, classnames, **kwargs)
        hidden = embed_dim // 16
        if hidden < 1:
            raise ConfigError(f"CoCoOp's meta-net needs an image feature width >= 16 (D // 16 hidden units), got {embed_dim}")
        self.meta_net = nn.Sequential(OrderedDict([
            ("linear1", nn.Linear(embed_dim, hidden)),
            ("relu", nn.ReLU(inplace=True)),
            ("linear2", nn.Linear(hidden, self.width)),
        ])).to(device=self.ctx.device, dtype=self.ctx.dtype)

    def forward(self, image_feats: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``[B, D]`` normalised image features -> prompts ``[B, C, L, w]`` (None: the unshifted ``[C, L, w]``)."""
        if image_feats is None:
            return self.assemble(self.ctx)
        shift = self.meta_net(image_feats.to(self.ctx.dtype))  # [B, w]
        ctx = self.ctx if self.csc else self.ctx.unsqueeze(0).expand(self.n_cls, -1, -1)  # [C, M, w]
        return self.assemble(ctx.unsqueeze(0) + shift[:, None, None, :])


def blocks_with_deep_prompts(blocks, x: torch.Tensor, deep: Sequence[torch.Tensor], start: Optional[int], tower: str) -> torch.Tensor:
    """``x`` ([L, N, W], sequence-first) through CLIP's residual ``blocks``, with the rows
    ``start .. start + n`` replaced by ``deep[i - 1]`` ([n, W]) before block i (1 <= i <= len(deep)),
    as MaPLe's towers do; ``start`` None: the last n rows (the vision prompts follow the patches)."""
    blocks = list(blocks)
    if len(deep) >= len(blocks):
        raise ValueError(f"{len(deep)} deep prompts for a {tower} tower of {len(blocks)} layers (at most {len(blocks) - 1})")
    for i, block in enumerate(blocks):
        if 1 <= i <= len(deep):
            p = deep[i - 1].to(x.dtype)
            at = x.shape[0] - p.shape[0] if start is None else start
            x = torch.cat([x[:at], p.unsqueeze(1).expand(-1, x.shape[1], -1), x[at + p.shape[0] :]])
        x = block(x)
    return x


class PromptTextEncoder(nn.Module):
    """The backbone's text tower applied to prompt *embeddings* (what ``encode_text`` does after its
    lookup), with the model's own attention mask, positional embedding, pooling and projection.

    Two options need OpenAI's text tower (the only family where they are written and tested):
    ``deep`` prompts (MaPLe: before residual block i, 1 <= i <= len(deep), the hidden states of the
    context positions ``[start, start + n)`` are replaced by ``deep[i - 1]``), and ``trim``: run the
    tower on the first ``max EOS position + 1`` tokens only. CLIP's text attention is causal and the
    feature is read at EOS, so the padding after the longest prompt's EOS cannot change it (equal up
    to float summation order); prompts are ~10-20 of CLIP's 77 tokens, so this cuts the cost and the
    activation memory of a text pass several-fold (CoCoOp runs one per image). On other families
    ``trim`` is ignored (their pooling or mask may read the padding) and ``deep`` is refused.

    It holds a reference to the frozen backbone, no parameters; it is never registered for checkpoints.
    """

    def __init__(self, backbone, trim: bool = False) -> None:
        super().__init__()
        self._backbone = as_backbone(backbone)  # not a module attribute: its weights are not this module's
        self.dtype = self._backbone.text_dtype
        self.openai = self._backbone.family == "openai"
        self.trim = trim and self.openai

    def forward(self, prompts: torch.Tensor, tokenized_prompts: torch.Tensor,
                deep: Sequence[torch.Tensor] = (), start: Optional[int] = None) -> torch.Tensor:
        if not deep and not self.trim:
            return self._backbone.encode_text_embeddings(prompts, tokenized_prompts)
        if not self.openai:
            raise ConfigError(f"deep prompts need OpenAI's CLIP text tower; {self._backbone.identity.label} is another family")
        m = self._backbone.model
        start = self._backbone.prefix_tokens if start is None else start
        length = prompts.shape[1]
        if self.trim and prompts.shape[0] > 0:
            length = int(tokenized_prompts.argmax(dim=-1).max().item()) + 1
            prompts, tokenized_prompts = prompts[:, :length], tokenized_prompts[:, :length]
        x = prompts.type(self.dtype) + m.positional_embedding[:length].type(self.dtype)
        x = x.permute(1, 0, 2)  # NLD -> LND, as CLIP's transformer expects
        if not deep:
            x = m.transformer(x)
        else:
            x = blocks_with_deep_prompts(m.transformer.resblocks, x, deep, start, "text")
        x = x.permute(1, 0, 2)
        x = m.ln_final(x).type(self.dtype)
        eot = tokenized_prompts.argmax(dim=-1)  # the EOS token has the largest id
        return x[torch.arange(x.shape[0], device=x.device), eot] @ m.text_projection

    def encode_chunked(self, prompts: torch.Tensor, tokenized_prompts: torch.Tensor, chunk: int) -> torch.Tensor:
        """The tower on ``[N, L, w]`` prompts, at most ``chunk`` prompts per call (bounds the
        transient memory of one call; under autograd every chunk's activations are kept)."""
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        outs = [self(prompts[i : i + chunk], tokenized_prompts[i : i + chunk]) for i in range(0, prompts.shape[0], chunk)]
        return torch.cat(outs)
