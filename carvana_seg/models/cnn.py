"""The seed's baseline: three convolutions at full resolution, no down-sampling.

Its receptive field is 7x7 pixels, so it can only decide "car or not" from local colour and texture:
the point of comparison that shows what the U-Net's context buys.
"""

from __future__ import annotations

from torch import Tensor, nn


class SimpleCNN(nn.Module):
    """conv3x3 -> ReLU -> conv3x3 -> ReLU -> conv3x3, giving one logit per pixel."""

    def __init__(self, in_channels: int = 3, hidden_channels: int = 16, out_channels: int = 1) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(in_channels, hidden_channels, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden_channels, hidden_channels * 2, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden_channels * 2, out_channels, kernel_size=3, padding=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)
