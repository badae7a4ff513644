"""Find where attention goes in a CNN it has never seen, and attach it there.

The network is traced once on a dummy input with forward hooks: every module call records its
position in the call tree, the feature maps it consumed and produced, and their resolutions.
Placement is derived from that trace alone, never from a table of model names. The rules (what a
feature map, a downsampling, a stage, the stem and a block are), and the networks they are tested
on, are in docs/placement.md.

Attention modules are applied by forward hooks on the targets, so the base network's parameter
names, and therefore its pretrained weights, are unchanged.
"""

from __future__ import annotations

import difflib
import warnings
from collections import Counter
from dataclasses import dataclass, field
from itertools import count

import torch
from torch import nn

from .registry import AttentionSpec, get_attention

PLACEMENTS = ("bottleneck", "block")
# Why a trace found no insertion point, for each placement.
_NOTHING_FOUND = {"bottleneck": "no downsampling between stages was seen in the trace",
                  "block": "no module holding two or more convolutions was seen in the trace"}

# A resolution level must hold at least this many convolutions in sequence to be a stage.
_MIN_CONVS_PER_LEVEL = 2

# Leaves whose 4D outputs are N x C x H x W by definition: their sizes are the resolutions a
# feature map can have at this input size.
_NCHW_LEAVES = (
    nn.modules.conv._ConvNd, nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd,
    nn.modules.pooling._LPPoolNd, nn.FractionalMaxPool2d, nn.modules.batchnorm._BatchNorm,
    nn.GroupNorm,
)

# Modules whose forward runs their children in turn or iterates over them: a new child would run.
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


@dataclass(eq=False)
class _Call:
    path: str
    module: nn.Module
    parent: _Call | None
    inputs: list[torch.Tensor]  # every feature map it received
    input: torch.Tensor | None  # the one it continues (see _main_input)
    end: int = -1  # when it returned, counted in returns
    outputs: list[torch.Tensor] = field(default_factory=list)
    returns_tensor: bool = False  # a hook can only refine a module that returns a bare tensor
    children: list[_Call] = field(default_factory=list)
    in_size: tuple[int, int] | None = None
    out_size: tuple[int, int] | None = None
    channels_last: bool = False  # the output is N x H x W x C

    @property
    def output(self) -> torch.Tensor | None:
        return self.outputs[0] if self.outputs else None

    @property
    def is_conv(self) -> bool:
        return isinstance(self.module, nn.modules.conv._ConvNd) and not self.children

    @property
    def is_weight_layer(self) -> bool:
        """A conv producing a feature map (not ECA's Conv1d on pooled channels), or a Linear
        applied to a map: a pointwise conv on channels-last data (ConvNeXt blocks)."""
        linear = isinstance(self.module, nn.Linear) and not self.children
        return self.out_size is not None and (self.is_conv or linear)

    @property
    def downsamples(self) -> bool:
        """At most half the input's pixels out (a stride-2 conv, a pooling; not a valid 3x3)."""
        a, b = self.in_size, self.out_size
        return (a is not None and b is not None and b[0] <= a[0] and b[1] <= a[1]
                and 2 * b[0] * b[1] <= a[0] * a[1])

    def consumes(self, other: _Call | None) -> bool:
        return (other is not None and other.output is not None
                and any(_same_map(t, other.output) for t in self.inputs))

    def descendants(self):
        for child in self.children:
            yield child
            yield from child.descendants()

    def leaves(self) -> list[_Call]:
        return [d for d in self.descendants() if not d.children]

    def ancestry(self):
        """This call and the calls it runs inside, innermost first."""
        call = self
        while call is not None:
            yield call
            call = call.parent


def _feature_maps(value) -> list[torch.Tensor]:
    """Every 4D tensor in a module's inputs or outputs, first seen first (DenseNet layers take
    lists)."""
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return list({id(t): t for item in value for t in _feature_maps(item)}.values())
    return [value] if isinstance(value, torch.Tensor) and value.dim() == 4 else []


def _same_map(a: torch.Tensor, b: torch.Tensor) -> bool:
    """``a`` is ``b`` or a view of it (a permute between two modules, as channels-last nets do)."""
    return a is b or a._base is b or (b._base is not None and (a is b._base or a._base is b._base))


