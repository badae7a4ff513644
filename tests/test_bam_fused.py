"""bam.functional.bam_refine against the plain expression x * (1 + sigmoid(Mc + Ms)) of the paper."""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from bam.functional import SumRefine, attention_map, bam_refine


def _plain(x, channel, spatial, combine="sum", identity=True):
    # Written out from the paper's eqs. (1)-(2), independently of bam.functional.
    if channel is None:
        gate = torch.sigmoid(spatial)
    elif spatial is None:
        gate = torch.sigmoid(channel)
    elif combine == "sum":
        gate = torch.sigmoid(channel + spatial)
    elif combine == "max":
        gate = torch.sigmoid(torch.maximum(channel, spatial))
    elif combine == "product":
        gate = torch.sigmoid(channel * spatial)
    else:
        gate = torch.sigmoid(channel) + torch.sigmoid(spatial)
    return x + x * gate if identity else x * gate


def _inputs(b=2, c=6, h=5, w=7, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, c, h, w, generator=g, dtype=dtype)
    channel = torch.randn(b, c, 1, 1, generator=g, dtype=dtype)
    spatial = torch.randn(b, 1, h, w, generator=g, dtype=dtype)
    return x, channel, spatial


def _run(fn, tensors, grad_out):
    leaves = [t.detach().clone().requires_grad_() if t is not None else None for t in tensors]
    out = fn(*leaves)
    out.backward(grad_out)
    return out.detach(), [t.grad if t is not None else None for t in leaves]


@pytest.mark.parametrize("recompute", [True, False])
@pytest.mark.parametrize("identity", [True, False])
@pytest.mark.parametrize("branches", ["both", "channel", "spatial"])
def test_matches_plain_fp32(identity, branches, recompute):
    x, channel, spatial = _inputs()
    channel = None if branches == "spatial" else channel
    spatial = None if branches == "channel" else spatial
    grad_out = torch.randn_like(x)
    out, grads = _run(lambda *t: bam_refine(*t, identity=identity, recompute=recompute),
                      (x, channel, spatial), grad_out)
    ref, ref_grads = _run(lambda *t: _plain(*t, identity=identity), (x, channel, spatial), grad_out)
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6)
    for got, want in zip(grads, ref_grads):
        assert (got is None) == (want is None)
        if got is not None:
            assert got.shape == want.shape
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("combine", ["max", "product", "sigmoid_sum"])
def test_other_combines_fall_back_to_plain(combine):
    x, channel, spatial = _inputs(seed=1)
    grad_out = torch.randn_like(x)
    out, grads = _run(lambda *t: bam_refine(*t, combine=combine), (x, channel, spatial), grad_out)
    ref, ref_grads = _run(lambda *t: _plain(*t, combine=combine), (x, channel, spatial), grad_out)
    torch.testing.assert_close(out, ref)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want)
    torch.testing.assert_close(attention_map(channel, spatial, combine),
                               (_plain(torch.ones_like(x), channel, spatial, combine, identity=False)))


def test_gradcheck_float64():
    x, channel, spatial = _inputs(b=2, c=3, h=3, w=4, dtype=torch.float64, seed=2)
    tensors = tuple(t.requires_grad_() for t in (x, channel, spatial))
    for identity in (True, False):
        for recompute in (True, False):
            assert torch.autograd.gradcheck(lambda *t: SumRefine.apply(*t, identity, recompute), tensors)


