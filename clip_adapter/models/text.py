"""Zero-shot text classifier: class names x templates -> one normalised weight row per class."""
from __future__ import annotations

from typing import Sequence

import torch

from clip_adapter.backbones import as_backbone

# Prompts per text-encoder call: large enough to keep the encoder busy, small enough for any GPU.
TEXT_BATCH = 512


@torch.no_grad()
def encode_text_classifier(backbone, classnames: Sequence[str], templates: Sequence[str], device) -> torch.Tensor:
    """Mean of the normalised template embeddings per class, renormalised (CLIP's recipe), fp32 on CPU.

    ``backbone``: a ``clip_adapter.backbones.Backbone`` (or the frozen model it loaded). All classes x
    templates go through the encoder in large batches (one class at a time is slow on CPU). Classes
    are kept by position, never by name, so two classes with equal names stay two rows.
    """
    backbone = as_backbone(backbone)
    prompts = [t.format(name.replace("_", " ")) for name in classnames for t in templates]
    tokens = backbone.tokenize(prompts)
    chunks = [backbone.encode_text(tokens[i : i + TEXT_BATCH].to(device)).float().cpu() for i in range(0, len(prompts), TEXT_BATCH)]
    emb = torch.cat(chunks).reshape(len(classnames), len(templates), -1)
    emb = emb / emb.norm(dim=-1, keepdim=True)
    mean = emb.mean(dim=1)
    return mean / mean.norm(dim=-1, keepdim=True)
