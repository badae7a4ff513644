"""Parameters and MACs of a registered network with and without attention, beside the paper's figures.

Counted as the paper does: MACs of convolutions and linear layers, on the ResNet v1 stride layout
by default. Networks are built on PyTorch's meta device (shapes only), so even the 68M-parameter
ResNeXt is counted in a moment without allocating its weights.
"""
from __future__ import annotations

import functools
from dataclasses import asdict

import torch

from bam.counting import count_macs, count_params
from bam.placement import attach_attention
from tasks.networks import (build_network, default_placement, get_network_entry, input_size_for, load_zoo,
                            network_datasets, resolve_attention)
from tasks.profile.paper import PAPER


@functools.lru_cache(maxsize=None)
def _counts(arch: str, dataset: str, layout: str, attention: str, placement: str,
            input_size: tuple[int, int, int]) -> tuple[int, int, tuple[str, ...], tuple[int | None, ...], dict | None]:
    """(params, MACs, attention sites, their widths, parts) of one configuration; cached.

    ``parts`` is the network's own split of the counts (e.g. UperNet's encoder and decoder) when
    the network offers one through a ``profile_parts(input_size)`` method. MACs are None for
    networks whose work depends on the data (a detector's proposals): meta tensors cannot run
    their data-dependent operations, and a guess would mislead.
    """
    attention, placement = resolve_attention(attention, placement)
    # Some builders attach attention themselves.
    builder_places = get_network_entry(arch, dataset).places_attention
    options = {"attention": attention, "placement": placement} if builder_places else {}
    # Only the construction runs under the device context: tracing and counting run faster
    # outside it, their tensors follow the parameters' device.
    with torch.device("meta"):
        model = build_network(arch, dataset, layout=layout, **options)
    sites = (list(getattr(model, "attention", {})) if builder_places
             else attach_attention(model, attention, placement, input_size=input_size_for(dataset)))
    modules = model.attention.values() if sites else ()
    widths = tuple(getattr(module, "channels", None) for module in modules)
    parts = model.eval().profile_parts(input_size) if callable(getattr(model, "profile_parts", None)) else None
    try:
        macs = count_macs(model, input_size)
    except NotImplementedError:
        macs = None
    return count_params(model), macs, tuple(sites), widths, parts


def profile_network(arch: str, dataset: str | None = None, attention: str = "bam", layout: str | None = None,
                    placement: str | None = None, input_size: tuple[int, int, int] | None = None) -> dict:
    """Counts of ``arch`` with and without ``attention`` (plus the paper's figures) as a dict."""
    load_zoo()
    dataset = dataset or network_datasets(arch)[0]
    resnet = get_network_entry(arch, dataset).resnet_blocks
    layout = layout or ("v1" if resnet else "v1.5")  # the paper's; other networks as defined
    placement = placement or default_placement(attention)
    input_size = tuple(int(v) for v in (input_size or input_size_for(dataset)))

    base_params, base_macs, _, _, base_parts = _counts(arch, dataset, layout, "none", "bottleneck", input_size)
    params, macs, sites, widths, parts = _counts(arch, dataset, layout, attention, placement, input_size)
    figures = PAPER.get((dataset, arch), {})
    paper = {key: asdict(fig) for key, fig in figures.items() if key in ("none", attention)}
    return {
        "arch": arch, "dataset": dataset, "attention": attention,
        "placement": resolve_attention(attention, placement)[1],  # None without attention
        "layout": layout if resnet else None,
        "input_size": list(input_size),
        "params": params, "macs": macs, "base_params": base_params, "base_macs": base_macs,
        "overhead_params": params - base_params,
        "overhead_macs": None if macs is None else macs - base_macs,
        "overhead_params_percent": 100.0 * (params - base_params) / base_params,
        "overhead_macs_percent": 100.0 * (macs - base_macs) / base_macs if base_macs else None,
        "attention_sites": list(sites), "attention_channels": list(widths),
        "paper": paper or None,
        **({"parts": {"base": base_parts, "attention": parts}} if parts else {}),
    }
