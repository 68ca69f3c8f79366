"""The integer kernels of the int8 path as TensorIR: one PrimFunc per `tvm_pipeline.int8_ops` fold.

`kernel(fold, input_shapes, out_shape)` writes the fold's arithmetic (see int8_ops) as TE stages:

    seen      = permute_dims / reshape of each int8 input            (absorbed layout changes; inlined)
    acc       = bias + sum(int32(seen_padded) * int32(w))            (conv / matmul / pool: the reduction; a dense
                                                                      conv's starts from the bias)
    out       = clamp(round_shift(int64(acc) * M[c], S[c]) + zp, lo, hi) as int8/uint8 (the epilogue)

Inputs and outputs have the graph's types (int8 or uint8 activations, int8 weights): the arithmetic reads
`q - zp` either way.

The default schedule (schedules/default.py) inlines the views and the padding condition into the reduction and
computes the epilogue per output element, so a kernel holds no full-size int32 buffer. Every constant (weights,
bias, multipliers, shifts, the softmax table) is a kernel parameter, which lowering stores in flash.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
from tvm import te, tirx, topi

from tvm_pipeline.int8_ops import (AddOp, Fold, QAdd, QAddTFLite, QAvgPool, QAvgPoolTFLite, QConcat, QConv2d, QMatMul,
                                   QMaxPool, QRescale, QSoftmax, Requant, add_fields, add_from_fields)
from tvm_pipeline import tvm_adapter
from tvm_pipeline.tvm_adapter import TensorType

#: Name prefix of the kernels the fold-qdq pass creates.
KERNEL_PREFIX = "int8"

#: PrimFunc attribute on each add kernel that reads its inputs without views: the add's `add_fields` (JSON), so
#: that patch-stage can build the same add for a patch.
ADD_ATTR = "tvmp.int8_add"


def add_of(func) -> AddOp | None:
    """The add (QAdd or QAddTFLite) of a kernel carrying ADD_ATTR, None for any other PrimFunc."""
    attrs = getattr(func, "attrs", None)
    if attrs is None or ADD_ATTR not in attrs:
        return None
    return add_from_fields(json.loads(str(attrs[ADD_ATTR])))


def _i64(value: int) -> tirx.PrimExpr:
    return tirx.const(int(value), "int64")


def _round_shift(value: tirx.PrimExpr, shift: tirx.PrimExpr) -> tirx.PrimExpr:
    """round(value / 2^shift), ties to even, on int64 (shift >= 1)."""
    one = _i64(1)
    return (value + ((one << (shift - one)) - one) + ((value >> shift) & one)) >> shift


def _clamp(value: tirx.PrimExpr, lo: int, hi: int, dtype: str) -> tirx.PrimExpr:
    """clamp(value, lo, hi) stored as `dtype` (exact: [lo, hi] lies within it and within value's type)."""
    bound = str(value.ty.dtype)
    return tirx.max(tirx.min(value, tirx.const(hi, bound)), tirx.const(lo, bound)).astype(dtype)


def _requantize(acc: tirx.PrimExpr, multiplier: tirx.PrimExpr, shift: tirx.PrimExpr, requant: Requant,
                known: tuple[int, int, int] | None = None, nudge: tirx.PrimExpr | None = None) -> tirx.PrimExpr:
    """The epilogue: |acc| < 2^31 and multiplier < 2^31, so the int64 product cannot overflow.

    `known` = (bound on |acc|, smallest and largest shift), known at compile time, selects cheaper exact forms;
    `nudge`: a `rounding_table`'s column (which carries the output zero point, see there).
    A requant in TFLite's arithmetic: `multiplier` is Q31, `shift` TFLite's signed exponent (`_tflite_scale`).
    onnxruntime's (round half to even at a right shift): with every shift >= 32 (`prescaled`), the rounding runs on
    the product's high word, `((p + 2^(s-1) - 1 + bit) >> 32) >> (s - 32)` with bit = (p >> s) & 1, instead of three
    variable 64-bit shifts (~6 instructions each on a 32-bit core).
    """
    if known is not None and known[1] == known[2]:  # one shift for every channel: a constant (TVM folds its arithmetic)
        shift = _i32(known[1])
    if requant.arithmetic == "tflite":
        scaled = _tflite_scale(acc, multiplier, shift, known, nudge)
        zero_point = 0 if nudge is not None else requant.zero_point  # a rounding table's nudge carries it
        return _clamp(scaled + _i32(zero_point), requant.lo, requant.hi, requant.dtype)
    if known is not None and known[1] >= 32:
        # clamped to the shifts `prescaled` gives ([32, 62]): TVM's bound analysis of a shift by an unbounded amount
        # let its simplifier drop the int8 clamp below (wrong outputs)
        right = tirx.max(tirx.min(shift.astype("int32"), _i32(62)), _i32(32)) - _i32(32)
        operand = acc.astype("int32")
        if known[0] < 1 << 30:  # 2 acc m / 2^(s+1): the same value; and with acc << 1 (not acc) under the int64
            # cast, TVM's simplifier does not split the cast over acc + bias (two 64-bit adds and a 64-bit multiply)
            operand, right = operand << _i32(1), right + _i32(1)
        product = operand.astype("int64") * multiplier.astype("int64")
        bit = ((product >> _i64(32)).astype("int32") >> right) & _i32(1)
        nudge = (_i64(1) << (right + _i32(31)).astype("int64")) - _i64(1) + bit.astype("int64")
        rounded = ((product + nudge) >> _i64(32)).astype("int32") >> right
        return _clamp(rounded + _i32(requant.zero_point), requant.lo, requant.hi, requant.dtype)
    product = acc.astype("int64") * multiplier.astype("int64")
    return _clamp(_round_shift(product, shift.astype("int64")) + _i64(requant.zero_point), requant.lo, requant.hi,
                  requant.dtype)


def prescaled(multiplier: np.ndarray, shift: np.ndarray, arithmetic: str) -> tuple[np.ndarray, np.ndarray]:
    """onnxruntime-arithmetic (multiplier, shift) with every shift raised to at least 32 and the multiplier doubled
    as often (the same products, so the same roundings), where every multiplier stays below 2^31 (scales below 0.5):
    then `_requantize` rounds on the product's high word. Where the multipliers allow it, every channel gets the
    largest shift (a constant the epilogue folds: no per-channel shift to load and clamp, no variable 64-bit shift).
    Otherwise (and for TFLite's arithmetic) unchanged."""
    if arithmetic == "tflite":
        return multiplier, shift
    live = multiplier != 0  # a flushed channel gives 0 whatever its shift
    target = max(32, int(shift[live].max())) if live.any() else 32
    scaled = np.where(live, multiplier.astype(np.int64) << np.maximum(target - shift.astype(np.int64), 0), 0)
    if np.all(scaled < 1 << 31):  # one shift for all: a constant in the epilogue
        return scaled.astype(multiplier.dtype), np.full_like(shift, target)
    up = np.maximum(32 - shift.astype(np.int64), 0)
    scaled = multiplier.astype(np.int64) << up
    if np.any(scaled >= 1 << 31):
        return multiplier, shift
    return scaled.astype(multiplier.dtype), (shift + up).astype(shift.dtype)


def rescale_bound(weight: np.ndarray, bias: np.ndarray, x_dtype: str, shift: np.ndarray) -> tuple[int, int, int]:
    """`_requantize`'s `known` for a conv: (bound on |acc + bias|, smallest and largest shift); the bound is per output
    channel the raw input's largest magnitude (its zero point is folded into the bias) times sum |w|, plus |bias|."""
    largest = 255 if x_dtype == "uint8" else 128
    weight_sums = np.abs(weight.astype(np.int64)).reshape(len(bias), -1).sum(axis=1)
    return (int(np.max(largest * weight_sums + np.abs(bias.astype(np.int64)))), int(np.min(shift)),
            int(np.max(shift)))


def _inside(y: tirx.PrimExpr, height: int, x: tirx.PrimExpr, width: int) -> tirx.PrimExpr:
    """(y, x) lies inside the input plane. Each bound is `likely`, so LoopPartition (tvm_adapter.codegen) splits the
    border rows and columns off and the interior loops run without the check: IC int8 in 0.7x the instructions."""
    return tirx.all(*(tirx.likely(c) for c in (y >= 0, y < height, x >= 0, x < width)))


def _rescale(value: tirx.PrimExpr, input_zero_point: int, consts: dict[str, te.Tensor], k: int,
             requant: Requant) -> tirx.PrimExpr:
    """An integer of another (scale, zero point) onto the output's: requantize `value - input_zero_point` with the
    k-th multiplier and shift constants (QRescale's arithmetic; max pooling and concat use it too)."""
    zero_point = tirx.const(input_zero_point, "int32")
    return _requantize(value.astype("int32") - zero_point, consts["multiplier"][k], consts["shift"][k], requant)


def _channel(tensor: te.Tensor, index):
    return tensor[index] if int(tensor.shape[0]) > 1 else tensor[0]


def _i32(value: int) -> tirx.PrimExpr:
    return tirx.const(int(value), "int32")


def _closed_form(known: tuple[int, int, int] | None) -> bool:
    """Whether `_tflite_scale` takes the SMMULR form for a value and exponents bounded by `known`."""
    return known is not None and known[0] << max(known[2], 0) < 1 << 30


def _tflite_scale(x: tirx.PrimExpr, multiplier, exponent, known: tuple[int, int, int] | None = None,
                  nudge: tirx.PrimExpr | None = None) -> tirx.PrimExpr:
    """int8_ops.tflite_scale (TFLite's MultiplyByQuantizedMultiplier) of an int32 value, as int32.

    `multiplier`/`exponent`: kernel constants (loaded per channel) or Python ints (folded by the simplifier). Written
    as TFLite's own int32 code (one 32x32->64 multiply, then RoundingDivideByPOT's mask and threshold), not as one
    int64 closed form: a 32-bit core pays ~6 instructions for each variable int64 shift, and the int64 form spent
    ~70 instructions an output, this one ~20. The shifted value stays below 2^31 (as in TFLite) and m < 2^31, so
    the product fits int64; `(p + 2^30) >> 31` is TFLite's nudged, truncated SaturatingRoundingDoublingHighMul.

    `known` = (x_bound, smallest, largest exponent): |x| <= x_bound and the exponents' range, known at compile time.
    They select cheaper forms that compute the same bits:
    - no exponent > 0: no left shift;
    - |x << left| < 2^30: the high half as `(2x m + 2^31) >> 32` (= `(x m + 2^30) >> 31`), one SMMULR on a DSP core
      (tvm_adapter.codegen);
    - and every exponent < 0 (right >= 1): RoundingDivideByPOT as `(h + 2^(right-1) + (h >> 31)) >> right` (int8_ops'
      closed form; |h| <= |x| < 2^30, so the sum cannot overflow) instead of the mask and threshold; `nudge`:
      2^(right-1) loaded from a constant (`rounding_table`: plus the output zero point << right, so the result is
      already offset by it; `_requantize` then adds none) instead of computed.
    """
    exponent = _i32(exponent) if isinstance(exponent, int) else exponent.astype("int32")
    multiplier = tirx.const(multiplier, "int64") if isinstance(multiplier, int) else multiplier.astype("int64")
    zero = _i32(0)
    most = None if known is None else known[2]
    x = x.astype("int32")
    if most is not None and most <= 0:
        right = zero - exponent
    else:
        right = tirx.max(zero - exponent, zero)
        x = x << tirx.max(exponent, zero)
    if _closed_form(known):
        # x << 1, not x * 2: TVM's simplifier distributes an int64 cast over `(acc + bias) * 2` (two int64 adds)
        high = (((x << _i32(1)).astype("int64") * multiplier + _i64(1 << 31)) >> _i64(32)).astype("int32")
        if most < 0:
            nudge = _i32(1) << (right - _i32(1)) if nudge is None else nudge
            return (high + nudge + (high >> _i32(31))) >> right
    else:
        high = ((x.astype("int64") * multiplier + _i64(1 << 30)) >> _i64(31)).astype("int32")
    # (1 << right) - 1 in uint32: right may be 31, where int32's 1 << 31 overflows
    mask = ((tirx.const(1, "uint32") << right.astype("uint32")) - tirx.const(1, "uint32")).astype("int32")
    threshold = (mask >> _i32(1)) - (high >> _i32(31))  # +1 for a negative value: ties round away from zero
    return (high >> right) + ((high & mask) > threshold).astype("int32")


def _add_tflite(op: QAddTFLite, a: tirx.PrimExpr, b: tirx.PrimExpr) -> tirx.PrimExpr:
    """int8_ops.QAddTFLite."""
    left = _i32(QAddTFLite.LEFT_SHIFT)
    bound = 255 << QAddTFLite.LEFT_SHIFT  # an operand less its zero point lies in [-255, 255]
    scaled_a = _tflite_scale((a.astype("int32") - _i32(op.zero_point_a)) << left, op.multiplier_a, op.exponent_a,
                             (bound, op.exponent_a, op.exponent_a))
    scaled_b = _tflite_scale((b.astype("int32") - _i32(op.zero_point_b)) << left, op.multiplier_b, op.exponent_b,
                             (bound, op.exponent_b, op.exponent_b))
    # |each scaled operand| <= |its input|: the multiplier is below 1
    total = _tflite_scale(scaled_a + scaled_b, op.output_multiplier, op.output_exponent,
                          (2 * bound, op.output_exponent, op.output_exponent)) + _i32(op.zero_point)
    return _clamp(total, op.lo, op.hi, op.dtype)


def _add(op: AddOp, a: tirx.PrimExpr, b: tirx.PrimExpr) -> tirx.PrimExpr:
    """The add's result for one element pair, in its own arithmetic (onnxruntime's QAdd or TFLite's)."""
    if isinstance(op, QAddTFLite):
        return _add_tflite(op, a, b)
    total = (a.astype("int64") - _i64(op.zero_point_a)) * _i64(op.multiplier_a)
    total = total + (b.astype("int64") - _i64(op.zero_point_b)) * _i64(op.multiplier_b)
    return _clamp(_round_shift(total, _i64(op.shift)) + _i64(op.zero_point), op.lo, op.hi, op.dtype)


def _sums_from_bias(op) -> bool:
    """Whether the reduction starts from the bias instead of the epilogue adding it (one add an output fewer): a
    dense conv's. Measured on the emulated M7, not for depthwise convs (gcc then spilled in VWW's stride-2
    depthwise_inplace kernels, 1.29x the instructions, and KWS's depthwise frame grew: +4 B of peak SRAM) nor
    matmuls (AD's deepest frame grew: 1,712 -> 1,720 B of peak SRAM for 0.7 % fewer instructions)."""
    return isinstance(op, QConv2d) and op.groups == 1


def _qconv2d(op: QConv2d, x: te.Tensor, consts: dict[str, te.Tensor], skip: te.Tensor | None = None) -> te.Tensor:
    n, _, height, width = (int(d) for d in x.shape)
    out_c, group_c, kh, kw = op.weight.shape
    (sh, sw), (dh, dw), (pt, pl, pb, pr) = op.strides, op.dilation, op.padding
    oh = (height + pt + pb - dh * (kh - 1) - 1) // sh + 1
    ow = (width + pl + pr - dw * (kw - 1) - 1) // sw + 1
    per_group = out_c // op.groups
    w, bias = consts["weight"], consts["bias"]
    rc, ry, rx = te.reduce_axis((0, group_c), "rc"), te.reduce_axis((0, kh), "ry"), te.reduce_axis((0, kw), "rx")
    padded = x
    if any(op.padding):  # padding reads the input zero point: the bias holds -zp * sum(w)
        zero_point = tirx.const(op.input_zero_point, x.dtype)
        padded = te.compute((n, int(x.shape[1]), height + pt + pb, width + pl + pr), lambda b, c, y, xx: tirx.if_then_else(
            _inside(y - pt, height, xx - pl, width), x[b, c, y - pt, xx - pl], zero_point), name="pad")

    def tap(b, o, i, j):
        channel = rc if op.groups == 1 else o // per_group * group_c + rc  # no `o` in a dense conv's input index
        value = padded[b, channel, i * sh + ry * dh, j * sw + rx * dw]
        return value.astype("int32") * w[o, rc, ry, rx].astype("int32")

    acc = te.compute((n, out_c, oh, ow), lambda b, o, i, j: te.sum(tap(b, o, i, j), axis=[rc, ry, rx]), name="acc")

    known = rescale_bound(op.weight, op.bias, str(x.dtype), op.requant.shift)

    def epilogue(b, o, i, j):
        if ROUNDING in consts:  # (right shift, nudge) per channel: exponent = -right
            shift, nudge = _i32(0) - consts[ROUNDING][o, 0], consts[ROUNDING][o, 1]
        else:
            shift, nudge = _channel(consts["shift"], o), None
        total = acc[b, o, i, j] if _sums_from_bias(op) else acc[b, o, i, j] + bias[o]
        return _requantize(total, _channel(consts["multiplier"], o), shift, op.requant, known, nudge)

    if op.residual is None:
        return te.compute(acc.shape, epilogue, name="requantize")
    # a stage of its own: the add rescales the conv's value three times over, and as one expression tree TVM's
    # simplifier took ~60 s a kernel on it (a schedule that inlines it gets the tree back, as before)
    conv = te.compute(acc.shape, epilogue, name="conv_requantize")
    return te.compute(acc.shape, lambda b, o, i, j: _add(op.residual, conv[b, o, i, j], skip[b, o, i, j]),
                      name="requantize")


def _qmatmul(op: QMatMul, x: te.Tensor, consts: dict[str, te.Tensor]) -> te.Tensor:
    rows = int(x.shape[0])
    out_n, depth = op.weight.shape
    w, bias = consts["weight"], consts["bias"]
    k = te.reduce_axis((0, depth), "k")
    if op.spatial_sum:  # x is (M, K, H, W): sum the pooled window inside the accumulation
        ry, rx = te.reduce_axis((0, int(x.shape[2])), "ry"), te.reduce_axis((0, int(x.shape[3])), "rx")
        acc = te.compute((rows, out_n), lambda m, o: te.sum(
            x[m, k, ry, rx].astype("int32") * w[o, k].astype("int32"), axis=[k, ry, rx]), name="acc")
    else:
        acc = te.compute((rows, out_n), lambda m, o: te.sum(
            x[m, k].astype("int32") * w[o, k].astype("int32"), axis=k), name="acc")
    window = int(x.shape[2]) * int(x.shape[3]) if op.spatial_sum else 1  # inputs summed per weight
    known = rescale_bound(op.weight.astype(np.int64) * window, op.bias, str(x.dtype), op.requant.shift)
    return te.compute(acc.shape, lambda m, o: _requantize(
        acc[m, o] + bias[o], _channel(consts["multiplier"], o), _channel(consts["shift"], o), op.requant, known),
        name="requantize")


def _qadd(op: AddOp, a: te.Tensor, b: te.Tensor) -> te.Tensor:
    return te.compute(a.shape, lambda *i: _add(op, a[i], b[i]), name="add")


def _window_sum(op: QAvgPool | QAvgPoolTFLite, x: te.Tensor) -> te.Tensor:
    """The int32 sum of each pooling window of the raw integers (no padding: the pass folds unpadded pools only)."""
    n, c = (int(d) for d in x.shape[:2])
    (kh, kw), (sh, sw) = op.kernel, op.strides
    oh, ow = (int(x.shape[2]) - kh) // sh + 1, (int(x.shape[3]) - kw) // sw + 1
    ry, rx = te.reduce_axis((0, kh), "ry"), te.reduce_axis((0, kw), "rx")
    return te.compute((n, c, oh, ow), lambda b, ch, i, j: te.sum(
        x[b, ch, i * sh + ry, j * sw + rx].astype("int32"), axis=[ry, rx]), name="acc")


def _qavgpool(op: QAvgPool, x: te.Tensor, consts: dict[str, te.Tensor]) -> te.Tensor:
    acc = _window_sum(op, x)
    correction = tirx.const(op.count * op.input_zero_point, "int32")

    def out(*i):
        index = (*i, 0, 0) if len(op.out_shape) == 2 else i
        return _requantize(acc[index] - correction, consts["multiplier"][0], consts["shift"][0], op.requant)

    return te.compute(op.out_shape, out, name="requantize")


def _qavgpool_tflite(op: QAvgPoolTFLite, x: te.Tensor) -> te.Tensor:
    """int8_ops.QAvgPoolTFLite: the raw window sum, divided by count rounding half away from zero (TFLite's
    `(sum +- count / 2) / count`; a division by a constant, which the C compiler turns into a multiply)."""
    total = _window_sum(op, x)
    half, count = _i32(op.count // 2), _i32(op.count)

    def out(*i):
        value = total[i]
        rounded = tirx.truncdiv(tirx.if_then_else(value > _i32(0), value + half, value - half), count)
        return _clamp(rounded.astype("int64"), op.lo, op.hi, op.dtype)

    return te.compute(op.out_shape, out, name="mean")


def _qsoftmax(op: QSoftmax, x: te.Tensor, consts: dict[str, te.Tensor]) -> te.Tensor:
    shape, length = tuple(int(d) for d in x.shape), int(x.shape[-1])
    table = consts["table"]
    k1, k2 = te.reduce_axis((0, length), "k1"), te.reduce_axis((0, length), "k2")
    row_max = te.compute(shape[:-1], lambda *r: te.max(x[(*r, k1)].astype("int32"), axis=k1), name="row_max")
    total = te.compute(shape[:-1], lambda *r: te.sum(table[row_max[r] - x[(*r, k2)].astype("int32")].astype("int64"), axis=k2),
                       name="row_sum")

    def out(*i):
        numerator = table[row_max[i[:-1]] - x[i].astype("int32")].astype("int64") << _i64(op.numerator_shift)
        denominator = total[i[:-1]] * _i64(op.denominator_multiplier)
        quotient = tirx.truncdiv(numerator, denominator)  # both >= 0: truncation is floor
        twice_remainder = (numerator - quotient * denominator) * _i64(2)
        up = tirx.any(twice_remainder > denominator,
                      tirx.all(twice_remainder == denominator, (quotient & _i64(1)) == _i64(1)))
        rounded = quotient + tirx.if_then_else(up, _i64(1), _i64(0))
        return _clamp(rounded + _i64(op.zero_point), op.lo, op.hi, op.dtype)

    return te.compute(shape, out, name="softmax")


def _window_tap(tap: tirx.PrimExpr, start: tirx.PrimExpr, step: int, size: int) -> tirx.PrimExpr:
    """The tap of the window `start + r * step` nearest to `tap` that lies in [0, size) (`tap` itself if inside)."""
    first = start + tirx.floordiv(step - 1 - start, step) * step
    last = start + tirx.floordiv(size - 1 - start, step) * step
    return tirx.min(tirx.max(tap, first), last)


def _qmaxpool(op: QMaxPool, x: te.Tensor, consts: dict[str, te.Tensor]) -> te.Tensor:
    """Window maximum in the input's type; a read outside the input (padding, ceil-mode overhang) must never win.

    Such a read is redirected to the window's nearest tap inside the input (without dilation: the edge element),
    so the maximum is that of the window's real elements, what ONNX's -inf padding gives, and the loops carry no
    condition. fold-qdq only makes windows with at least one real element.
    """
    height, width = int(x.shape[2]), int(x.shape[3])
    (kh, kw), (sh, sw), (dh, dw), (pt, pl, _, _) = op.kernel, op.strides, op.dilation, op.padding
    _, _, oh, ow = op.out_shape
    overhangs = pt or pl or (oh - 1) * sh + dh * (kh - 1) >= height or (ow - 1) * sw + dw * (kw - 1) >= width
    ry, rx = te.reduce_axis((0, kh), "ry"), te.reduce_axis((0, kw), "rx")

    def tap(b, c, i, j):
        y, xx = i * sh + ry * dh - pt, j * sw + rx * dw - pl
        if overhangs:
            y, xx = _window_tap(y, i * sh - pt, dh, height), _window_tap(xx, j * sw - pl, dw, width)
        return x[b, c, y, xx]

    window_max = te.compute(op.out_shape, lambda b, c, i, j: te.max(tap(b, c, i, j), axis=[ry, rx]), name="max")
    if op.requant is None:
        return te.compute(op.out_shape, lambda *i: _clamp(window_max[i].astype("int64"), op.lo, op.hi, op.dtype),
                          name="clamp")
    return te.compute(op.out_shape, lambda *i: _rescale(window_max[i], op.input_zero_point, consts, 0, op.requant),
                      name="rescale")


def _qrescale(op: QRescale, x: te.Tensor, consts: dict[str, te.Tensor]) -> te.Tensor:
    return te.compute(x.shape, lambda *i: _rescale(x[i], op.input_zero_point, consts, 0, op.requant), name="rescale")


def _qconcat(op: QConcat, xs: list[te.Tensor], consts: dict[str, te.Tensor]) -> te.Tensor:
    """One stage: each output element reads its input's slice (nested by offset), rescaled or copied."""
    axis = op.axis
    sizes = [int(x.shape[axis]) for x in xs]
    offsets = np.cumsum([0, *sizes]).tolist()
    shape = list(int(d) for d in xs[0].shape)
    shape[axis] = offsets[-1]

    def part(k, i):
        index = (*i[:axis], i[axis] - offsets[k], *i[axis + 1:])
        value = xs[k][index]
        requant = op.requants[k]
        if requant is None:
            return _clamp(value.astype("int64"), op.lo, op.hi, op.dtype)
        return _rescale(value, op.input_zero_points[k], consts, k, requant)

    def out(*i):
        value = part(len(xs) - 1, i)
        for k in range(len(xs) - 2, -1, -1):
            value = tirx.if_then_else(i[axis] < offsets[k + 1], part(k, i), value)
        return value

    return te.compute(shape, out, name="concat")


def _canonical_channels(op: QConv2d | QMatMul) -> QConv2d | QMatMul:
    """`op` with constants rewritten so that the epilogue takes its cheap forms; outputs bit-identical. onnxruntime's
    arithmetic: shifts of at least 32 (`prescaled`). TFLite's (per-channel constants), the constants of channels that
    cannot change their output:

    - a flushed multiplier (0) gives 0 whatever the exponent: exponent -1 (no left shift, a right shift >= 1);
    - all-zero weights (pruned channels: TFLite files give them biases up to ~2^30, past the bound of the SMMULR
      form) make the output the constant c = requant(bias): bias 4 (c - zp), multiplier 2^30 and exponent -1 give it
      (SaturatingRoundingDoublingHighMul(4t, 2^30) = 2t, which the right shift halves exactly).
    """
    requant = op.requant
    if requant.arithmetic != "tflite":
        multiplier, shift = prescaled(requant.multiplier, requant.shift, requant.arithmetic)
        return replace(op, requant=replace(requant, multiplier=multiplier, shift=shift))
    if requant.multiplier.size == 1:
        return op
    multiplier, shift, bias = requant.multiplier.copy(), requant.shift.copy(), op.bias.copy()
    shift[multiplier == 0] = -1
    dead = ~np.any(op.weight.reshape(len(bias), -1), axis=1)
    if dead.any():
        constant = requant.apply(op.bias.astype(np.int64)[None, :])[0].astype(np.int32)
        bias[dead] = 4 * (constant[dead] - requant.zero_point)
        multiplier[dead], shift[dead] = 1 << 30, -1
    return replace(op, bias=bias, requant=replace(requant, multiplier=multiplier, shift=shift))


#: The name of a conv's (right shift, rounding nudge) table, the constant that replaces its shifts where
#: `rounding_table` gives one.
ROUNDING = "rounding"


def rounding_table(op: QConv2d, x_dtype: str) -> np.ndarray | None:
    """(C, 2) int32 rows (right, 2^(right-1) + (zero_point << right)) for a TFLite-arithmetic conv whose epilogue
    takes `_tflite_scale`'s closed form with per-channel exponents (all < 0; right = -exponent): the epilogue then
    loads both instead of computing them from the exponent per output (~3 instructions; with an int8_dsp register
    block over channels, every output), and the output zero point rides in the nudge, since
    `(v + zp * 2^right) >> right == (v >> right) + zp` (one add an output fewer). None where the exponents are one
    constant (folded), the closed form does not apply, or the sum could leave int32: it needs
    |h| + 2^(right-1) + |zp| 2^right < 2^31, where |h| (the high half) <= the bound on |acc + bias|."""
    shift = op.requant.shift
    known = rescale_bound(op.weight, op.bias, x_dtype, shift)
    if op.requant.arithmetic != "tflite" or known[1] == known[2] or known[2] >= 0 or not _closed_form(known):
        return None
    most = -known[1]  # the largest right shift
    if known[0] + (1 << (most - 1)) + (abs(op.requant.zero_point) << most) >= 1 << 31:
        return None
    right = -shift.astype(np.int64)
    return np.stack([right, (1 << (right - 1)) + (op.requant.zero_point << right)], axis=1).astype(np.int32)


def shifts_of(rounding_or_shift: np.ndarray) -> np.ndarray:
    """A conv kernel's per-channel exponents from its shift parameter or its `rounding_table`."""
    return -rounding_or_shift[:, 0] if rounding_or_shift.ndim == 2 else rounding_or_shift


def _constants(fold: Fold, x_dtype: str) -> dict[str, np.ndarray]:
    """The fold's constant parameters, in the order the kernel takes them."""
    op = fold.op
    if isinstance(op, QConv2d):
        table = rounding_table(op, x_dtype)
        return {"weight": op.weight, "bias": op.bias, "multiplier": op.requant.multiplier,
                **({"shift": op.requant.shift} if table is None else {ROUNDING: table})}
    if isinstance(op, QMatMul):
        return {"weight": op.weight, "bias": op.bias, "multiplier": op.requant.multiplier, "shift": op.requant.shift}
    if isinstance(op, (QAvgPool, QRescale)) or isinstance(op, QMaxPool) and op.requant is not None:
        return {"multiplier": op.requant.multiplier, "shift": op.requant.shift}
    if isinstance(op, QSoftmax):
        return {"table": op.table}
    if isinstance(op, QConcat):
        return {"multiplier": op.multipliers, "shift": op.shifts}
    return {}


def _view(tensor: te.Tensor, views) -> te.Tensor:
    for kind, value in views:
        if kind == "permute_dims":
            tensor = topi.transpose(tensor, list(value))
        elif kind == "reshape":
            tensor = topi.reshape(tensor, list(value))
        else:
            axes, begins, ends, strides = (list(v) for v in value)
            tensor = topi.strided_slice(tensor, begins, ends, strides, axes=axes)
    return tensor


def kernel(fold: Fold, input_types: list[TensorType], out_type: TensorType):
    """(PrimFunc, constants): the kernel `f(inputs..., constants..., out)` computing `fold`."""
    if isinstance(fold.op, (QConv2d, QMatMul)):
        fold = replace(fold, op=_canonical_channels(fold.op))
    inputs = [te.placeholder(t.shape, t.dtype, name=f"x{i}") for i, t in enumerate(input_types)]
    seen = [_view(t, s.views) for t, s in zip(inputs, fold.sources)]
    constants = _constants(fold, input_types[0].dtype)
    consts = {name: te.placeholder(value.shape, str(value.dtype), name=name) for name, value in constants.items()}
    op = fold.op
    if op is None:
        out = seen[0]
    elif isinstance(op, QRescale):
        out = _qrescale(op, seen[0], consts)
    elif isinstance(op, QConv2d):
        out = _qconv2d(op, seen[0], consts, seen[1] if op.residual is not None else None)
    elif isinstance(op, QMatMul):
        out = _qmatmul(op, seen[0], consts)
    elif isinstance(op, (QAdd, QAddTFLite)):
        out = _qadd(op, seen[0], seen[1])
    elif isinstance(op, QAvgPool):
        out = _qavgpool(op, seen[0], consts)
    elif isinstance(op, QAvgPoolTFLite):
        out = _qavgpool_tflite(op, seen[0])
    elif isinstance(op, QConcat):
        out = _qconcat(op, seen, consts)
    elif isinstance(op, QMaxPool):
        out = _qmaxpool(op, seen[0], consts)
    else:
        assert isinstance(op, QSoftmax)
        out = _qsoftmax(op, seen[0], consts)
    out = _view(out, fold.out_views)
    if op is None:  # a pure layout change: one copy stage
        seen_out = out
        out = te.compute(out.shape, lambda *i: seen_out[i], name="copy")
    computed = TensorType(tuple(int(d) for d in out.shape), str(out.dtype))
    if computed != out_type:
        raise ValueError(f"int8 kernel for {fold.var} computes {computed}, the graph expects {out_type}")
    func = te.create_prim_func([*inputs, *consts.values(), out], index_dtype_override="int64")
    if _sums_from_bias(op):
        func = tvm_adapter.start_reduction_from(func, "acc", "bias", 1)  # (b, o, i, j): o
    if isinstance(op, QConv2d):  # the conv's parameters, read back by reorder-bottleneck-int8
        from schedules.bottleneck_int8 import conv_attr
        func = func.with_attr(*conv_attr(fold))
    elif isinstance(op, (QAdd, QAddTFLite)) and not fold.out_views and not any(s.views for s in fold.sources):
        func = func.with_attr(ADD_ATTR, json.dumps(add_fields(op)))
    return func.with_attr("op_pattern", 8), list(constants.values())  # 8 = kOpaque: FuseOps leaves it alone
