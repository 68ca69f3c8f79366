"""Deterministic random weights whose BatchNorms are not identities, for numerical tests of the compiler."""

from __future__ import annotations

import math

import torch
from torch import nn


def randomize_weights_(model: nn.Module, seed: int) -> nn.Module:
    """Re-draw every Conv2d, Linear and BatchNorm2d tensor of `model` from `seed`, in place; returns `model`.

    Freshly constructed BatchNorms (mean 0, variance 1, scale 1, shift 0) fold into the identity, which would
    let a compiler bug in bias or scale handling go unseen, so their statistics and affine terms are drawn
    too. Scales keep activations of order 1 through deep MobileNetV2s (He init on fan-in).
    """
    generator = torch.Generator().manual_seed(seed)

    def uniform(tensor: torch.Tensor, low: float, high: float) -> None:
        tensor.copy_(torch.rand(tensor.shape, generator=generator) * (high - low) + low)

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                fan_in = module.weight[0].numel()
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * math.sqrt(2.0 / fan_in))
                if module.bias is not None:
                    uniform(module.bias, -0.1, 0.1)
            elif isinstance(module, nn.BatchNorm2d):
                uniform(module.weight, 0.5, 1.5)
                uniform(module.bias, -0.2, 0.2)
                uniform(module.running_mean, -0.2, 0.2)
                uniform(module.running_var, 0.5, 2.0)
    return model