def test_bf16_autocast_matches_plain_within_bf16_tolerance():
    torch.manual_seed(3)
    conv = torch.nn.Conv2d(4, 8, 3, padding=1)
    pool_fc = torch.nn.Linear(8, 8)
    spatial_conv = torch.nn.Conv2d(8, 1, 1)
    image = torch.randn(2, 4, 9, 11)

    def network(refine):
        # A conv feature map and two conv/linear branches: the tensors autocast makes bf16.
        x = conv(image)
        channel = pool_fc(x.mean(dim=(2, 3)))[:, :, None, None]
        spatial = spatial_conv(x)
        return refine(x, channel, spatial)

    results = {}
    for name, refine in (("fused", bam_refine), ("plain", _plain)):
        for p in (*conv.parameters(), *pool_fc.parameters(), *spatial_conv.parameters()):
            p.grad = None
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = network(refine)
        assert out.dtype == torch.bfloat16
        out.float().square().mean().backward()
        results[name] = (out.float(), [p.grad.clone() for p in (conv.weight, pool_fc.weight,
                                                                 spatial_conv.weight)])
    out, grads = results["fused"]
    ref, ref_grads = results["plain"]
    # bf16 keeps 8 bits of mantissa: relative rounding 2^-8 per op, a few ops deep.
    torch.testing.assert_close(out, ref, rtol=2e-2, atol=2e-2)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=5e-2, atol=5e-2 * want.abs().max().item())
    # ...and both are close to the float32 truth.
    with torch.no_grad():
        truth = network(_plain)
    torch.testing.assert_close(out, truth, rtol=3e-2, atol=3e-2)


def test_bf16_inputs_direct():
    x, channel, spatial = (t.to(torch.bfloat16) for t in _inputs(seed=4))
    grad_out = torch.randn_like(x)
    out, grads = _run(bam_refine, (x, channel, spatial), grad_out)
    ref, ref_grads = _run(_plain, (x.double(), channel.double(), spatial.double()), grad_out.double())
    assert out.dtype == torch.bfloat16 and all(g.dtype == torch.bfloat16 for g in grads)
    torch.testing.assert_close(out.double(), ref, rtol=1e-2, atol=1e-2)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got.double(), want, rtol=2e-2, atol=2e-2 * want.abs().max().item())


def test_mixed_dtypes_promote_like_plain():
    x, channel, spatial = _inputs(seed=5)
    out = bam_refine(x.to(torch.bfloat16), channel, spatial)  # fp32 branches -> fp32, as plain ops
    assert out.dtype == _plain(x.to(torch.bfloat16), channel, spatial).dtype == torch.float32


def test_channels_last():
    x, channel, spatial = _inputs(b=2, c=8, h=6, w=5, seed=6)
    x = x.to(memory_format=torch.channels_last)
    grad_out = torch.randn_like(x)
    out, grads = _run(bam_refine, (x, channel, spatial), grad_out)
    ref, ref_grads = _run(_plain, (x, channel, spatial), grad_out)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert grads[0].is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, ref)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want)


def test_saves_no_full_size_attention_map():
    x, channel, spatial = (t.requires_grad_() for t in _inputs(b=2, c=16, h=8, w=8, seed=7))
    saved = {}
    recompute = lambda *t: bam_refine(*t, recompute=True)  # noqa: E731
    for name, fn in (("fused", recompute), ("plain", _plain), ("keep_gate", bam_refine)):
        sizes = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: sizes.append(t.numel()) or t, lambda t: t):
            fn(x, channel, spatial)
        saved[name] = sum(s for s in sizes if s == x.numel())
    assert saved["fused"] == x.numel()  # x only
    assert saved["keep_gate"] == 2 * x.numel()  # x and the gate
    assert saved["plain"] >= 2 * x.numel()  # x and the attention map (at least)


def test_bad_inputs():
    x, channel, spatial = _inputs()
    with pytest.raises(ValueError, match="combine"):
        bam_refine(x, channel, spatial, combine="mean")
    with pytest.raises(ValueError, match="at least one"):
        bam_refine(x, None, None)
    with pytest.raises(ValueError, match="broadcast"):
        bam_refine(x, channel[:, :3], spatial)
    with pytest.raises(ValueError, match="broadcast"):
        bam_refine(x[:, :, :1, :1], channel, spatial)  # output would not have x's shape


def test_compiles_on_cpu():
    pytest.importorskip("torch._inductor")
    x, channel, spatial = _inputs(seed=8)
    grad_out = torch.randn_like(x)
    torch._dynamo.reset()
    try:
        compiled = torch.compile(bam_refine, backend="aot_eager", fullgraph=True)
        out, grads = _run(compiled, (x, channel, spatial), grad_out)
    finally:
        torch._dynamo.reset()
    ref, ref_grads = _run(_plain, (x, channel, spatial), grad_out)
    torch.testing.assert_close(out, ref)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want)


