"""SRResNet: parameter count against a hand-derived formula, shapes, BAM placement."""

import math

import pytest
import torch
from torch import nn

from tasks.sr.model import srresnet


def expected_params(scale: int, num_blocks: int, c: int) -> int:
    """Count SRResNet's parameters layer by layer (PReLU has one shared slope)."""
    conv = lambda k, cin, cout: k * k * cin * cout + cout  # noqa: E731 - weights + bias
    bn = 2 * c                                              # weight + bias (running stats are buffers)
    head = conv(9, 3, c) + 1
    block = 2 * conv(3, c, c) + 2 * bn + 1
    body_tail = conv(3, c, c) + bn
    upsampler = conv(3, c, 4 * c) + 1
    n_up = {2: 1, 4: 2}[scale]
    tail = conv(9, c, 3)
    return head + num_blocks * block + body_tail + n_up * upsampler + tail


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_default_is_srgan_size():
    model = srresnet()
    assert count(model) == expected_params(4, 16, 64) == 1_549_462  # "about 1.5M" (SRGAN paper)
    assert count(srresnet(scale=2)) == expected_params(2, 16, 64)


@pytest.mark.parametrize("scale", [2, 4])
def test_output_shape_and_range_of_input(scale):
    model = srresnet(scale=scale, num_blocks=2, channels=8).eval()
    lr = torch.rand(2, 3, 7, 5)
    with torch.no_grad():
        sr = model(lr)
    assert sr.shape == (2, 3, 7 * scale, 5 * scale)
    assert torch.isfinite(sr).all()


@pytest.mark.parametrize("scale", [1, 3, 8])
def test_unsupported_scale(scale):
    with pytest.raises(ValueError, match="scale"):
        srresnet(scale=scale)


def test_bam_after_every_fourth_block():
    from bam import BAM

    model = srresnet(attention="bam")
    assert model.attention_positions == [4, 8, 12, 16]
    bams = [m for m in model.modules() if isinstance(m, BAM)]
    assert len(bams) == 4
    # Base parameter names are unchanged, so baseline weights load into the BAM model.
    base = srresnet()
    missing, unexpected = model.load_state_dict(base.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("attention.") for k in missing)
    # The attention parameters add what 4 standalone BAMs on 64 channels have.
    assert count(model) - count(base) == 4 * count(BAM(64))


def test_bam_runs_where_positions_say():
    """A hook on each BAM sees the output of the block with the same number."""
    model = srresnet(num_blocks=6, channels=16, attention="bam", attention_interval=3).eval()
    assert model.attention_positions == [3, 6]
    seen = {}
    for i, block in enumerate(model.blocks, start=1):
        block.register_forward_hook(lambda m, a, out, i=i: seen.setdefault(f"block{i}", out))
    inputs = {}
    for key, module in model.attention.items():
        module.register_forward_hook(lambda m, a, out, key=key: inputs.setdefault(key, a[0]))
    with torch.no_grad():
        model(torch.rand(1, 3, 8, 8))
    assert set(inputs) == {"block3", "block6"}
    for key, tensor in inputs.items():
        assert torch.equal(tensor, seen[key])


def test_bam_changes_the_output_and_trains():
    torch.manual_seed(0)
    model = srresnet(num_blocks=4, channels=16, attention="bam")
    baseline = srresnet(num_blocks=4, channels=16)
    baseline.load_state_dict(model.state_dict(), strict=False)  # the same base weights, no BAM
    x = torch.rand(2, 3, 6, 6)
    out = model(x)
    assert not torch.allclose(out, baseline(x), atol=1e-4)  # the BAM really refines the features
    out.mean().backward()
    # Every weight of every BAM learns (a bias right before a BatchNorm cannot: BN removes it).
    weights = [p.grad for p in model.attention.parameters() if p.dim() > 1]
    assert len(weights) == 6 and all(g is not None and g.abs().sum() > 0 for g in weights)