def _main_input(inputs: list[torch.Tensor], previous: _Call | None,
                parent: _Call | None) -> torch.Tensor | None:
    """The input a call continues: its previous sibling's output or its parent's input when it
    received them (NASNet cells take the two previous cells' outputs, the older one first)."""
    for candidate in (previous.output if previous else None, parent.input if parent else None):
        found = next((t for t in inputs if candidate is not None and _same_map(t, candidate)), None)
        if found is not None:
            return found
    return inputs[0] if inputs else None


def dummy_forward(model: nn.Module, input_size: tuple[int, int, int]) -> None:
    """Run ``model`` once on a random batch of one ``input_size`` image (on its device, in its
    dtype), in eval mode and without gradients; its train/eval modes are restored after."""
    if len(input_size) != 3 or any(int(s) < 1 for s in input_size):
        raise ValueError(f"input_size must be (channels, height, width), got {input_size!r}")
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    dummy = torch.randn(1, *map(int, input_size), generator=torch.Generator().manual_seed(0))
    modes = {module: module.training for module in model.modules()}
    try:
        with torch.no_grad():
            model.eval()(dummy.to(device=device, dtype=dtype))
    except Exception as error:
        raise ValueError(f"running {type(model).__name__} on a dummy input of size "
                         f"{tuple(input_size)} failed ({type(error).__name__}: {error}); pass "
                         "the input_size it takes") from error
    finally:
        for module, mode in modes.items():
            module.training = mode


class _Trace:
    """The call tree of one forward pass of ``model`` on a dummy input."""

    def __init__(self, model: nn.Module, input_size: tuple[int, int, int]):
        self.calls: list[_Call] = []
        stack: list[_Call] = []
        returns = count()

        def enter(module, args, kwargs):
            parent = stack[-1] if stack else None
            previous = parent.children[-1] if parent is not None and parent.children else None
            inputs = _feature_maps((args, kwargs))
            call = _Call(paths[module], module, parent, inputs,
                         _main_input(inputs, previous, parent))
            if parent is not None:
                parent.children.append(call)
            self.calls.append(call)
            stack.append(call)

        def leave(module, args, output):
            call = stack.pop()
            call.end = next(returns)
            call.outputs = _feature_maps(output)
            call.returns_tensor = isinstance(output, torch.Tensor)

        skip = {m for _, _, attention in _attached(model) for m in attention.modules()}
        paths = {module: path for path, module in model.named_modules() if module not in skip}
        handles = [module.register_forward_pre_hook(enter, with_kwargs=True) for module in paths]
        handles += [module.register_forward_hook(leave) for module in paths]
        try:
            dummy_forward(model, input_size)
        finally:
            for handle in handles:
                handle.remove()
        self.root = self.calls[0]  # the model's own call
        self.leaves = [call for call in self.calls if not call.children]
        self.call_counts = Counter(call.module for call in self.calls)
        self.resolutions = {tuple(map(int, input_size[1:]))} | {
            tuple(call.output.shape[-2:]) for call in self.leaves
            if isinstance(call.module, _NCHW_LEAVES) and call.output is not None}
        for call in self.calls:
            call.in_size = self.size_of(call.input)
            call.out_size = self.size_of(call.output)
            call.channels_last = (call.out_size is not None
                                  and tuple(call.output.shape[-2:]) != call.out_size)

    def size_of(self, tensor: torch.Tensor | None) -> tuple[int, int] | None:
        """(H, W) of a feature map, N x C x H x W or else N x H x W x C; None if neither fits."""
        if tensor is None:
            return None
        return next((size for size in (tuple(tensor.shape[-2:]), tuple(tensor.shape[1:3]))
                     if size in self.resolutions), None)


# ----------------------------------------------------------------------------------- bottlenecks
def _area(size: tuple[int, int]) -> int:
    return size[0] * size[1]


def _sequential_convs(layers) -> int:
    """Convolutions in sequence among ``layers``: those reading the same input count once."""
    return len({id(layer.input) for layer in layers if layer.is_weight_layer})


