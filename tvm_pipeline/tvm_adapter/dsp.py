"""Cortex-M DSP-extension dot products as TensorIR tensor intrinsics, and the C helpers kernels call.

`dot4_intrin(dtype)` names a tensor intrinsic that `Schedule.tensorize` puts in place of a 4-long int8 dot product
accumulated into an int32:

    for k in 0..4:  acc += int32(a[k]) * int32(w[k])          (a: int8 or uint8 activations, w: int8 weights)
    ->              acc = tvmp_dot4_s8(&a[0], &w[0], acc)        (a C call; `lower_to_c` adds its definition)

`strided_dot4_intrin(dtype)` is the same product over activations a stride apart (`a[k * stride]`: one pixel's
channels in an NCHW tensor), as `tvmp_dot4_strided_s8(&a[0], stride, &w[0], acc)`.

`dot4_intrin(dtype, wide=True)` is the same product over activations already widened to int16 and stored
interleaved, (a0, a2, a1, a3), as SXTB16 pairs the weight bytes: two word loads and no widening of its own,
`tvmp_dot4_i16(&a[0], &w[0], acc)` (an im2col buffer filled once and read by every output channel).
`packed=True`: the weights too are int16 pairs in that order (a constant rewritten at compile time:
tvm_adapter.prepack), `tvmp_dot4_s8_w16` / `tvmp_dot4_i16_w16`: the weights' two words are SMLAD operands as loaded.

`row3_intrin(dtype, 2)` is one row of a 3-wide depthwise window under two neighbouring output pixels (stride 1):

    for p in 0..2, r in 0..3:  acc[p] += int32(a[p + r]) * int32(w[r])
    ->                         tvmp_row3x2_s8(&a[0], &w[0], &acc[0])   (one word load, 2 SXTB16, 2 SMLAD, 2 SMLAxy)

`row3_intrin(dtype, 1)` is the same row under one pixel, `tvmp_row3x1_s8` (one word load, 2 SXTB16, SMLAD, SMLABB):
its word load reads a[3] too, which it does not use, so the caller's rows need one byte after the window's last.

On a core with the DSP extension (Cortex-M4, M7, M33, M55: gcc defines __ARM_FEATURE_DSP) the helper loads each
operand's four bytes as one word, widens them to two pairs of int16 with SXTB16 (UXTB16 for uint8) and accumulates
both pairs with two SMLADs: 8 instructions for 4 MACs, and neighbours in a register block share the loads and
widenings (a 2 x 2 block: 20 instructions for 16 MACs). Elsewhere (the host build, a Cortex-M0+) it is plain C.
Either way the products and sums are the scalar loop's (SMLAD's additions wrap like C's int32 ones), so results are
bit-identical to the scalar kernels.

The C code generator also prints an int32 clamp to [-128, 127] or [0, 255] (a requantization's last step) as a call
to `tvmp_ssat8` / `tvmp_usat8`: one SSAT / USAT where the core saturates (__ARM_FEATURE_SAT), min/max elsewhere;
and `int32((int64(a) * int64(b) + 2^31) >> 32)` (a TFLite rescale's high half) as `tvmp_smmulr`: one SMMULR.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from tvm import s_tir
from tvm.script import tirx as T

#: Activation dtype -> its letters in helper names.
_LETTERS = {"int8": "s8", "uint8": "u8"}

#: Letters -> how a helper widens such a word (SXTB16 sign-extends bytes 0 and 2, ROR #8: 1 and 3; UXTB16
#: zero-extends them) and the C type of its elements.
_WIDEN = {"s8": ("sxtb16", "int8_t"), "u8": ("uxtb16", "uint8_t")}

#: The same for activations a stride apart.
_STRIDED_DOT4 = {"int8": ("tvmp.dot4_strided_s8s8", "tvmp_dot4_strided_s8"),
                 "uint8": ("tvmp.dot4_strided_u8s8", "tvmp_dot4_strided_u8")}

#: ... and for one 3-wide depthwise row under `pixels` (1 or 2) output pixels: tvmp_row3x{pixels}_{letters}.
_ROW3_PIXELS = (1, 2)

_registered: set[str] = set()


def _dot4_functions(dtype: str, helper: str, wide: bool, packed: bool):
    """(description, implementation) PrimFuncs of the 4-long dot product of `dtype` activations and int8 weights.

    `wide`: the activations are held in an int16 buffer (`Schedule.unsafe_set_dtype`: each read narrows back to
    `dtype`, lossless) laid out (2, 2) as a[k % 2, k // 2], i.e. (a0, a2, a1, a3) in memory; `packed`: so are the
    weights (an int16 constant rewritten at compile time, see tvm_adapter.prepack)."""
    a_shape, a_dtype = ((2, 2), "int16") if wide else ((4,), dtype)
    w_shape, w_dtype = ((2, 2), "int16") if packed else ((4,), "int8")

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, w: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, a_shape, a_dtype, offset_factor=1)
        W = T.match_buffer(w, w_shape, w_dtype, offset_factor=1)
        C = T.match_buffer(c, (1,), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0], A[0:2, 0:2] if wide else A[0:4], W[0:2, 0:2] if packed else W[0:4])
            T.writes(C[0])
            for k in T.serial(0, 4):
                with T.sblock("update"):
                    vk = T.axis.remap("R", [k])
                    C[0] = C[0] + (T.Cast("int32", T.Cast(dtype, A[vk % 2, vk // 2])) if wide
                                   else T.Cast("int32", A[vk])) * \
                        (T.Cast("int32", T.Cast("int8", W[vk % 2, vk // 2])) if packed else T.Cast("int32", W[vk]))

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, w: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, a_shape, a_dtype, offset_factor=1)
        W = T.match_buffer(w, w_shape, w_dtype, offset_factor=1)
        C = T.match_buffer(c, (1,), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0], A[0:2, 0:2] if wide else A[0:4], W[0:2, 0:2] if packed else W[0:4])
            T.writes(C[0])
            C[0] = T.call_extern("int32", helper, A.access_ptr("r"), W.access_ptr("r"), C[0])

    return desc, impl


def _strided_dot4_functions(dtype: str, helper: str):
    """(description, implementation) PrimFuncs of the 4-long dot product whose activations lie `stride` elements
    apart (the channels of one pixel of an NCHW tensor; the region's trailing dims are the pixel's)."""

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, w: T.handle, c: T.handle) -> None:
        s0, s1, s2 = T.int64(), T.int64(), T.int64()
        A = T.match_buffer(a, (4, 1, 1), dtype, strides=[s0, s1, s2], offset_factor=1)
        W = T.match_buffer(w, (4,), "int8", offset_factor=1)
        C = T.match_buffer(c, (1,), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0], A[0:4, 0, 0], W[0:4])
            T.writes(C[0])
            for k in T.serial(0, 4):
                with T.sblock("update"):
                    vk = T.axis.remap("R", [k])
                    C[0] = C[0] + T.Cast("int32", A[vk, 0, 0]) * T.Cast("int32", W[vk])

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, w: T.handle, c: T.handle) -> None:
        s0, s1, s2 = T.int64(), T.int64(), T.int64()
        A = T.match_buffer(a, (4, 1, 1), dtype, strides=[s0, s1, s2], offset_factor=1)
        W = T.match_buffer(w, (4,), "int8", offset_factor=1)
        C = T.match_buffer(c, (1,), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0], A[0:4, 0, 0], W[0:4])
            T.writes(C[0])
            C[0] = T.call_extern("int32", helper, A.access_ptr("r"), T.Cast("int32", s0), W.access_ptr("r"), C[0])

    return desc, impl


def _row3_functions(dtype: str, helper: str, pixels: int):
    """(description, implementation) PrimFuncs of one 3-tap row under `pixels` output pixels a column apart (a
    single pixel's description has no pixel loop: the schedule tensorizes its tap loop)."""

    @T.prim_func(s_tir=True)
    def desc_pair(a: T.handle, w: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (4,), dtype, offset_factor=1)
        W = T.match_buffer(w, (3,), "int8", offset_factor=1)
        C = T.match_buffer(c, (2,), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:2], A[0:4], W[0:3])
            T.writes(C[0:2])
            for p, r in T.grid(2, 3):
                with T.sblock("update"):
                    vp, vr = T.axis.remap("SR", [p, r])
                    C[vp] = C[vp] + T.Cast("int32", A[vp + vr]) * T.Cast("int32", W[vr])

    @T.prim_func(s_tir=True)
    def desc_single(a: T.handle, w: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (3,), dtype, offset_factor=1)
        W = T.match_buffer(w, (3,), "int8", offset_factor=1)
        C = T.match_buffer(c, (1,), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0], A[0:3], W[0:3])
            T.writes(C[0])
            for r in T.serial(0, 3):
                with T.sblock("update"):
                    vr = T.axis.remap("R", [r])
                    C[0] = C[0] + T.Cast("int32", A[vr]) * T.Cast("int32", W[vr])

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, w: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (pixels + 2,), dtype, offset_factor=1)
        W = T.match_buffer(w, (3,), "int8", offset_factor=1)
        C = T.match_buffer(c, (pixels,), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:pixels], A[0:pixels + 2], W[0:3])
            T.writes(C[0:pixels])
            T.evaluate(T.call_extern("void", helper, A.access_ptr("r"), W.access_ptr("r"), C.access_ptr("rw")))

    return desc_pair if pixels == 2 else desc_single, impl


