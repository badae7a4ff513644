"""The Bottleneck Attention Module (Park et al., BMVC 2018 / IJCV 2020), Sec. 3 of the paper.

``F' = F + F * M(F)`` with ``M(F) = sigmoid(Mc(F) + Ms(F))`` (eqs. 1-2), where

* ``Mc = BN(W1 (W0 AvgPool(F) + b0) + b1)`` (eq. 3; the hidden layer has BN + ReLU), and
* ``Ms = BN(f3_1x1(f2_3x3(f1_3x3(f0_1x1(F)))))`` (eq. 4; the 3x3 convs are dilated, each inner
  conv is followed by BN + ReLU).

Every ablation of the paper's Table 1 is a constructor argument. ``combine="product",
final_bn=False`` reproduces the forward pass of the released code
(``x * (1 + sigmoid(Mc * Ms))``), which is what the released checkpoints expect.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from .functional import COMBINES, attention_map, bam_refine

BRANCHES = ("both", "channel", "spatial")


def _check_batch_statistics(module: nn.Module, values_per_channel: int, what: str) -> None:
    # With one value per channel, a BatchNorm in training mode has no variance: PyTorch fails deep
    # inside F.batch_norm with an obscure message, and no output would mean anything.
    if module.training and values_per_channel <= 1:
        raise ValueError(
            f"BAM {what} cannot run in training mode on this input: its BatchNorm needs more than "
            f"one value per channel to compute batch statistics (got {values_per_channel}). "
            "Use a batch of at least 2 samples for training, or call model.eval() for inference."
        )


class ChannelGate(nn.Module):
    """Channel branch, eq. (3): global average pool -> MLP (one hidden layer of C/r) -> BN.

    Returns the raw (pre-sigmoid) channel attention ``Mc`` of shape ``B x C x 1 x 1``.
    """

    def __init__(self, channels: int, reduction: int = 16, final_bn: bool = True):
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.fc1 = nn.Linear(channels, hidden)
        self.bn1 = nn.BatchNorm1d(hidden)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(hidden, channels)
        # The paper's BN "to adjust the scale with the spatial branch output"; the released code
        # has none.
        self.bn = nn.BatchNorm1d(channels) if final_bn else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_batch_statistics(self, x.shape[0], "channel branch (BatchNorm1d of the MLP)")
        # The mean over H and W (the released code's avg_pool2d(x, x.size(2)) is wrong on
        # non-square maps) as a sum divided on the small result: a sum's backward is a broadcast
        # view, where mean's writes a full-size gradient. In float32 at least: a half sum overflows.
        total = x.sum(dim=(2, 3), dtype=torch.promote_types(x.dtype, torch.float32))
        pooled = (total / (x.shape[2] * x.shape[3])).to(x.dtype)
        out = self.fc2(self.act(self.bn1(self.fc1(pooled))))
        return self.bn(out).view(*out.shape, 1, 1)  # one view op (indexing with None makes two)


def _conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 1,
                  dilation: int = 1) -> nn.Sequential:
    """Conv2d (with bias, as the released code) -> BatchNorm2d -> ReLU, keeping H x W."""
    padding = dilation * (kernel_size - 1) // 2
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation)
    return nn.Sequential(OrderedDict(conv=conv, bn=nn.BatchNorm2d(out_channels),
                                     act=nn.ReLU(inplace=True)))


class SpatialGate(nn.Module):
    """Spatial branch, eq. (4): 1x1 reduce -> dilated 3x3 convs -> 1x1 to one map -> BN.

    Returns the raw (pre-sigmoid) spatial attention ``Ms`` of shape ``B x 1 x H x W``.
    """

    def __init__(self, channels: int, reduction: int = 16, dilation: int = 4,
                 num_dilated: int = 2, final_bn: bool = True):
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.reduce = _conv_bn_relu(channels, hidden)
        self.dilated = nn.Sequential(
            *[_conv_bn_relu(hidden, hidden, kernel_size=3, dilation=dilation)
              for _ in range(num_dilated)]
        )
        self.project = nn.Conv2d(hidden, 1, kernel_size=1)
        self.bn = nn.BatchNorm2d(1) if final_bn else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        _check_batch_statistics(self, batch * height * width, "spatial branch")
        return self.bn(self.project(self.dilated(self.reduce(x))))


class BAM(nn.Module):
    """Bottleneck Attention Module.

    Args:
        channels: number of channels C of the refined feature map.
        reduction: reduction ratio r; both branches use ``max(C // r, 1)`` hidden channels.
        dilation: dilation d of the 3x3 convolutions of the spatial branch.
        num_dilated: number of dilated 3x3 convolutions in the spatial branch.
        branches: ``"both"`` (paper), ``"channel"`` or ``"spatial"`` only (Table 1b).
        combine: how the two branches make ``M`` (Table 1b): ``"sum"`` sigmoid(Mc + Ms) (paper),
            ``"max"`` sigmoid(max(Mc, Ms)), ``"product"`` sigmoid(Mc * Ms) (released code),
            ``"sigmoid_sum"`` sigmoid(Mc) + sigmoid(Ms). Ignored with a single branch, where
            ``M = sigmoid(branch)``.
        identity: ``F + F * M`` (paper) if True, else ``F * M``.
        final_bn: BN at the end of each branch (paper); the released code has none.
    """

    def __init__(self, channels: int, reduction: int = 16, dilation: int = 4, num_dilated: int = 2,
                 branches: str = "both", combine: str = "sum", identity: bool = True,
                 final_bn: bool = True):
        super().__init__()
        if branches not in BRANCHES:
            raise ValueError(f"BAM: unknown branches={branches!r}; choose one of {BRANCHES}")
        if combine not in COMBINES:
            raise ValueError(f"BAM: unknown combine={combine!r}; choose one of {COMBINES}")
        if channels < 1 or reduction < 1 or dilation < 1 or num_dilated < 0:
            raise ValueError(
                "BAM: channels, reduction and dilation must be >= 1 and num_dilated >= 0 (got "
                f"channels={channels}, reduction={reduction}, dilation={dilation}, "
                f"num_dilated={num_dilated})"
            )
        self.channels = channels
        self.branches = branches
        self.combine_mode = combine
        self.identity = identity
        self.channel = ChannelGate(channels, reduction, final_bn) if branches != "spatial" else None
        self.spatial = (
            SpatialGate(channels, reduction, dilation, num_dilated, final_bn)
            if branches != "channel" else None
        )

    def combine(self, channel: torch.Tensor | None, spatial: torch.Tensor | None) -> torch.Tensor:
        """The attention map ``M`` from the raw branch outputs (broadcast to B x C x H x W)."""
        return attention_map(channel, spatial, self.combine_mode)

    def _branches(self, x: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        return tuple(None if gate is None else gate(x) for gate in (self.channel, self.spatial))

    def attention_maps(self, x: torch.Tensor) -> dict[str, torch.Tensor | None]:
        """Raw ``channel`` (B x C x 1 x 1) and ``spatial`` (B x 1 x H x W) maps and ``combined`` M.

        A branch that the module does not have is ``None``. Runs the branches once more, so in
        training mode it updates the BN running statistics like a forward pass does.
        """
        channel, spatial = self._branches(x)
        return {"channel": channel, "spatial": spatial, "combined": self.combine(channel, spatial)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(
                f"BAM({self.channels}) expects a B x {self.channels} x H x W tensor, got shape "
                f"{tuple(x.shape)}"
            )
        channel, spatial = self._branches(x)
        # x + x * M in one autograd node (bam.functional): fewer passes over the feature map than
        # plain ops, the same values (tested).
        return bam_refine(x, channel, spatial, self.combine_mode, self.identity)

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, branches={self.branches!r}, "
                f"combine={self.combine_mode!r}, identity={self.identity}")