def _count_levels(call: _Call) -> int:
    """Resolutions a call goes through from its input to its output (not counting maps smaller
    than its output, such as the 1x1 of a squeeze-excitation, or larger than its input, such as
    an older input that a NASNet cell also reads)."""
    sizes = {call.in_size, call.out_size, *(d.out_size for d in call.descendants())} - {None}
    return sum(1 for size in sizes if _area(call.out_size) <= _area(size) <= _area(call.in_size))


def _ends_with_its_downsampling(call: _Call) -> bool:
    """A stage that ends with its downsampling (convs at its input resolution, then a pool)."""
    leaves = call.leaves()
    first = next((i for i, leaf in enumerate(leaves) if leaf.downsamples), None)
    if first is None:
        return False
    before = [leaf for leaf in leaves[:first] if leaf.out_size == call.in_size]
    return (_sequential_convs(before) >= _MIN_CONVS_PER_LEVEL
            and not any(leaf.is_weight_layer for leaf in leaves[first + 1:]))


def _is_global_pooling(call: _Call) -> bool:
    """A downsampling to 1x1 done by pooling (not by a strided conv, which a stage may hold on
    tiny inputs, e.g. ResNet's layer4 on 32x32 images)."""
    if _area(call.out_size) != 1:
        return False
    leaves = call.leaves() or [call]
    first = next((leaf for leaf in leaves if leaf.downsamples), None)
    return first is None or not first.is_conv


def _stem_calls(trace: _Trace) -> set[_Call]:
    """The calls that are no blocks: those holding the network's first downsampling (the stem,
    or a ``features`` Sequential holding it), and, where the network opens with a strided conv,
    everything in the stem module: the outermost module holding that conv that ends within a
    sixteenth of the input's pixels (ResNet's ``conv1``, a deep ``stem`` Sequential, VoVNet's
    three-conv ``stem``). A network that first works at full resolution (DarkNet, CIFAR ResNets)
    has no stem module."""
    first_down = next((leaf for leaf in trace.leaves if leaf.downsamples), None)
    calls = set(first_down.ancestry()) if first_down is not None else set()
    first = next((leaf for leaf in trace.leaves if leaf.is_weight_layer), None)
    if first is None or not first.downsamples:
        return calls
    smallest = _area(first.in_size) / 16
    stem = first
    while (stem.parent not in (None, trace.root)
           and _area(stem.parent.out_size or (0, 0)) >= smallest):
        stem = stem.parent
    return calls | {stem, *stem.descendants()}


def _first_block_end(trace: _Trace) -> int | None:
    """When the network's first block ends; None if it has none. A block is a module holding two
    or more convolutions in sequence at or above its output resolution that is not in the stem
    and does not end with its downsampling (a VGG-like stage ending with its pool)."""
    stem = _stem_calls(trace)

    def is_block(call: _Call) -> bool:
        # not the 1x1 maps of a classifier's MLP, nor a squeeze-excitation's inside a block
        if call in stem or call is trace.root or call.out_size is None or _area(call.out_size) < 2:
            return False
        convs = [leaf for leaf in call.leaves()
                 if leaf.is_weight_layer and _area(call.out_size) <= _area(leaf.out_size)]
        return (_sequential_convs(convs) >= _MIN_CONVS_PER_LEVEL
                and not _ends_with_its_downsampling(call))

    return min((call.end for call in trace.calls if is_block(call)), default=None)


def _level_is_stage(trace: _Trace, producer: _Call, first_block_end: int | None,
                    stem: bool) -> bool:
    """Whether the resolution level ending with ``producer``'s output is a stage: before the
    first block, only with ``stem=True`` and two or more convolutions in sequence; after it, when
    it holds a convolution; in a network without blocks (VGG, a plain conv chain), when it holds
    two or more in sequence."""
    after_first_block = first_block_end is not None and producer.end >= first_block_end
    if first_block_end is not None and not after_first_block and not stem:
        return False  # the stem
    layers = []
    for leaf in reversed(trace.leaves):
        if leaf.end > producer.end or leaf.out_size is None:
            continue
        if leaf.out_size == producer.out_size:
            layers.append(leaf)
        elif _area(leaf.out_size) > _area(producer.out_size):  # back in the previous level: stop
            break
        # smaller maps inside the level (e.g. a squeeze-excitation's 1x1) do not end it
    return _sequential_convs(layers) >= (1 if after_first_block else _MIN_CONVS_PER_LEVEL)