def row3_intrin(dtype: str, pixels: int) -> str:
    """The name of the tensor intrinsic for one 3-tap depthwise row under `pixels` (1 or 2) output pixels (`dtype`:
    int8 or uint8 activations), registered with TVM on first use. The helper builds the weight pair (w0, w2) from the
    row's bytes: a kernel that unrolls its window rows keeps them in registers across its pixel loop. With 1 pixel the
    helper loads a[0..3]: the byte after the window must be readable (any value; see the module docstring)."""
    if pixels not in _ROW3_PIXELS:
        raise ValueError(f"row3_intrin: pixels must be one of {_ROW3_PIXELS}, not {pixels}")
    helper = f"tvmp_row3x{pixels}_{_LETTERS[dtype]}"
    return _register(f"tvmp.row3x{pixels}_{_LETTERS[dtype]}s8", lambda: _row3_functions(dtype, helper, pixels))


def strided_dot4_intrin(dtype: str) -> str:
    """The name of the 4-long dot-product tensor intrinsic for `dtype` activations a stride apart (`a[k * stride]`),
    registered with TVM on first use. Its helper gathers the 4 bytes into SMLAD's operand pairs itself, so a caller
    that dots one pixel's channels with several weight rows (unrolled) shares the gathering: no copy in memory."""
    name, helper = _STRIDED_DOT4[dtype]
    return _register(name, lambda: _strided_dot4_functions(dtype, helper))


