"""The repository's networks by name: build any of them, with attention, by name.

A network is registered once per data set it exists for (a ResNet50 may have an ImageNet and a
CIFAR variant) with a builder ``builder(num_classes=...) -> nn.Module``. ``build_network``
builds it, optionally converts a ResNet to the v1 stride layout, and places attention with
``bam.attach_attention`` -- one generic call, never a per-network table.

The task packages register their networks when their model modules are imported; :func:`load_zoo`
imports them all (the profile command, the tests of the paper's tables, a network rebuilt in a
fresh process)::

    register_dataset("my-data", (3, 128, 128), num_classes=10)

    @register_network("my-net", datasets=("my-data",))
    def my_net(num_classes: int = 10) -> nn.Module: ...

    model = build_network("my-net", "my-data", attention="bam")
"""
from __future__ import annotations

import importlib
import inspect
import os
from dataclasses import dataclass
from typing import Callable

from torch import nn

from bam import attach_attention, get_attention, list_attentions, to_resnet_v1
from bam.registry import AttentionSpec
from tasks.common.model_io import read_state_dict
from tasks.utils.messages import note

# Modules that register networks (and their data sets) when imported.
PROVIDERS = (
    "tasks.classify.models",  # the classification networks of Tables 2-4 and 10 (cifar100, imagenet)
    "tasks.parse.model",      # UperNet for scene parsing (ade20k)
    "tasks.detect.model",     # Faster R-CNN for detection (coco)
)

LAYOUTS = ("v1", "v1.5")
# CLI-level attention names that are an attention module plus a placement.
ATTENTION_ALIASES = {"bam-c": ("bam", "block")}


@dataclass(frozen=True)
class DatasetInfo:
    input_size: tuple[int, int, int]
    num_classes: int | None


@dataclass(frozen=True)
class NetworkEntry:
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


_DATASETS: dict[str, DatasetInfo] = {"imagenet": DatasetInfo((3, 224, 224), 1000)}
_NETWORKS: dict[str, dict[str, NetworkEntry]] = {}


def register_dataset(name: str, input_size: tuple[int, int, int], num_classes: int | None = None) -> None:
    """Declare a data set: the input size used to trace placement and count MACs, its class count."""
    if len(input_size) != 3:
        raise ValueError(f"input_size of data set {name!r} must be (channels, height, width), got {input_size}")
    _DATASETS[name] = DatasetInfo(tuple(int(v) for v in input_size), num_classes)


def register_network(name: str, datasets: tuple[str, ...] = ("imagenet",),
                     resnet_blocks: str | None = None, places_attention: bool = False) -> Callable:
    """Decorator registering ``builder(num_classes=...)`` as network ``name`` for each data set."""
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
            per_dataset[dataset] = NetworkEntry(builder, resnet_blocks, places_attention)
        return builder

    return decorator


def list_datasets() -> list[str]:
    """Declared data set names, sorted."""
    load_zoo()
    return sorted(_DATASETS)


def list_networks(dataset: str | None = None) -> list[str]:
    """Registered network names (those available for ``dataset`` if given), sorted."""
    load_zoo()
    if dataset is not None:
        _check_dataset(dataset)
        return sorted(name for name, entries in _NETWORKS.items() if dataset in entries)
    return sorted(_NETWORKS)


def network_datasets(arch: str) -> list[str]:
    """Data sets ``arch`` exists for; ImageNet first when it is one of them."""
    _check_network(arch)
    return sorted(_NETWORKS[arch], key=lambda name: (name != "imagenet", name))


def input_size_for(dataset: str) -> tuple[int, int, int]:
    """(channels, height, width) of the data set's training crops: (3, 224, 224) for imagenet."""
    return _check_dataset(dataset).input_size


def _check_dataset(dataset: str) -> DatasetInfo:
    load_zoo()
    if dataset not in _DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; valid names: {', '.join(sorted(_DATASETS))}")
    return _DATASETS[dataset]


def _check_network(arch: str) -> None:
    load_zoo()
    if arch not in _NETWORKS:
        raise ValueError(f"unknown architecture {arch!r}; valid names: {', '.join(list_networks())}")


def get_network_entry(arch: str, dataset: str = "imagenet") -> NetworkEntry:
    """The registry entry of ``arch`` on ``dataset``; ValueError naming the valid choices."""
    _check_dataset(dataset)
    _check_network(arch)
    if dataset not in _NETWORKS[arch]:
        raise ValueError(f"architecture {arch!r} is not defined for dataset {dataset!r}; it exists for: "
                         f"{', '.join(network_datasets(arch))}. Networks for {dataset}: "
                         f"{', '.join(list_networks(dataset))}")
    return _NETWORKS[arch][dataset]


def valid_attentions() -> list[str]:
    """Attention names ``build_network`` accepts: "none", the registry's modules and the aliases."""
    return [*list_attentions(include_none=True), *ATTENTION_ALIASES]


def default_placement(attention: AttentionSpec) -> str:
    """Where a module goes unless told: BAM at the bottlenecks (the paper), SE and CBAM in every
    block (as their papers and the BAM paper's Table 10 use them). Classes go at the bottlenecks."""
    return "block" if attention in ("se", "cbam") else "bottleneck"


