"""Zero-shot text classifier: class names x templates -> one normalised weight row per class."""
from __future__ import annotations

from typing import Sequence

import torch


def format_prompts(classnames: Sequence[str], template: str) -> list[str]:
    return [template.format(c.replace("_", " ")) for c in classnames]


@torch.no_grad()
def encode_text_classifier(model, classnames: Sequence[str], templates: Sequence[str], device) -> torch.Tensor:
    """Mean of the normalised template embeddings per class, renormalised (CLIP's recipe), fp32 on CPU.

    Classes are kept by position, never by name, so two classes with equal names stay two rows.
    """
    from clip_adapter.models.clip_loader import _clip

    clip = _clip()
    rows = []
    for name in classnames:
        prompts = [t.format(name.replace("_", " ")) for t in templates]
        tokens = clip.tokenize(prompts).to(device)
        emb = model.encode_text(tokens).float()
        emb = emb / emb.norm(dim=-1, keepdim=True)
        mean = emb.mean(dim=0)
        rows.append(mean / mean.norm())
    return torch.stack(rows).cpu()