def _check_single_resolution(trace: _Trace, model: nn.Module) -> None:
    """Refuse networks whose stages run several resolutions side by side (HRNet)."""
    for call in trace.calls[1:]:
        sizes_in = {trace.size_of(t) for t in call.inputs} - {None}
        sizes_out = {trace.size_of(t) for t in call.outputs} - {None}
        if (len(sizes_in) > 1 and len(sizes_out) > 1
                and any(leaf.downsamples for leaf in call.leaves())):
            raise ValueError(
                f"{type(model).__name__} runs several resolutions side by side ('{call.path}' "
                f"takes and returns feature maps at {sorted(sizes_out, reverse=True)}), so its "
                "stages have no single output before each downsampling; name the modules to "
                "refine with attach_attention(..., targets=[...])")


def _bottleneck_producers(trace: _Trace, stem: bool) -> list[_Call]:
    found: list[_Call] = []
    first_block_end = _first_block_end(trace)
    plain = first_block_end is None  # no blocks: a chain of single convolutions, read to its layers

    def visit(node: _Call, previous: _Call | None) -> None:  # previous: the call node continues
        for child in node.children:
            before, previous = previous, child
            if child.input is None:
                continue
            if not child.consumes(before):
                before = None  # not a chain: the child does not consume the sibling's output
            # Looked into: a call returning no map (a wrapped network returning logits), and a
            # downsampling step that spans several levels (a ``features`` Sequential) or is a
            # stage ending with its downsampling. A block with a late stride is a step as a
            # whole: the site is the stage output before it.
            if child.out_size is None or (child.downsamples and (
                    (plain and child.children) or _count_levels(child) > 2
                    or _ends_with_its_downsampling(child))):
                visit(child, before)
            elif (child.downsamples and before is not None  # not the model input
                  and not _is_global_pooling(child)  # nor the classifier's
                  and _level_is_stage(trace, before, first_block_end, stem)):
                found.append(before)

    visit(trace.root, None)
    return found


# ---------------------------------------------------------------------------------------- blocks
def _num_convs(call: _Call) -> int:
    return sum(1 for d in [call, *call.descendants()] if d.is_weight_layer)


def _block_calls(node: _Call) -> list[_Call]:
    """The convolution blocks in ``node``: calls holding two or more convolutions (a Linear on a
    4D map counts, as a pointwise conv); where a call has several such children (a stage of
    blocks), or wraps one child that is itself such a stage, the children are the blocks."""
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
    """A module after which attention goes, the channel count and size of its output, and
    whether that output is channels-last (N x H x W x C)."""

    path: str
    channels: int
    size: tuple[int, int]
    channels_last: bool = False


def _point(call: _Call) -> InsertionPoint:
    channels = call.output.shape[-1] if call.channels_last else call.output.shape[1]
    return InsertionPoint(call.path, int(channels), call.out_size, call.channels_last)


def _unfit(trace: _Trace, call: _Call) -> str | None:
    """Why a forward hook on ``call``'s module cannot refine its output; None if it can."""
    runs = trace.call_counts[call.module]
    if runs > 1:
        return f"runs {runs} times in a forward pass, and a hook would refine every call"
    if not call.returns_tensor or call.out_size is None:
        return "does not return a feature map (a 4D tensor)"
    return None


def _points(trace: _Trace, calls: list[_Call], what: str) -> list[InsertionPoint]:
    points: dict[str, InsertionPoint] = {}
    for call in calls:
        if call is trace.root or call.out_size is None:
            continue
        if not call.returns_tensor:  # a list (SelecSLS blocks): the module inside making its map
            call = next((d for d in call.descendants()
                         if d.returns_tensor and d.output is call.output), call)
        if problem := _unfit(trace, call):
            warnings.warn(f"{what}: skipping '{call.path}': it {problem}", stacklevel=3)
        else:
            points.setdefault(call.path, _point(call))
    return list(points.values())


