"""TFLite's integer arithmetic (int8_ops.tflite_multiplier / tflite_scale, QAddTFLite, QAvgPoolTFLite, Requant
"tflite") against a line-by-line Python transcription of TFLite's reference code (tensorflow/lite/kernels/internal:
quantization_util.cc QuantizeMultiplier, common.h MultiplyByQuantizedMultiplier with gemmlowp's
SaturatingRoundingDoublingHighMul and RoundingDivideByPOT, reference_integer_ops add.h AddFunc and pooling.h
AveragePool, micro/kernels/add_common.cc CalculateOpDataAdd), and the TensorIR kernels against the NumPy definitions
(with the cheaper epilogue forms compile-time bounds select, onnxruntime's arithmetic's too).
Exact: every check is equality of integers.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import tvm

from schedules import int8 as int8_kernels
from tvm_pipeline.errors import UserError
from tvm_pipeline.int8_ops import (Fold, QAddTFLite, QAvgPoolTFLite, QConv2d, QMatMul, Requant, Source, add_fields,
                                   add_from_fields, tflite_multiplier, tflite_scale)
from tvm_pipeline.passes import fold_qdq
from tvm_pipeline.tvm_adapter import TensorType

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


# --- TFLite's code, transcribed (Python ints: C++'s int32/int64 semantics spelled out) ---------------------------

def _trunc_div(a: int, b: int) -> int:  # C++ integer division truncates toward zero
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def _saturating_rounding_doubling_high_mul(a: int, b: int) -> int:
    overflow = a == b == INT32_MIN
    ab_64 = a * b
    nudge = (1 << 30) if ab_64 >= 0 else (1 - (1 << 30))
    return INT32_MAX if overflow else _trunc_div(ab_64 + nudge, 1 << 31)


def _rounding_divide_by_pot(x: int, exponent: int) -> int:
    mask = (1 << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> exponent) + (1 if remainder > threshold else 0)


def _multiply_by_quantized_multiplier(x: int, multiplier: int, shift: int) -> int:
    left_shift = shift if shift > 0 else 0
    right_shift = 0 if shift > 0 else -shift
    return _rounding_divide_by_pot(_saturating_rounding_doubling_high_mul(x * (1 << left_shift), multiplier),
                                   right_shift)


def _quantize_multiplier(double_multiplier: float) -> tuple[int, int]:
    if double_multiplier == 0.0:
        return 0, 0
    q, shift = math.frexp(double_multiplier)
    scaled = q * (1 << 31)
    q_fixed = int(math.floor(scaled)) + (1 if scaled - math.floor(scaled) >= 0.5 else 0)  # std::round, q > 0
    if q_fixed == 1 << 31:
        q_fixed //= 2
        shift += 1
    if shift < -31:
        shift, q_fixed = 0, 0
    return q_fixed, shift


def _add_params(s1: float, z1: int, s2: float, z2: int, s: float, z: int) -> dict:
    s1, s2, s = (float(np.float32(v)) for v in (s1, s2, s))
    twice_max_input_scale = 2 * max(s1, s2)
    m1, e1 = _quantize_multiplier(s1 / twice_max_input_scale)
    m2, e2 = _quantize_multiplier(s2 / twice_max_input_scale)
    mo, eo = _quantize_multiplier(twice_max_input_scale / ((1 << 20) * s))
    return dict(input1_offset=-z1, input2_offset=-z2, output_offset=z, left_shift=20, input1_multiplier=m1,
                input1_shift=e1, input2_multiplier=m2, input2_shift=e2, output_multiplier=mo, output_shift=eo)


def _add_func(x: int, y: int, p: dict, lo: int, hi: int) -> int:
    shifted_input1_val = (p["input1_offset"] + x) * (1 << p["left_shift"])
    shifted_input2_val = (p["input2_offset"] + y) * (1 << p["left_shift"])
    scaled_input1_val = _multiply_by_quantized_multiplier(shifted_input1_val, p["input1_multiplier"],
                                                          p["input1_shift"])
    scaled_input2_val = _multiply_by_quantized_multiplier(shifted_input2_val, p["input2_multiplier"],
                                                          p["input2_shift"])
    raw_sum = scaled_input1_val + scaled_input2_val
    raw_output = _multiply_by_quantized_multiplier(raw_sum, p["output_multiplier"], p["output_shift"]) \
        + p["output_offset"]
    return min(hi, max(lo, raw_output))


def _average(acc: int, filter_count: int) -> int:
    return _trunc_div(acc + filter_count // 2, filter_count) if acc > 0 else \
        _trunc_div(acc - filter_count // 2, filter_count)


# --- the NumPy definitions vs the transcription -----------------------------------------------------------------

def test_multiplier_is_tflites_quantize_multiplier():
    rng = np.random.default_rng(0)
    reals = [*rng.uniform(1e-6, 1.0, 300), *np.exp(rng.uniform(-25, 5, 300)), 0.5, 0.25, 1.0 - 2.0 ** -40,
             0.75 - 2.0 ** -34, 2.0 ** -31, 2.0 ** -33, 3.0]  # carries to 2^31, ties of the rounding, flushed
    multiplier, exponent = tflite_multiplier(np.array(reals))
    assert [(int(m), int(e)) for m, e in zip(multiplier, exponent)] == [_quantize_multiplier(r) for r in reals]


def test_tflite_scale_is_multiply_by_quantized_multiplier():
    rng = np.random.default_rng(1)
    cases = [(int(rng.integers(-(1 << 24), 1 << 24)), int(rng.integers(1 << 30, 1 << 31)), int(rng.integers(-31, 1)))
             for _ in range(3000)]
    cases += [(int(rng.integers(-(1 << 20), 1 << 20)), int(rng.integers(1 << 30, 1 << 31)), int(rng.integers(1, 8)))
              for _ in range(500)]
    # ties: m = 2^30 halves x exactly, then the right shift meets exact halves (both signs); extremes of int32
    cases += [(x, 1 << 30, e) for x in range(-40, 41) for e in (0, 1, 2, 3)]
    cases += [(INT32_MIN, INT32_MAX, 0), (INT32_MAX, INT32_MAX, -31), (INT32_MIN, 1 << 30, -1), (7, 0, -3)]
    x, m, e = (np.array(v, dtype=np.int64) for v in zip(*cases))
    assert tflite_scale(x, m, e).tolist() == [_multiply_by_quantized_multiplier(*c) for c in cases]


@pytest.mark.parametrize("scales", [(0.0394, -128, 0.1042, 4, 0.0509, -128),  # the MLPerf IC adds' parameters
                                    (0.0448, -17, 0.1131, 4, 0.0532, -128),
                                    (0.02, 3, 0.02, -7, 0.05, 10),             # equal input scales
                                    (0.5, 0, 0.001, 100, 0.25, -3)])           # very different input scales
def test_add_is_tflites_add_func_on_every_input_pair(scales):
    a = np.repeat(np.arange(-128, 128), 256).astype(np.int8)
    b = np.tile(np.arange(-128, 128), 256).astype(np.int8)
    params = _add_params(*scales)
    for lo, hi in ((-128, 127), (scales[-1], 127)):  # no activation, ReLU (clamped at the output zero point)
        add = QAddTFLite.from_scales(*scales[:5], scales[5], lo, hi)
        expected = [_add_func(int(x), int(y), params, lo, hi) for x, y in zip(a, b)]
        assert add.reference(a, b).tolist() == expected
        assert add.swapped().reference(b, a).tolist() == expected
        assert add_from_fields(add_fields(add)) == add


def test_add_out_of_tflites_range_is_refused():
    with pytest.raises(ValueError, match="outside TFLite's integer add's range"):
        QAddTFLite.from_scales(1.0, 0, 1.0, 0, 1e-7, 0, -128, 127)


@pytest.mark.parametrize("kernel, strides", [((2, 2), (2, 2)), ((3, 3), (1, 1)), ((8, 8), (1, 1))])
def test_avg_pool_is_tflites_average_pool(kernel, strides):
    rng = np.random.default_rng(2)
    x = rng.integers(-128, 128, (1, 3, 8, 8)).astype(np.int8)
    x[0, 0] = -1  # sums that are exact negative halves (ties away from zero) and small negatives
    x[0, 1, ::2] = 1
    pool = QAvgPoolTFLite(kernel, strides, (1, 3, (8 - kernel[0]) // strides[0] + 1, (8 - kernel[1]) // strides[1] + 1),
                          -100, 127)
    count = kernel[0] * kernel[1]
    expected = np.empty(pool.out_shape, np.int64)
    for c in range(3):
        for i in range(pool.out_shape[2]):
            for j in range(pool.out_shape[3]):
                window = x[0, c, i * strides[0]:i * strides[0] + kernel[0], j * strides[1]:j * strides[1] + kernel[1]]
                expected[0, c, i, j] = min(127, max(-100, _average(int(window.astype(np.int64).sum()), count)))
    assert pool.reference(x).tolist() == expected.tolist()


def test_requant_tflite_is_multiply_by_quantized_multiplier_per_channel():
    rng = np.random.default_rng(3)
    reals = np.array([0.0007, 0.013, 0.6, 1.7])  # exponents below and above 0 (a left shift)
    requant = Requant.from_tflite_scale(reals, -5, -128, 127)
    acc = rng.integers(-20000, 20000, (2, 4, 3)).astype(np.int64)
    expected = [[[min(127, max(-128, _multiply_by_quantized_multiplier(int(v), *_quantize_multiplier(r)) - 5))
                  for v in row] for row, r in zip(batch, reals)] for batch in acc]
    assert requant.apply(acc).tolist() == expected


# --- the TensorIR kernels vs the NumPy definitions ---------------------------------------------------------------

def _run(fold: Fold, inputs: list[np.ndarray], out_type: TensorType) -> np.ndarray:
    """fold-qdq's kernel for `fold`, built for the host CPU by TVM (LLVM), run once."""
    func, constants = int8_kernels.kernel(fold, [TensorType(x.shape, str(x.dtype)) for x in inputs], out_type)
    lib = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target="llvm")
    out = tvm.runtime.tensor(np.zeros(out_type.shape, out_type.dtype))
    lib["main"](*map(tvm.runtime.tensor, [*inputs, *constants]), out)
    return out.numpy()


