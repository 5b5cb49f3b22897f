"""The learnable prompt context of the prompt-learning methods and the text tower that runs on it.

A prompt is ``[SOS] ctx_1 .. ctx_M <class name tokens> . [EOS] <pad>`` in token-embedding space;
only the M context vectors train (one shared set, or one set per class with ``csc``). The class
name can sit at the ``end`` (as above), in the ``middle`` of the context or at the ``front``. All
three layouts are one gather over the same ``[SOS | ctx | name . EOS pad]`` sequence, so the EOS
position, which CLIP reads the text feature from, never moves.

With ``ctx_init`` (e.g. ``"a photo of a"``) the context starts from that phrase's token embeddings.
The methods differ only in how the phrase meets N_CTX (``init_rule``):

``phrase`` (CoOp, CoCoOp, KgCoOp)
    M = the phrase's token count, whatever N_CTX says; before training the prompts *are* the
    hand-written template and the text features equal CLIP's zero-shot ones.
``pad`` (ProGrad)
    M = N_CTX >= the phrase's tokens; the phrase fills the last context slots, the ones before it
    start at zero.
``head`` (MaPLe)
    M = N_CTX; when M <= the phrase's tokens, the first M phrase tokens are learnable and the rest
    of the phrase stays fixed text after them; a longer M starts at random.

CoCoOp shifts the context per image (``ConditionalPromptLearner``): the prompts of a batch are
``[B, C, L, width]``, one set of class prompts per image. The fixed token embeddings are
non-persistent buffers: checkpoints hold only the learned tensors, as in CoOp.

CLIP internals used here (token embedding, positional embedding, the transformer's residual
blocks, ``ln_final``, ``text_projection``) stay inside ``clip_adapter/models``.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import List, Optional, Sequence

import torch
from torch import nn

from clip_adapter.errors import ConfigError
from clip_adapter.models.clip_loader import _clip

POSITIONS = ("end", "middle", "front")
INIT_RULES = ("phrase", "pad", "head")


def _token_count(text: str) -> int:
    return len(_clip().clip._tokenizer.encode(text))


def text_dtype(clip_model) -> torch.dtype:
    """The text tower's compute dtype. ``clip_model.dtype`` is the *image* tower's (its conv1), which
    FEATURES.PREC may set apart from the text tower's (fp16 features, fp32 text transformer)."""
    return clip_model.text_projection.dtype


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
        init_rule: str = "phrase",
        node: str = "TRAINER.COOP",
    ) -> None:
        super().__init__()
        if class_token_position not in POSITIONS:
            raise ConfigError(f"{node}.CLASS_TOKEN_POSITION must be one of {', '.join(POSITIONS)}, got {class_token_position!r}")
        if init_rule not in INIT_RULES:
            raise ValueError(f"init_rule must be one of {INIT_RULES}, got {init_rule!r}")
        clip = _clip()
        embed = clip_model.token_embedding
        dtype = text_dtype(clip_model)  # fp16 after clip's convert_weights; the token embedding stays fp32
        device = embed.weight.device
        width = embed.weight.shape[1]
        context_length = clip_model.positional_embedding.shape[0]
        names = [c.replace("_", " ") for c in classnames]
        n_cls = len(names)

        phrase = ctx_init.replace("_", " ").strip()
        k = _token_count(phrase) if phrase else 0
        if phrase and init_rule == "head" and n_ctx > k:
            phrase, k = "", 0  # MaPLe: a context longer than the phrase starts at random
        if phrase:
            with torch.no_grad():
                tokens = clip.tokenize(phrase, context_length=context_length).to(device)
                phrase_emb = embed(tokens)[0, 1 : 1 + k].detach().clone()
            if init_rule == "phrase":
                n_ctx, init, prefix = k, phrase_emb, phrase
            elif init_rule == "pad":
                if n_ctx < k:
                    raise ConfigError(f"{node}.N_CTX ({n_ctx}) must be at least the {k} tokens of {node}.CTX_INIT {ctx_init!r}, "
                                      "which fill the last context slots; raise N_CTX or shorten CTX_INIT")
                init = torch.cat([torch.zeros(n_ctx - k, width, device=device), phrase_emb])
                prefix = " ".join(["X"] * (n_ctx - k) + [phrase])
            else:  # head
                if class_token_position != "end" and n_ctx < k:
                    raise ConfigError(f"{node}: a CTX_INIT longer than N_CTX keeps the rest of the phrase as text, "
                                      "which needs the class token at the end")
                init, prefix = phrase_emb[:n_ctx], phrase
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

        prompts = [f"{prefix} {name}." for name in names]
        try:
            tokenized = clip.tokenize(prompts, context_length=context_length)
        except RuntimeError:
            longest = max(names, key=_token_count)
            raise ConfigError(
                f"the prompt for class {longest!r} is longer than CLIP's {context_length} tokens with {n_ctx} context "
                f"tokens; lower {node}.N_CTX or shorten the class name"
            ) from None
        tokenized = tokenized.to(device)
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

    def __init__(self, clip_model, classnames: Sequence[str], embed_dim: int, **kwargs) -> None:
        super().__init__(clip_model, classnames, **kwargs)
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


