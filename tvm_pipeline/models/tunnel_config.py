"""The versioned config of a patch-tunnel network: parse and validate a JSON dict, list the named configs.

A config (schema version 1) says:
- `resolution`: the square input image side in pixels, and `num_classes`.
- `segmentation`: a `rows` x `cols` grid of `patch`-pixel square patches that overlap their neighbours by
  `overlap` pixels and must tile the image exactly, plus (`central`) one more patch centred on the image.
- the tunnel body, a MobileNetV2: `stem_channels`, the bottleneck table `blocks` (t, c, n, s, k), their
  `width_mult`, the tunnel's last 1x1 conv `last_channels` (0 = none) and `activation`.
- `share_weights`: whether all tunnels use one set of weights (flash once) or each has its own.
- the head: the tunnels' pooled features are concatenated, then a `head_hidden`-wide layer (0 = none) and
  the classifier, with `dropout` before the classifier while training.
Named configs live in `configs/NAME.json`; `configs/README.md` explains the numbers of each.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tvm_pipeline.errors import UserError
from tvm_pipeline.models.blocks import ACTIVATIONS, BlockSpec
from tvm_pipeline.models.json_fields import JsonFields

CONFIG_VERSION = 1
CONFIG_DIR = Path(__file__).with_name("configs")


@dataclass(frozen=True)
class Segmentation:
    """An R x C grid of overlapping square patches, plus an optional central patch of the same size."""

    rows: int
    cols: int
    patch: int
    overlap: int
    central: bool


@dataclass(frozen=True)
class TunnelConfig:
    """A validated patch-tunnel network config; build it with `tunnel.TunnelNet(config)`."""

    version: int
    name: str
    description: str
    resolution: int
    num_classes: int
    segmentation: Segmentation
    width_mult: float
    stem_channels: int
    blocks: tuple[BlockSpec, ...]
    last_channels: int
    activation: str
    share_weights: bool
    head_hidden: int
    dropout: float

    def windows(self) -> list[tuple[int, int]]:
        """(top, left) of every patch: the grid row by row, then the central patch."""
        seg = self.segmentation
        step = seg.patch - seg.overlap
        tops_lefts = [(row * step, col * step) for row in range(seg.rows) for col in range(seg.cols)]
        if seg.central:
            centre = (self.resolution - seg.patch) // 2
            tops_lefts.append((centre, centre))
        return tops_lefts

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready dict (lists, not tuples) that `config_from_dict` reads back."""
        data = asdict(self)
        data["blocks"] = list(data["blocks"])
        return data


def named_configs() -> list[str]:
    """Names of the configs shipped in `configs/`."""
    return sorted(path.stem for path in CONFIG_DIR.glob("*.json"))


def load_config(name_or_path: str | Path) -> TunnelConfig:
    """A shipped config by name (e.g. "paper") or a JSON file by path, validated."""
    path = Path(name_or_path)
    if not path.suffix:
        path = CONFIG_DIR / f"{name_or_path}.json"
        if not path.is_file():
            raise UserError(f"config: no config named {str(name_or_path)!r}; named configs: {named_configs()}")
    try:
        data = json.loads(path.read_text())
    except OSError as error:
        raise UserError(f"config: cannot read {path}: {error}") from error
    except json.JSONDecodeError as error:
        raise UserError(f"config: {path} is not valid JSON: {error}") from error
    return config_from_dict(data, source=str(path))


def config_from_dict(data: Mapping[str, Any], source: str = "config") -> TunnelConfig:
    """Validate a config dict; every error names `source` and the offending field."""
    top = JsonFields(data, source, "", TunnelConfig)
    if top.integer("version", 1) != CONFIG_VERSION:
        raise UserError(
            f"{source}: version: {data['version']} is not supported; this build reads version {CONFIG_VERSION}"
        )
    seg_fields = JsonFields(top.get("segmentation", Mapping), source, "segmentation.", Segmentation)
    segmentation = Segmentation(
        rows=seg_fields.integer("rows", 1),
        cols=seg_fields.integer("cols", 1),
        patch=seg_fields.integer("patch", 1),
        overlap=seg_fields.integer("overlap", 0),
        central=seg_fields.get("central", bool),
    )
    blocks_data = top.get("blocks", list)
    if not blocks_data:
        raise UserError(f"{source}: blocks: the bottleneck table is empty")
    blocks = tuple(_block(row, source, f"blocks[{index}].") for index, row in enumerate(blocks_data))
    activation = top.get("activation", str)
    if activation not in ACTIVATIONS:
        raise UserError(f"{source}: activation: {activation!r} is not one of {sorted(ACTIVATIONS)}")
    dropout = top.number("dropout")
    if not 0 <= dropout < 1:
        raise UserError(f"{source}: dropout: {dropout} is not in [0, 1)")
    width_mult = top.number("width_mult")
    if width_mult <= 0:
        raise UserError(f"{source}: width_mult: {width_mult} must be positive")
    config = TunnelConfig(
        version=CONFIG_VERSION,
        name=top.get("name", str),
        description=top.get("description", str),
        resolution=top.integer("resolution", 1),
        num_classes=top.integer("num_classes", 1),
        segmentation=segmentation,
        width_mult=width_mult,
        stem_channels=top.integer("stem_channels", 1),
        blocks=blocks,
        last_channels=top.integer("last_channels", 0),
        activation=activation,
        share_weights=top.get("share_weights", bool),
        head_hidden=top.integer("head_hidden", 0),
        dropout=dropout,
    )
    _check_segmentation(config, source)
    return config


def _check_segmentation(config: TunnelConfig, source: str) -> None:
    """The grid must tile the image exactly; a central patch must add a new window."""
    seg, side = config.segmentation, config.resolution
    if seg.patch > side:
        raise UserError(f"{source}: segmentation.patch: {seg.patch} px is larger than the {side}-px image (resolution)")
    if seg.overlap >= seg.patch:
        raise UserError(
            f"{source}: segmentation.overlap: {seg.overlap} px must be smaller than the patch ({seg.patch} px)"
        )
    for axis, count in (("rows", seg.rows), ("cols", seg.cols)):
        span = count * seg.patch - (count - 1) * seg.overlap
        if span != side:
            what = f"leaving {side - span} px uncovered" if span < side else "reaching past its edge"
            raise UserError(
                f"{source}: segmentation.{axis}: {count} patches of {seg.patch} px overlapping by {seg.overlap} px "
                f"span {span} px of the {side}-px image, {what}; choose rows/cols, patch and overlap so that "
                f"count * patch - (count - 1) * overlap == resolution"
            )
    windows = config.windows()
    if seg.central and windows[-1] in windows[:-1]:
        raise UserError(
            f"{source}: segmentation.central: the central patch is the same window as a grid patch at {windows[-1]}; "
            "use an even grid or set central to false"
        )


def _block(data: Any, source: str, prefix: str) -> BlockSpec:
    """One bottleneck table row {t, c, n, s, k}."""
    row = JsonFields(data, source, prefix, BlockSpec)
    spec = BlockSpec(
        row.integer("t", 1), row.integer("c", 1), row.integer("n", 1), row.integer("s", 1), row.integer("k", 1)
    )
    if spec.s not in (1, 2):
        raise UserError(f"{source}: {prefix}s: stride {spec.s} is not 1 or 2")
    if spec.k % 2 == 0:
        raise UserError(f"{source}: {prefix}k: kernel {spec.k} is not odd")
    return spec
