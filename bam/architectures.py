"""Name -> network registry shared by ``bam.profile`` and every task.

A network is registered once per data set it exists for (``resnet50`` has an ImageNet and a
CIFAR-100 variant) with a builder ``builder(num_classes=...) -> nn.Module``. ``build_network``
builds it, optionally converts a ResNet to the v1 stride layout, and places attention with
``bam.attach_attention`` -- one generic call, never a per-network table.

The networks themselves live in ``tasks`` (``tasks.classify.models``, and the scene-parsing and
detection models when present). They are imported lazily, the first time the registry is read,
so ``import bam`` never needs ``tasks``. Other code registers its own networks with::

    from bam.architectures import register_network

    @register_network("upernet-resnet50", datasets=("ade20k",))
    def upernet_resnet50(num_classes: int = 150) -> nn.Module: ...
"""
from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from typing import Callable

from torch import nn

__all__ = ["ATTENTION_ALIASES", "LAYOUTS", "NetworkEntry", "build_network", "default_placement", "get_network_entry",
           "input_size_for",
           "list_datasets", "list_networks", "network_datasets", "register_dataset", "register_network"]

# Modules that register networks on import; missing optional task packages are skipped.
_PROVIDERS = ("tasks.classify.models", "tasks.parse.model", "tasks.detect.model")

LAYOUTS = ("v1", "v1.5")
# CLI-level attention names that are an attention module plus a placement.
ATTENTION_ALIASES = {"bam-c": ("bam", "block")}


@dataclass(frozen=True)
class DatasetInfo:
    input_size: tuple[int, int, int]
    num_classes: int | None


@dataclass(frozen=True)
class NetworkEntry:
    name: str
    dataset: str
    builder: Callable[..., nn.Module]
    # "bottleneck": a ResNet family whose downsampling bottleneck blocks put the stride on the 3x3
    # conv (v1.5, torchvision) and can be moved to the first 1x1 conv (v1, the paper's counts);
    # "basic": a ResNet of basic blocks, where v1 and v1.5 are the same network; None: no ResNet
    # stride layout at all.
    resnet_blocks: str | None = None
    # True for networks whose builder places attention itself (``builder(attention=...)``): a
    # detector whose last stage runs inside its RoI heads cannot be traced end to end, so the
    # builder attaches BAM to its backbone before wrapping it.
    places_attention: bool = False


_DATASETS: dict[str, DatasetInfo] = {
    "cifar100": DatasetInfo((3, 32, 32), 100),
    "imagenet": DatasetInfo((3, 224, 224), 1000),
}
_NETWORKS: dict[str, dict[str, NetworkEntry]] = {}
_populated = False


def register_dataset(name: str, input_size: tuple[int, int, int], num_classes: int | None = None) -> None:
    """Declare a data set: the input size used to trace placement and count MACs, its class count."""
    if len(input_size) != 3:
        raise ValueError(f"input_size of data set {name!r} must be (channels, height, width), got {input_size}")
    _DATASETS[name] = DatasetInfo(tuple(int(v) for v in input_size), num_classes)