class PromptTextEncoder(nn.Module):
    """CLIP's text tower applied to prompt *embeddings* (what ``encode_text`` does after its lookup),
    optionally with deep prompts (MaPLe): before residual block i (1 <= i <= len(deep)) the hidden
    states of the context positions ``[start, start + n)`` are replaced by ``deep[i - 1]``.

    ``trim``: run the tower on the first ``max EOS position + 1`` tokens only. CLIP's text attention
    is causal and the feature is read at EOS, so the padding after the longest prompt's EOS cannot
    change it (equal up to float summation order); prompts are ~10-20 of CLIP's 77 tokens, so this
    cuts the cost and the activation memory of a text pass several-fold (CoCoOp runs one per image).

    It holds references to the frozen CLIP's modules; it is never registered for checkpoints.
    """

    def __init__(self, clip_model, trim: bool = False) -> None:
        super().__init__()
        self.transformer = clip_model.transformer
        self.positional_embedding = clip_model.positional_embedding
        self.ln_final = clip_model.ln_final
        self.text_projection = clip_model.text_projection
        self.dtype = text_dtype(clip_model)
        self.trim = trim

    def forward(self, prompts: torch.Tensor, tokenized_prompts: torch.Tensor,
                deep: Sequence[torch.Tensor] = (), start: int = 1) -> torch.Tensor:
        length = prompts.shape[1]
        if self.trim and prompts.shape[0] > 0:
            length = int(tokenized_prompts.argmax(dim=-1).max().item()) + 1
            prompts, tokenized_prompts = prompts[:, :length], tokenized_prompts[:, :length]
        x = prompts.type(self.dtype) + self.positional_embedding[:length].type(self.dtype)
        x = x.permute(1, 0, 2)  # NLD -> LND, as CLIP's transformer expects
        if not deep:
            x = self.transformer(x)
        else:
            blocks = list(self.transformer.resblocks)
            if len(deep) >= len(blocks):
                raise ValueError(f"{len(deep)} deep prompts for a text tower of {len(blocks)} layers (at most {len(blocks) - 1})")
            for i, block in enumerate(blocks):
                if 1 <= i <= len(deep):
                    p = deep[i - 1].to(x.dtype)
                    x = torch.cat([x[:start], p.unsqueeze(1).expand(-1, x.shape[1], -1), x[start + p.shape[0] :]])
                x = block(x)
        x = x.permute(1, 0, 2)
        x = self.ln_final(x).type(self.dtype)
        eot = tokenized_prompts.argmax(dim=-1)  # the EOS token has the largest id
        return x[torch.arange(x.shape[0], device=x.device), eot] @ self.text_projection

    def encode_chunked(self, prompts: torch.Tensor, tokenized_prompts: torch.Tensor, chunk: int) -> torch.Tensor:
        """The tower on ``[N, L, w]`` prompts, at most ``chunk`` prompts per call (bounds the
        transient memory of one call; under autograd every chunk's activations are kept)."""
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        outs = [self(prompts[i : i + chunk], tokenized_prompts[i : i + chunk]) for i in range(0, prompts.shape[0], chunk)]
        return torch.cat(outs)
