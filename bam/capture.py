"""Read every attention map of a forward pass without touching the model's code."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from .bam import BAM
from .cbam import CBAM
from .placement import attached_attention
from .se import SqueezeExcitation

AttentionMaps = dict[str, dict[str, torch.Tensor]]


class _Recorder:
    """Stores one attention module's maps, overwriting or appending along the batch."""

    def __init__(self, store: AttentionMaps, key: str, accumulate: bool):
        self.store, self.key, self.accumulate = store, key, accumulate
        self.pending: dict[str, torch.Tensor] = {}

    def keep(self, kind: str, tensor: torch.Tensor) -> None:
        self.pending[kind] = tensor.detach().to("cpu")

    def commit(self) -> None:
        maps = self.store.setdefault(self.key, {})
        for kind, tensor in self.pending.items():
            if self.accumulate and kind in maps:
                maps[kind] = torch.cat([maps[kind], tensor])
            else:
                maps[kind] = tensor
        self.pending = {}


def _hooks_for(module: nn.Module, recorder: _Recorder) -> list:
    """Forward hooks reading the maps of one BAM / CBAM / SE module."""
    handles = []

    def keep(kind, transform=None):
        def hook(_module, _inputs, output):
            recorder.keep(kind, transform(output) if transform else output)
        return hook

    if isinstance(module, BAM):
        for kind in ("channel", "spatial"):
            branch = getattr(module, kind)
            if branch is not None:
                handles.append(branch.register_forward_hook(keep(kind)))

        def combined(bam, _inputs, _output):
            pending = recorder.pending
            maps = bam.combine(pending.get("channel"), pending.get("spatial"))
            recorder.keep("combined", maps)
            recorder.commit()

        handles.append(module.register_forward_hook(combined))
    elif isinstance(module, CBAM):
        handles.append(module.channel.register_forward_hook(keep("channel")))
        handles.append(module.spatial.register_forward_hook(keep("spatial")))

        def combined_cbam(_module, _inputs, _output):
            pending = recorder.pending
            recorder.keep("combined", pending["channel"] * pending["spatial"])
            recorder.commit()

        handles.append(module.register_forward_hook(combined_cbam))
    elif isinstance(module, SqueezeExcitation):
        handles.append(module.gate.register_forward_hook(keep("channel", lambda s: s[:, :, None, None])))
        handles.append(module.register_forward_hook(lambda *_: recorder.commit()))
    return handles


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
                handles += _hooks_for(module, _Recorder(store, key, accumulate))
        yield store
    finally:
        for handle in handles:
            handle.remove()