def insertion_points(model: nn.Module, placement: str = "bottleneck",
                     input_size: tuple[int, int, int] = (3, 224, 224),
                     stem: bool = False) -> list[InsertionPoint]:
    """Insertion points (path, channels, feature size) for ``placement``, in forward order.

    ``stem=True`` also places bottlenecks in stem levels that hold two or more convolutions in
    sequence.
    """
    if placement not in PLACEMENTS:
        raise ValueError(f"unknown placement {placement!r}; choose one of {PLACEMENTS}")
    trace = _Trace(model, input_size)
    if placement == "bottleneck":
        _check_single_resolution(trace, model)
        return _points(trace, _bottleneck_producers(trace, stem), "find_bottlenecks")
    return _points(trace, _block_calls(trace.root), "find_blocks")


def find_bottlenecks(model: nn.Module, input_size: tuple[int, int, int] = (3, 224, 224),
                     stem: bool = False) -> list[str]:
    """Qualified names of the modules after which BAM goes (right before each downsampling)."""
    return [p.path for p in insertion_points(model, "bottleneck", input_size, stem)]


def find_blocks(model: nn.Module, input_size: tuple[int, int, int] = (3, 224, 224)) -> list[str]:
    """Qualified names of every convolution block (the BAM-C placement of Table 2)."""
    return [p.path for p in insertion_points(model, "block", input_size)]


def _nearby_names(model: nn.Module, path: str) -> str:
    names = [name for name, _ in model.named_modules() if name]
    parent = path.rpartition(".")[0]
    if parent in names:
        close = [name for name in names if name.rpartition(".")[0] == parent]
    else:
        close = set(difflib.get_close_matches(path, names, n=6, cutoff=0.5))
        close = [name for name in names if name in close]  # in module order
    if close:
        return f"nearby names: {', '.join(close)}"
    return f"its first modules: {', '.join(names[:8])}"


def _named_points(model: nn.Module, targets, input_size) -> list[InsertionPoint]:
    """Insertion points at the modules named in ``targets`` (channels read from a trace)."""
    if isinstance(targets, str) or not targets:
        raise ValueError(f"targets must be a non-empty list of module paths, got {targets!r}")
    if len(set(targets)) < len(targets):
        raise ValueError(f"targets: a module is named twice in {list(targets)}")
    name = type(model).__name__
    modules = dict(model.named_modules(remove_duplicate=False))
    for path in targets:
        if not path or path not in modules:
            raise ValueError(f"targets: {name} has no module {path!r}; "
                             f"{_nearby_names(model, path)}")
    trace = _Trace(model, input_size)
    first_calls = {call.module: call for call in reversed(trace.calls)}
    for path in targets:
        call = first_calls.get(modules[path])
        if problem := ("does not run in a forward pass" if call is None else _unfit(trace, call)):
            raise ValueError(f"targets: {path!r} {problem}; name a module of {name} that runs "
                             f"once in a forward pass on input_size={tuple(input_size)} and "
                             "returns the feature map to refine")
    return [_point(first_calls[modules[path]]) for path in targets]


