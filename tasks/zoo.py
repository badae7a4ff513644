"""Every network of the repository, in ``bam``'s registry.

``bam.architectures`` starts empty and names no network; each task registers its own when its
model module is imported. Tools that need the whole zoo (the profile command, the tests of the
paper's tables, a network rebuilt in a fresh process) call :func:`load_zoo` first; it is the one
place that lists the providers.
"""
from __future__ import annotations

import importlib

from torch import nn

from bam import architectures

__all__ = ["PROVIDERS", "build_network", "load_zoo"]

# Modules that register networks (and their data sets) in bam's registry when imported.
PROVIDERS = (
    "tasks.classify.models",  # the classification networks of Tables 2-4 and 10 (cifar100, imagenet)
    "tasks.parse.model",      # UperNet for scene parsing (ade20k)
    "tasks.detect.model",     # Faster R-CNN for detection (coco)
)


def load_zoo() -> None:
    """Register every network of the repository; cheap after the first call (imports are cached)."""
    for module in PROVIDERS:
        importlib.import_module(module)


def build_network(*args, **kwargs) -> nn.Module:
    """``bam.architectures.build_network`` with the whole zoo registered (in any process)."""
    load_zoo()
    return architectures.build_network(*args, **kwargs)
