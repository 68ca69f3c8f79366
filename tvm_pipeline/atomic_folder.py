"""Write a whole folder or nothing: files go to a temp folder beside the target, which is swapped in at the end.

Used by `tvmp compile` (the compiled model) and `tvmp project create` (a project): a reader never sees a
half-written folder, and a failure leaves the previous folder, if any, as it was.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path


def replace_folder(target: Path, files: Mapping[str, str | bytes],
                   before_swap: Callable[[Path], None] | None = None) -> None:
    """Write `files` (paths relative to the folder) beside `target`, run `before_swap(temp_folder)` (it may raise
    to abandon the write), then replace `target` with the new folder."""
    target = Path(target).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        for relative, content in files.items():
            path = tmp / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content)
        if before_swap is not None:
            before_swap(tmp)
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
            os.replace(target, old / "previous")
            os.replace(tmp, target)
            shutil.rmtree(old)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
