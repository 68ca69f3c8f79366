"""The accuracy comparison: configs scaled to a common resolution, trained with one recipe, scored after the last epoch."""

from __future__ import annotations

import pytest
import torch

from tvm_pipeline.accuracy import ShapesRecipe, at_resolution, compare
from tvm_pipeline.data.shapes import ShapesDataset
from tvm_pipeline.errors import UserError
from tvm_pipeline.models.tunnel import TunnelNet
from tvm_pipeline.models.tunnel_config import config_from_dict, load_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_at_resolution_scales_the_segmentation_in_proportion() -> None:
    paper = at_resolution(load_config("paper"), 112)
    assert (paper.name, paper.resolution) == ("paper@112", 112)
    assert (paper.segmentation.patch, paper.segmentation.overlap) == (40, 16)
    assert paper.windows() == [(top // 2, left // 2) for top, left in load_config("paper").windows()]
    assert paper.blocks == load_config("paper").blocks
    baseline = at_resolution(load_config("mobilenetv2_baseline"), 96)
    assert (baseline.segmentation.patch, baseline.windows()) == (96, [(0, 0)])
    with pytest.raises(UserError, match=r"resolution: 96 px .*'paper'.*multiple of 14 px"):
        at_resolution(load_config("paper"), 96)


def test_compare_trains_both_nets_and_reports_last_epoch_top1(tmp_path) -> None:
    recipe = ShapesRecipe(epochs=1, resolution=56, train_size=32, val_size=16, batch_size=16)
    scores = compare(["paper", "mobilenetv2_baseline"], recipe, tmp_path)
    assert [score.name for score in scores.values()] == ["paper@56", "mobilenetv2_baseline@56"]
    assert scores["paper"].macs > scores["mobilenetv2_baseline"].macs > 1e6
    val = ShapesDataset(16, 56, seed=0, split="val")
    images = torch.stack([val[i][0] for i in range(len(val))])
    labels = torch.tensor([val[i][1] for i in range(len(val))])
    for score in scores.values():
        assert score.resolution == 56 and score.seconds > 0
        # The reported top-1 is the last checkpoint's, recomputed here independently of train.py's evaluation.
        state = torch.load(tmp_path / score.name / "last.pt")
        model = TunnelNet(config_from_dict(state["config"])).eval()
        model.load_state_dict(state["model"])
        with torch.no_grad():
            hits = (model(images).argmax(1) == labels).sum().item()
        assert score.top1 == pytest.approx(100 * hits / len(val))
