"""A residual MLP with LayerNorm and GELU: a worked example of your own model (docs/models.md).

Use it with ``train.model.name: examples/resmlp.py:ResMLP``. The workflow calls
``ResMLP(input_shape=..., num_classes=..., width=..., depth=..., batchnorm=..., **extra)``
with the spec's keys; ``expansion`` is an extra key of this model (the schema allows extra
keys for your own models only).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class Block(nn.Module):
    """Pre-norm residual block: ``x + W2 GELU(W1 LayerNorm(x))``, hidden ``expansion * width``."""

    def __init__(self, width: int, expansion: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.up = nn.Linear(width, expansion * width)
        self.down = nn.Linear(expansion * width, width)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.down(nn.functional.gelu(self.up(self.norm(x))))


class ResMLP(nn.Module):
    """Inputs ``(B, *input_shape)`` -> logits ``(B, num_classes)``; ``features`` ``(B, width)``."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, width: int = 64,
                 depth: int = 2, batchnorm: bool = False, expansion: int = 2):
        super().__init__()
        if batchnorm:
            raise ValueError("ResMLP normalises with LayerNorm; set batchnorm: false")
        self.embed = nn.Linear(math.prod(input_shape), width)
        self.blocks = nn.Sequential(*[Block(width, expansion) for _ in range(depth)])
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """The penultimate representation (B, width), used by the feature-neighbour figure."""
        return self.norm(self.blocks(self.embed(torch.flatten(x, 1))))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))