def dot4_intrin(dtype: str, wide: bool = False, packed: bool = False) -> str:
    """The name of the 4-long dot-product tensor intrinsic for `dtype` (int8 or uint8) activations, registered
    with TVM on first use; `wide`: activations widened to int16 and interleaved, `packed`: weights too (see the
    module docstring)."""
    helper = _dot4_helper(dtype, wide, packed)
    return _register(f"tvmp.{helper[5:]}_{_LETTERS[dtype]}", lambda: _dot4_functions(dtype, helper, wide, packed))


def _dot4_helper(dtype: str, wide: bool, packed: bool) -> str:
    """The C helper's name: tvmp_dot4_ then the activations' form (s8, u8, or i16 when widened), then _w16 when the
    weights are packed."""
    return f"tvmp_dot4_{'i16' if wide else _LETTERS[dtype]}{'_w16' if packed else ''}"


def _register(name: str, functions: Callable[[], tuple]) -> str:
    """Register the (description, implementation) pair `functions()` makes (TVMScript, parsed only then) as tensor
    intrinsic `name` with TVM, once; returns `name`."""
    if name not in _registered:
        s_tir.TensorIntrin.register(name, *functions(), override=True)
        _registered.add(name)
    return name


def _dsp_helper(helper: str, comment: str, signature: str, dsp_body: str, plain_body: str) -> str:
    """The C definition of `static inline {signature}` named `helper`: `dsp_body` where the core has the DSP extension
    (ACLE intrinsics available), `plain_body` elsewhere; guarded, so kernels can be concatenated."""
    guard = helper.upper()
    return (f"#ifndef {guard}\n#define {guard}\n#include <string.h>\n#if defined(__ARM_FEATURE_DSP)\n"
            f"#include <arm_acle.h>\n#endif\n/* {comment} (tvm_adapter/dsp.py) */\nstatic inline {signature} {{\n"
            f"#if defined(__ARM_FEATURE_DSP)\n{dsp_body}#else\n{plain_body}#endif\n}}\n#endif\n")


