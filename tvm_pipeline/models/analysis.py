"""Analytic size, compute and memory of a model built from `blocks.py` units, traced with one forward pass.

Figures (batch 1):
- params: torch parameters (BatchNorm included); `weight_bytes_int8`: what an int8 build stores in flash after
  BN folding: int8 weights plus, per output channel, an int32 bias and a 4-byte requantisation scale.
  Shared modules (tunnels with `share_weights`) count once.
- MACs: multiply-accumulates of every Conv2d and Linear.
- paper peak: the papers' convention, max over operators (Conv2d, Linear, pooling) of input + output
  elements, given in float32 and int8 bytes, with depthwise convolutions counted in place (max of input
  and output), as TinyEngine runs them. This reproduces the published MobileNetV2-1.0 figures: 5.6 MB
  float32 ("MobileNet" in Lee et al.) and 1372 kB int8 (MCUNetV2), both at block 2's 1x1 expansion.
- stream peak (int8 bytes): the working set when tunnels run one after another and the firmware hands the
  model one patch at a time (the image itself is not in SRAM). Steps, in execution order:
    plain conv (stem, last 1x1):  input + output             (int32 accumulators live in registers)
    bottleneck, reordered:        input + output + int32 accumulator of the output (4 x output)
                                  + one expanded channel plane at the input resolution (none when t = 1)
                                  + that channel after the depthwise conv, at the output resolution
    pooling, fully connected:     input + output
  plus the pooled features already produced and still waiting for the head (kept from their pooling step
  until the first fully-connected layer). `image_bytes` bounds what holding the whole int8 image would add
  (less where a tunnel's stem reads its patch straight from the image).
The generated C adds its own scratch, stack and statics to these: measure those on the board.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch
from torch import nn

from tvm_pipeline.models.blocks import InvertedResidual
from tvm_pipeline.models.tunnel import TunnelNet
from tvm_pipeline.models.tunnel_config import load_config
from tvm_pipeline.models.zoo import ZOO, get_model

ACCUMULATOR_BYTES = 4  # int32 accumulator per int8 output value
PER_CHANNEL_BYTES = 8  # int32 bias + 4-byte requantisation scale per output channel


@dataclass(frozen=True)
class Step:
    """One scheduling step: a plain operator or a whole reordered bottleneck."""

    name: str
    in_elems: int
    out_elems: int
    working_set: int  # int8 bytes, without the pooled features held for the head


@dataclass(frozen=True)
class Analysis:
    """Analytic figures of one model at one input shape (see the module docstring for definitions)."""

    params: int
    weight_bytes_int8: int
    macs: int
    paper_peak_elems: int
    paper_peak_op: str
    stream_peak_bytes: int
    stream_peak_step: str
    image_bytes: int
    steps: tuple[Step, ...]

    def summary(self) -> str:
        """A few readable lines; every memory figure says which convention it follows."""
        kib = 1024
        weights, paper, stream = self.weight_bytes_int8 / kib, self.paper_peak_elems / kib, self.stream_peak_bytes / kib
        return "\n".join(
            [
                f"params {self.params:,}  int8 weights {weights:.1f} KiB  MACs {self.macs / 1e6:.1f} M",
                f"paper peak (max op input+output, depthwise in place): {4 * paper:.1f} KiB fp32, "
                f"{paper:.1f} KiB int8 at {self.paper_peak_op}",
                f"int8 working set, patches streamed: {stream:.1f} KiB at {self.stream_peak_step}; "
                f"holding the whole int8 image in SRAM too adds at most {self.image_bytes / kib:.1f} KiB",
            ]
        )


def analyze(model: nn.Module, input_shape: tuple[int, ...]) -> Analysis:
    """Trace `model` on a zero input of `input_shape` and compute the figures above."""
    ops: list[tuple[str, int]] = []  # (name, elements under the papers' convention) of every operator
    steps: list[Step] = []
    macs = 0
    inside_bottleneck = {
        sub for _, block in model.named_modules() if isinstance(block, InvertedResidual) for sub in block.modules()
    }
    names = {module: name for name, module in model.named_modules()}

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal macs
        name, n_in, n_out = names[module], inputs[0].numel(), output.numel()
        if isinstance(module, InvertedResidual):
            steps.append(Step(name, n_in, n_out, _reordered_bottleneck(module, inputs[0], output)))
            return
        depthwise = isinstance(module, nn.Conv2d) and module.groups == module.in_channels == module.out_channels
        ops.append((name, max(n_in, n_out) if depthwise else n_in + n_out))
        if isinstance(module, nn.Conv2d):
            macs += n_out * module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
        elif isinstance(module, nn.Linear):
            macs += module.in_features * module.out_features * (output.numel() // module.out_features)
        if module not in inside_bottleneck:
            steps.append(Step(name, n_in, n_out, n_in + n_out))

    traced = (nn.Conv2d, nn.Linear, nn.AdaptiveAvgPool2d, InvertedResidual)
    handles = [module.register_forward_hook(hook) for module in model.modules() if isinstance(module, traced)]
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(input_shape))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    paper_name, paper_elems = max(ops, key=lambda op: op[1])
    stream_peak, stream_step = _stream_peak(model, steps)
    return Analysis(
        params=sum(parameter.numel() for parameter in model.parameters()),
        weight_bytes_int8=_weight_bytes_int8(model),
        macs=macs,
        paper_peak_elems=paper_elems,
        paper_peak_op=paper_name,
        stream_peak_bytes=stream_peak,
        stream_peak_step=stream_step,
        image_bytes=int(torch.Size(input_shape).numel()),
        steps=tuple(steps),
    )


def _reordered_bottleneck(block: InvertedResidual, x: torch.Tensor, out: torch.Tensor) -> int:
    """int8 bytes of a bottleneck run one expanded channel at a time (see the module docstring)."""
    in_plane = x.shape[-2] * x.shape[-1] if block.expands else 0
    out_plane = out.shape[-2] * out.shape[-1]
    return x.numel() + out.numel() * (1 + ACCUMULATOR_BYTES) + in_plane + out_plane


def _stream_peak(model: nn.Module, steps: list[Step]) -> tuple[int, str]:
    """Max over steps of the step's working set plus the pooled features waiting for the head."""
    linear_names = {name for name, module in model.named_modules() if isinstance(module, nn.Linear)}
    pool_names = {name for name, module in model.named_modules() if isinstance(module, nn.AdaptiveAvgPool2d)}
    held, peak, peak_step = 0, 0, ""
    for step in steps:
        if step.name in linear_names:
            held = 0  # the head consumes the features (its input is their concatenation)
        if step.working_set + held > peak:
            peak, peak_step = step.working_set + held, f"{step.name} (+{held} B of pooled features held)"
        if step.name in pool_names:
            held += step.out_elems
    return peak, peak_step


def _weight_bytes_int8(model: nn.Module) -> int:
    """Flash bytes of the BN-folded int8 weights (shared modules counted once)."""
    layers = {id(m): m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))}.values()
    return sum(layer.weight.numel() + PER_CHANNEL_BYTES * layer.weight.shape[0] for layer in layers)


def main(argv: list[str] | None = None) -> None:
    """`python -m tvm_pipeline.models.analysis NAME...`: print the figures of zoo models or tunnel configs."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("names", nargs="+", help="zoo model, shipped config name or config JSON path")
    for name in parser.parse_args(argv).names:
        if name in ZOO:
            model, shape = get_model(name)
        else:
            model = TunnelNet(load_config(name))
            shape = model.input_shape
        print(f"{name}\n{analyze(model, shape).summary()}\n")


if __name__ == "__main__":
    main()