class _FullSizeWrites(TorchDispatchMode):
    """Counts the aten ops that write a tensor of ``numel`` elements: the full-size passes over the
    feature map (allocations and aliases, which move no data, are not passes)."""

    NOT_PASSES = ("aten.empty_like", "aten.empty", "aten.detach", "aten.view", "aten.expand", "aten.alias")

    def __init__(self, numel: int) -> None:
        super().__init__()
        self.numel, self.ops = numel, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = str(func.overloadpacket) if hasattr(func, "overloadpacket") else str(func)
        written = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        if any(t.numel() == self.numel for t in written) and not name.startswith(self.NOT_PASSES):
            self.ops.append(name)
        return out


def _passes(fn) -> tuple[list[str], list[str]]:
    """(forward, backward) full-size passes of ``fn`` on fresh leaves (no gradient accumulation)."""
    x, channel, spatial = (t.requires_grad_() for t in _inputs(b=2, c=16, h=8, w=8, seed=9))
    with _FullSizeWrites(x.numel()) as forward:
        out = fn(x, channel, spatial)
    grad = torch.randn_like(out)
    with _FullSizeWrites(x.numel()) as backward:
        out.backward(grad)
    return forward.ops, backward.ops


def test_full_size_passes_are_those_the_docstring_counts():
    """bam.functional's claims, checked by counting (timings belong in benchmarks/bench.py):
    plain ops 4 + 4 passes; fused 3 forward; recompute as many in all as plain; gate kept 3 + 3."""
    plain_forward, plain_backward = _passes(_plain)
    fused_forward, fused_backward = _passes(lambda *t: bam_refine(*t, recompute=True))
    kept_forward, kept_backward = _passes(bam_refine)  # the default keeps the gate
    assert len(plain_forward) == 4 and len(plain_backward) == 4
    assert len(fused_forward) == 3 and kept_forward == fused_forward
    assert len(fused_forward) + len(fused_backward) == len(plain_forward) + len(plain_backward) == 8
    assert len(kept_backward) == 3 and len(fused_backward) - len(kept_backward) == 2  # the recomputed gate


@pytest.mark.parametrize("combine", ["sum", "product"])
@pytest.mark.parametrize("autocast", [False, True])
def test_bam_module_matches_plain_expression(combine, autocast):
    """bam.BAM (whatever refinement it uses) equals the paper's expression on its own branches."""
    import copy

    from bam import BAM

    torch.manual_seed(10)
    module = BAM(32, reduction=8, dilation=2, combine=combine).train()
    reference = copy.deepcopy(module)
    x = torch.randn(3, 32, 9, 10).to(memory_format=torch.channels_last)
    grad_out = torch.randn_like(x)
    context = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    results = []
    for fn in (module, lambda t: _plain(t, reference.channel(t), reference.spatial(t), combine)):
        leaf = x.clone().requires_grad_()
        with context:
            out = fn(leaf)
        out.backward(grad_out.to(out.dtype))
        results.append((out.float(), leaf.grad))
    params = [(a.grad, b.grad) for a, b in zip(module.parameters(), reference.parameters())]
    tol = dict(rtol=3e-2, atol=3e-2) if autocast else dict(rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(results[0][0], results[1][0], **tol)
    torch.testing.assert_close(results[0][1], results[1][1], **tol)
    # Biases of convs followed by BN have a true gradient of 0, so theirs are pure rounding noise
    # of the size of the other gradients: compare against the largest gradient of the module.
    scale = max(want.abs().max().item() for _, want in params)
    for got, want in params:
        torch.testing.assert_close(got, want, rtol=tol["rtol"], atol=tol["atol"] * scale)


def test_meta_tensors_shape_only():
    # bam.counting runs models on the "meta" device, which has no autocast.
    x, channel, spatial = (torch.empty(t.shape, device="meta") for t in _inputs())
    assert bam_refine(x, channel, spatial).shape == x.shape
