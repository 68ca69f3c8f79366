"""The integer operators of the int8 path: their parameters as plain data, and their exact NumPy arithmetic.

Activations are int8 or uint8 (`ACTIVATION_DTYPES`): the arithmetic only ever uses `q - zero_point`, so both run
the same integers; each operator's `dtype` (or its Requant's) is the type it stores, `lo`/`hi` lie within it.

`passes/fold_qdq.py` turns `quantize(op(dequantize(x), dequantize(w)))` chains into these; `tvm_adapter` writes
each as one TensorIR kernel doing the same integer arithmetic; `int8_reference` runs them with the `reference`
methods here, so the board's output can be checked against NumPy bit for bit.

Arithmetic (see docs/int8.md for the why):
- accumulation in int32 of (u)int8 x int8 products, the input zero point folded into the bias (padding reads the
  input zero point, so the fold is exact at borders);
- requantization `y = clamp(round(acc * M * 2^-shift) + zp, lo, hi)` with the 64-bit product, where M * 2^-shift
  is *exactly* the float32 scale onnxruntime computes for that op (M has at most 24 significant bits); rounding is
  half to even, like onnxruntime's float requantization; `lo`/`hi` carry a fused ReLU / ReLU6;
- residual add rescales both inputs onto one shift; average pooling sums in int32 and requantizes;
- concat rescales each input onto the output's parameters (a copy where they are equal);
- max pooling takes the window maximum of the integers (dequantize is increasing), then rescales like QRescale
  when the output's parameters differ;
- softmax uses a 256-entry exp table (2^K * exp(-s * d) for the distance d to the row's maximum) and one
  rounding integer division per element;
- TFLite's own arithmetic, which fold-qdq uses for `.tflite` models so that they equal TFLM: `Requant` "tflite"
  (Q31 multiplier, two roundings), `QAddTFLite`, `QAvgPoolTFLite` (`tflite_multiplier`, `tflite_scale`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: The integer types an activation may have (weights are int8).
ACTIVATION_DTYPES = ("int8", "uint8")

#: Largest right shift kept; a real shift above it rounds every product of an int32 and a 24-bit multiplier to 0.
MAX_SHIFT = 62


def multiplier_from_scale(scale: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """float32 scale(s) -> (multiplier, shift) int64 arrays with multiplier * 2^-shift == scale exactly, shift >= 1."""
    scale = np.atleast_1d(np.asarray(scale, dtype=np.float32))
    if np.any(scale < 0) or not np.all(np.isfinite(scale)):
        raise ValueError(f"requantization scales must be finite and >= 0, got {scale}")
    mantissa, exponent = np.frexp(scale.astype(np.float64))  # scale = mantissa * 2^exponent, mantissa in [0.5, 1)
    multiplier = (mantissa * (1 << 24)).astype(np.int64)  # exact: a float32 has 24 significant bits
    shift = 24 - exponent.astype(np.int64)
    while np.any((multiplier % 2 == 0) & (multiplier > 0) & (shift > 1)):  # drop trailing zero bits
        even = (multiplier % 2 == 0) & (multiplier > 0) & (shift > 1)
        multiplier = np.where(even, multiplier // 2, multiplier)
        shift = np.where(even, shift - 1, shift)
    small = shift < 1  # scales >= 2^24 / 2: move the surplus into the multiplier
    multiplier = np.where(small, multiplier << np.maximum(1 - shift, 0), multiplier)
    shift = np.where(small, 1, shift)
    multiplier = np.where(shift > MAX_SHIFT, 0, multiplier)
    return multiplier, np.minimum(shift, MAX_SHIFT)


def round_shift(value: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """round(value / 2^shift), ties to even, for int64 `value` and shift >= 1 (arithmetic shifts only)."""
    value = np.asarray(value, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    half_minus_one = (np.int64(1) << (shift - 1)) - 1
    return (value + half_minus_one + ((value >> shift) & 1)) >> shift


def rounding_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """round(numerator / denominator), ties to even, for numerator >= 0 and denominator > 0 (int64)."""
    quotient = numerator // denominator
    twice_remainder = 2 * (numerator - quotient * denominator)
    up = (twice_remainder > denominator) | ((twice_remainder == denominator) & (quotient % 2 == 1))
    return quotient + up


def activation_range(scale: float, zero_point: int, real_lo: float, real_hi: float, dtype: str = "int8") -> tuple[int, int]:
    """The clamp range in the quantized domain of a fused activation clamp(v, real_lo, real_hi) (+-inf: none).

    Rounding is monotone, so round(clamp(v, lo, hi) / s) == clamp(round(v / s), round(lo / s), round(hi / s)).
    """
    info = np.iinfo(dtype)
    lo, hi = int(info.min), int(info.max)
    if np.isfinite(real_lo):
        lo = max(lo, int(np.rint(np.float32(real_lo) / np.float32(scale))) + zero_point)
    if np.isfinite(real_hi):
        hi = min(hi, int(np.rint(np.float32(real_hi) / np.float32(scale))) + zero_point)
    return lo, hi


# --- TFLite's fixed-point steps (tensorflow/lite/kernels/internal: quantization_util.cc, common.h, gemmlowp) ---

def tflite_multiplier(real: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """TFLite's QuantizeMultiplier, elementwise: double(s) > 0 -> (Q31 multiplier in [2^30, 2^31), exponent), int64.

    real ~= multiplier * 2^(exponent - 31): frexp's mantissa times 2^31 rounded half away from zero (std::round),
    2^31 folded back to 2^30 with the exponent one higher; an exponent below -31 flushes the multiplier to 0.
    """
    real = np.atleast_1d(np.asarray(real, dtype=np.float64))
    if np.any(real <= 0) or not np.all(np.isfinite(real)):
        raise ValueError(f"TFLite multipliers need finite scales > 0, got {real}")
    mantissa, exponent = np.frexp(real)
    fixed = np.floor(mantissa * (1 << 31) + 0.5).astype(np.int64)  # exact: 53 mantissa bits, 31 above the point
    carry = fixed == 1 << 31
    fixed, exponent = np.where(carry, fixed // 2, fixed), np.where(carry, exponent + 1, exponent).astype(np.int64)
    flushed = exponent < -31
    return np.where(flushed, 0, fixed), np.where(flushed, 0, exponent)


def tflite_scale(x: np.ndarray, multiplier: np.ndarray | int, exponent: np.ndarray | int) -> np.ndarray:
    """TFLite's MultiplyByQuantizedMultiplier(x, m, e) (double rounding, TFLM's default) for int32 x, 0 <= m < 2^31:
    RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(x << max(e, 0), m), max(-e, 0)), in the closed form the
    kernels compute:

    - SaturatingRoundingDoublingHighMul: `(v m + nudge) / 2^31` truncated toward zero, nudge 2^30 (v m >= 0) or
      1 - 2^30, is `(v m + 2^30) >> 31` either way (ties up); m >= 0 never saturates (that needs m = INT32_MIN).
    - RoundingDivideByPOT(h, r): h / 2^r rounded half away from zero, `(h + 2^(r-1) - (h < 0)) >> r` for r >= 1.
      The sign of x may stand in for the sign of h: they differ only where h == 0, which rounds to 0 either way.
    tests/test_int8_ops.py checks this against a line-by-line transcription of TFLite's code.
    """
    x = np.asarray(x, dtype=np.int64)
    exponent = np.asarray(exponent, dtype=np.int64)
    left, right = np.maximum(exponent, 0), np.maximum(-exponent, 0)
    high = ((x << left) * np.asarray(multiplier, dtype=np.int64) + (1 << 30)) >> 31
    return (high + ((np.int64(1) << right) >> 1) + np.where(right > 0, x >> 63, 0)) >> right


@dataclass(frozen=True)
class Requant:
    """acc -> clamp(round_shift(acc * multiplier, shift) + zero_point, lo, hi) as dtype, per channel or per tensor.

    `arithmetic` "tflite": clamp(tflite_scale(acc, multiplier, shift) + zero_point, lo, hi) instead, with TFLite's
    Q31 multiplier and signed exponent (its conv, depthwise, fully connected and requantize kernels).
    """

    multiplier: np.ndarray  # int32, shape (C,) or (1,)
    shift: np.ndarray  # int32, same shape
    zero_point: int
    lo: int
    hi: int
    dtype: str = "int8"  # the stored type: int8 or uint8; [lo, hi] lies within it
    arithmetic: str = "onnxruntime"  # or "tflite"

    @staticmethod
    def from_scale(scale: np.ndarray | float, zero_point: int, lo: int, hi: int, dtype: str = "int8") -> Requant:
        multiplier, shift = multiplier_from_scale(scale)
        return Requant(multiplier.astype(np.int32), shift.astype(np.int32), int(zero_point), int(lo), int(hi), dtype)

    @staticmethod
    def from_tflite_scale(real: np.ndarray | float, zero_point: int, lo: int, hi: int, dtype: str = "int8") -> Requant:
        """TFLite's requantization for the double scale(s) `real` (derived from the float32 scales as TFLite does)."""
        multiplier, exponent = tflite_multiplier(real)
        return Requant(multiplier.astype(np.int32), exponent.astype(np.int32), int(zero_point), int(lo), int(hi),
                       dtype, "tflite")

    def apply(self, acc: np.ndarray, channel_axis: int = 1) -> np.ndarray:
        """Requantize an int accumulator whose channels lie along `channel_axis`."""
        shape = [1] * acc.ndim
        if self.multiplier.size > 1:
            shape[channel_axis] = self.multiplier.size
        multiplier = self.multiplier.astype(np.int64).reshape(shape)
        shift = self.shift.astype(np.int64).reshape(shape)
        if self.arithmetic == "tflite":
            rounded = tflite_scale(acc, multiplier, shift)
        else:
            rounded = round_shift(acc.astype(np.int64) * multiplier, shift)
        return np.clip(rounded + self.zero_point, self.lo, self.hi).astype(self.dtype)


