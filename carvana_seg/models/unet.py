"""U-Net (Ronneberger et al., 2015) assembled from named parts: double conv, down, up, out.

Any input size works: 1918 / 2 = 959 is odd, and halving it four times does not come back to 959 by
doubling, so each up step pads the up-sampled map to the size of its skip connection.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from carvana_seg.errors import InputError


class DoubleConv(nn.Module):
    """(conv3x3 -> [BN] -> ReLU) twice."""

    def __init__(self, in_channels: int, out_channels: int, batch_norm: bool = True) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for channels_in in (in_channels, out_channels):
            # A convolution followed by batch norm needs no bias: BN's shift replaces it.
            layers.append(nn.Conv2d(channels_in, out_channels, kernel_size=3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out_channels))
            layers.append(nn.ReLU(inplace=True))
        self.block = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x)


class Down(nn.Module):
    """Halve the resolution (2x2 max pool), then a double conv."""

    def __init__(self, in_channels: int, out_channels: int, batch_norm: bool = True) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.MaxPool2d(2), DoubleConv(in_channels, out_channels, batch_norm))

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x)


class Up(nn.Module):
    """Double the resolution, pad to the skip connection's size, concatenate, double conv."""

    def __init__(
        self,
        in_channels: int,
        skip_channels: int,
        out_channels: int,
        bilinear: bool = True,
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        if bilinear:
            self.up: nn.Module = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
            up_channels = in_channels
        else:
            up_channels = in_channels // 2
            self.up = nn.ConvTranspose2d(in_channels, up_channels, kernel_size=2, stride=2)
        self.conv = DoubleConv(skip_channels + up_channels, out_channels, batch_norm)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = self.up(x)
        dy, dx = skip.shape[-2] - x.shape[-2], skip.shape[-1] - x.shape[-1]
        if dy or dx:
            x = F.pad(x, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
        return self.conv(torch.cat([skip, x], dim=1))


class UNet(nn.Module):
    """Encoder of `depth` down steps from `base_channels` (doubling each step), mirrored decoder.

    Args:
        in_channels: channels of the input image.
        out_channels: logits per pixel (1 for car vs background).
        base_channels: width of the first level; level i has base_channels * 2**i.
        depth: number of down (and up) steps.
        batch_norm: batch norm after every convolution.
        bilinear: bilinear up-sampling (no parameters) instead of transposed convolutions.
        out_bias: initial bias of the output logits. The logit of the expected foreground share
            (prior initialisation, as in Lin et al.'s focal loss paper) starts every pixel at that
            probability rather than at one half, so the first steps need not undo an all-car guess.
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 1,
        base_channels: int = 32,
        depth: int = 4,
        batch_norm: bool = True,
        bilinear: bool = True,
        out_bias: float = 0.0,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise InputError(f"model.depth must be at least 1, got {depth}")
        widths = [base_channels * 2**level for level in range(depth + 1)]
        self.inc = DoubleConv(in_channels, widths[0], batch_norm)
        self.downs = nn.ModuleList(Down(widths[i], widths[i + 1], batch_norm) for i in range(depth))
        self.ups = nn.ModuleList(
            Up(widths[i + 1], widths[i], widths[i], bilinear, batch_norm) for i in reversed(range(depth))
        )
        self.outc = nn.Conv2d(widths[0], out_channels, kernel_size=1)
        nn.init.constant_(self.outc.bias, out_bias)

    def forward(self, x: Tensor) -> Tensor:
        skips = [self.inc(x)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        x = skips.pop()
        for up in self.ups:
            x = up(x, skips.pop())
        return self.outc(x)
