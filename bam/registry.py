"""One registry of attention modules, chosen by name (``create_attention("bam", 256)``)."""

from __future__ import annotations

from typing import Callable

from torch import nn

from .bam import BAM
from .cbam import CBAM
from .se import SqueezeExcitation

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_attention(name: str) -> Callable:
    """Decorator registering ``builder(channels, **kwargs) -> nn.Module`` under ``name``."""

    def decorator(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"attention {name!r} is already registered")
        _REGISTRY[name] = builder
        return builder

    return decorator


def list_attentions() -> list[str]:
    """Names accepted by :func:`create_attention`."""
    return sorted(_REGISTRY)


def create_attention(name: str, channels: int, **kwargs) -> nn.Module:
    """Build the attention module ``name`` for a ``channels``-channel feature map."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown attention {name!r}; valid names: {', '.join(list_attentions())}")
    return _REGISTRY[name](channels, **kwargs)


@register_attention("bam")
def _bam(channels: int, **kwargs) -> nn.Module:
    return BAM(channels, **kwargs)


@register_attention("bam-released")
def _bam_released(channels: int, **kwargs) -> nn.Module:
    # The forward pass of the authors' released code and checkpoints: x * (1 + sigmoid(Mc * Ms)),
    # no BN at the end of the branches.
    for fixed in ("combine", "final_bn"):
        if fixed in kwargs:
            raise ValueError(f"'bam-released' fixes {fixed}; use 'bam' to choose it")
    return BAM(channels, combine="product", final_bn=False, **kwargs)


@register_attention("se")
def _se(channels: int, **kwargs) -> nn.Module:
    return SqueezeExcitation(channels, **kwargs)


@register_attention("cbam")
def _cbam(channels: int, **kwargs) -> nn.Module:
    return CBAM(channels, **kwargs)