def register_network(name: str, datasets: tuple[str, ...] | list[str] | str = ("imagenet",),
                     resnet_blocks: str | None = None, places_attention: bool = False) -> Callable:
    """Decorator registering ``builder(num_classes=...)`` as network ``name`` for each data set."""
    if isinstance(datasets, str):
        datasets = (datasets,)
    if resnet_blocks not in (None, "basic", "bottleneck"):
        raise ValueError(f"resnet_blocks must be None, 'basic' or 'bottleneck', got {resnet_blocks!r}")

    def decorator(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        for dataset in datasets:
            if dataset not in _DATASETS:
                raise ValueError(f"network {name!r}: unknown data set {dataset!r}; register it first with "
                                 f"register_dataset (known: {', '.join(sorted(_DATASETS))})")
            per_dataset = _NETWORKS.setdefault(name, {})
            if dataset in per_dataset and per_dataset[dataset].builder is not builder:
                raise ValueError(f"network {name!r} is already registered for data set {dataset!r}")
            per_dataset[dataset] = NetworkEntry(name, dataset, builder, resnet_blocks, places_attention)
        return builder

    return decorator


def _populate() -> None:
    global _populated
    if _populated:
        return
    _populated = True
    for module in _PROVIDERS:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as error:
            # Only an absent provider is optional; a provider that fails on its own imports is a bug.
            if error.name is None or not module.startswith(error.name):
                raise


def list_datasets() -> list[str]:
    _populate()
    return sorted(_DATASETS)


def list_networks(dataset: str | None = None) -> list[str]:
    """Registered network names (those available for ``dataset`` if given), sorted."""
    _populate()
    if dataset is not None:
        _check_dataset(dataset)
        return sorted(name for name, entries in _NETWORKS.items() if dataset in entries)
    return sorted(_NETWORKS)


def network_datasets(arch: str) -> list[str]:
    """Data sets ``arch`` exists for; ImageNet first when it is one of them."""
    _populate()
    if arch not in _NETWORKS:
        raise ValueError(f"unknown architecture {arch!r}; valid names: {', '.join(list_networks())}")
    return sorted(_NETWORKS[arch], key=lambda name: (name != "imagenet", name))


def input_size_for(dataset: str) -> tuple[int, int, int]:
    """(channels, height, width) of the data set's training crops: (3, 32, 32) for cifar100."""
    _populate()
    return _check_dataset(dataset).input_size


def _check_dataset(dataset: str) -> DatasetInfo:
    if dataset not in _DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; valid names: {', '.join(sorted(_DATASETS))}")
    return _DATASETS[dataset]


def get_network_entry(arch: str, dataset: str = "imagenet") -> NetworkEntry:
    """The registry entry of ``arch`` on ``dataset``; ValueError naming the valid choices."""
    _populate()
    _check_dataset(dataset)
    if arch not in _NETWORKS:
        raise ValueError(f"unknown architecture {arch!r}; valid names: {', '.join(list_networks())}")
    if dataset not in _NETWORKS[arch]:
        raise ValueError(f"architecture {arch!r} is not defined for dataset {dataset!r}; it exists for: "
                         f"{', '.join(network_datasets(arch))}. Networks for {dataset}: "
                         f"{', '.join(list_networks(dataset))}")
    return _NETWORKS[arch][dataset]


def valid_attentions() -> list[str]:
    """Attention names ``build_network`` accepts: "none", the registry's modules and the aliases."""
    from bam.registry import list_attentions

    return ["none", *list_attentions(), *ATTENTION_ALIASES]


def default_placement(attention: str) -> str:
    """Where a module goes unless told: BAM at the bottlenecks (the paper), SE and CBAM in every
    block (as their papers and the BAM paper's Table 10 use them)."""
    return "block" if attention in ("se", "cbam") else "bottleneck"


def build_network(arch: str, dataset: str = "imagenet", attention: str = "none", placement: str | None = None,
                  num_classes: int | None = None, layout: str = "v1.5", model_kwargs: dict | None = None,
                  **attention_kwargs) -> nn.Module:
    """Build network ``arch`` for ``dataset``, optionally with attention placed by ``bam.attach_attention``.

    ``layout`` picks the stride layout of ResNet bottleneck networks: "v1.5" (torchvision's, stride
    on the 3x3 conv; the network as defined) or "v1" (stride on the first 1x1 conv, the layout of
    the paper's MAC counts). "v1" on a network that is no ResNet is an error. ``placement`` is
    "bottleneck" or "block" (default: ``default_placement(attention)``); ``attention="bam-c"`` is BAM
    with ``placement="block"``. ``model_kwargs`` go to the network's builder (e.g.
    ``{"dropout": 0.3}`` for the WideResNets). Works under ``with torch.device("meta")`` for counting.
    """
    entry = get_network_entry(arch, dataset)
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; valid layouts: {', '.join(LAYOUTS)}")
    if layout == "v1" and entry.resnet_blocks is None:
        raise ValueError(f"layout 'v1' applies to ResNet-style networks only; {arch!r} has no v1/v1.5 "
                         f"stride layout (use layout='v1.5', the network as defined)")
    if attention not in ("none", *ATTENTION_ALIASES):
        valid = valid_attentions()
        if attention not in valid:
            raise ValueError(f"unknown attention {attention!r}; valid names: {', '.join(valid)}")
    attention, placement = ATTENTION_ALIASES.get(attention, (attention, placement or default_placement(attention)))

    if num_classes is None:
        num_classes = _DATASETS[dataset].num_classes
    kwargs = dict(model_kwargs or {})
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if entry.places_attention and attention != "none":
        if placement != "bottleneck" or attention_kwargs:
            raise ValueError(f"network {arch!r} places its attention itself: only the bottleneck placement "
                             "with default module options is available")
        kwargs["attention"], attention = attention, "none"
    try:  # reject options this network does not have (e.g. dropout for ResNet50) before building
        inspect.signature(entry.builder).bind(**kwargs)
    except TypeError as error:
        raise ValueError(f"network {arch!r} ({dataset}) does not accept {sorted(kwargs)}: {error}") from None
    model = entry.builder(**kwargs)
    if layout == "v1" and entry.resnet_blocks == "bottleneck":
        from bam.counting import to_resnet_v1

        model = to_resnet_v1(model)
    if attention != "none":
        from bam.placement import attach_attention

        attach_attention(model, attention, placement, input_size=input_size_for(dataset), **attention_kwargs)
    return model
