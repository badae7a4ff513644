"""Find where attention goes in a CNN it has never seen, and attach it there.

The network is traced once on a dummy input with forward hooks: every module call records its
position in the call tree, the feature maps it consumed and produced, and their resolutions.
Placement is then derived from that trace alone, never from a table of model names.

* **Bottlenecks** (the paper's placement): the feature map right before each spatial
  downsampling between stages. Walking the call tree, each child call that lowers the resolution
  is a downsampling step; the attention goes on the output of its preceding sibling, i.e. the
  outermost module whose output is the last feature map of the level (``layer1`` rather than
  ``layer1.2.relu``). A downsampling child is looked into instead when it spans several
  resolution levels (e.g. a ``features`` Sequential) or when it holds two or more convolutions at
  its input resolution before its first downsampling (e.g. a VGG-like stage ending with a pool).
  Two exclusions:
    - the stem: a resolution level qualifies only when at least two convolutions produce feature
      maps at it. ResNet's 112x112 level holds only the stride-2 stem conv (then BN, ReLU, max
      pool), so it is skipped, while ``layer1``'s 56x56 level holds many.
    - the final global pooling: a pooling down to 1x1 is the classifier's, not a bottleneck (a
      strided conv down to 1x1, as in ResNet's layer4 on tiny inputs, still is one).
* **Blocks** (BAM-C, Table 2): every convolution block. A block is a module call holding two or
  more convolutions (a Linear applied to a 4D map counts, as a pointwise conv); where a module
  has several such children (a stage of blocks), or wraps one child that is itself such a stage,
  the children are the blocks instead. For ResNet this gives every BasicBlock / Bottleneck.

Modules called more than once per forward pass are never targets (a hook would fire on every
call); such a candidate is skipped with a warning.

Attention modules live in ``model.attention`` (an ``nn.ModuleDict`` keyed by the target's path
with '.' replaced by '_') and are applied by forward hooks on the targets, so the base network's
parameter names, and therefore its pretrained weights, are unchanged.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import torch
from torch import nn

from .registry import AttentionSpec, get_attention

PLACEMENTS = ("bottleneck", "block")

# A resolution level must hold at least this many convolutions to be a stage (see module doc).
_MIN_CONVS_PER_LEVEL = 2


# Leaf modules whose 4D inputs and outputs are always N x C x H x W. Other leaves (Linear,
# LayerNorm, activations, permutations) may work on channels-last 4D tensors, as in ConvNeXt
# blocks, whose last two dims are (W, C), not (H, W): their shapes are not read as resolutions.
# Containers are read as N x C x H x W at their boundaries.
_SPATIAL_LEAVES = (
    nn.modules.conv._ConvNd, nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd,
    nn.modules.pooling._LPPoolNd, nn.FractionalMaxPool2d, nn.modules.batchnorm._BatchNorm,
    nn.PixelShuffle, nn.PixelUnshuffle, nn.Upsample,
)


@dataclass(eq=False)
class _Call:
    path: str
    module: nn.Module
    parent: "_Call | None"
    start: int
    end: int = -1
    input: torch.Tensor | None = None
    output: torch.Tensor | None = None
    returns_tensor: bool = False  # a hook can only refine a module that returns a bare tensor
    children: list["_Call"] = field(default_factory=list)

    @property
    def in_size(self) -> tuple[int, int] | None:
        return _spatial_size(self.input)

    @property
    def out_size(self) -> tuple[int, int] | None:
        return _spatial_size(self.output)

    @property
    def is_conv(self) -> bool:
        return isinstance(self.module, nn.modules.conv._ConvNd) and not self.children

    @property
    def is_spatial(self) -> bool:
        """Whether this call's 4D shapes can be read as N x C x H x W (see _SPATIAL_LEAVES)."""
        return bool(self.children) or isinstance(self.module, _SPATIAL_LEAVES)

    @property
    def downsamples(self) -> bool:
        a, b = self.in_size, self.out_size
        return (self.is_spatial and a is not None and b is not None
                and (b[0] < a[0] or b[1] < a[1]))

    def descendants(self):
        for child in self.children:
            yield child
            yield from child.descendants()