def test_kernels_compute_the_numpy_arithmetic():
    rng = np.random.default_rng(4)
    a, b = (rng.integers(-128, 128, (1, 8, 16, 16)).astype(np.int8) for _ in range(2))
    out = TensorType((1, 8, 16, 16), "int8")
    add = QAddTFLite.from_scales(0.0394, -128, 0.1042, 4, 0.0509, -128, -128, 127)
    assert np.array_equal(_run(Fold("y", add, (Source("a"), Source("b"))), [a, b], out), add.reference(a, b))

    pool = QAvgPoolTFLite((4, 4), (4, 4), (1, 8, 4, 4), -128, 127)
    assert np.array_equal(_run(Fold("y", pool, (Source("a"),)), [a], TensorType((1, 8, 4, 4), "int8")),
                          pool.reference(a))

    weight = rng.integers(-127, 128, (8, 8, 3, 3)).astype(np.int8)
    reals = rng.uniform(1e-4, 2e-3, 8)
    reals[0] = 1.3  # a left shift
    conv = QConv2d(weight, rng.integers(-5000, 5000, 8).astype(np.int32), -3, (1, 1), (1, 1, 1, 1), (1, 1), 1,
                   Requant.from_tflite_scale(reals, 7, -128, 127), add.swapped())
    got = _run(Fold("y", conv, (Source("a"), Source("b"))), [a, b], out)
    assert np.array_equal(got, conv.reference(a, b))