class AttentionHook:
    """Forward hook that replaces a module's output by ``attention(output)``.

    A small class rather than a closure so that ``copy.deepcopy`` and ``torch.save(model)`` work.
    It holds the attention module itself: ``nn.DataParallel`` replicas would share the original
    (use DistributedDataParallel, as Accelerate does). A channels-last output (N x H x W x C) is
    refined as N x C x H x W and returned channels-last.
    """

    def __init__(self, attention: nn.Module, channels_last: bool = False):
        self.attention = attention
        self.channels_last = channels_last

    def __call__(self, module: nn.Module, inputs, output: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            return self.attention(output.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return self.attention(output)


def _attached(model: nn.Module):
    """``(path, key, module)`` of every attention attached to ``model``, in module order.

    The key is the module's name in ``model.attention`` where it is registered there, else the
    path with '.' replaced by '_' (which cannot be undone for module names that contain '_', so
    this is read from the hooks themselves).
    """
    registered = getattr(model, "attention", None)
    keys = ({id(module): key for key, module in registered.items()}
            if isinstance(registered, nn.ModuleDict) else {})
    for path, module in model.named_modules():
        for hook in module._forward_hooks.values():
            if isinstance(hook, AttentionHook):
                yield path, keys.get(id(hook.attention), path.replace(".", "_")), hook.attention


def attention_targets(model: nn.Module) -> dict[str, str]:
    """``{path of the module an attention follows: that attention's key}``, in module order."""
    return {path: key for path, key, _ in _attached(model)}


def attached_attention(model: nn.Module) -> dict[str, nn.Module]:
    """``{key: attention module}`` for every attention attached to ``model``, wherever the
    modules are registered."""
    return {key: module for _, key, module in _attached(model)}


def _holders(model: nn.Module, paths: list[str]) -> list[tuple[nn.Module, str]]:
    """``(module, name)`` under which the attention after each path is registered, creating
    ``model.attention`` where that is the place. A container whose forward runs or iterates its
    children would run a new child too: there each module is ``attention`` on the target itself
    or, where the target is such a container as well, on its last submodule (for a Sequential,
    the module that produces its output).
    """
    if not isinstance(model, _CONTAINERS):
        if hasattr(model, "attention"):
            raise ValueError(f"{type(model).__name__} already has an 'attention' attribute: the "
                             "model uses that name for something else")
        model.attention = nn.ModuleDict().train(model.training)
        return [(model.attention, path.replace(".", "_")) for path in paths]
    holders, taken = [], {}
    for path in paths:
        where, holder = path, model.get_submodule(path)
        while isinstance(holder, _CONTAINERS) and len(holder._modules):
            name, holder = list(holder.named_children())[-1]
            where = f"{where}.{name}"
        problem = ("it is an empty container" if isinstance(holder, _CONTAINERS)
                   else f"the attention after '{taken[id(holder)]}' is there" if id(holder) in taken
                   else "it has an 'attention' attribute" if hasattr(holder, "attention") else None)
        if problem:
            raise ValueError(f"cannot register the attention after {path!r} in '{where}' "
                             f"({problem}); {type(model).__name__} runs its children, so it "
                             "cannot hold it either")
        taken[id(holder)] = path
        holders.append((holder, "attention"))
    return holders


def attach_attention(model: nn.Module, attention: AttentionSpec = "bam",
                     placement: str = "bottleneck",
                     input_size: tuple[int, int, int] = (3, 224, 224),
                     targets: list[str] | None = None, stem: bool = False,
                     **attention_kwargs) -> list[str]:
    """Attach ``attention`` modules to ``model`` in place; returns the target module paths.

    ``attention`` is what :func:`bam.create_attention` takes: a registered name, an ``nn.Module``
    class (built as ``cls(channels, **attention_kwargs)``), or None / "none", which does nothing
    and returns ``[]``. The sites are found by tracing (``placement``, ``stem``: see
    :func:`insertion_points`), or named: ``targets`` is a list of module paths, each refined on
    its output (each must run once per forward pass and return a feature map). The modules are
    applied by forward hooks, so the base parameter names are unchanged: load pretrained base
    weights before attaching, or with ``strict=False`` afterwards. They are registered in
    ``model.attention`` (or, for a container such as an ``nn.Sequential``, beside the targets;
    :func:`attached_attention` finds them) and start in the model's train/eval mode.
    """
    builder = get_attention(attention)  # before tracing: a bad name fails at once
    if builder is None:
        return []
    attached = list(attention_targets(model))
    if attached:
        raise ValueError(f"{type(model).__name__} already has attention attached (after "
                         f"{', '.join(attached)}): attach once per model")
    if targets is not None:
        points = _named_points(model, targets, input_size)
    else:
        points = insertion_points(model, placement, input_size, stem)
    if not points:
        raise ValueError(
            f"found no {placement} insertion point in {type(model).__name__} for input_size="
            f"{tuple(input_size)} ({_NOTHING_FOUND[placement]}); name the modules to refine with "
            "targets=[...]")
    param = next(model.parameters(), None)
    modules = [builder(point.channels, **attention_kwargs) for point in points]
    for (holder, name), point, module in zip(_holders(model, [p.path for p in points]), points,
                                             modules):
        if param is not None:
            module.to(device=param.device, dtype=param.dtype if param.is_floating_point() else None)
        holder.add_module(name, module.train(model.training))
        model.get_submodule(point.path).register_forward_hook(
            AttentionHook(module, point.channels_last))
    return [p.path for p in points]
