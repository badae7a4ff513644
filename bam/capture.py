"""Read every attention map of a forward pass without touching the model's code."""

from __future__ import annotations

from contextlib import contextmanager
from functools import partial
from typing import Iterator

import torch
from torch import nn

from .bam import BAM
from .cbam import CBAM
from .placement import attached_attention
from .se import SqueezeExcitation

AttentionMaps = dict[str, dict[str, torch.Tensor]]


def _hooks_for(module: nn.Module, store: AttentionMaps, key: str, accumulate: bool) -> list:
    """Forward hooks storing the maps of one BAM, CBAM or SE module in ``store[key]``."""
    maps: dict[str, torch.Tensor] = {}

    def keep(kind, _module, _inputs, output):
        maps[kind] = output.detach().to("cpu")

    def commit(_module, _inputs, _output):
        if isinstance(module, BAM):
            maps["combined"] = module.combine(maps.get("channel"), maps.get("spatial"))
        elif isinstance(module, CBAM):
            maps["combined"] = maps["channel"] * maps["spatial"]
        stored = store.setdefault(key, {})
        for kind, tensor in maps.items():
            append = accumulate and kind in stored
            stored[kind] = torch.cat([stored[kind], tensor]) if append else tensor
        maps.clear()

    gates = ({"channel": module.gate} if isinstance(module, SqueezeExcitation)
             else {"channel": module.channel, "spatial": module.spatial})  # a BAM's may be None
    handles = [gate.register_forward_hook(partial(keep, kind))
               for kind, gate in gates.items() if gate is not None]
    return handles + [module.register_forward_hook(commit)]


@contextmanager
def capture_attention(model: nn.Module, accumulate: bool = False) -> Iterator[AttentionMaps]:
    """Capture the attention maps of every BAM, CBAM and SE module in ``model``.

    Yields a dict filled by the forward passes run inside the ``with`` block::

        with capture_attention(model) as maps:
            model(images)
        maps["layer1"]["spatial"]  # B x 1 x H x W

    Keys are the keys of :func:`bam.attention_targets` for attached modules (``"layer1"``), else
    the module's qualified name. Each entry holds, detached and on the CPU in the forward's dtype:

    * BAM: ``channel`` (raw Mc, B x C x 1 x 1), ``spatial`` (raw Ms, B x 1 x H x W) and
      ``combined`` (M, B x C x H x W, as multiplied with F); a missing branch is left out.
    * CBAM: ``channel`` and ``spatial`` after their sigmoids, and ``combined`` = their product
      (the total factor applied to the input).
    * SE: ``channel``, the sigmoid scale (B x C x 1 x 1).

    Each forward pass overwrites the maps of the previous one, unless ``accumulate=True``, which
    concatenates them along the batch dimension.
    """
    store: AttentionMaps = {}
    handles = []
    try:
        keys = {id(module): key for key, module in attached_attention(model).items()}
        for name, module in model.named_modules():
            if isinstance(module, (BAM, CBAM, SqueezeExcitation)):
                key = keys.get(id(module), name or "attention")
                handles += _hooks_for(module, store, key, accumulate)
        yield store
    finally:
        for handle in handles:
            handle.remove()
