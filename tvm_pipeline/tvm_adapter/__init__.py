"""The one place that calls Apache TVM (0.27) internals.

TVM's Python API moves between releases (Relay -> Relax, tir -> tirx/s_tir, buffer_map gone from PrimFunc, ...).
Everything else in tvm-pipeline talks to TVM through the functions here, so a TVM upgrade touches this package only.
One module per job: types (plain data), frontends (importers), fusion (fused kernels and `main` as data),
codegen (kernel -> C or an LLVM object), dataflow (the un-fused graph as data, rebinding), kernels (pass-built).

What it offers:
- `import_onnx`: ONNX ModelProto -> Relax IRModule (weights as Relax constants).
- `import_tflite` / `nhwc_to_nchw`: TFLite flatbuffer -> Relax IRModule, then relaid out to NCHW like the ONNX graphs.
- `fuse`: legalize every Relax op to TensorIR and fuse them into kernels (one PrimFunc per fused group).
- `main_bindings`: the fused `main` as a flat list of kernel calls (our lowering reads the graph from it).
- `new_schedule` / `scheduled_func`: a TensorIR schedule over one kernel (rules live in `schedules/`).
- `lower_to_c`: one scheduled PrimFunc -> C with a raw-pointer signature and its scratch moved into a workspace
  (and a `Prepack` per constant the schedule rewrites at compile time: `mark_prepack`, tvm_adapter.prepack).
- `build_llvm_object`: scheduled PrimFuncs -> one Cortex-M object from TVM's LLVM backend, same signatures.
- `start_reduction_from`: a reduction that starts from a parameter (te.sum's `init`, which create_prim_func drops).
"""

from __future__ import annotations

from tvm_pipeline.tvm_adapter.types import (Binding, C_TARGET, KernelParam, LOCAL_SCRATCH_LIMIT_BYTES, LoweredKernel, MainFunction, TensorType, static_tensor_type, tensor_type)
from tvm_pipeline.tvm_adapter.frontends import (import_onnx, import_tflite, nhwc_to_nchw, onnx_supported_ops, tflite_supported_ops)
from tvm_pipeline.tvm_adapter.fusion import (fuse, main_bindings, new_schedule, prim_func, scheduled_func)
from tvm_pipeline.tvm_adapter.prepack import (Prepack, mark_prepack)
from tvm_pipeline.tvm_adapter.codegen import (build_llvm_object, lower_to_c)
from tvm_pipeline.tvm_adapter.dataflow import (DataflowOp, DataflowView, KernelCall, dataflow_ops, dataflow_output, replace_with_kernels, var_names)
from tvm_pipeline.tvm_adapter.kernels import (INPUT_WINDOW_ATTR, NewBinding, input_window, place_kernel, rebind_subgraph, start_reduction_from, window_conv_kernel, window_kernel)

__all__ = [
    "Binding",
    "C_TARGET",
    "DataflowOp",
    "DataflowView",
    "INPUT_WINDOW_ATTR",
    "KernelCall",
    "KernelParam",
    "LOCAL_SCRATCH_LIMIT_BYTES",
    "LoweredKernel",
    "MainFunction",
    "NewBinding",
    "Prepack",
    "TensorType",
    "build_llvm_object",
    "dataflow_ops",
    "dataflow_output",
    "fuse",
    "import_onnx",
    "import_tflite",
    "input_window",
    "lower_to_c",
    "main_bindings",
    "mark_prepack",
    "new_schedule",
    "nhwc_to_nchw",
    "onnx_supported_ops",
    "place_kernel",
    "prim_func",
    "rebind_subgraph",
    "replace_with_kernels",
    "scheduled_func",
    "start_reduction_from",
    "static_tensor_type",
    "tensor_type",
    "tflite_supported_ops",
    "var_names",
    "window_conv_kernel",
    "window_kernel",
]
