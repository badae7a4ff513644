"""One registry of attention modules, chosen by name (``create_attention("bam", 256)``).

Like timm's ``get_attn``, an attention argument may be a registered name, an ``nn.Module``
class (built as ``cls(channels, **kwargs)``), or "no attention" (None, "" or "none"). This is the
one place that knows what "none" means: everything else asks :func:`get_attention`.
"""

from __future__ import annotations

from typing import Callable, Union

from torch import nn

from .bam import BAM
from .cbam import CBAM
from .se import SqueezeExcitation

__all__ = ["AttentionSpec", "create_attention", "get_attention", "list_attentions", "register_attention"]

# What an ``attention=`` argument may be throughout ``bam``.
AttentionSpec = Union[str, type[nn.Module], None]

# Spellings of "no attention": the command lines' "none", and an empty option.
_NO_ATTENTION = ("", "none")
_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_attention(name: str) -> Callable:
    """Decorator registering ``builder(channels, **kwargs) -> nn.Module`` under ``name``."""

    def decorator(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _NO_ATTENTION:
            raise ValueError(f"{name!r} means no attention; register the module under another name")
        if name in _REGISTRY:
            raise ValueError(f"attention {name!r} is already registered")
        _REGISTRY[name] = builder
        return builder

    return decorator


def list_attentions(include_none: bool = False) -> list[str]:
    """Names accepted by :func:`create_attention`; ``include_none`` puts "none" first (for choices)."""
    return ["none", *sorted(_REGISTRY)] if include_none else sorted(_REGISTRY)


def get_attention(attention: AttentionSpec) -> Callable[..., nn.Module] | None:
    """The builder behind ``attention``: ``builder(channels, **kwargs)``, or None for no attention.

    Unknown names raise ValueError listing the valid ones; anything that is neither a name nor an
    ``nn.Module`` class raises TypeError (an instance cannot be copied to every insertion point).
    """
    if attention is None or attention in _NO_ATTENTION:
        return None
    if isinstance(attention, str):
        if attention not in _REGISTRY:
            raise ValueError(f"unknown attention {attention!r}; valid names: {', '.join(list_attentions(True))}")
        return _REGISTRY[attention]
    if isinstance(attention, type) and issubclass(attention, nn.Module):
        return attention
    raise TypeError(f"attention must be a registered name ({', '.join(list_attentions(True))}), an nn.Module "
                    f"subclass built as cls(channels, **kwargs), or None; got {attention!r}")


def create_attention(attention: AttentionSpec, channels: int, **kwargs) -> nn.Module | None:
    """Build the attention module for a ``channels``-channel feature map; None for no attention."""
    builder = get_attention(attention)
    return None if builder is None else builder(channels, **kwargs)


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
