"""SRResNet (Ledig et al., SRGAN paper) with optional attention after every k-th residual block.

Layout (scale 4, defaults): 9x9 conv 3->64 + PReLU; 16 residual blocks
(conv3x3-BN-PReLU-conv3x3-BN, plus the identity); conv3x3 + BN and a long skip from the head;
log2(scale) upsamplers (conv3x3 64->256, PixelShuffle(2), PReLU); 9x9 conv 64->3.
About 1.55M parameters. The BAM paper (Sec. 5.7) puts one BAM after every 4th residual block,
i.e. after blocks 4, 8, 12 and 16.

Input: LR RGB in [0, 1]. Output: SR RGB on the same scale, not clamped (the loss sees raw values;
evaluation clamps and rounds to 8 bits).

``global_residual=True`` (not SRGAN's network; every table names it) adds MATLAB-bicubic
upsampling of the input to the output and starts the last convolution at zero, so the untrained
network is exactly bicubic and learns only the residual. Plain SRResNet has no path from the
input's colours to its output: it must learn even the identity colour map, which short runs do not
finish (colours stay off, PSNR stays below bicubic).
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from bam import create_attention, get_attention
from tasks.common.model_io import model_builder
from tasks.data.imresize import imresize

SUPPORTED_SCALES = (2, 4)


class ResidualBlock(nn.Module):
    """conv3x3 - BN - PReLU - conv3x3 - BN, plus the identity (no activation after the sum)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(channels)
        self.act = nn.PReLU()
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bn2(self.conv2(self.act(self.bn1(self.conv1(x)))))


class SRResNet(nn.Module):
    """SRResNet; ``attention`` modules (if any) run after the residual blocks named in
    ``attention_positions`` (1-based block numbers).

    Attention modules live in ``self.attention`` (a ModuleDict keyed ``"block<i>"``) so the base
    network's parameter names are the same with and without attention: baseline weights load
    into the attention model with ``strict=False``.

    The 9x9 ``tail`` is computed on the last upsampler's map before its shuffle
    (:func:`conv_of_shuffled`), so forward hooks on ``tail`` and on that ``PixelShuffle`` fire only
    inside :meth:`layer_by_layer`, which runs every layer as drawn.
    """

    def __init__(self, scale: int = 4, num_blocks: int = 16, channels: int = 64,
                 attention: str = "none", attention_interval: int = 4, global_residual: bool = False,
                 **attention_kwargs) -> None:
        super().__init__()
        if scale not in SUPPORTED_SCALES:
            raise ValueError(f"scale={scale} is not supported by SRResNet: use one of {SUPPORTED_SCALES}")
        if num_blocks < 1 or channels < 1:
            raise ValueError(f"num_blocks and channels must be positive, got {num_blocks} and {channels}")
        if attention_interval < 1:
            raise ValueError(f"attention_interval must be >= 1, got {attention_interval}")
        self.scale = scale
        self.head = nn.Sequential(nn.Conv2d(3, channels, 9, padding=4), nn.PReLU())
        self.blocks = nn.ModuleList(ResidualBlock(channels) for _ in range(num_blocks))
        self.body_tail = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels))
        # each upsampler doubles the size: conv3x3 C -> 4C, PixelShuffle(2), PReLU
        self.upsample = nn.Sequential(*(
            nn.Sequential(nn.Conv2d(channels, 4 * channels, 3, padding=1), nn.PixelShuffle(2),
                          nn.PReLU())
            for _ in range(int(math.log2(scale)))))
        self.tail = nn.Conv2d(channels, 3, 9, padding=4)
        self.global_residual = bool(global_residual)
        # The 9x9 tail sees the last upsampler's shuffled map; computed on the map before the
        # shuffle (conv_of_shuffled), it is the same function of the same weights, 3x faster on a
        # CPU.
        self.subpixel_tail = True
        if self.global_residual:  # the network starts as bicubic and learns what bicubic lacks
            nn.init.zeros_(self.tail.weight)
            nn.init.zeros_(self.tail.bias)

        builder = get_attention(attention)  # None for "none"; raises on an unknown name
        self.attention_positions = list(range(attention_interval, num_blocks + 1, attention_interval)) if builder else []
        self.attention = nn.ModuleDict({f"block{position}": create_attention(attention, channels, **attention_kwargs)
                                        for position in self.attention_positions})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        head = self.head(x)
        features = head
        for index, block in enumerate(self.blocks, start=1):
            features = block(features)
            key = f"block{index}"
            if key in self.attention:
                features = self.attention[key](features)
        features = self.body_tail(features) + head
        out = self._upsample_and_tail(features)
        return out + bicubic_upsample(x, self.scale) if self.global_residual else out

    def _upsample_and_tail(self, features: torch.Tensor) -> torch.Tensor:
        if not self.subpixel_tail:
            return self.tail(self.upsample(features))
        *first, last = self.upsample
        for stage in first:
            features = stage(features)
        conv, shuffle, act = last
        # PReLU has one slope, so it commutes with the shuffle: applied to the 4C-channel map.
        return conv_of_shuffled(act(conv(features)), self.tail, shuffle.upscale_factor)

    @contextlib.contextmanager
    def layer_by_layer(self):
        """Run the tail as drawn (shuffle, PReLU, then the 9x9 conv), for what reads the layers one
        by one: MAC counts in the paper's convention, receptive fields from forward hooks."""
        self.subpixel_tail, before = False, self.subpixel_tail
        try:
            yield self
        finally:
            self.subpixel_tail = before

    def extra_repr(self) -> str:
        return f"scale={self.scale}, global_residual={self.global_residual}"


