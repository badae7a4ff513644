"""``--ema DECAY``: an exponential moving average of the weights, evaluated and exported instead
of the trained network (as BasicSR and KAIR train SR networks, decay 0.999 in their recipes).

Those toolboxes average the parameters only and copy BatchNorm's running statistics from the
trained network, so the averaged network is evaluated with statistics of other weights. Here the
averaged network keeps statistics of its own: before each step, the step's batch goes through it
in training mode (without gradients), so its BatchNorm layers follow its own weights with their
usual momentum. An average whose weights equal the trained ones (decay 0) therefore holds the
same statistics as the trained network and evaluates exactly like it. The price is one more
forward pass per step.
"""

from __future__ import annotations

import copy
from typing import Any, Callable

import torch
from torch import nn


class WeightAverage:
    """``average = decay * average + (1 - decay) * weights`` after every step; ``module`` is the
    averaged network (a copy of the trained one, made on the trained one's device)."""

    def __init__(self, network: nn.Module, decay: float) -> None:
        self.decay = decay  # in [0, 1): --ema checks it
        self.module = copy.deepcopy(network)
        self.module.requires_grad_(False)

    @torch.no_grad()
    def follow_statistics(self, forward: Callable[[nn.Module], Any]) -> None:
        """Run ``forward(averaged network)`` in training mode: BatchNorm statistics of these weights."""
        self.module.train()
        forward(self.module)

    @torch.no_grad()
    def update(self, network: nn.Module) -> None:
        for average, weight in zip(self.module.parameters(), network.parameters()):
            average.lerp_(weight.detach(), 1.0 - self.decay)  # at weight 1 lerp returns the end exactly


def averaged_step(step_fn: Callable, loss_fn: Callable, average: WeightAverage) -> Callable:
    """``step_fn`` with the weight average kept up to date: the batch through the average first
    (``loss_fn(network, batch)`` calls the network as training does), the average after the update."""

    def step(run, batch):
        average.follow_statistics(lambda network: loss_fn(network, batch))
        logs = step_fn(run, batch)
        average.update(run.network)
        return logs

    return step