@pytest.mark.parametrize("kernel, factor", [(9, 2), (3, 2), (5, 3), (1, 2)])
def test_conv_of_shuffled_is_the_convolution_of_the_shuffled_map(kernel, factor):
    """Values and every gradient equal the plain shuffle-then-convolve, in float64."""
    from tasks.sr.model import conv_of_shuffled

    torch.manual_seed(0)
    conv = nn.Conv2d(4, 3, kernel, padding=kernel // 2).double()
    x = torch.randn(2, 4 * factor**2, 5, 7, dtype=torch.float64, requires_grad=True)
    plain = conv(nn.functional.pixel_shuffle(x, factor))
    fast = conv_of_shuffled(x, conv, factor)
    assert fast.shape == plain.shape == (2, 3, 5 * factor, 7 * factor)
    torch.testing.assert_close(fast, plain, rtol=0, atol=1e-12)
    upstream = torch.randn_like(plain)
    grads = torch.autograd.grad(plain, [x, conv.weight, conv.bias], upstream)
    fast_grads = torch.autograd.grad(fast, [x, conv.weight, conv.bias], upstream)
    for got, want in zip(fast_grads, grads):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-11)


def test_conv_of_shuffled_refuses_what_it_cannot_rewrite():
    from tasks.sr.model import conv_of_shuffled

    with pytest.raises(ValueError, match="odd, 'same'"):
        conv_of_shuffled(torch.rand(1, 8, 4, 4), nn.Conv2d(2, 3, 3, padding=0), 2)


@pytest.mark.parametrize("scale", [2, 4])
def test_subpixel_tail_is_the_network_as_drawn(scale):
    """The fast tail changes no output; counting and layer hooks see the layers as drawn."""
    from bam import count_macs

    torch.manual_seed(0)
    model = srresnet(scale=scale, num_blocks=2, channels=8, attention="bam", attention_interval=1).double().eval()
    nn.init.normal_(model.tail.weight, std=0.1)
    lr = torch.rand(2, 3, 6, 5, dtype=torch.float64)
    with torch.no_grad():
        fast = model(lr)
        with model.layer_by_layer():
            drawn = model(lr)
    assert model.subpixel_tail  # restored on leaving
    torch.testing.assert_close(fast, drawn, rtol=0, atol=1e-12)
    # MACs by hand, per LR pixel of a 12 x 12 input: the tail counts as a 9x9 conv 8 -> 3 at the
    # output resolution (not as the 5x5 conv that computes it)
    c, side = 8, 12
    up = sum(9 * c * 4 * c * 4**i for i in range(int(math.log2(scale))))
    per_pixel = 81 * 3 * c + 5 * 9 * c * c + up + 81 * c * 3 * scale**2
    base = srresnet(scale=scale, num_blocks=2, channels=8)
    with base.layer_by_layer():
        assert count_macs(base, (3, side, side)) == per_pixel * side**2


def test_unknown_attention():
    with pytest.raises(ValueError, match="nope"):
        srresnet(attention="nope")


def test_global_residual_starts_as_exactly_bicubic(sr_data_root):
    """--global-residual: step 0 is MATLAB bicubic, to the bit, and scores as the bicubic baseline."""
    from tasks.data.imresize import imresize
    from tasks.sr.evaluate import BICUBIC, load_sets, score_set

    torch.manual_seed(0)
    model = srresnet(attention="bam", global_residual=True).eval()
    assert count(model) == count(srresnet(attention="bam"))  # no extra parameters
    assert not model.tail.weight.any() and not model.tail.bias.any()
    lr = torch.rand(2, 3, 11, 13)
    with torch.no_grad():
        assert torch.equal(model(lr), imresize(lr, 4.0))
    set5 = load_sets(["Set5"], 4, sr_data_root)["Set5"]
    untrained, bicubic = score_set(set5, model, "basicsr"), score_set(set5, BICUBIC, "basicsr")
    assert untrained["psnr"] == pytest.approx(bicubic["psnr"], abs=1e-3)  # float32 vs float64 rounding only
    assert untrained["psnr"] == pytest.approx(28.4314, abs=0.005)


def test_global_residual_learns_the_residual():
    torch.manual_seed(0)
    model = srresnet(num_blocks=2, channels=8, global_residual=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    lr, hr = torch.rand(4, 3, 8, 8), torch.rand(4, 3, 32, 32)
    losses = []
    for _ in range(3):
        loss = nn.functional.l1_loss(model(lr), hr)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert model.tail.weight.abs().sum() > 0  # the first update reaches the zero-initialised tail
    assert losses[-1] < losses[0]
    assert "global_residual=True" in repr(model)