@pytest.mark.parametrize("bound, exponents", [
    ((1 << 30) - 1, [-1, -7, -20, -31]),    # every form: SMMULR's high half and the closed-form rounding
    ((1 << 30) - 1, [0, -1, -5, -31]),      # a right shift of 0: the mask and threshold rounding
    ((1 << 27) - 1, [3, 0, -2, -9]),        # a left shift, within the SMMULR bound
    (1 << 30, [-1, -7, -20, -31]),          # just over the bound: the general forms
    (INT32_MAX, [0, -3, -12, -31]),
])
def test_known_bounds_give_the_same_bits(bound, exponents):
    """`_tflite_scale` with |x| <= bound and the exponents known (the cheaper forms they select) against
    int8_ops.tflite_scale, at the bound, at ties and at random, every multiplier extreme; run on the host (LLVM)."""
    rng = np.random.default_rng(5)
    top = bound >> max(max(exponents), 0)
    x_values = np.array([-top, top, 0, 1, -1, *range(-64, 65, 3), *rng.integers(-top, top + 1, 400)], np.int32)
    multipliers = np.array([1 << 30, INT32_MAX, *rng.integers(1 << 30, 1 << 31, len(exponents) - 2)], np.int32)
    exps = np.array(exponents, np.int32)
    x = tvm.te.placeholder((len(x_values),), "int32", name="x")
    m, e = (tvm.te.placeholder((len(exps),), "int32", name=n) for n in ("m", "e"))
    out = tvm.te.compute((len(exps), len(x_values)), lambda c, i: int8_kernels._tflite_scale(  # noqa: SLF001
        x[i], m[c], e[c], (bound, min(exponents), max(exponents))), name="out")
    func = tvm.te.create_prim_func([x, m, e, out]).with_attr("global_symbol", "main")
    lib = tvm.compile(tvm.IRModule({"main": func}), target="llvm")
    got = tvm.runtime.tensor(np.zeros((len(exps), len(x_values)), np.int32))
    lib["main"](*map(tvm.runtime.tensor, (x_values, multipliers, exps)), got)
    expected = tflite_scale(x_values[None, :], multipliers[:, None].astype(np.int64), exps[:, None].astype(np.int64))
    assert np.array_equal(got.numpy(), expected)