def _spatial_size(tensor) -> tuple[int, int] | None:
    if isinstance(tensor, torch.Tensor) and tensor.dim() == 4:
        return int(tensor.shape[-2]), int(tensor.shape[-1])
    return None


def _first_feature_map(value) -> torch.Tensor | None:
    """The first 4D tensor in a module's inputs/outputs (DenseNet layers take lists)."""
    if isinstance(value, torch.Tensor):
        return value if value.dim() == 4 else None
    if isinstance(value, (list, tuple)):
        for item in value:
            found = _first_feature_map(item)
            if found is not None:
                return found
    if isinstance(value, dict):
        return _first_feature_map(list(value.values()))
    return None


class _Trace:
    """The call tree of one forward pass of ``model`` on a dummy input."""

    def __init__(self, model: nn.Module, input_size: tuple[int, ...]):
        if len(input_size) != 3 or any(int(s) < 1 for s in input_size):
            raise ValueError(f"input_size must be (channels, height, width), got {input_size!r}")
        self.calls: list[_Call] = []
        self.call_counts: dict[int, int] = {}
        self.root: _Call | None = None
        self._stack: list[_Call] = []
        self._clock = 0
        skip = _attention_module_ids(model)
        handles = []
        for path, module in model.named_modules():
            if id(module) in skip:
                continue
            handles.append(module.register_forward_pre_hook(self._pre_hook(path), with_kwargs=True))
            handles.append(module.register_forward_hook(self._post_hook))
        modes = {module: module.training for module in model.modules()}
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
        dummy = torch.randn(1, *map(int, input_size), generator=torch.Generator().manual_seed(0))
        try:
            model.eval()
            with torch.no_grad():
                model(dummy.to(device=device, dtype=dtype))
        finally:
            for handle in handles:
                handle.remove()
            for module, mode in modes.items():
                module.training = mode

    def _pre_hook(self, path: str):
        def hook(module, args, kwargs):
            parent = self._stack[-1] if self._stack else None
            call = _Call(path, module, parent, start=self._tick(),
                         input=_first_feature_map((args, kwargs)))
            if parent is None:
                self.root = self.root or call
            else:
                parent.children.append(call)
            self.call_counts[id(module)] = self.call_counts.get(id(module), 0) + 1
            self.calls.append(call)
            self._stack.append(call)

        return hook

    def _post_hook(self, module, args, output):
        call = self._stack.pop()
        call.end = self._tick()
        call.output = _first_feature_map(output)
        call.returns_tensor = isinstance(output, torch.Tensor)

    def _tick(self) -> int:
        self._clock += 1
        return self._clock

    def called_once(self, call: _Call) -> bool:
        return self.call_counts.get(id(call.module), 0) == 1


def _attention_module_ids(model: nn.Module) -> set[int]:
    attention = getattr(model, "attention", None)
    if isinstance(attention, nn.Module):
        return {id(m) for m in attention.modules()}
    return set()


# ----------------------------------------------------------------------------------- bottlenecks
def _count_levels(call: _Call) -> int:
    """Resolutions a call goes through, not counting maps smaller than its output (such as the
    1x1 of a squeeze-excitation inside a downsampling block)."""
    sizes = {call.in_size, call.out_size}
    sizes.update(d.out_size for d in call.descendants() if d.is_spatial)
    sizes.discard(None)
    smallest = call.out_size[0] * call.out_size[1]
    return sum(1 for h, w in sizes if h * w >= smallest)


def _convs_before_first_downsampling(call: _Call) -> int:
    count = 0
    for desc in call.descendants():
        if desc.children:
            continue
        if desc.downsamples:
            break
        if desc.is_conv and desc.out_size == call.in_size:
            count += 1
    return count


