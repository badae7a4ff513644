"""Training recipes for classification, named per network family, epoch-based as the papers state
them (:func:`build_scheduler` turns epochs into optimizer steps).

Plain (not Nesterov) SGD with momentum 0.9 for every family: the BAM paper reproduces its baselines
with these CIFAR schedules of the widely used PyTorch CIFAR training code and trains ImageNet with
the PyTorch ImageNet example, both with plain momentum (``--nesterov`` follows the original Torch
code of WRN, ResNeXt and DenseNet instead). Weight decay applies to every parameter.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch


@dataclass(frozen=True)
class Recipe:
    """One training recipe. ``batch_size`` is the global batch over all processes."""

    name: str
    epochs: int
    batch_size: int
    lr: float
    milestones: tuple[int, ...]  # epochs at which the learning rate is multiplied by ``gamma``
    gamma: float
    weight_decay: float
    momentum: float = 0.9
    nesterov: bool = False
    dropout: float = 0.0  # only wide ResNets use it (inside each block)
    description: str = ""


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe("cifar-resnet", 164, 128, 0.1, (81, 122), 0.1, 1e-4,
               description="CIFAR ResNet / PreResNet: 164 epochs, lr 0.1 x0.1 at 81 and 122"),
        Recipe("cifar-wrn", 200, 128, 0.1, (60, 120, 160), 0.2, 5e-4, dropout=0.3,
               description="CIFAR WideResNet: 200 epochs, lr 0.1 x0.2 at 60/120/160, dropout 0.3"),
        Recipe("cifar-resnext", 300, 128, 0.1, (150, 225), 0.1, 5e-4,
               description="CIFAR ResNeXt29: 300 epochs, lr 0.1 x0.1 at 150 and 225"),
        Recipe("cifar-densenet", 300, 64, 0.1, (150, 225), 0.1, 1e-4,
               description="CIFAR DenseNet-BC: 300 epochs, batch 64, lr 0.1 x0.1 at 150 and 225"),
        Recipe("imagenet", 90, 256, 0.1, (30, 60), 0.1, 1e-4,
               description="ImageNet (released BAM code): 90 epochs, lr 0.1 /10 every 30 epochs"),
        Recipe("digits-quick", 10, 32, 0.05, (6, 9), 0.1, 5e-4,
               description="embedded digits demo: 10 epochs of 44 steps, lr x0.1 at 6 and 9; minutes on a CPU"),
    )
}

# Architecture name prefix -> CIFAR recipe family.
_CIFAR_FAMILY = (
    ("preresnet", "cifar-resnet"),
    ("resnet", "cifar-resnet"),
    ("wrn", "cifar-wrn"),
    ("resnext", "cifar-resnext"),
    ("densenet", "cifar-densenet"),
)


def list_recipes() -> list[str]:
    return sorted(RECIPES)


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; valid recipes: {', '.join(list_recipes())}")
    return RECIPES[name]


def recipe_for(arch: str, dataset: str) -> Recipe:
    """The default recipe of ``arch`` on ``dataset`` (the one the paper's baseline followed)."""
    if dataset == "imagenet":
        return RECIPES["imagenet"]
    if dataset == "digits":
        return RECIPES["digits-quick"]
    if dataset != "cifar100":
        raise ValueError(f"unknown dataset {dataset!r}; valid: cifar100, imagenet, digits")
    for prefix, family in _CIFAR_FAMILY:
        if arch.startswith(prefix):
            return RECIPES[family]
    raise ValueError(
        f"no CIFAR-100 recipe for architecture {arch!r} (known families: "
        f"{', '.join(p for p, _ in _CIFAR_FAMILY)}); pick one with --recipe {{{', '.join(list_recipes())}}}"
    )


def with_overrides(recipe: Recipe, **values) -> Recipe:
    """A copy with the non-``None`` values replaced (command-line overrides)."""
    values = {k: (tuple(v) if k == "milestones" else v) for k, v in values.items() if v is not None}
    return replace(recipe, **values)


def build_optimizer(parameters, recipe: Recipe) -> torch.optim.SGD:
    """The recipe's SGD, fused: one kernel for every tensor, not a Python loop over them each step."""
    return torch.optim.SGD(parameters, lr=recipe.lr, momentum=recipe.momentum,
                           weight_decay=recipe.weight_decay, nesterov=recipe.nesterov, fused=True)


def build_scheduler(optimizer: torch.optim.Optimizer, recipe: Recipe,
                    steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """lr = base * gamma^(milestones passed), stepped once per optimizer step: the rate changes at
    the first step of each milestone epoch, like an epoch-stepped ``MultiStepLR``."""
    milestones = [m * steps_per_epoch for m in recipe.milestones]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: recipe.gamma ** sum(step >= m for m in milestones))

