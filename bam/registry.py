"""One registry of attention modules, chosen by name (``create_attention("bam", 256)``).

Like timm's ``get_attn``, an attention argument may be a registered name, an ``nn.Module``
class (built as ``cls(channels, **kwargs)``), or "no attention" (None, "" or "none"). The
registry maps each name to a class, or to a ``functools.partial`` of one that fixes some of its
arguments. This is the one place that knows what "none" means: everything else asks
:func:`get_attention`.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

from torch import nn

from .bam import BAM
from .cbam import CBAM
from .se import SqueezeExcitation

# What an ``attention=`` argument may be throughout ``bam``.
AttentionSpec = str | type[nn.Module] | None

# Spellings of "no attention": the command lines' "none", and an empty option.
_NO_ATTENTION = ("", "none")

ATTENTIONS: dict[str, Callable[..., nn.Module]] = {
    "bam": BAM,
    # The forward pass of the authors' released code and checkpoints: x * (1 + sigmoid(Mc * Ms)),
    # no BN at the end of the branches.
    "bam-released": partial(BAM, combine="product", final_bn=False),
    "se": SqueezeExcitation,
    "cbam": CBAM,
}


def register_attention(name: str, builder: Callable[..., nn.Module]) -> None:
    """Add ``builder(channels, **kwargs) -> nn.Module`` (a class or a ``partial`` of one)."""
    if name in _NO_ATTENTION:
        raise ValueError(f"{name!r} means no attention; register the module under another name")
    if name in ATTENTIONS:
        raise ValueError(f"attention {name!r} is already registered")
    ATTENTIONS[name] = builder


def list_attentions(include_none: bool = False) -> list[str]:
    """Names accepted by :func:`create_attention`; ``include_none`` puts "none" first."""
    return ["none", *sorted(ATTENTIONS)] if include_none else sorted(ATTENTIONS)


def get_attention(attention: AttentionSpec) -> Callable[..., nn.Module] | None:
    """The builder behind ``attention``: ``builder(channels, **kwargs)``, or None for none.

    Unknown names raise ValueError listing the valid ones; anything that is neither a name nor an
    ``nn.Module`` class raises TypeError (an instance cannot be copied to every insertion point).
    """
    if attention is None or attention in _NO_ATTENTION:
        return None
    if isinstance(attention, type) and issubclass(attention, nn.Module):
        return attention
    names = ", ".join(list_attentions(include_none=True))
    if not isinstance(attention, str):
        raise TypeError(f"attention must be a registered name ({names}), an nn.Module subclass "
                        f"built as cls(channels, **kwargs), or None; got {attention!r}")
    if attention not in ATTENTIONS:
        raise ValueError(f"unknown attention {attention!r}; valid names: {names}")
    return ATTENTIONS[attention]


def attention_class(attention: AttentionSpec) -> type[nn.Module] | None:
    """The module class ``attention`` builds (None for none): what to look for in a network."""
    builder = get_attention(attention)
    return getattr(builder, "func", builder)


def create_attention(attention: AttentionSpec, channels: int, **kwargs) -> nn.Module | None:
    """Build the attention module for a ``channels``-channel feature map; None for no attention."""
    builder = get_attention(attention)
    fixed = set(kwargs) & set(builder.keywords) if isinstance(builder, partial) else set()
    if fixed:
        raise ValueError(f"{attention!r} fixes {', '.join(sorted(fixed))}; use 'bam' to choose it")
    return None if builder is None else builder(channels, **kwargs)
