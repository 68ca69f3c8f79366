"""The patch-tunnel network of Lee, Park & Lee (2024): slice the image into patches, run one tunnel per patch.

    image 1x3xHxW --Slice--> patch_1 --tunnel_1 (MobileNetV2 features)--> pooled feature_1 --+
                  --Slice--> patch_2 --tunnel_2 ---------------------------> pooled feature_2 --+--> Concat --> head
                  ...        (R x C grid, then the central patch)                              |
                  --Slice--> patch_T --tunnel_T ---------------------------> pooled feature_T --+

The segmentation is part of the module (and so of the exported ONNX, as Slice ops), and the tunnels never
exchange data until the head, so a runtime can run them one after another, keeping only the pooled
features. With `share_weights` every tunnel is the same module (one set of weights in flash).

Head: the pooled features are concatenated in window order, so the classifier sees which patch each
feature came from (a central object and a corner texture weigh differently); an optional hidden layer keeps
the classifier's flash small when T x features x classes would not fit.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from tvm_pipeline.models.blocks import activation_layer
from tvm_pipeline.models.mobilenetv2 import MobileNetV2Features
from tvm_pipeline.models.tunnel_config import TunnelConfig


class TunnelNet(nn.Module):
    """A patch-tunnel classifier built from a validated `TunnelConfig`; input is 1x3xRxR (R = resolution)."""

    def __init__(self, config: TunnelConfig) -> None:
        super().__init__()
        self.config = config
        self.windows = config.windows()
        self.patch = config.segmentation.patch
        bodies = 1 if config.share_weights else len(self.windows)
        self.tunnels = nn.ModuleList(
            MobileNetV2Features(
                config.blocks, config.width_mult, config.stem_channels, config.last_channels, config.activation
            )
            for _ in range(bodies)
        )
        width = self.tunnels[0].out_channels * len(self.windows)
        head: list[nn.Module] = []
        if config.head_hidden:
            head += [nn.Linear(width, config.head_hidden), activation_layer(config.activation)]
            width = config.head_hidden
        head += [nn.Dropout(config.dropout), nn.Linear(width, config.num_classes)]
        self.head = nn.Sequential(*head)
        self.input_shape = (1, 3, config.resolution, config.resolution)

    def forward(self, x: Tensor) -> Tensor:
        """Class logits of a batch of RxR images."""
        features = []
        whole = self.patch == self.config.resolution  # the 1x1-grid baseline: its one window needs no Slice
        for index, (top, left) in enumerate(self.windows):
            tunnel = self.tunnels[index % len(self.tunnels)]
            patch = x if whole else x[:, :, top : top + self.patch, left : left + self.patch]
            features.append(tunnel(patch))
        joined = torch.cat(features, dim=1) if len(features) > 1 else features[0]
        return self.head(joined)