def test_pruned_channels_keep_the_outputs_and_the_cheap_epilogue():
    """Channels with all-zero weights and a ~2^30 bias (as TFLite files have them) and a flushed multiplier: the
    kernel's constants are rewritten (schedules/int8._canonical_channels), its outputs stay the NumPy definition's,
    and the epilogue keeps the bounded forms (the SMMULR high half)."""
    rng = np.random.default_rng(6)
    a = rng.integers(-128, 128, (1, 8, 6, 6)).astype(np.int8)
    weight = rng.integers(-127, 128, (8, 8, 1, 1)).astype(np.int8)
    weight[[1, 5]] = 0
    bias = rng.integers(-5000, 5000, 8).astype(np.int32)
    bias[1], bias[5] = (1 << 30) + 77, -(1 << 30) - 5
    reals = rng.uniform(1e-4, 2e-3, 8)
    reals[5], reals[6] = 2.0 ** -31 * 1.5, 2.0 ** -40  # a bias that still reaches the output; a flushed multiplier
    conv = QConv2d(weight, bias, -3, (1, 1), (0, 0, 0, 0), (1, 1), 1, Requant.from_tflite_scale(reals, 7, -128, 127))
    assert conv.requant.multiplier[6] == 0
    fold, out = Fold("y", conv, (Source("a"),)), TensorType((1, 8, 6, 6), "int8")
    assert np.array_equal(_run(fold, [a], out), conv.reference(a))
    func, _ = int8_kernels.kernel(fold, [TensorType(a.shape, "int8")], out)
    assert "2147483648" in func.script() and "1073741824" not in func.script()