def resolve_attention(attention: AttentionSpec, placement: str | None = None) -> tuple[AttentionSpec, str | None]:
    """``(attention, placement)`` as ``attach_attention`` takes them: an alias such as "bam-c"
    becomes its module and placement, no attention becomes ``(None, None)``, and a module without
    ``placement`` gets :func:`default_placement`. Unknown names raise ValueError listing the valid ones."""
    if isinstance(attention, str) and attention in ATTENTION_ALIASES:
        return ATTENTION_ALIASES[attention]
    try:
        builder = get_attention(attention)
    except ValueError:  # the registry does not know the aliases: list them too
        raise ValueError(f"unknown attention {attention!r}; valid names: {', '.join(valid_attentions())}") from None
    if builder is None:
        return None, None
    return attention, placement or default_placement(attention)


def build_network(arch: str, dataset: str = "imagenet", attention: AttentionSpec = None,
                  placement: str | None = None, num_classes: int | None = None, layout: str = "v1.5",
                  model_kwargs: dict | None = None, **attention_kwargs) -> nn.Module:
    """Build network ``arch`` for ``dataset``, optionally with attention placed by ``bam.attach_attention``.

    ``attention`` is a name (``valid_attentions()``), an ``nn.Module`` class, or None / "none".
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
        raise ValueError(f"layout 'v1' applies to ResNet-style networks only; {arch!r} has no "
                         "v1/v1.5 stride layout (use layout='v1.5', the network as defined)")
    attention, placement = resolve_attention(attention, placement)
    kwargs = dict(model_kwargs or {})
    num_classes = _DATASETS[dataset].num_classes if num_classes is None else num_classes
    if num_classes is not None:  # else the builder's own default
        kwargs["num_classes"] = num_classes
    if entry.places_attention and attention is not None:
        if placement != "bottleneck" or attention_kwargs:
            raise ValueError(f"network {arch!r} places its attention itself: only the bottleneck "
                             "placement with default module options is available")
        kwargs["attention"], attention = attention, None
    try:  # reject options this network does not have (e.g. dropout for ResNet50) before building
        inspect.signature(entry.builder).bind(**kwargs)
    except TypeError as error:
        raise ValueError(f"network {arch!r} ({dataset}) does not accept {sorted(kwargs)}: {error}") from None
    model = entry.builder(**kwargs)
    if layout == "v1" and entry.resnet_blocks == "bottleneck":
        model = to_resnet_v1(model)
    attach_attention(model, attention, placement, input_size=input_size_for(dataset), **attention_kwargs)
    return model


def load_zoo() -> None:
    """Register every network of the repository (every lookup does it first; the imports are
    cached, so it costs nothing after the first call)."""
    for module in PROVIDERS:
        importlib.import_module(module)


def load_imagenet_weights(resnet: nn.Module, path: str | os.PathLike, network: str) -> dict[str, list[str]]:
    """Load ImageNet weights into ``resnet``, the torchvision ``network`` (e.g. "resnet101") with or
    without attention attached: torchvision's state dict or this repository's classification
    checkpoint (any file :func:`~tasks.common.model_io.read_state_dict` reads); ``fc`` is ignored.

    Every trunk tensor must be in the file, with its shape, and the file may hold no other: else
    the file is for another network, and a trunk left partly at random would spoil a long run
    silently (``ValueError`` naming the file and the keys that differ). ``num_batches_tracked``
    may be absent (torchvision's published ResNet weights have none). Attention tensors may be
    absent (a plain ImageNet ResNet: they start from random initialisation) or extra (a BAM
    classifier into a network without attention: ignored); the note of the load counts them.
    Returns ``{"missing": [...], "unexpected": [...]}``: those attention keys.
    """
    state = {k: v for k, v in read_state_dict(path).items() if not k.startswith("fc.")}
    own = {k: v for k, v in resnet.state_dict().items() if not k.startswith("fc.")}
    missing = sorted(k for k in own.keys() - state.keys() if not k.endswith("num_batches_tracked"))
    unexpected = sorted(k for k in state.keys() - own.keys() if not k.endswith("num_batches_tracked"))
    problems = {
        "missing": [k for k in missing if not k.startswith("attention.")],
        "unexpected": [k for k in unexpected if not k.startswith("attention.")],
        "of another shape": [f"{k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
                             for k in sorted(own.keys() & state.keys()) if state[k].shape != own[k].shape],
    }
    found = [f"{len(keys)} {what} (e.g. {keys[:3]})" for what, keys in problems.items() if keys]
    if found:
        raise ValueError(f"weights {path} do not fit a torchvision {network}: {', '.join(found)}")
    resnet.load_state_dict(state, strict=False)
    left_over = {"not in the file start from random initialisation": missing,
                 "in the file are not in this network (ignored)": unexpected}
    note(f"{network} weights loaded from {path}" + "".join(
        f"; {len(keys)} attention tensors {what}" for what, keys in left_over.items() if keys))
    return {"missing": missing, "unexpected": unexpected}