def conv_of_shuffled(x: torch.Tensor, conv: nn.Conv2d, factor: int) -> torch.Tensor:
    """``conv(pixel_shuffle(x, factor))`` without the shuffled map: one convolution of ``x`` with
    the equivalent kernel, then a shuffle of the (few) output channels.

    A "same" convolution with an odd k x k kernel reads, for output row ``r*i + a``, the shuffled
    rows ``r*i + a + d`` (``|d| <= k // 2``), which are sub-row ``s`` of ``x``'s row ``i + p``
    with ``d = r*p + s - a``. So output sub-pixel ``(a, b)`` is a convolution of ``x`` whose tap
    ``(p, q)`` on input sub-pixel ``(s, t)`` is the kernel's tap ``(r*p + s - a, r*q + t - b)``:
    the kernel, shifted by ``(a, b)`` and pixel-unshuffled. SRResNet's tail (3 outputs, 9x9, at 4x) becomes a
    5x5 convolution to 12 outputs at 2x: 1.24x its MACs, but oneDNN runs a 3-output convolution
    at a fraction of its speed (5 vs 24 GMAC/s here). Equal up to float rounding, gradients too.
    """
    k = conv.kernel_size[0]
    if (conv.kernel_size != (k, k) or k % 2 == 0 or conv.padding != (k // 2, k // 2)
            or conv.stride != (1, 1) or conv.dilation != (1, 1) or conv.groups != 1):
        raise ValueError(f"conv_of_shuffled needs a square, odd, 'same' convolution, got {conv}")
    reach = -(-(k // 2) // factor)  # taps of x on each side: ceil(radius / factor)
    side = factor * (2 * reach + 1)
    kernels = []
    for a in range(factor):
        for b in range(factor):
            top, left = factor * reach - k // 2 + a, factor * reach - k // 2 + b
            shifted = F.pad(conv.weight, (left, side - k - left, top, side - k - top))
            kernels.append(F.pixel_unshuffle(shifted, factor))
    # output channel o * factor**2 + a * factor + b, the order pixel_shuffle reads
    weight = torch.stack(kernels, dim=1).flatten(0, 1)
    bias = conv.bias.repeat_interleave(factor**2) if conv.bias is not None else None
    return F.pixel_shuffle(F.conv2d(x, weight, bias, padding=reach), factor)


def bicubic_upsample(x: torch.Tensor, scale: int) -> torch.Tensor:
    """MATLAB bicubic upsampling of an (N, C, h, w) batch by ``scale``, not rounded, in x's dtype
    (float32 inside autocast regions as well: the residual path keeps full precision)."""
    full = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    if torch.amp.is_autocast_available(x.device.type):
        with torch.autocast(x.device.type, enabled=False):
            return imresize(full, float(scale))
    return imresize(full, float(scale))


@model_builder
def srresnet(**kwargs) -> SRResNet:
    """Build :class:`SRResNet` (its arguments; the builder that model files name):
    ``srresnet(scale=4, attention="bam")`` adds a BAM after residual blocks 4, 8, 12 and 16."""
    return SRResNet(**kwargs)
