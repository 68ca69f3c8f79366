"""MobileNetV2 (Sandler et al. 2018) with a configurable bottleneck table, width multiplier and kernel sizes.

`MobileNetV2Features` (stem, bottlenecks, last 1x1 conv, global average pool) is also the body of every patch
tunnel in `tunnel.py`, so a tunnel and the baseline network share one definition.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from tvm_pipeline.models.blocks import BlockSpec, ConvBNAct, bottleneck_stack, make_divisible

# The table of the MobileNetV2 paper (Table 2): t, c, n, s; all depthwise kernels 3x3.
MOBILENETV2_TABLE: tuple[BlockSpec, ...] = (
    BlockSpec(1, 16, 1, 1),
    BlockSpec(6, 24, 2, 2),
    BlockSpec(6, 32, 3, 2),
    BlockSpec(6, 64, 4, 2),
    BlockSpec(6, 96, 3, 1),
    BlockSpec(6, 160, 3, 2),
    BlockSpec(6, 320, 1, 1),
)


class MobileNetV2Features(nn.Module):
    """Stem conv (stride 2), bottleneck stack, optional last 1x1 conv, global average pool -> (N, out_channels).

    `stem_channels` and the table's channels are scaled by `width_mult`; `last_channels` is used as given
    (0 skips the last conv, so the pooled feature is the last bottleneck's output).
    """

    def __init__(
        self, table: tuple[BlockSpec, ...], width_mult: float, stem_channels: int, last_channels: int, activation: str
    ) -> None:
        super().__init__()
        stem = make_divisible(stem_channels * width_mult)
        blocks, cout = bottleneck_stack(stem, table, width_mult, activation)
        layers: list[nn.Module] = [ConvBNAct(3, stem, 3, 2, activation=activation), *blocks]
        if last_channels:
            layers.append(ConvBNAct(cout, last_channels, 1, activation=activation))
            cout = last_channels
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.out_channels = cout

    def forward(self, x: Tensor) -> Tensor:
        """Pooled feature vector of an NCHW image."""
        return torch.flatten(self.pool(self.layers(x)), 1)


class MobileNetV2(nn.Module):
    """MobileNetV2 classifier; `input_shape` records the NCHW shape (batch 1) it is meant to run at."""

    def __init__(
        self,
        width_mult: float = 1.0,
        resolution: int = 224,
        num_classes: int = 1000,
        table: tuple[BlockSpec, ...] = MOBILENETV2_TABLE,
        activation: str = "relu6",
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        # As in the reference implementation, the last conv never shrinks below 1280 channels.
        last = make_divisible(1280 * max(1.0, width_mult))
        self.features = MobileNetV2Features(table, width_mult, 32, last, activation)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(last, num_classes))
        self.input_shape = (1, 3, resolution, resolution)

    def forward(self, x: Tensor) -> Tensor:
        """Class logits of an NCHW image."""
        return self.classifier(self.features(x))
