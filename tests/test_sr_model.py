"""SRResNet: parameter count against a hand-derived formula, shapes, BAM placement."""

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
    out = model(torch.rand(2, 3, 6, 6))
    out.mean().backward()
    grads = [p.grad for p in model.attention.parameters()]
    assert grads and all(g is not None for g in grads)


def test_unknown_attention():
    with pytest.raises(ValueError, match="nope"):
        srresnet(attention="nope")