def test_per_channel_right_shifts_come_as_a_rounding_table():
    """A TFLite-arithmetic conv whose channels shift right by different amounts (the closed-form epilogue) takes a
    (right, 2^(right-1) + (zero point << right)) table per channel instead of its exponents: the same outputs,
    nothing left to compute from the exponent per output, no zero point to add. A conv with a left shift keeps its
    exponents, and so does one whose nudge could overflow int32."""
    rng = np.random.default_rng(7)
    a = rng.integers(-128, 128, (1, 8, 6, 6)).astype(np.int8)
    weight = rng.integers(-127, 128, (8, 8, 1, 1)).astype(np.int8)
    reals = rng.uniform(1e-4, 2e-3, 8)
    conv = QConv2d(weight, rng.integers(-5000, 5000, 8).astype(np.int32), -3, (1, 1), (0, 0, 0, 0), (1, 1), 1,
                   Requant.from_tflite_scale(reals, 7, -128, 127))
    assert len(set(conv.requant.shift)) > 1 and conv.requant.shift.max() < 0
    fold, out = Fold("y", conv, (Source("a"),)), TensorType((1, 8, 6, 6), "int8")
    func, constants = int8_kernels.kernel(fold, [TensorType(a.shape, "int8")], out)
    table = constants[-1]
    assert func.params[-2].name == int8_kernels.ROUNDING and table.shape == (8, 2)
    assert np.array_equal(table[:, 1], (1 << (table[:, 0] - 1)) + (7 << table[:, 0]))
    assert np.array_equal(int8_kernels.shifts_of(table), conv.requant.shift)
    assert np.array_equal(_run(fold, [a], out), conv.reference(a))
    reals[0] = 1.3  # a left shift: the general form reads the exponents
    left = QConv2d(weight, conv.bias, -3, (1, 1), (0, 0, 0, 0), (1, 1), 1, Requant.from_tflite_scale(reals, 7, -128, 127))
    assert int8_kernels.rounding_table(left, "int8") is None
    # right shifts of 24 and 25: zero point 127 << 25 alone passes 2^31, zero point 0 does not
    tiny = np.tile([2.0 ** -26, 3 * 2.0 ** -26], 4)
    for zero_point, table in ((127, None), (0, np.stack([[25, 24] * 4, [1 << 24, 1 << 23] * 4], axis=1))):
        found = int8_kernels.rounding_table(replace(conv, requant=Requant.from_tflite_scale(
            tiny, zero_point, -128, 127)), "int8")
        assert found is table is None or np.array_equal(found, table)


@pytest.mark.parametrize("scale_range, bias", [
    ((1e-5, 2e-3), 5000), ((0.3, 0.45), 5000),
    ((0.4, 0.9), 5000),         # no shift >= 32 form: the general one
    ((1e-8, 3e-8), (1 << 31) - (1 << 22)),  # |acc + bias| >= 2^30: the high-word form without doubling the product
])
def test_onnxruntime_rounding_on_the_high_word_gives_the_same_bits(scale_range, bias):
    """onnxruntime's arithmetic with the shifts raised to >= 32 (schedules/int8.prescaled: the rounding runs on the
    product's high word) against the NumPy definition, outputs clamped at both ends included."""
    rng = np.random.default_rng(7)
    a = rng.integers(-128, 128, (1, 8, 6, 6)).astype(np.int8)
    weight = rng.integers(-127, 128, (8, 8, 3, 3)).astype(np.int8)
    requant = Requant.from_scale(rng.uniform(*scale_range, 8).astype(np.float32), 7, -128, 127)
    conv = QConv2d(weight, rng.integers(-bias, bias, 8).astype(np.int32), -3, (1, 1), (1, 1, 1, 1), (1, 1), 1,
                   requant)
    expected = conv.reference(a)
    assert scale_range[0] > 0.1 or bias > 5000 or ((expected == -128).any() and (expected == 127).any())
    assert np.array_equal(_run(Fold("y", conv, (Source("a"),)), [a], TensorType(expected.shape, "int8")), expected)
    multiplier, shift = int8_kernels.prescaled(requant.multiplier, requant.shift, "onnxruntime")
    assert (shift >= 32).all() == (scale_range[1] < 0.5)