def _pairs(operand: str, form: str) -> tuple[str, str]:
    """(C that sets `{operand}02` and `{operand}13`, SMLAD's operand pairs of elements 0 and 2, 1 and 3, from the 4
    elements at pointer `operand`; their C type). `form`: s8 / u8 (one word, widened here) or i16 (widened and
    interleaved already: two words used as they are)."""
    x = operand
    if form == "i16":
        return (f"  uint32_t {x}02, {x}13;\n  memcpy(&{x}02, {x}, 4);  /* SMLAD's pair as it is */\n"
                f"  memcpy(&{x}13, {x} + 2, 4);\n", "int16_t")
    widen, c_type = _WIDEN[form]
    return (f"  uint32_t {x}w, {x}13;\n  memcpy(&{x}w, {x}, 4);  /* one (unaligned) word load */\n"
            f"  __asm__(\"{widen} %0, %1, ror #8\" : \"=r\"({x}13) : \"r\"({x}w));  /* the rotation costs nothing */\n"
            f"  uint32_t {x}02 = __{widen}({x}w);\n", c_type)


#: Where element k of a widened, interleaved (x0, x2, x1, x3) operand is stored.
_INTERLEAVED = (0, 2, 1, 3)


def _dot4_helper_source(helper: str) -> str:
    """tvmp_dot4_{s8,u8,i16}[_w16]: the activations' form, then _w16 when the weights are int16 pairs too."""
    a_form, packed = helper.split("_")[2], helper.endswith("_w16")
    a_code, a_type = _pairs("a", a_form)
    w_code, w_type = _pairs("w", "i16" if packed else "s8")
    a_at = _INTERLEAVED if a_form == "i16" else range(4)
    w_at = _INTERLEAVED if packed else range(4)
    plain = " + ".join(f"a[{i}] * w[{j}]" for i, j in zip(a_at, w_at))
    stored = "; int16 operands stored (x0, x2, x1, x3)" if a_form == "i16" or packed else ""
    return _dsp_helper(
        helper, f"acc + a0*w0 + a1*w1 + a2*w2 + a3*w3{stored}",
        f"int32_t {helper}(const {a_type}* a, const {w_type}* w, int32_t acc)",
        f"{a_code}{w_code}  acc = __smlad(a02, w02, acc);\n  return __smlad(a13, w13, acc);\n",
        f"  return acc + {plain};\n")


def _strided_helper_source(helper: str) -> str:
    a_type = "uint8_t" if helper.endswith("u8") else "int8_t"
    return _dsp_helper(
        helper, "acc + a[0]*w[0] + a[s]*w[1] + a[2s]*w[2] + a[3s]*w[3]",
        f"int32_t {helper}(const {a_type}* a, int32_t s, const int8_t* w, int32_t acc)",
        """  uint32_t y;
  memcpy(&y, w, 4);
  /* the activations as the int16 pairs SXTB16 makes of the weights: (a0, a2) and (a1, a3), one PKHBT each */
  uint32_t x02 = ((uint32_t)(int32_t)a[0] & 0xFFFFu) | ((uint32_t)(int32_t)a[2 * s] << 16);
  uint32_t x13 = ((uint32_t)(int32_t)a[s] & 0xFFFFu) | ((uint32_t)(int32_t)a[3 * s] << 16);
  uint32_t y13;
  __asm__("sxtb16 %0, %1, ror #8" : "=r"(y13) : "r"(y));
  acc = __smlad(x02, __sxtb16(y), acc);
  return __smlad(x13, y13, acc);
""",
        "  return acc + a[0] * w[0] + a[s] * w[1] + a[2 * s] * w[2] + a[3 * s] * w[3];\n")


