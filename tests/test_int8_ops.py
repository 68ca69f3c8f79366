"""The integer arithmetic of the int8 path (tvm_pipeline/int8_ops.py) against exact rational arithmetic."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from tvm_pipeline.int8_ops import (QAdd, QAvgPool, QConv2d, QMatMul, QMaxPool, QSoftmax, Requant, activation_range,
                                   apply_views, multiplier_from_scale, round_shift, rounding_divide)


def _round_half_even(value: Fraction) -> int:
    floor = value.numerator // value.denominator
    rest = value - floor
    return floor + (rest > Fraction(1, 2) or (rest == Fraction(1, 2) and floor % 2 == 1))


def test_multiplier_is_the_float32_scale_exactly():
    rng = np.random.default_rng(0)
    scales = np.concatenate([rng.uniform(1e-6, 4.0, 500), [1.0, 0.5, 2.0 ** -20, 3.0, 0.0039215689]]).astype(np.float32)
    multiplier, shift = multiplier_from_scale(scales)
    assert np.all(shift >= 1) and np.all(multiplier < 2 ** 25)
    for s, m, k in zip(scales, multiplier, shift):
        assert Fraction(int(m), 2 ** int(k)) == Fraction(float(s))


def test_round_shift_rounds_half_to_even_and_negative_values_correctly():
    values = np.array([5, 6, 7, 10, -5, -6, -7, -10, 3, -3], dtype=np.int64)  # / 4: 1.25 1.5 1.75 2.5 ... 0.75
    assert round_shift(values, 2).tolist() == [1, 2, 2, 2, -1, -2, -2, -2, 1, -1]
    rng = np.random.default_rng(1)
    big = rng.integers(-2 ** 54, 2 ** 54, 2000)
    shifts = rng.integers(1, 40, 2000)
    got = round_shift(big, shifts)
    assert all(int(g) == _round_half_even(Fraction(int(v), 2 ** int(s))) for g, v, s in zip(got, big, shifts))


def test_rounding_divide_ties_to_even():
    num = np.array([1, 3, 5, 7, 10, 11], dtype=np.int64)
    assert rounding_divide(num, np.int64(2)).tolist() == [0, 2, 2, 4, 5, 6]


def test_requant_equals_exact_rounding_of_acc_times_scale():
    rng = np.random.default_rng(2)
    scales = rng.uniform(1e-4, 0.2, 8).astype(np.float32)
    requant = Requant.from_scale(scales, zero_point=-5, lo=-128, hi=127)
    acc = rng.integers(-40000, 40000, (3, 8, 5), dtype=np.int64)
    got = requant.apply(acc, channel_axis=1)
    for index in np.ndindex(acc.shape):
        exact = _round_half_even(int(acc[index]) * Fraction(float(scales[index[1]]))) - 5
        assert got[index] == np.clip(exact, -128, 127)


def test_fused_relu6_range():
    scale = np.float32(6.0 / 255)
    assert activation_range(scale, -128, 0.0, 6.0) == (-128, 127)
    assert activation_range(np.float32(0.05), -10, 0.0, np.inf) == (-10, 127)
    assert activation_range(np.float32(0.05), 0, 0.0, 6.0) == (0, 120)


def test_add_rescales_both_inputs_exactly():
    add = QAdd.from_scales(0.0532, -17, 0.1131, 4, 0.127, 3, -128, 127)
    a = np.arange(-128, 128, dtype=np.int8)
    b = a[::-1].copy()
    ra, rb = (Fraction(float(np.float32(s) / np.float32(0.127))) for s in (0.0532, 0.1131))
    expected = [np.clip(_round_half_even((int(x) + 17) * ra + (int(y) - 4) * rb) + 3, -128, 127) for x, y in zip(a, b)]
    assert add.reference(a, b).tolist() == expected


def test_conv_pads_with_the_input_zero_point():
    """A 3x3 all-ones kernel over a constant image equal to the zero point gives the bias everywhere, borders too."""
    weight = np.ones((1, 1, 3, 3), np.int8)
    zx = -20
    conv = QConv2d(weight, np.array([-zx * 9], np.int32), zx, (1, 1), (1, 1, 1, 1), (1, 1), 1,
                   Requant.from_scale(np.float32(1.0), 0, -128, 127))
    x = np.full((1, 1, 4, 4), zx, np.int8)
    assert np.all(conv.reference(x) == 0)


def test_depthwise_and_grouped_conv_match_a_direct_loop():
    rng = np.random.default_rng(3)
    x = rng.integers(-128, 128, (1, 4, 5, 5)).astype(np.int8)
    weight = rng.integers(-127, 128, (4, 2, 3, 3)).astype(np.int8)
    conv = QConv2d(weight, np.zeros(4, np.int32), 0, (2, 2), (1, 1, 1, 1), (1, 1), 2,
                   Requant.from_scale(np.full(4, 1 / 64, np.float32), 0, -128, 127))
    padded = np.pad(x.astype(np.int64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    acc = np.zeros((1, 4, 3, 3), np.int64)
    for o in range(4):
        g = o // 2
        for i in range(3):
            for j in range(3):
                acc[0, o, i, j] = (padded[0, 2 * g:2 * g + 2, 2 * i:2 * i + 3, 2 * j:2 * j + 3] * weight[o]).sum()
    assert np.array_equal(conv.reference(x), conv.requant.apply(acc))


def test_matmul_spatial_sum_is_a_pool_then_matmul():
    rng = np.random.default_rng(4)
    x = rng.integers(-128, 128, (1, 6, 3, 3)).astype(np.int8)
    weight = rng.integers(-127, 128, (5, 6)).astype(np.int8)
    requant = Requant.from_scale(np.full(5, 1e-3, np.float32), 0, -128, 127)
    pooled = QMatMul(weight, np.zeros(5, np.int32), requant, spatial_sum=True).reference(x)
    acc = x.astype(np.int64).sum(axis=(2, 3)) @ weight.astype(np.int64).T
    assert np.array_equal(pooled, requant.apply(acc, channel_axis=1))


def test_avg_pool_global_and_strided():
    x = np.arange(-128, 128, dtype=np.int8).reshape(1, 1, 16, 16)
    pool = QAvgPool((16, 16), (1, 1), -128, (1, 1, 1, 1), Requant.from_scale(np.float32(1 / 256), -128, -128, 127))
    assert pool.reference(x).item() == _round_half_even(Fraction(sum(range(256)), 256)) - 128
    strided = QAvgPool((2, 2), (2, 2), 0, (1, 1, 8, 8), Requant.from_scale(np.float32(0.25), 0, -128, 127))
    assert strided.reference(x).shape == (1, 1, 8, 8)


@pytest.mark.parametrize("scale", [0.1718, 0.02, 0.5])
def test_integer_softmax_is_within_one_step_of_float_softmax(scale):
    rng = np.random.default_rng(5)
    softmax = QSoftmax.from_scales(scale, 1 / 256, -128, -128, 127, 10)
    x = rng.integers(-128, 128, (200, 10)).astype(np.int8)
    wide = x.astype(np.float64)
    real = np.exp(scale * (wide - wide.max(axis=1, keepdims=True)))
    real /= real.sum(axis=1, keepdims=True)
    expected = np.clip(np.rint(real * 256) - 128, -128, 127)
    diff = np.abs(softmax.reference(x).astype(int) - expected)
    assert diff.max() <= 1 and np.mean(diff > 0) < 0.01


def test_views_are_numpy_transpose_reshape_and_slice():
    x = np.arange(24).reshape(1, 2, 3, 4)
    views = (("permute_dims", (0, 2, 3, 1)), ("strided_slice", ((1,), (1,), (3,), (1,))), ("reshape", (1, 16)))
    assert np.array_equal(apply_views(x, views), x.transpose(0, 2, 3, 1)[:, 1:3].reshape(1, 16))


def test_uint8_requant_clamps_to_0_255():
    requant = Requant.from_scale(np.float32(0.5), 128, 0, 255, "uint8")
    got = requant.apply(np.array([-1000, -3, -1, 0, 1, 3, 1000], np.int64))
    assert got.dtype == np.uint8 and got.tolist() == [0, 126, 128, 128, 128, 130, 255]  # -1.5 -> -2, 1.5 -> 2
    assert activation_range(np.float32(0.05), 10, 0.0, np.inf, "uint8") == (10, 255)


@pytest.mark.parametrize("dtype", ["int8", "uint8"])
def test_max_pool_never_takes_padding_and_rescales_the_maximum(dtype):
    """3x3 / stride 2 / pad 1 / ceil mode on 8x8: every border window overhangs; a direct loop over the real elements
    only (ONNX pads with -inf) is the reference, then QRescale's arithmetic where the parameters differ."""
    info = np.iinfo(dtype)
    x = np.random.default_rng(6).integers(info.min, info.max, (1, 2, 8, 8), endpoint=True).astype(dtype)
    x[0, 0] = info.min + 1  # a plane of small values: a padding value that won would show
    oh = 5  # ceil((8 + 2 - 3) / 2) + 1
    expected = np.empty((1, 2, oh, oh), np.int64)
    for c, i, j in np.ndindex(2, oh, oh):
        expected[0, c, i, j] = x[0, c, max(2 * i - 1, 0):2 * i + 2, max(2 * j - 1, 0):2 * j + 2].max()
    zx = int(info.min) + 100
    copy = QMaxPool((3, 3), (2, 2), (1, 1, 1, 1), (1, 1), zx, (1, 2, oh, oh), None, int(info.min), int(info.max), dtype)
    assert copy.reference(x).dtype == np.dtype(dtype) and np.array_equal(copy.reference(x), expected)
    requant = Requant.from_scale(np.float32(0.3), 7, -128, 127)  # an int8 output: a mixed edge for uint8 inputs
    rescaled = QMaxPool((3, 3), (2, 2), (1, 1, 1, 1), (1, 1), zx, (1, 2, oh, oh), requant, -128, 127, "int8")
    assert np.array_equal(rescaled.reference(x), requant.apply(expected - zx))
