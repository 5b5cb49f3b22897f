"""CLIP-Adapter's bottleneck MLP and its residual blend with the frozen feature."""
from __future__ import annotations

import torch
from torch import nn


class Adapter(nn.Module):
    """Linear(c -> c/r) -> ReLU -> Linear(c/r -> c) -> ReLU, no biases, as in the paper.

    ``c_in`` comes from the backbone's embedding width (1024 for RN50, 512 for ViT-B), never a constant.
    """

    def __init__(self, c_in: int, reduction: int = 4) -> None:
        super().__init__()
        if reduction < 1 or c_in // reduction < 1:
            raise ValueError(f"REDUCTION must be between 1 and {c_in}, got {reduction}")
        hidden = c_in // reduction
        self.fc = nn.Sequential(
            nn.Linear(c_in, hidden, bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, c_in, bias=False),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


def residual_blend(adapter: Adapter, feats: torch.Tensor, ratio: float) -> torch.Tensor:
    """alpha * A(f) + (1 - alpha) * f; alpha = 0 returns f itself, bit for bit."""
    if ratio == 0:
        return feats
    return ratio * adapter(feats) + (1.0 - ratio) * feats
