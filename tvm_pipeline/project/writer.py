"""What every platform's project shares: the spec it is made from, template rendering, the sample sources, the
manifest (`project.json`), and writing the folder atomically (temp dir beside it, checked, then moved in place).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tvm_pipeline.atomic_folder import replace_folder
from tvm_pipeline.board.boards import Board
from tvm_pipeline.errors import InternalError, UserError

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
MANIFEST = "project.json"
#: `@NAME@` placeholders: upper case, so `$@` in a Makefile or an e-mail address never looks like one.
_PLACEHOLDER = re.compile(r"@([A-Z][A-Z0-9_]*)@")
#: A C identifier that is also a valid Arduino library and sketch name (at most 63 characters).
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,62}")

Files = dict[str, str | bytes]


@dataclass(frozen=True)
class ProjectSpec:
    """Everything a platform needs to write its project around one compiled model folder."""

    name: str  # C identifier; the Arduino library, sketch and Zephyr project name
    model_dir: Path  # the compiled folder (absolute)
    board: Board  # our board definition
    platform_board: str | None  # the platform's name for it: Zephyr board, Arduino FQBN (None for bare)
    model_files: tuple[Path, ...]  # the compiled folder's .c and .h files, sorted
    input_header: str  # input_data.h: the sample input as exact C literals
    input_hash: str  # FNV-1a 32 of the input bytes, 8 hex digits (what the sample prints as TVMP-INPUT)
    input_origin: str  # for READMEs: "seeded random, seed 0" or "from x.npy"
    input_option: str  # the `tvmp run` option that gives the same input: "" or " --input x.npy"
    source_model: str  # the ONNX/TFLite file the folder was compiled from
    arena_bytes: int
    stack_peak_bytes: int | None  # measured under QEMU (harness included); None when not measured
    main_stack_bytes: int | None  # the stack the platform's main thread is given (Zephyr)
    stack_reason: str  # how main_stack_bytes was chosen, in words

    @property
    def model_sources(self) -> list[str]:
        """File names of the model's C sources, sorted (the order `tvmp run` compiles them in)."""
        return [path.name for path in self.model_files if path.suffix == ".c"]


def check_name(name: str) -> str:
    """`name` if it can name a project (C identifier, Arduino library and sketch name), else UserError."""
    if not _NAME.fullmatch(name):
        raise UserError(
            f"project name {name!r} is not usable: it must start with a letter and have only letters, digits and "
            "underscores, at most 63 characters"
        )
    return name


def default_name(source_model: str) -> str:
    """A project name made from the source model's file name (`mbv2-tiny.onnx` -> `mbv2_tiny`)."""
    name = re.sub(r"_+", "_", re.sub(r"[^A-Za-z0-9_]", "_", Path(source_model).stem)).strip("_")
    if not name[:1].isalpha():
        name = f"model_{name}".rstrip("_")
    return check_name(name[:63].rstrip("_"))


def render(template: str, **values: object) -> str:
    """templates/<template> with every `@KEY@` replaced by values[KEY]; a missing or unused value is our bug."""
    text = (TEMPLATES_DIR / template).read_text()
    wanted = set(_PLACEHOLDER.findall(text))
    given = set(values)
    if wanted != given:
        raise InternalError(
            f"template {template}: placeholders {sorted(wanted - given)} have no value, "
            f"values {sorted(given - wanted)} have no placeholder"
        )
    return _PLACEHOLDER.sub(lambda match: str(values[match.group(1)]), text)


def template(path: str) -> str:
    """A template file that has no placeholders (glue and portable sources), as is."""
    return render(path)


def sample_files(spec: ProjectSpec, folder: str) -> Files:
    """The portable sample (run the model on input_data.h, print the report) for `folder` of the project."""
    return {
        f"{folder}/tvmp_sample.c": template("common/tvmp_sample.c"),
        f"{folder}/tvmp_sample.h": template("common/tvmp_sample.h"),
        f"{folder}/tvmp_sample_config.h": render("common/tvmp_sample_config.h.in", NAME=spec.name),
        f"{folder}/input_data.h": spec.input_header,
    }


def model_files(spec: ProjectSpec, folder: str) -> Files:
    """The compiled model's .c and .h files, copied byte for byte into `folder` of the project."""
    return {f"{folder}/{path.name}": path.read_bytes() for path in spec.model_files}


def manifest(spec: ProjectSpec, platform: str, **extra: object) -> Files:
    """project.json: what `tvmp project build/flash` read back (platform, names) and how the project was made."""
    data = {
        "generator": "tvm-pipeline",
        "platform": platform,
        "name": spec.name,
        "board": spec.board.name,
        "platform_board": spec.platform_board,
        "model_dir": str(spec.model_dir),
        "source_model": spec.source_model,
        "sample_input": {"origin": spec.input_origin, "fnv1a32": spec.input_hash},
        "stack": {
            "measured_peak_bytes": spec.stack_peak_bytes,
            "main_stack_bytes": spec.main_stack_bytes,
            "reason": spec.stack_reason,
        },
        **extra,
    }
    return {MANIFEST: json.dumps(data, indent=2) + "\n"}


def read_manifest(project_dir: Path) -> dict:
    """project.json of a folder written by `tvmp project create`, or UserError."""
    path = Path(project_dir) / MANIFEST
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, NotADirectoryError):
        raise UserError(f"{project_dir} is not a folder written by `tvmp project create` (no {MANIFEST})") from None
    except json.JSONDecodeError as error:
        raise UserError(f"{path} is not valid JSON ({error}); recreate the project with --force") from None


def refuse_existing(project_dir: Path, force: bool) -> None:
    """UserError when `project_dir` exists and --force was not given (checked before any work and again at the end)."""
    if project_dir.exists() and not force:
        raise UserError(f"{project_dir} already exists; pass --force to replace it")
    if project_dir.exists() and not project_dir.is_dir():
        raise UserError(f"{project_dir} exists and is not a folder; remove it or choose another project folder")


def write_atomically(project_dir: Path, files: Files, check: Callable[[Path], None], force: bool) -> None:
    """Writes `files` into a temp folder beside `project_dir`, runs `check` on it, then moves it in place (replacing
    an existing folder only when `force`): a reader never sees a half-written project."""
    project_dir = project_dir.resolve()

    def before_swap(folder: Path) -> None:
        check(folder)
        refuse_existing(project_dir, force)

    replace_folder(project_dir, files, before_swap)
