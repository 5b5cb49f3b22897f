"""What the frozen-feature methods (Tip-Adapter, GDA, LP++, CLAP, TaskRes) share: small helpers only."""
from __future__ import annotations

import torch


def unit(x: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit L2 norm (CLIP's feature normalisation)."""
    return x / x.norm(dim=-1, keepdim=True)


def reference_template_mode(dataset_name: str) -> str:
    """The prompts of the frozen-feature references: ImageNet's template ensemble for ImageNet, the
    dataset's hand-crafted template elsewhere (Tip-Adapter, GDA, LP++, CLAP and TaskRes all do so)."""
    return "ensemble" if dataset_name == "ImageNet" else "single"
