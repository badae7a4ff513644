"""x8 self-ensemble (the "+" rows of EDSR and later SR papers): the mean of the network's outputs
on the 8 flips and 90-degree rotations of the input, each output turned back first.

    sr = SelfEnsemble(model)(lr)       # or --self-ensemble in tasks.sr.evaluate / upscale / training

A network that commutes with every flip and rotation gives its plain output; a trained SR
network gains a few tenths of a dB for 8 times the compute.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

Transform = Callable[[torch.Tensor], torch.Tensor]


def _rotate(quarter_turns: int, flip: bool) -> tuple[Transform, Transform]:
    """(forward, inverse) on the last two dims: flip the width, then rotate; undo in reverse order."""
    def forward(x: torch.Tensor) -> torch.Tensor:
        return torch.rot90(x.flip(-1) if flip else x, quarter_turns, dims=(-2, -1))

    def inverse(x: torch.Tensor) -> torch.Tensor:
        x = torch.rot90(x, -quarter_turns, dims=(-2, -1))
        return x.flip(-1) if flip else x

    return forward, inverse


# The 8 elements of the dihedral group of the square, as (transform, its inverse).
DIHEDRAL: tuple[tuple[Transform, Transform], ...] = tuple(
    _rotate(turns, flip) for flip in (False, True) for turns in range(4))


class SelfEnsemble(nn.Module):
    """The mean over :data:`DIHEDRAL` of ``inverse(model(transform(x)))``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Summed in float64: eight equal float32 values then add up exactly, so a network that
        # commutes with the transforms gives its own output to the last bit.
        total = sum(inverse(self.model(transform(x)).double()) for transform, inverse in DIHEDRAL)
        return (total / len(DIHEDRAL)).float()