def _padded(x: np.ndarray, padding: tuple[int, int, int, int], value: int) -> np.ndarray:
    top, left, bottom, right = padding
    return np.pad(x.astype(np.int64), ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=value)


def _windows(x: np.ndarray, kernel: tuple[int, int], strides: tuple[int, int], dilation: tuple[int, int]) -> np.ndarray:
    """(N, C, H, W) -> (N, C, OH, OW, KH, KW) views of every window."""
    (kh, kw), (sh, sw), (dh, dw) = kernel, strides, dilation
    oh = (x.shape[2] - dh * (kh - 1) - 1) // sh + 1
    ow = (x.shape[3] - dw * (kw - 1) - 1) // sw + 1
    rows = (np.arange(oh) * sh)[:, None] + (np.arange(kh) * dh)[None, :]
    cols = (np.arange(ow) * sw)[:, None] + (np.arange(kw) * dw)[None, :]
    return x[:, :, rows[:, None, :, None], cols[None, :, None, :]]


@dataclass(frozen=True)
class QConv2d:
    """int8 NCHW convolution (any groups): acc = sum(x_padded * w) + bias; padding reads `input_zero_point`.

    `bias` already holds `-input_zero_point * sum(w)` per output channel, so no subtraction runs per product.
    `residual`: a residual add fused into the epilogue, `residual(requantized conv, skip)` (the conv is operand a),
    so the int8 conv output is never stored and the result may overwrite the skip tensor in place.
    """

    weight: np.ndarray  # int8 (O, C / groups, KH, KW)
    bias: np.ndarray  # int32 (O,)
    input_zero_point: int
    strides: tuple[int, int]
    padding: tuple[int, int, int, int]  # top, left, bottom, right
    dilation: tuple[int, int]
    groups: int
    requant: Requant
    residual: AddOp | None = None

    def reference(self, x: np.ndarray, skip: np.ndarray | None = None) -> np.ndarray:
        conv = self._conv(x)
        return conv if self.residual is None else self.residual.reference(conv, skip)

    def _conv(self, x: np.ndarray) -> np.ndarray:
        o, cg, kh, kw = self.weight.shape
        patches = _windows(_padded(x, self.padding, self.input_zero_point), (kh, kw), self.strides, self.dilation)
        n, _, oh, ow = patches.shape[:4]
        g = self.groups
        patches = patches.reshape(n, g, cg, oh, ow, kh, kw)
        weight = self.weight.astype(np.int64).reshape(g, o // g, cg, kh, kw)
        acc = np.einsum("ngcyxij,gocij->ngoyx", patches, weight).reshape(n, o, oh, ow)
        return self.requant.apply(acc + self.bias.astype(np.int64)[None, :, None, None])


@dataclass(frozen=True)
class QMatMul:
    """int8 (M, K) x (K, N) with the weight stored transposed (N, K); bias holds -input_zero_point * sum_k(w).

    `spatial_sum`: the input is (M, K, H, W) and is summed over H, W first: a global average pool that nothing
    quantizes before the matmul (eager-mode PyTorch QAT) folds into the accumulator, its 1/(H*W) into the scale.
    """

    weight: np.ndarray  # int8 (N, K)
    bias: np.ndarray  # int32 (N,)
    requant: Requant
    spatial_sum: bool = False

    def reference(self, x: np.ndarray) -> np.ndarray:
        x = x.astype(np.int64).sum(axis=(2, 3)) if self.spatial_sum else x.astype(np.int64)
        acc = x @ self.weight.astype(np.int64).T + self.bias.astype(np.int64)
        return self.requant.apply(acc, channel_axis=acc.ndim - 1)


def _on_shift(multiplier: int, shift: int, target: int) -> int:
    """The multiplier that gives multiplier * 2^-shift on a right shift of `target` (rounded if target < shift)."""
    if shift <= target:
        return multiplier << (target - shift)
    return int(round_shift(np.int64(multiplier), np.int64(shift - target)))


@dataclass(frozen=True)
class QAdd:
    """c = clamp(round_shift((a - za) * multiplier_a + (b - zb) * multiplier_b, shift) + zero_point, lo, hi)."""

    zero_point_a: int
    zero_point_b: int
    multiplier_a: int
    multiplier_b: int
    shift: int
    zero_point: int
    lo: int
    hi: int
    dtype: str = "int8"

    def swapped(self) -> QAdd:
        """The same add with its operands exchanged."""
        return QAdd(self.zero_point_b, self.zero_point_a, self.multiplier_b, self.multiplier_a, self.shift,
                    self.zero_point, self.lo, self.hi, self.dtype)

    @staticmethod
    def from_scales(scale_a: float, zero_point_a: int, scale_b: float, zero_point_b: int, scale: float,
                    zero_point: int, lo: int, hi: int, dtype: str = "int8") -> QAdd:
        """Ratios sa/sc and sb/sc are taken in float32 (as onnxruntime does), then put on one exact shift."""
        ratio_a = np.float32(scale_a) / np.float32(scale)
        ratio_b = np.float32(scale_b) / np.float32(scale)
        (ma,), (sa,) = multiplier_from_scale(ratio_a)
        (mb,), (sb,) = multiplier_from_scale(ratio_b)
        # (a - za) fits 9 bits (int8 or uint8): keep each product below 2^54 by giving up low multiplier bits when
        # the ratios differ by more than 2^20 (the smaller term is then far below half an output step).
        shift = int(min(max(sa, sb), min(sa, sb) + 20))
        ma, mb = _on_shift(int(ma), int(sa), shift), _on_shift(int(mb), int(sb), shift)
        return QAdd(int(zero_point_a), int(zero_point_b), ma, mb, shift, int(zero_point), int(lo), int(hi), dtype)

    def reference(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        total = (a.astype(np.int64) - self.zero_point_a) * self.multiplier_a
        total = total + (b.astype(np.int64) - self.zero_point_b) * self.multiplier_b
        return np.clip(round_shift(total, self.shift) + self.zero_point, self.lo, self.hi).astype(self.dtype)


@dataclass(frozen=True)
class QAddTFLite:
    """TFLite's int8 Add (reference_integer_ops::AddFunc, what TFLM and the TFLite interpreter compute):

    c = clamp(scale(scale((a - za) << 20, Ma, Ea) + scale((b - zb) << 20, Mb, Eb), M, E) + zp, lo, hi)

    `scale` is `tflite_scale` (Q31 multiplier, exponent <= 0), with the multipliers TFLite derives in double from
    the float32 scales (add.cc, CalculateOpDataAdd). Every intermediate fits int32, as in TFLite's int32 code.
    """

    zero_point_a: int
    zero_point_b: int
    multiplier_a: int
    exponent_a: int
    multiplier_b: int
    exponent_b: int
    output_multiplier: int
    output_exponent: int
    zero_point: int
    lo: int
    hi: int
    dtype: str = "int8"

    #: Both inputs are shifted left by this many bits before scaling (TFLite's int8 `left_shift`).
    LEFT_SHIFT = 20

    def swapped(self) -> QAddTFLite:
        """The same add with its operands exchanged."""
        return QAddTFLite(self.zero_point_b, self.zero_point_a, self.multiplier_b, self.exponent_b, self.multiplier_a,
                          self.exponent_a, self.output_multiplier, self.output_exponent, self.zero_point, self.lo,
                          self.hi, self.dtype)

    @staticmethod
    def from_scales(scale_a: float, zero_point_a: int, scale_b: float, zero_point_b: int, scale: float,
                    zero_point: int, lo: int, hi: int, dtype: str = "int8") -> QAddTFLite:
        """add.cc: twice the larger input scale, each ratio and the output's in double (the scales are float32)."""
        scale_a, scale_b, scale = (float(np.float32(s)) for s in (scale_a, scale_b, scale))
        twice_max = 2.0 * max(scale_a, scale_b)
        reals = (scale_a / twice_max, scale_b / twice_max, twice_max / ((1 << QAddTFLite.LEFT_SHIFT) * scale))
        if not all(0.0 < r < 1.0 for r in reals):  # TFLite's QuantizeMultiplierSmallerThanOneExp checks the same
            raise ValueError(f"add scales {scale_a}, {scale_b} -> {scale} are outside TFLite's integer add's range")
        (ma, ea), (mb, eb), (m, e) = ((int(v[0]) for v in tflite_multiplier(r)) for r in reals)
        return QAddTFLite(int(zero_point_a), int(zero_point_b), ma, ea, mb, eb, m, e, int(zero_point), int(lo),
                          int(hi), dtype)

    def reference(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        scaled_a = tflite_scale((a.astype(np.int64) - self.zero_point_a) << self.LEFT_SHIFT, self.multiplier_a,
                                self.exponent_a)
        scaled_b = tflite_scale((b.astype(np.int64) - self.zero_point_b) << self.LEFT_SHIFT, self.multiplier_b,
                                self.exponent_b)
        total = tflite_scale(scaled_a + scaled_b, self.output_multiplier, self.output_exponent) + self.zero_point
        return np.clip(total, self.lo, self.hi).astype(self.dtype)


#: A residual or elementwise add, in onnxruntime's arithmetic or TFLite's.
AddOp = QAdd | QAddTFLite
_ADD_KINDS = {kind.__name__: kind for kind in (QAdd, QAddTFLite)}


def add_fields(op: AddOp) -> list:
    """The add as JSON-able plain values (its kind, then its fields), for the PrimFunc attributes later passes read."""
    return [type(op).__name__, *op.__dict__.values()]


def add_from_fields(fields) -> AddOp:
    """The add `add_fields` wrote."""
    return _ADD_KINDS[fields[0]](*fields[1:])


@dataclass(frozen=True)
class QAvgPool:
    """Average pooling without padding (global when kernel == the input's H, W): int32 window sum, requantized.

    acc = sum(x) - count * input_zero_point; the requant scale is sx / (sy * count) in float32, as onnxruntime's
    QLinearGlobalAveragePool computes it.
    """

    kernel: tuple[int, int]
    strides: tuple[int, int]
    input_zero_point: int
    out_shape: tuple[int, ...]  # (N, C, OH, OW), or (N, C) for a mean without keepdims
    requant: Requant

    @property
    def count(self) -> int:
        return self.kernel[0] * self.kernel[1]

    def reference(self, x: np.ndarray) -> np.ndarray:
        windows = _windows(x.astype(np.int64), self.kernel, self.strides, (1, 1))
        acc = windows.sum(axis=(4, 5)) - self.count * self.input_zero_point
        return self.requant.apply(acc).reshape(self.out_shape)


@dataclass(frozen=True)
class QAvgPoolTFLite:
    """TFLite's int8 average pooling without padding (reference_integer_ops::AveragePool): the mean of the raw
    integers, `(sum +- count / 2) / count` truncated toward zero (half away from zero), clamped. Input and output
    share their (scale, zero point), as TFLite's AVERAGE_POOL_2D requires, so no rescaling takes place.
    """

    kernel: tuple[int, int]
    strides: tuple[int, int]
    out_shape: tuple[int, ...]  # (N, C, OH, OW)
    lo: int
    hi: int
    dtype: str = "int8"

    @property
    def count(self) -> int:
        return self.kernel[0] * self.kernel[1]

    def reference(self, x: np.ndarray) -> np.ndarray:
        total = _windows(x.astype(np.int64), self.kernel, self.strides, (1, 1)).sum(axis=(4, 5))
        half = self.count // 2
        mean = np.where(total > 0, (total + half) // self.count, -((half - total) // self.count))
        return np.clip(mean, self.lo, self.hi).astype(self.dtype).reshape(self.out_shape)


@dataclass(frozen=True)
class QSoftmax:
    """Softmax over the last axis, integer only.

    t = table[max(x) - x] with table[d] = round(2^K exp(-sx d)); y = clamp(round(t * 2^numerator_shift /
    (sum(t) * denominator_multiplier)) + zero_point, lo, hi), where denominator_multiplier * 2^-numerator_shift
    is the float32 output scale exactly.
    """

    table: np.ndarray  # int32 (256,), at most 2^30
    numerator_shift: int
    denominator_multiplier: int
    zero_point: int
    lo: int
    hi: int
    dtype: str = "int8"

    @staticmethod
    def from_scales(input_scale: float, output_scale: float, zero_point: int, lo: int, hi: int, length: int,
                    dtype: str = "int8") -> QSoftmax:
        mantissa, exponent = np.frexp(np.float64(np.float32(output_scale)))
        denominator_multiplier = int(mantissa * (1 << 24))
        numerator_shift = 24 - int(exponent)
        while denominator_multiplier % 2 == 0 and numerator_shift > 0:
            denominator_multiplier //= 2
            numerator_shift -= 1
        # numerator t << shift and denominator sum(t) * multiplier must both stay below 2^62.
        bits = min(30, 62 - numerator_shift, 62 - denominator_multiplier.bit_length() - int(length).bit_length())
        if numerator_shift < 0 or bits < 16:
            raise ValueError(f"softmax output scale {output_scale} is outside the integer softmax's range")
        distance = np.arange(256, dtype=np.float64)  # max(x) - x of an int8 or uint8 row
        table = np.rint(np.exp(-np.float64(np.float32(input_scale)) * distance) * (1 << bits)).astype(np.int32)
        return QSoftmax(table, numerator_shift, denominator_multiplier, int(zero_point), int(lo), int(hi), dtype)

    def reference(self, x: np.ndarray) -> np.ndarray:
        x = x.astype(np.int64)
        t = self.table.astype(np.int64)[x.max(axis=-1, keepdims=True) - x]
        numerator = t << self.numerator_shift
        denominator = t.sum(axis=-1, keepdims=True) * self.denominator_multiplier
        y = rounding_divide(numerator, denominator) + self.zero_point
        return np.clip(y, self.lo, self.hi).astype(self.dtype)


@dataclass(frozen=True)
class QRescale:
    """y = requant(x - input_zero_point): new quantization parameters and/or a fused clamp (ReLU6 between QDQs).

    The requant scale is sx / sy in float32 (onnxruntime runs this pattern in float).
    """

    input_zero_point: int
    requant: Requant  # per tensor

    def reference(self, x: np.ndarray) -> np.ndarray:
        return self.requant.apply(x.astype(np.int64) - self.input_zero_point)


@dataclass(frozen=True)
class QConcat:
    """Concatenation along `axis` of integer inputs with their own (scale, zero point) onto the output's.

    Input i is rescaled like QRescale, `requants[i](x_i - input_zero_points[i])` with the scale s_i / s_y in
    float32; `requants[i]` is None where (s_i, z_i) == (s_y, z_y): a plain copy (clamped to lo/hi, a fused ReLU).
    """

    axis: int
    input_zero_points: tuple[int, ...]
    requants: tuple[Requant | None, ...]  # per input, per tensor
    lo: int
    hi: int
    dtype: str = "int8"

    @staticmethod
    def from_scales(axis: int, inputs: list[tuple[float, int]], scale: float, zero_point: int, lo: int,
                    hi: int, dtype: str = "int8") -> QConcat:
        requants = tuple(None if (np.float32(s), int(z)) == (np.float32(scale), int(zero_point))
                         else Requant.from_scale(np.float32(s) / np.float32(scale), zero_point, lo, hi, dtype)
                         for s, z in inputs)
        return QConcat(int(axis), tuple(int(z) for _, z in inputs), requants, int(lo), int(hi), dtype)

    @property
    def multipliers(self) -> np.ndarray:
        """int32 (n,): each input's multiplier (0 for a copy), a kernel constant."""
        return np.array([0 if r is None else int(r.multiplier[0]) for r in self.requants], np.int32)

    @property
    def shifts(self) -> np.ndarray:
        """int32 (n,): each input's shift (1 for a copy), a kernel constant."""
        return np.array([1 if r is None else int(r.shift[0]) for r in self.requants], np.int32)

    def reference(self, *inputs: np.ndarray) -> np.ndarray:
        parts = [np.clip(x.astype(np.int64), self.lo, self.hi).astype(self.dtype) if r is None
                 else r.apply(x.astype(np.int64) - z) for x, z, r in zip(inputs, self.input_zero_points, self.requants)]
        return np.concatenate(parts, axis=self.axis)


@dataclass(frozen=True)
class QMaxPool:
    """Max pooling of the integers: dequantize is increasing (scale > 0), so max commutes with it.

    Padding (and a ceil-mode window's overhang) reads the input type's minimum, which never wins over the real
    element every window holds (ONNX pads MaxPool with -inf). `requant` None: the output has the input's (scale,
    zero point) and y = clamp(max, lo, hi); else y = requant(max - input_zero_point), QRescale's arithmetic.
    """

    kernel: tuple[int, int]
    strides: tuple[int, int]
    padding: tuple[int, int, int, int]  # top, left, bottom, right
    dilation: tuple[int, int]
    input_zero_point: int
    out_shape: tuple[int, int, int, int]  # (N, C, OH, OW); with ceil mode the last windows overhang the padding
    requant: Requant | None  # per tensor
    lo: int
    hi: int
    dtype: str = "int8"

    def reference(self, x: np.ndarray) -> np.ndarray:
        (kh, kw), (sh, sw), (dh, dw) = self.kernel, self.strides, self.dilation
        top, left, bottom, right = self.padding
        oh, ow = self.out_shape[2:]
        bottom = max(bottom, (oh - 1) * sh + dh * (kh - 1) + 1 - x.shape[2] - top)  # ceil-mode overhang
        right = max(right, (ow - 1) * sw + dw * (kw - 1) + 1 - x.shape[3] - left)
        padded = _padded(x, (top, left, bottom, right), int(np.iinfo(x.dtype).min))
        window_max = _windows(padded, self.kernel, self.strides, self.dilation)[:, :, :oh, :ow].max(axis=(4, 5))
        if self.requant is None:
            return np.clip(window_max, self.lo, self.hi).astype(self.dtype)
        return self.requant.apply(window_max - self.input_zero_point)


IntegerOp = (QConv2d | QMatMul | QAdd | QAddTFLite | QAvgPool | QAvgPoolTFLite | QSoftmax | QRescale | QConcat
             | QMaxPool)

#: An int8 layout change a kernel applies to its input while reading it: ("permute_dims", axes), ("reshape", shape)
#: or ("strided_slice", (axes, begins, ends, strides)).
View = tuple[str, tuple]


def apply_views(x: np.ndarray, views: tuple[View, ...]) -> np.ndarray:
    """`x` seen through `views`, in order (NumPy's transpose, reshape and slicing are the Relax ops' semantics)."""
    for kind, value in views:
        if kind == "permute_dims":
            x = np.transpose(x, value)
        elif kind == "reshape":
            x = np.reshape(x, value)
        else:
            index = [slice(None)] * x.ndim
            for axis, begin, end, stride in zip(*value):
                index[axis] = slice(begin, end, stride)
            x = x[tuple(index)]
    return x


@dataclass(frozen=True)
class Source:
    """A kernel input: the int8 variable `var`, read through `views` (an absorbed transpose/reshape)."""

    var: str
    views: tuple[View, ...] = ()


@dataclass(frozen=True)
class Fold:
    """`var` (the int8 result of a quantize) = out_views(op(sources)); op None: the source itself (a layout change)."""

    var: str
    op: IntegerOp | None
    sources: tuple[Source, ...]
    out_views: tuple[View, ...] = ()  # layout changes between the op and its quantize (e.g. Flatten after a pool)

    def reference(self, *inputs: np.ndarray) -> np.ndarray:
        """The fold's output from its sources' values (before their views)."""
        seen = [apply_views(x, s.views) for x, s in zip(inputs, self.sources)]
        result = seen[0] if self.op is None else self.op.reference(*seen)
        return apply_views(result, self.out_views)
