"""Firmware build + QEMU/host runs of hand-written tiny "models" (model.h/model.c per the compiled-folder contract)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from tvm_pipeline.board.boards import list_boards, load_board
from tvm_pipeline.board.firmware import build_firmware, build_host
from tvm_pipeline.board.measure import measure_firmware
from tvm_pipeline.board.runner import HostRunner, QemuRunner, RunError
from tvm_pipeline.errors import UserError


FAULT_STATUS = 250  # TVMP_FAULT_STATUS in boards/common/startup.h

HEADER = """\
#include <stdint.h>
#define MODEL_INPUT_COUNT {count}
#define MODEL_OUTPUT_COUNT {count}
#define MODEL_ARENA_BYTES {arena}
typedef {ctype} model_input_t;
typedef {ctype} model_output_t;
int model_run(const model_input_t *in, model_output_t *out);
"""

SOURCE = """\
#include <string.h>
#include "model.h"
static uint8_t model_arena[MODEL_ARENA_BYTES] __attribute__((aligned(16)));
{helpers}
int model_run(const model_input_t *in, model_output_t *out) {{
    model_input_t *slot = (model_input_t *)model_arena;
    memcpy(slot, in, sizeof(model_input_t) * MODEL_INPUT_COUNT);
    for (int i = 0; i < MODEL_OUTPUT_COUNT; ++i) {{
        {body}
    }}
    {after}
    return {status};
}}
"""

DOUBLE_PLUS_ONE = "out[i] = 2.0f * slot[i] + 1.0f;"


def write_model(
    folder: Path,
    count: int = 16,
    body: str = DOUBLE_PLUS_ONE,
    ctype: str = "float",
    arena: int | None = None,
    helpers: str = "",
    after: str = "",
    status: int = 0,
    dtype: str | None = None,
) -> Path:
    """A model folder whose model_run copies the input into its arena and applies `body` to each element."""
    folder.mkdir(parents=True, exist_ok=True)
    element_bytes = 1 if "8" in ctype else 4
    (folder / "model.h").write_text(HEADER.format(count=count, arena=arena or count * element_bytes, ctype=ctype))
    (folder / "model.c").write_text(SOURCE.format(helpers=helpers, body=body, after=after, status=status))
    if dtype is not None:
        metadata = {
            "inputs": [{"name": "x", "shape": [count], "dtype": dtype}],
            "outputs": [{"name": "y", "shape": [count], "dtype": dtype}],
        }
        (folder / "model.json").write_text(json.dumps(metadata))
    return folder


def random_input(count: int = 16) -> np.ndarray:
    return np.random.default_rng(0).standard_normal(count).astype(np.float32) * np.float32(100)


def run_on(board_name: str, model: Path, input: np.ndarray, build: Path, timeout_s: float = 30):
    firmware = build_firmware(model, load_board(board_name), input, build)
    return QemuRunner(timeout_s=timeout_s).run(firmware)


def expected_double_plus_one(values: np.ndarray) -> np.ndarray:
    return np.float32(2) * values + np.float32(1)



@pytest.mark.parametrize("board_name", list_boards())
def test_output_matches_numpy_exactly_on_every_board(board_name: str, tmp_path: Path) -> None:
    values = random_input()
    result = run_on(board_name, write_model(tmp_path / "model"), values, tmp_path / "build")
    assert result.output.dtype == np.float32
    assert result.output.tobytes() == expected_double_plus_one(values).tobytes()
    assert result.exit_code == 0
    assert result.instructions is not None and result.instructions > 0
    assert result.stack_peak_bytes is not None and result.stack_peak_bytes > 0


def test_host_output_matches_numpy_exactly(tmp_path: Path) -> None:
    values = random_input()
    firmware = build_host(write_model(tmp_path / "model"), values, tmp_path / "build")
    result = HostRunner().run(firmware)
    assert result.output.tobytes() == expected_double_plus_one(values).tobytes()
    assert result.instructions is None and result.stack_peak_bytes is None


SPECIAL_BITS = [0x80000000, 0x00000001, 0x807FFFFF, 0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC12345, 0x7F812345]


@pytest.mark.parametrize("where", ["host", "stm32f746"])
def test_special_float_inputs_pass_through_bit_exact(where: str, tmp_path: Path) -> None:
    # -0, denormals, infinities and NaNs with payloads (quiet and signalling) must survive input_data.h and the
    # printed hex; the model copies with memcpy so no FPU touches the bits.
    values = np.array(SPECIAL_BITS, dtype=np.uint32).view(np.float32)
    model = write_model(tmp_path / "model", count=len(values), body="memcpy(&out[i], &slot[i], sizeof(float));")
    if where == "host":
        result = HostRunner().run(build_host(model, values, tmp_path / "build"))
    else:
        result = run_on(where, model, values, tmp_path / "build")
    assert result.output.view(np.uint32).tolist() == SPECIAL_BITS


@pytest.mark.parametrize("where", ["host", "cortex-m0"])
def test_int8_model_round_trips(where: str, tmp_path: Path) -> None:
    values = np.array([-128, -1, 0, 1, 5, 127, -77, 64], dtype=np.int8)
    model = write_model(tmp_path / "model", count=8, ctype="int8_t", body="out[i] = (int8_t)(-slot[i]);", dtype="int8")
    if where == "host":
        result = HostRunner().run(build_host(model, values, tmp_path / "build"))
    else:
        result = run_on(where, model, values, tmp_path / "build")
    assert result.output.dtype == np.int8
    assert result.output.tolist() == (-values).tolist()  # int8 negation wraps -128 to -128, as the C cast does


# Two instructions an iteration (subs + bne), in Thumb-1 syntax so it also assembles for the Cortex-M0.
SPIN_LOOP = 'uint32_t n = {n}; __asm__ volatile(".syntax unified\\n1: subs %0, %0, #1\\n bne 1b" : "+r"(n));'



@pytest.mark.parametrize("board_name", ["stm32f746", "nrf52840", "cortex-m0"])
def test_instruction_count_is_exact_for_a_known_loop(board_name: str, tmp_path: Path) -> None:
    # Documents instructions_per_tick: 2 * 200000 more instructions must read as 400000 more, to one tick.
    counts = []
    for n in (100_000, 300_000):
        model = write_model(tmp_path / f"model{n}", after=SPIN_LOOP.format(n=n))
        counts.append(run_on(board_name, model, random_input(), tmp_path / f"build{n}").instructions)
    assert abs((counts[1] - counts[0]) - 400_000) <= load_board(board_name).instructions_per_tick



def test_instruction_count_survives_systick_wraps(tmp_path: Path) -> None:
    # 700 M instructions is 17.5 M ticks at 40 a tick: past the 24-bit SysTick counter's 16.8 M wrap.
    counts = []
    for n in (1_000, 350_000_000):
        model = write_model(tmp_path / f"model{n}", after=SPIN_LOOP.format(n=n))
        counts.append(run_on("stm32f746", model, random_input(), tmp_path / f"build{n}").instructions)
    assert abs((counts[1] - counts[0]) - 2 * (350_000_000 - 1_000)) <= 40



def test_instruction_count_is_deterministic_and_grows_with_work(tmp_path: Path) -> None:
    board = load_board("stm32f746")
    small = build_firmware(write_model(tmp_path / "small", count=16), board, random_input(16), tmp_path / "b1")
    large = build_firmware(write_model(tmp_path / "large", count=256), board, random_input(256), tmp_path / "b2")
    runner = QemuRunner(timeout_s=30)
    first, second = runner.run(small), runner.run(small)
    assert first.instructions == second.instructions > 0
    assert runner.run(large).instructions > 4 * first.instructions


RECURSION = """
__attribute__((noinline)) static float deep(const float *x, int depth) {
    volatile float local[16];
    for (int k = 0; k < 16; ++k) local[k] = x[k % 4] + (float)depth;
    return depth == 0 ? local[3] : deep(x, depth - 1) + local[depth % 16];
}
"""
RECURSE = "out[0] = deep(slot, {depth});"



def test_stack_peak_grows_with_a_deeper_stack(tmp_path: Path) -> None:
    peaks = []
    for depth in (2, 40):
        model = write_model(tmp_path / f"model{depth}", helpers=RECURSION, after=RECURSE.format(depth=depth))
        peaks.append(run_on("stm32f746", model, random_input(), tmp_path / f"build{depth}").stack_peak_bytes)
    # Each level holds at least its 64-byte local array.
    assert 0 < peaks[0] and peaks[1] - peaks[0] >= 38 * 64



@pytest.mark.parametrize("board_name", ["stm32f746", "nrf52840", "cortex-m0"])
def test_stack_overflow_faults_with_a_non_zero_status(board_name: str, tmp_path: Path) -> None:
    # The M4/M7 boards catch it with the MPU guard; the M0 has no MPU, and faults when SP leaves RAM.
    model = write_model(tmp_path / "model", helpers=RECURSION, after=RECURSE.format(depth=1_000_000))
    with pytest.raises(RunError, match=r"FAULT: \w+ .*stack overflow") as error:
        run_on(board_name, model, random_input(), tmp_path / "build")
    assert error.value.exit_code == FAULT_STATUS
    if load_board(board_name).mpu:
        assert "FAULT: MemManage" in str(error.value)



def test_undefined_instruction_reports_the_faulting_pc(tmp_path: Path) -> None:
    model = write_model(tmp_path / "model", after='__asm__ volatile("udf #7");')
    with pytest.raises(RunError, match=r"FAULT: UsageFault CFSR=0x00010000 .*PC=0x[0-9a-f]{8}"):
        run_on("stm32f746", model, random_input(), tmp_path / "build")



def test_hung_firmware_is_stopped_by_the_timeout(tmp_path: Path) -> None:
    model = write_model(tmp_path / "model", after="for (;;) { __asm__ volatile(\"\"); }")
    started = time.monotonic()
    with pytest.raises(RunError, match="timed out after 2 s"):
        run_on("stm32f746", model, random_input(), tmp_path / "build", timeout_s=2)
    assert time.monotonic() - started < 10



def test_non_zero_model_status_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RunError, match="model_run returned status 3") as error:
        run_on("nrf52840", write_model(tmp_path / "model", status=3), random_input(), tmp_path / "build")
    assert error.value.exit_code == 3



def test_arena_bigger_than_ram_fails_at_link_time(tmp_path: Path) -> None:
    model = write_model(tmp_path / "model", arena=400 * 1024)
    with pytest.raises(UserError, match=r"RAM needs (\d+) bytes .* but has 327680") as error:
        build_firmware(model, load_board("stm32f746"), random_input(), tmp_path / "build")
    needed = int(error.value.args[0].split("RAM needs ")[1].split()[0])
    assert needed > 400 * 1024



def test_weights_bigger_than_flash_fail_at_link_time(tmp_path: Path) -> None:
    helpers = "const uint8_t weights[300 * 1024] = {1};"
    # read through a volatile pointer: -O3 folds loads of a known constant array, and the linker then drops it
    model = write_model(tmp_path / "model", helpers=helpers,
                        body="out[i] = slot[i] + ((const volatile uint8_t *)weights)[i];")
    with pytest.raises(UserError, match=r"FLASH needs \d+ bytes .* but has 262144"):
        build_firmware(model, load_board("cortex-m0"), random_input(), tmp_path / "build")



def test_measure_reports_arena_ram_and_flash(tmp_path: Path) -> None:
    model = write_model(tmp_path / "model", arena=4096)
    sizes = measure_firmware(build_firmware(model, load_board("nrf52840"), random_input(), tmp_path / "build"))
    assert sizes.arena_bytes == 4096
    assert sizes.static_ram_bytes >= 4096 + 16 * 4  # arena + the harness's output buffer
    assert sizes.flash_bytes >= sizes.sections[".text"] + 16 * 4  # code + the input in .rodata


def test_input_must_match_the_model(tmp_path: Path) -> None:
    model = write_model(tmp_path / "model")
    with pytest.raises(UserError, match="input dtype float64 does not match the model's input type float32"):
        build_host(model, random_input().astype(np.float64), tmp_path / "build")
    with pytest.raises(UserError, match="input has 15 elements .* MODEL_INPUT_COUNT = 16"):
        build_host(model, random_input(15), tmp_path / "build")


def test_unknown_board_lists_the_available_ones() -> None:
    with pytest.raises(UserError, match="unknown board 'stm32f999'; choose one of: .*stm32f746"):
        load_board("stm32f999")
