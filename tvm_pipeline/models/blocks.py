"""MobileNetV2 building blocks: conv + BN + activation, the inverted residual, and a bottleneck table.

Every convolution is followed by a BatchNorm so that the ONNX exporter folds it into the conv weights; the
exported graph then holds only Conv, Clip (ReLU6) or Relu, and Add.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from tvm_pipeline.errors import UserError

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu6": nn.ReLU6, "relu": nn.ReLU}


@dataclass(frozen=True)
class BlockSpec:
    """One row of a MobileNetV2 bottleneck table: expansion t, channels c, repeats n, stride s, kernel k.

    Only the first of the n repeats has stride s; the others have stride 1 (and a skip-add).
    """

    t: int
    c: int
    n: int
    s: int
    k: int = 3


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round `value` to the nearest multiple of `divisor` without going more than 10 % below it.

    This is the TensorFlow MobileNet rule, so channel counts match the published width-multiplied models.
    """
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def activation_layer(name: str) -> nn.Module:
    """A fresh activation module by name ("relu6" or "relu")."""
    if name not in ACTIVATIONS:
        raise UserError(f"activation: unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class ConvBNAct(nn.Sequential):
    """KxK convolution (bias-free), BatchNorm, then an optional activation; "same" padding."""

    def __init__(
        self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1, activation: str | None = "relu6"
    ) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
        ]
        if activation is not None:
            layers.append(activation_layer(activation))
        super().__init__(*layers)


class InvertedResidual(nn.Module):
    """MobileNetV2 bottleneck: 1x1 expand (skipped when t=1), KxK depthwise, linear 1x1 projection.

    The input is added back when the block keeps both the resolution (stride 1) and the channel count.
    """

    def __init__(
        self, cin: int, cout: int, expand_ratio: int, stride: int, kernel: int = 3, activation: str = "relu6"
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise UserError(f"stride: a bottleneck stride must be 1 or 2, got {stride}")
        if kernel % 2 == 0 or kernel < 1:
            raise UserError(f"kernel: a bottleneck kernel must be odd and positive, got {kernel}")
        self.hidden = round(cin * expand_ratio)
        self.expands = expand_ratio != 1
        self.use_skip = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if self.expands:
            layers.append(ConvBNAct(cin, self.hidden, 1, activation=activation))
        layers += [
            ConvBNAct(self.hidden, self.hidden, kernel, stride, groups=self.hidden, activation=activation),
            ConvBNAct(self.hidden, cout, 1, activation=None),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the bottleneck, with the skip-add when shapes allow it."""
        out = self.conv(x)
        return x + out if self.use_skip else out


def bottleneck_stack(
    cin: int, table: tuple[BlockSpec, ...], width_mult: float, activation: str
) -> tuple[nn.Sequential, int]:
    """The inverted residuals of a bottleneck table, channels scaled by `width_mult`; returns (stack, out channels)."""
    blocks: list[nn.Module] = []
    for spec in table:
        cout = make_divisible(spec.c * width_mult)
        for repeat in range(spec.n):
            stride = spec.s if repeat == 0 else 1
            blocks.append(InvertedResidual(cin, cout, spec.t, stride, spec.k, activation))
            cin = cout
    return nn.Sequential(*blocks), cin
