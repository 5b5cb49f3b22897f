"""MaPLe's building blocks: coupled deep prompts in CLIP's text and vision towers.

MaPLe (Khattak et al., CVPR'23; muzairkhattak/multimodal-prompt-learning trainers/maple.py and its
modified clip/model.py) learns, for prompt depth J:

* layer 0: the text context ``ctx`` ([n_ctx, text width], in the prompt after SOS, as CoOp) and,
  for the vision tower, ``proj(ctx)`` ([n_ctx, vision width]) appended after the patch tokens
  (after the positional embedding, before ``ln_pre``);
* layers 1 .. J-1: text prompts ``P_i`` ([n_ctx, text width]) that *replace* the hidden states of
  the context positions before block i, and vision prompts ``F_i(P_i)`` that replace the last
  n_ctx tokens before vision block i. ``F_i`` (Linear text width -> vision width) are the
  text->vision coupling functions; all J-1 start as copies of one initialised layer, as in MaPLe.

So prompts sit at every layer < J of both towers and the vision prompts are functions of the text
ones. Only the prompt learner trains; the towers are the frozen CLIP's modules, run here block by
block (``vision_tower_deep``, ``PromptTextEncoder(deep=...)``). With no prompts both functions are
exactly the frozen CLIP's encoders.

OpenAI CLIP ViTs only, as MaPLe's code (it has no ResNet path); ``require_prompt_vit`` refuses
anything else in one line.
"""
from __future__ import annotations

import copy
from typing import List, Sequence, Tuple

import torch
from torch import nn

from clip_adapter.errors import ConfigError
from clip_adapter.backbones.openai import clip_model_module
from clip_adapter.models.prompt_learner import PromptLearner, blocks_with_deep_prompts


def require_prompt_vit(clip_model, who: str = "MaPLe") -> None:
    """Refuse (one line) a model whose image tower is not OpenAI CLIP's VisionTransformer."""
    vit = clip_model_module().VisionTransformer
    if not isinstance(getattr(clip_model, "visual", None), vit):
        kind = type(getattr(clip_model, "visual", None)).__name__
        raise ConfigError(f"{who} puts prompts inside the image encoder, which needs an OpenAI CLIP ViT (ViT-B/16, ViT-B/32, ...); "
                          f"this backbone's image encoder is a {kind}: set MODEL.BACKBONE.NAME to a ViT")


def tower_depths(clip_model) -> Tuple[int, int]:
    """(text layers, vision layers)."""
    return len(clip_model.transformer.resblocks), len(clip_model.visual.transformer.resblocks)


def vision_tower_deep(visual, images: torch.Tensor, shallow: torch.Tensor = None, deep: Sequence[torch.Tensor] = ()) -> torch.Tensor:
    """CLIP's ViT forward with ``shallow`` ([n, width]) appended after the positional embedding and
    ``deep[i - 1]`` replacing the last n tokens before block i (1 <= i <= len(deep)); [B, D]."""
    if deep and shallow is None:
        raise ValueError("deep vision prompts replace the shallow ones: pass the shallow prompts too")
    dtype = visual.conv1.weight.dtype
    x = visual.conv1(images.type(dtype))
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)  # [B, grid**2, width]
    cls = visual.class_embedding.to(x.dtype) + torch.zeros(x.shape[0], 1, x.shape[-1], dtype=x.dtype, device=x.device)
    x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
    if shallow is not None:
        x = torch.cat([x, shallow.to(x.dtype).unsqueeze(0).expand(x.shape[0], -1, -1)], dim=1)
    x = visual.ln_pre(x).permute(1, 0, 2)  # NLD -> LND
    x = blocks_with_deep_prompts(visual.transformer.resblocks, x, deep, None, "vision")
    x = visual.ln_post(x.permute(1, 0, 2)[:, 0, :])
    return x @ visual.proj if visual.proj is not None else x


class MultiModalPromptLearner(PromptLearner):
    """MaPLe's prompts: the text context (a ``PromptLearner``, ``head`` init rule), the deeper text
    prompts and the coupling functions to the vision tower.

    Parameter names follow MaPLe's (``ctx``, ``proj``, ``compound_prompts_text.<i>``,
    ``compound_prompt_projections.<i>``), so under a ``prompt_learner.`` prefix they are the keys of
    its checkpoints.
    """

    def __init__(self, clip_model, classnames: Sequence[str], n_ctx: int = 2, ctx_init: str = "a photo of a",
                 depth: int = 9, node: str = "TRAINER.MAPLE") -> None:
        require_prompt_vit(clip_model)
        text_layers, vision_layers = tower_depths(clip_model)
        if not 1 <= depth <= min(text_layers, vision_layers):
            raise ConfigError(f"{node}.PROMPT_DEPTH must be in 1..{min(text_layers, vision_layers)} for this backbone "
                              f"({text_layers} text / {vision_layers} vision layers), got {depth}")
        super().__init__(clip_model, classnames, n_ctx=n_ctx, ctx_init=ctx_init, init_rule="head", node=node)
        dtype, device = self.ctx.dtype, self.ctx.device
        vision_width = clip_model.visual.conv1.weight.shape[0]
        self.depth = depth
        self.proj = nn.Linear(self.width, vision_width).to(device=device, dtype=dtype)
        prompts = []
        for _ in range(depth - 1):
            p = torch.empty(self.n_ctx, self.width, device=device, dtype=dtype)
            nn.init.normal_(p, std=0.02)
            prompts.append(nn.Parameter(p))
        self.compound_prompts_text = nn.ParameterList(prompts)
        single = nn.Linear(self.width, vision_width).to(device=device, dtype=dtype)
        self.compound_prompt_projections = nn.ModuleList([copy.deepcopy(single) for _ in range(depth - 1)])

    def forward(self) -> Tuple[torch.Tensor, torch.Tensor, List[torch.Tensor], List[torch.Tensor]]:
        """(text prompts [C, L, w], shallow vision prompts [n, vw], deep text prompts, deep vision prompts)."""
        deep_text = list(self.compound_prompts_text)
        deep_vision = [f(p) for f, p in zip(self.compound_prompt_projections, deep_text)]
        return self.assemble(self.ctx), self.proj(self.ctx), deep_text, deep_vision


class MaPLeModule(nn.Module):
    """What MaPLe registers (``MultiModalPromptLearner``): the prompt learner under ``prompt_learner``."""

    def __init__(self, prompt_learner: MultiModalPromptLearner) -> None:
        super().__init__()
        self.prompt_learner = prompt_learner