@pytest.mark.parametrize("scales, one_shift", [
    (np.geomspace(1e-5, 2e-3, 8), True),          # per-channel scales: every multiplier fits one (the largest) shift
    (np.array([0.45, 1e-6, 0.3, 2e-6, 0.2, 1e-5, 0.4, 3e-6]), False),  # they do not: shifts >= 32, per channel
])
def test_onnxruntime_shifts_brought_to_one_where_the_multipliers_allow(scales, one_shift):
    """schedules/int8.prescaled gives every channel the largest shift when every multiplier, doubled as often, stays
    below 2^31 (the same products, so the same roundings): the kernel reads no shift; else shifts >= 32 per channel.
    Either way the NumPy definition's bits."""
    rng = np.random.default_rng(10)
    a = rng.integers(-128, 128, (1, 8, 6, 6)).astype(np.int8)
    weight = rng.integers(-127, 128, (8, 8, 3, 3)).astype(np.int8)
    requant = Requant.from_scale(scales.astype(np.float32), 7, -128, 127)
    multiplier, shift = int8_kernels.prescaled(requant.multiplier, requant.shift, "onnxruntime")
    assert (len(set(shift.tolist())) == 1) == one_shift and (shift >= 32).all() and (multiplier < 1 << 31).all()
    conv = QConv2d(weight, rng.integers(-5000, 5000, 8).astype(np.int32), -3, (1, 1), (1, 1, 1, 1), (1, 1), 1,
                   requant)
    expected = conv.reference(a)
    fold, out = Fold("y", conv, (Source("a"),)), TensorType(expected.shape, "int8")
    assert np.array_equal(_run(fold, [a], out), expected)
    func, _ = int8_kernels.kernel(fold, [TensorType(a.shape, "int8")], out)
    assert (f"{func.params[-2].name}[" in func.script()) != one_shift


@pytest.mark.parametrize("arithmetic, scale", [
    ("onnxruntime", 1.3e-3),  # prescaled: one shift >= 32, the high-word form with a constant shift
    ("onnxruntime", 0.7),     # a shift below 32: the general int64 form, its shift a constant
    ("tflite", 1.3e-3),
])
def test_one_shift_for_every_channel_is_a_constant(arithmetic, scale):
    """Per-tensor requantization (every channel the same shift, as `tvmp quantize` and the reordered bottleneck's
    inner requantizations have it): the epilogue reads no shift, and computes the NumPy definition's bits."""
    rng = np.random.default_rng(9)
    a = rng.integers(-128, 128, (1, 8, 6, 6)).astype(np.int8)
    weight = rng.integers(-127, 128, (8, 8, 3, 3)).astype(np.int8)
    scales = np.full(8, scale, np.float32)
    requant = (Requant.from_tflite_scale(scales.astype(np.float64), 7, -128, 127) if arithmetic == "tflite"
               else Requant.from_scale(scales, 7, -128, 127))
    assert len(set(requant.shift.tolist())) == 1
    conv = QConv2d(weight, rng.integers(-5000, 5000, 8).astype(np.int32), -3, (1, 1), (1, 1, 1, 1), (1, 1), 1,
                   requant)
    expected = conv.reference(a)
    assert (expected == -128).any() and (expected == 127).any()
    fold, out = Fold("y", conv, (Source("a"),)), TensorType(expected.shape, "int8")
    assert np.array_equal(_run(fold, [a], out), expected)
    func, _ = int8_kernels.kernel(fold, [TensorType(a.shape, "int8")], out)
    shift = func.params[-2].name
    assert f"{shift}[" not in func.script()


@pytest.mark.parametrize("tflite", [False, True])
@pytest.mark.parametrize("spatial_sum", [False, True])
def test_matmul_epilogue_forms_give_the_same_bits(tflite, spatial_sum):
    """A matmul's requantization takes the bounded forms too (the bound counts a pooled window's inputs per weight);
    a pruned output (all-zero weights, a ~2^30 bias) included."""
    rng = np.random.default_rng(8)
    x = rng.integers(-128, 128, (2, 16, 3, 3) if spatial_sum else (2, 16)).astype(np.int8)
    weight = rng.integers(-127, 128, (6, 16)).astype(np.int8)
    weight[2] = 0
    bias = rng.integers(-5000, 5000, 6).astype(np.int32)
    bias[2] = (1 << 30) + 3
    scales = rng.uniform(1e-4, 1e-3, 6)
    requant = (Requant.from_tflite_scale(scales, 3, -128, 127) if tflite
               else Requant.from_scale(scales.astype(np.float32), 3, -128, 127))
    matmul = QMatMul(weight, bias, requant, spatial_sum)
    expected = matmul.reference(x)
    got = _run(Fold("y", matmul, (Source("a"),)), [x], TensorType(expected.shape, "int8"))
    assert np.array_equal(got, expected)


def test_fold_qdq_refuses_an_unknown_arithmetic():
    with pytest.raises(UserError, match="unknown int8 arithmetic 'tflm'"):
        fold_qdq.run(tvm.IRModule(), [], arithmetic="tflm")