def _row3_helper_source(helper: str) -> str:
    """tvmp_row3x{1,2}_{s8,u8}: one word load, its bytes widened to (a0, a2) and (a1, a3); per pixel p one SMLAD
    (a_p * w0 + a_p+2 * w2) and one SMLAxy (a_p+1 * w1)."""
    widen, a_type = ("uxtb16", "uint8_t") if helper.endswith("u8") else ("sxtb16", "int8_t")
    pixels = int(helper.split("_")[1][-1])
    sums = [f"acc[{p}] += a[{p}]*w[0] + a[{p + 1}]*w[1] + a[{p + 2}]*w[2]" for p in range(pixels)]
    second = """  acc[1] = __smlatb((int32_t)x02, w1, __smlad(x13, w02, acc[1]));  /* a1*w0 + a3*w2, then a2*w1 */
""" if pixels == 2 else ""
    return _dsp_helper(
        helper, ";  ".join(sums) + ("" if pixels == 2 else " (reads a[3], unused)"),
        f"void {helper}(const {a_type}* a, const int8_t* w, int32_t* acc)",
        f"""  uint32_t x, x13;
  memcpy(&x, a, 4);  /* a[0..3]: one (unaligned) word load */
  __asm__("{widen} %0, %1, ror #8" : "=r"(x13) : "r"(x));  /* (a1, a3) */
  uint32_t x02 = __{widen}(x);  /* (a0, a2) */
  uint32_t w02 = ((uint32_t)(int32_t)w[0] & 0xFFFFu) | ((uint32_t)(int32_t)w[2] << 16);
  int32_t w1 = w[1];
  acc[0] = __smlabb((int32_t)x13, w1, __smlad(x02, w02, acc[0]));  /* a0*w0 + a2*w2, then a1*w1 */
{second}""",
        "".join(f"  {line.replace('*', ' * ')};\n" for line in sums))


def _saturate_source(helper: str) -> str:
    signed = helper == "tvmp_ssat8"
    guard, instruction, lo, hi = helper.upper(), "__ssat" if signed else "__usat", -128 if signed else 0, \
        127 if signed else 255
    return f"""#ifndef {guard}
#define {guard}
#if defined(__ARM_FEATURE_SAT)
#include <arm_acle.h>
#endif
/* clamp(x, {lo}, {hi}) in one instruction where the core saturates (tvm_adapter/dsp.py) */
static inline int32_t {helper}(int32_t x) {{
#if defined(__ARM_FEATURE_SAT)
  return (int32_t){instruction}(x, 8);
#else
  return x < {lo} ? {lo} : x > {hi} ? {hi} : x;
#endif
}}
#endif
"""


def _smmulr_source(helper: str) -> str:
    return f"""#ifndef {helper.upper()}
#define {helper.upper()}
/* (a * b + 2^31) >> 32, the rounded high word of a 32x32 product, in one SMMULR on a DSP core (tvm_adapter/dsp.py) */
static inline int32_t {helper}(int32_t a, int32_t b) {{
#if defined(__ARM_FEATURE_DSP)
  int32_t r;
  __asm__("smmulr %0, %1, %2" : "=r"(r) : "r"(a), "r"(b));
  return r;
#else
  return (int32_t)(((int64_t)a * b + 0x80000000LL) >> 32);
#endif
}}
#endif
"""


#: The C helpers kernels may call, by name.
_HELPERS = {**{_dot4_helper(d, wide, packed): _dot4_helper_source for d in _LETTERS for wide in (False, True)
               for packed in (False, True)},
            "tvmp_dot4_strided_s8": _strided_helper_source, "tvmp_dot4_strided_u8": _strided_helper_source,
            **{f"tvmp_row3x{p}_{letters}": _row3_helper_source for p in _ROW3_PIXELS for letters in _LETTERS.values()},
            "tvmp_ssat8": _saturate_source,
            "tvmp_usat8": _saturate_source, "tvmp_smmulr": _smmulr_source}

_CALL = re.compile(r"\b(" + "|".join(_HELPERS) + r")\(")


def helper_definitions(source: str) -> str:
    """C definitions of the helpers `source` calls (each guarded, so kernels can be concatenated)."""
    return "".join(_HELPERS[h](h) for h in dict.fromkeys(_CALL.findall(source)))


#: TVM declares each extern callee (`int32_t tvmp_dot4_s8(void*, void*, int32_t);`): the definitions replace that.
DECLARATION = re.compile(r"^\w+ (?:" + "|".join(_HELPERS) + r")\(.*\);\n", re.M)
