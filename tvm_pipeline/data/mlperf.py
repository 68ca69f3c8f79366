"""Where the MLPerf Tiny reference models (.tflite and .onnx, float32 and int8) are on this machine.

They are not shipped with tvm-pipeline: `$TVMP_MLPERF_DIR` if set, else `shared/models/mlperf-tiny` beside the
repository checkout, else `/work/shared/models/mlperf-tiny` (a checkout elsewhere on the project machines)."""

from __future__ import annotations

import os
from pathlib import Path

_BESIDE_CHECKOUT = Path(__file__).resolve().parents[3] / "shared" / "models" / "mlperf-tiny"
_PROJECT_MACHINES = Path("/work/shared/models/mlperf-tiny")


def models_dir() -> Path:
    """The folder holding the MLPerf Tiny model files (it may not exist: callers skip what needs it)."""
    if os.environ.get("TVMP_MLPERF_DIR"):
        return Path(os.environ["TVMP_MLPERF_DIR"])
    return next((d for d in (_BESIDE_CHECKOUT, _PROJECT_MACHINES) if d.is_dir()), _BESIDE_CHECKOUT)