def _is_global_pooling(call: _Call) -> bool:
    """A downsampling to 1x1 done by pooling (not by a strided conv, which a stage may hold on
    tiny inputs, e.g. ResNet's layer4 on 32x32 images)."""
    out_h, out_w = call.out_size
    if out_h * out_w != 1:
        return False
    leaves = [call] if not call.children else [d for d in call.descendants() if not d.children]
    first = next((leaf for leaf in leaves if leaf.downsamples), None)
    return first is None or not first.is_conv


def _level_is_stage(trace: _Trace, producer: _Call) -> bool:
    """Whether the resolution level ending with ``producer``'s output holds enough convs."""
    level = producer.out_size
    area = level[0] * level[1]
    convs = 0
    leaves = [c for c in trace.calls if not c.children and c.is_spatial and c.end <= producer.end]
    for leaf in reversed(leaves):
        size = leaf.out_size
        if size is None or size == level:
            convs += leaf.is_conv and size == level
            continue
        if size[0] * size[1] > area:  # back in the previous, finer level: stop
            break
        # smaller maps inside the level (e.g. a squeeze-excitation's 1x1) do not end it
    return convs >= _MIN_CONVS_PER_LEVEL


def _bottleneck_producers(trace: _Trace) -> list[_Call]:
    found: list[_Call] = []

    def visit(node: _Call, entering: _Call | None) -> None:
        previous = entering if (entering is not None and node.input is entering.output) else None
        for child in node.children:
            before = previous
            previous = child
            if child.input is None:
                continue
            if before is not None and child.input is not before.output:
                before = None  # not a chain: the child does not consume the sibling's output
            if child.out_size is None:
                if child.children:  # e.g. a wrapped network returning logits
                    visit(child, before)
                continue
            if not child.downsamples:
                continue
            spans_levels = _count_levels(child) > 2
            if spans_levels or _convs_before_first_downsampling(child) >= _MIN_CONVS_PER_LEVEL:
                visit(child, before)
                continue
            if before is None or _is_global_pooling(child):  # model input, or the classifier's
                continue
            if _level_is_stage(trace, before):
                found.append(before)

    if trace.root is not None:
        visit(trace.root, None)
    return found


# ---------------------------------------------------------------------------------------- blocks
def _is_weight_layer(call: _Call) -> bool:
    # A Linear applied to a 4D map is a pointwise conv on channels-last data (ConvNeXt blocks).
    return call.is_conv or (isinstance(call.module, nn.Linear) and call.input is not None)


def _num_convs(call: _Call) -> int:
    return sum(1 for d in [call, *call.descendants()] if _is_weight_layer(d))


def _block_calls(node: _Call) -> list[_Call]:
    conv_children = [c for c in node.children if _num_convs(c) >= 2]
    if len(conv_children) >= 2:
        return [block for child in conv_children for block in _block_calls(child)]
    if len(conv_children) == 1:
        inner = _block_calls(conv_children[0])
        if len(inner) > 1:  # a wrapper around a stage of blocks
            return inner
    return [node]


# ------------------------------------------------------------------------------------ public API
@dataclass(frozen=True)
class InsertionPoint:
    """A module after which attention goes, and the channel count of its output."""

    path: str
    channels: int
    size: tuple[int, int]


def _usable_target(trace: _Trace, call: _Call) -> bool:
    """A hook can refine ``call``'s output only if its module runs once per forward pass (a
    shared module, such as a ReLU reused inside a block, would fire on every call) and returns
    a bare tensor."""
    return bool(call.path) and trace.called_once(call) and call.returns_tensor


def _points(trace: _Trace, calls: list[_Call], what: str) -> list[InsertionPoint]:
    points: list[InsertionPoint] = []
    for call in calls:
        if call is trace.root or call.out_size is None:
            continue
        if not _usable_target(trace, call):
            warnings.warn(f"{what}: skipping '{call.path}': it is called several times per "
                          "forward pass or does not return a plain tensor", stacklevel=3)
            continue
        if all(p.path != call.path for p in points):
            points.append(InsertionPoint(call.path, int(call.output.shape[1]), call.out_size))
    return points


