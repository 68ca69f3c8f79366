"""Named test models for the compiler: each builder returns (module, NCHW input shape with batch 1).

The small ones compile to C that runs in about a second on an emulated Cortex-M7; the MobileNetV2s and the
tunnel configs are the real workloads. `get_model` gives each deterministic, non-trivial random weights.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from torch import nn

from tvm_pipeline.errors import UserError
from tvm_pipeline.models.blocks import ConvBNAct, InvertedResidual
from tvm_pipeline.models.init import randomize_weights_
from tvm_pipeline.models.mobilenetv2 import MobileNetV2
from tvm_pipeline.models.tunnel import TunnelNet
from tvm_pipeline.models.tunnel_config import load_config

InputShape = tuple[int, int, int, int]
ZooEntry = tuple[nn.Module, InputShape]


def conv_stack() -> ZooEntry:
    """Three 3x3 convs with bias and ReLU, the second with stride 2; 3x16x16 input."""
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1),
        nn.ReLU(),
    )
    return model, (1, 3, 16, 16)


def inverted_residual() -> ZooEntry:
    """A stem conv, then one ReLU6 bottleneck (t=4, K=3) with its skip-add; 3x16x16 input."""
    model = nn.Sequential(ConvBNAct(3, 16, 3), InvertedResidual(16, 16, expand_ratio=4, stride=1, kernel=3))
    return model, (1, 3, 16, 16)


def pool_linear() -> ZooEntry:
    """Conv + ReLU, global average pool, flatten, a 10-way linear layer; 3x16x16 input."""
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)
    )
    return model, (1, 3, 16, 16)


def mbv2_tiny() -> ZooEntry:
    """Stem + four bottlenecks covering stride 1/2, K=3/5, ReLU/ReLU6, with and without skip; 10 classes, 3x32x32."""
    model = nn.Sequential(
        ConvBNAct(3, 8, 3, stride=2),
        InvertedResidual(8, 8, expand_ratio=1, stride=1, kernel=3, activation="relu6"),  # t=1, skip
        InvertedResidual(8, 16, expand_ratio=4, stride=2, kernel=5, activation="relu"),  # stride 2, no skip
        InvertedResidual(16, 16, expand_ratio=4, stride=1, kernel=3, activation="relu"),  # skip
        InvertedResidual(16, 24, expand_ratio=6, stride=2, kernel=5, activation="relu6"),  # channels change
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(24, 10),
    )
    return model, (1, 3, 32, 32)


def mobilenetv2(width_mult: float, resolution: int) -> ZooEntry:
    """The standard MobileNetV2 at one width and resolution, 1000 classes."""
    model = MobileNetV2(width_mult=width_mult, resolution=resolution, num_classes=1000)
    return model, model.input_shape


def tunnel(config_name: str) -> ZooEntry:
    """The patch-tunnel network of a named config (see tunnel_config.named_configs())."""
    model = TunnelNet(load_config(config_name))
    return model, model.input_shape


ZOO: dict[str, Callable[[], ZooEntry]] = {
    "conv_stack": conv_stack,
    "inverted_residual": inverted_residual,
    "pool_linear": pool_linear,
    "mbv2_tiny": mbv2_tiny,
    "mobilenetv2_w035_144": partial(mobilenetv2, 0.35, 144),
    "mobilenetv2_w10_224": partial(mobilenetv2, 1.0, 224),
    "tunnel_tiny": partial(tunnel, "tiny"),
    "tunnel_paper": partial(tunnel, "paper"),
    "mobilenetv2_baseline": partial(tunnel, "mobilenetv2_baseline"),
}


def get_model(name: str, seed: int = 0) -> ZooEntry:
    """Build zoo model `name` in eval mode with deterministic random weights from `seed`."""
    if name not in ZOO:
        raise UserError(f"model: unknown zoo model {name!r}; known models: {', '.join(ZOO)}")
    model, input_shape = ZOO[name]()
    return randomize_weights_(model, seed).eval(), input_shape
