"""patch-stage: run the first stage of the network (input .. layer N) as an R x C grid of patches, exactly (MCUNetV2).

Before:  s = stage(input)                       # e.g. stem conv + two bottlenecks; its largest maps live whole
After:   s = place(... place(stage_p0(input[window 0]), ...), stage_pk(input[window k]))   # one patch at a time

patch_split.py finds the split points and rewrites the IR; patch_search.py picks the layer and grid with the smallest
planned arena unless the user gave them (`--patch-stage N`, `--patch-grid RxC`). The notes list the split points,
why the splittable prefix ends, the choice with its arena, and the MACs the halos add. float32 and int8 stages.

With `stream` (`--input-mode stream` on a model whose first layers read the whole image, i.e. a plain CNN) the pass
must split: each patch then reads its image window through a strided_slice, which stream-input (run after the
passes) turns into a read_patch window, and the candidates are planned as streamed. No stage to split is a
UserError there, since the image could not be streamed.
"""

from __future__ import annotations

import numpy as np
import tvm

from schedules import bottleneck, bottleneck_int8
from schedules.bottleneck_int8 import ConvInfo
from tvm_pipeline import tvm_adapter
from tvm_pipeline.errors import UserError
from tvm_pipeline.passes import patch_ops, patch_search, patch_split
from tvm_pipeline.tvm_adapter import DataflowView

NAME = "patch-stage"
#: The most MACs the halos of a searched split may add, as a fraction of the model's (MCUNetV2: +10 % at 4x4).
MAX_EXTRA_MACS = 0.15


def _model_macs(view: DataflowView, mod: tvm.IRModule) -> int:
    """MACs of the convolutions and reordered bottlenecks (float and int8) and float matmuls of `main` (what the
    halos are compared with)."""
    total = 0
    for op in view.ops:
        if op.op == "relax.nn.conv2d" and isinstance(op.args[1], np.ndarray) and op.type is not None:
            total += int(np.prod(op.type.shape)) * int(np.prod(op.args[1].shape[1:]))
        elif op.op == "call_tir":
            func = mod[op.attrs["func"]]
            if (spec := bottleneck.spec_of(func) or bottleneck_int8.spec_of(func)) is not None:
                total += patch_ops.bottleneck_macs(spec)
            elif (info := ConvInfo.of(func)) is not None and op.type is not None:
                total += int(np.prod(op.type.shape)) * int(np.prod(info.weight_shape[1:]))
        elif op.op == "relax.matmul" and op.type is not None:
            a = op.args[0]
            inner = view.types[a].shape[-1] if isinstance(a, str) and a in view.types else np.shape(a)[-1]
            total += int(np.prod(op.type.shape)) * int(inner)
    return total


def _shape(stage: patch_split.Stage) -> str:
    return "x".join(map(str, stage.out_type.shape[1:]))


def _cannot_stream(why: str) -> UserError:
    return UserError(f"--input-mode stream: this model reads its whole input, and patch-stage cannot split its first "
                     f"layers into image windows ({why}); use --input-mode ram")


def run(mod: tvm.IRModule, notes: list[str], stage: int | None = None,
        grid: tuple[int, int] | None = None, stream: bool = False) -> tvm.IRModule:
    """The pass: patch the first stage at the user's or the searched split layer and grid (see the module doc)."""
    view = tvm_adapter.dataflow_ops(mod)
    found, layers, why = patch_split.stages(view, mod)
    by_layer = {s.layer: s for s in found}
    listing = ", ".join(f"{s.layer}: {s.output} {_shape(s)}" for s in found) or "none"
    crossed = sorted(set(range(layers)) - set(by_layer))
    notes.append(f"{NAME}: split points (layer: tensor CxHxW): {listing}; the splittable prefix ends at {why}"
                 + (f"; layers {crossed} are not split points (a tensor of the stage, e.g. a skip-add's input, is "
                    "read after them)" if crossed else ""))
    if stage is not None and stage not in by_layer:
        raise UserError(f"--patch-stage {stage}: not a split point of this model; split points: {listing}")
    if grid is not None and (min(grid) < 1 or grid == (1, 1)):
        raise UserError(f"--patch-grid {grid[0]}x{grid[1]}: give at least two patches (e.g. 2x2)")
    if stage is not None and grid is not None:
        chosen, how = patch_search.candidate(by_layer[stage], grid, stream), "as given"
    elif found:
        budget = int(MAX_EXTRA_MACS * _model_macs(view, mod))
        choice = patch_search.choose(mod, found, stage, grid, budget, stream)
        tried = "; ".join(f"{c.describe()}: {arena:,} B" for c, arena in choice.planned)
        if stream and choice.best is None:
            raise _cannot_stream(f"no grid fits its split points {listing}")
        if choice.best is None and choice.baseline_arena is None:
            notes.append(f"{NAME}: left unchanged: the halos of every split would add more than {MAX_EXTRA_MACS:.0%} "
                         f"of the model's MACs ({budget:,}); {choice.scored} candidates scored")
            return mod
        if choice.best is None:
            notes.append(f"{NAME}: left unchanged: no split lowers the planned arena below the unsplit "
                         f"{choice.baseline_arena:,} B ({choice.scored} candidates scored, planned: {tried or 'none'})")
            return mod
        chosen = choice.best
        unsplit = "cannot stream" if stream else f"{choice.baseline_arena:,} B"
        how = f"searched: {choice.scored} candidates scored, {len(choice.planned)} planned ({tried}); unsplit {unsplit}"
    else:
        if stream:
            raise _cannot_stream(f"no stage to split: the splittable prefix ends at {why}")
        if stage is not None or grid is not None:
            raise UserError(f"--patch-stage/--patch-grid: this model has no stage to split ({why})")
        notes.append(f"{NAME}: left unchanged: no stage to split")
        return mod
    rows, cols = chosen.grid
    if rows > chosen.stage.out_type.shape[2] or cols > chosen.stage.out_type.shape[3]:
        raise UserError(f"--patch-grid {rows}x{cols} is finer than layer {chosen.stage.layer}'s output "
                        f"({_shape(chosen.stage)})")
    unsplit = patch_split.patch_macs(chosen.stage)
    extra = chosen.macs - unsplit
    notes.append(f"{NAME}: layers 0..{chosen.stage.layer} ({chosen.stage.image} -> {chosen.stage.output} "
                 f"{_shape(chosen.stage)}) run as {rows}x{cols} patches ({how}); the halos cost {extra:,} extra MACs: "
                 f"stage {unsplit:,} -> {chosen.macs:,} (+{extra / max(unsplit, 1):.1%}), "
                 f"+{extra / max(_model_macs(view, mod), 1):.1%} of the model's MACs")
    return patch_split.split(mod, chosen.stage, rows, cols, stream)
