"""Tunnel configs (named configs, validation), the tunnel network's structure, and the analytic memory model."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from tvm_pipeline.errors import UserError
from tvm_pipeline.models.analysis import analyze
from tvm_pipeline.models.blocks import InvertedResidual
from tvm_pipeline.models.export import export_onnx
from tvm_pipeline.models.mobilenetv2 import MobileNetV2
from tvm_pipeline.models.tunnel import TunnelNet
from tvm_pipeline.models.tunnel_config import config_from_dict, load_config, named_configs

KIB = 1024


def tiny_dict() -> dict:
    return copy.deepcopy(load_config("tiny").to_dict())


def test_named_configs_load_and_round_trip() -> None:
    assert {"paper", "tiny", "mobilenetv2_baseline"} <= set(named_configs())
    for name in named_configs():
        config = load_config(name)
        assert config.name == name
        assert config_from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_paper_windows_cover_the_image_with_a_central_patch() -> None:
    config = load_config("paper")
    windows = config.windows()
    assert len(windows) == 17 and windows[-1] == (72, 72)
    covered = np.zeros((224, 224), dtype=int)
    for top, left in windows:
        covered[top : top + 80, left : left + 80] += 1
    assert covered.min() >= 1 and covered[112, 112] >= 2


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("segmentation", "patch"), 40, "segmentation.patch: 40 px is larger than the 32-px image"),
        (("segmentation", "overlap"), 20, "segmentation.overlap: 20 px must be smaller"),
        (("segmentation", "rows"), 1, "segmentation.rows: 1 patches .* leaving 12 px uncovered"),
        (("segmentation", "cols"), 3, "segmentation.cols: .* reaching past its edge"),
        (("blocks", 1, "s"), 3, r"blocks\[1\].s: stride 3"),
        (("blocks", 0, "k"), 4, r"blocks\[0\].k: kernel 4"),
        (("blocks", 0, "t"), 0, r"blocks\[0\].t: 0 is below the minimum 1"),
        (("version",), 2, "version: 2 is not supported"),
        (("share_weights",), "yes", "share_weights: expected true or false"),
        (("num_classes",), True, "num_classes: expected an integer"),
        (("activation",), "gelu", "activation: 'gelu'"),
        (("dropout",), 1.0, r"dropout: 1.0 is not in \[0, 1\)"),
        (("width_mult",), 0, "width_mult: 0.0 must be positive"),
        (("blocks",), [], "blocks: the bottleneck table is empty"),
        (("segmentation",), [], "segmentation: expected a JSON object"),
    ],
)
def test_nonsense_configs_name_the_field(path: tuple, value: object, message: str) -> None:
    data = tiny_dict()
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(UserError, match=message):
        config_from_dict(data)


def test_unknown_and_missing_fields_are_named() -> None:
    data = tiny_dict()
    data["widht_mult"] = data.pop("width_mult")
    with pytest.raises(UserError, match="widht_mult: unknown field"):
        config_from_dict(data)
    del data["widht_mult"]
    with pytest.raises(UserError, match="width_mult: missing"):
        config_from_dict(data)


def test_central_patch_must_not_repeat_a_grid_patch() -> None:
    data = tiny_dict()
    data["segmentation"].update(rows=3, cols=3, patch=12, overlap=2)
    with pytest.raises(UserError, match=r"segmentation.central: .* same window as a grid patch"):
        config_from_dict(data)
    data["segmentation"]["central"] = False
    assert len(config_from_dict(data).windows()) == 9


def test_load_config_errors(tmp_path) -> None:
    with pytest.raises(UserError, match=r"no config named 'papr'.*paper"):
        load_config("papr")
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(UserError, match="not valid JSON"):
        load_config(broken)


def test_tunnels_share_or_own_their_weights() -> None:
    assert len(TunnelNet(load_config("paper")).tunnels) == 1
    tiny = TunnelNet(load_config("tiny"))
    assert len(tiny.tunnels) == len(tiny.windows) == 5


def test_each_tunnel_sees_only_its_patch() -> None:
    """A pixel that only the top-left patch covers changes only the top-left tunnel's feature."""
    model = TunnelNet(load_config("tiny")).eval()
    features = []
    for tunnel in model.tunnels:
        tunnel.register_forward_hook(lambda module, inputs, output: features.append(output))
    image = torch.randn(model.input_shape)
    moved = image.clone()
    moved[..., 0, 0] += 10
    with torch.no_grad():
        model(image)
        model(moved)
    before, after = features[:5], features[5:]
    changed = [not torch.equal(b, a) for b, a in zip(before, after, strict=True)]
    assert changed == [True, False, False, False, False]


def test_tiny_tunnel_export_slices_the_image(tmp_path) -> None:
    model = TunnelNet(load_config("tiny"))
    exported = export_onnx(model, model.input_shape, tmp_path / "tiny.onnx")
    ops = [node.op_type for node in exported.graph.node]
    assert "Slice" in ops and ops.count("Concat") == 1 and ops.count("GlobalAveragePool") == 5
    slices = [node for node in exported.graph.node if node.op_type == "Slice"]
    assert any(node.input[0] == "input" for node in slices)


def test_paper_config_meets_its_analytic_budget() -> None:
    config = load_config("paper")
    assert (config.resolution, config.num_classes) == (224, 1000)
    model = TunnelNet(config)
    figures = analyze(model, model.input_shape)
    assert figures.stream_peak_bytes <= 50 * KIB
    assert figures.weight_bytes_int8 <= 700 * KIB
    assert figures.macs <= 150e6
    assert figures.image_bytes == 3 * 224 * 224


def test_analysis_reproduces_the_published_mobilenetv2_figures() -> None:
    model = MobileNetV2(1.0)
    figures = analyze(model, model.input_shape)
    assert figures.paper_peak_elems == 112 * 112 * (16 + 96)  # 5.6 MB float32, 1372 kB int8
    assert figures.paper_peak_op == "features.layers.2.conv.0.0"
    assert figures.params == 3_504_872
    assert round(figures.macs / 1e6) == 301


def test_reordered_bottleneck_working_set() -> None:
    x = (1, 8, 10, 10)
    expanding = analyze(InvertedResidual(8, 8, expand_ratio=4, stride=1), x).steps[0]
    assert expanding.working_set == 800 + 800 + 4 * 800 + 100 + 100  # in, out, int32 acc, two channel planes
    strided = analyze(InvertedResidual(8, 16, expand_ratio=1, stride=2), x).steps[0]
    assert strided.working_set == 800 + 400 + 4 * 400 + 25  # no expanded plane when t = 1


def test_pooled_features_are_held_until_the_head() -> None:
    model = TunnelNet(load_config("tiny"))
    figures = analyze(model, model.input_shape)
    feature = model.tunnels[0].out_channels
    last_tunnel_peak = max(step.working_set for step in figures.steps if step.name.startswith("tunnels.4."))
    assert figures.stream_peak_bytes == last_tunnel_peak + 4 * feature