def insertion_points(model: nn.Module, placement: str = "bottleneck",
                     input_size: tuple[int, int, int] = (3, 224, 224)) -> list[InsertionPoint]:
    """Insertion points (path, channels, feature size) for ``placement``, in forward order."""
    if placement not in PLACEMENTS:
        raise ValueError(f"unknown placement {placement!r}; choose one of {PLACEMENTS}")
    trace = _Trace(model, input_size)
    if placement == "bottleneck":
        return _points(trace, _bottleneck_producers(trace), "find_bottlenecks")
    blocks = _block_calls(trace.root) if trace.root is not None else []
    return _points(trace, blocks, "find_blocks")


def find_bottlenecks(model: nn.Module, input_size: tuple[int, int, int] = (3, 224, 224)) -> list[str]:
    """Qualified names of the modules after which BAM goes (right before each downsampling)."""
    return [p.path for p in insertion_points(model, "bottleneck", input_size)]


def find_blocks(model: nn.Module, input_size: tuple[int, int, int] = (3, 224, 224)) -> list[str]:
    """Qualified names of every convolution block (the BAM-C placement of Table 2)."""
    return [p.path for p in insertion_points(model, "block", input_size)]


class AttentionHook:
    """Forward hook that replaces a module's output by ``attention(output)``.

    A small class rather than a closure so that ``copy.deepcopy`` and ``torch.save(model)`` work.
    It holds the attention module itself: ``nn.DataParallel`` replicas would share the original
    (use DistributedDataParallel, as Accelerate does).
    """

    def __init__(self, attention: nn.Module):
        self.attention = attention

    def __call__(self, module: nn.Module, inputs, output: torch.Tensor) -> torch.Tensor:
        return self.attention(output)


def attention_key(path: str) -> str:
    """Key of the attention module attached after the module at ``path``."""
    return path.replace(".", "_")


def attention_targets(model: nn.Module) -> dict[str, str]:
    """``{path of the module an attention follows: that attention's key in model.attention}``.

    Read from the hooks themselves, so it is right for any path (keys replace '.' by '_', which
    cannot be undone for module names that contain '_').
    """
    owners = {id(module): key for key, module in getattr(model, "attention", {}).items()}
    targets = {}
    for path, module in model.named_modules():
        for hook in module._forward_hooks.values():
            if isinstance(hook, AttentionHook) and id(hook.attention) in owners:
                targets[path] = owners[id(hook.attention)]
    return targets


def attach_attention(model: nn.Module, attention: AttentionSpec = "bam", placement: str = "bottleneck",
                     input_size: tuple[int, int, int] = (3, 224, 224),
                     **attention_kwargs) -> list[str]:
    """Attach ``attention`` modules to ``model`` in place; returns the target module paths.

    ``attention`` is what :func:`bam.create_attention` takes: a registered name, an ``nn.Module``
    class (built as ``cls(channels, **attention_kwargs)``), or None / "none", which does nothing
    and returns ``[]``. The modules are stored in ``model.attention`` and applied by forward hooks,
    so the base parameter names are unchanged: load pretrained base weights before attaching, or
    with ``strict=False`` afterwards.
    """
    builder = get_attention(attention)  # before tracing: a bad name fails at once
    if builder is None:
        return []
    if hasattr(model, "attention"):
        raise ValueError(
            f"{type(model).__name__} already has an 'attention' attribute: attention was attached "
            "already (attach once per model), or the model uses that name for something else"
        )
    points = insertion_points(model, placement, input_size)
    if not points:
        raise ValueError(
            f"found no {placement} insertion point in {type(model).__name__} for input_size="
            f"{tuple(input_size)} (no downsampling between stages was seen in the trace)"
        )
    modules = nn.ModuleDict()
    for point in points:
        modules[attention_key(point.path)] = builder(point.channels, **attention_kwargs)
    param = next(model.parameters(), None)
    if param is not None:
        modules.to(device=param.device, dtype=param.dtype if param.is_floating_point() else None)
    model.attention = modules
    for point in points:
        target = model.get_submodule(point.path)
        target.register_forward_hook(AttentionHook(modules[attention_key(point.path)]))
    return [p.path for p in points]
