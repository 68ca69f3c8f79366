"""Cortex-M DSP-extension dot products as TensorIR tensor intrinsics, and the C helpers kernels call.

`dot4_intrin(dtype)` names a tensor intrinsic that `Schedule.tensorize` puts in place of a 4-long int8 dot product
accumulated into an int32:

    for k in 0..4:  acc += int32(a[k]) * int32(w[k])          (a: int8 or uint8 activations, w: int8 weights)
    ->              acc = tvmp_dot4_s8(&a[0], &w[0], acc)        (a C call; `lower_to_c` adds its definition)

`strided_dot4_intrin(dtype)` is the same product over activations a stride apart (`a[k * stride]`: one pixel's
channels in an NCHW tensor), as `tvmp_dot4_strided_s8(&a[0], stride, &w[0], acc)`.

`widened_dot4_intrin(dtype)` is the same product over activations already widened to int16 and stored interleaved,
(a0, a2, a1, a3), as SXTB16 pairs the weight bytes: two word loads and no widening of its own,
`tvmp_dot4_i16(&a[0], &w[0], acc)` (an im2col buffer filled once and read by every output channel).

`row3x2_intrin(dtype)` is one row of a 3-wide depthwise window under two neighbouring output pixels (stride 1):

    for p in 0..2, r in 0..3:  acc[p] += int32(a[p + r]) * int32(w[r])
    ->                         tvmp_row3x2_s8(&a[0], &w[0], &acc[0])   (one word load, 2 SXTB16, 2 SMLAD, 2 SMLAxy)

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

#: Activation dtype -> (tensor intrinsic name, the C helper its implementation calls).
_DOT4 = {"int8": ("tvmp.dot4_s8s8", "tvmp_dot4_s8"), "uint8": ("tvmp.dot4_u8s8", "tvmp_dot4_u8")}

#: How each helper widens its activation word: SXTB16 sign-extends bytes 0 and 2 (ROR #8: 1 and 3), UXTB16
#: zero-extends them; the weight word is always int8.
_WIDEN = {"tvmp_dot4_s8": ("sxtb16", "int8_t"), "tvmp_dot4_u8": ("uxtb16", "uint8_t")}

#: The same for activations a stride apart.
_STRIDED_DOT4 = {"int8": ("tvmp.dot4_strided_s8s8", "tvmp_dot4_strided_s8"),
                 "uint8": ("tvmp.dot4_strided_u8s8", "tvmp_dot4_strided_u8")}

#: ... and for activations widened to int16, interleaved (a0, a2, a1, a3): one helper for int8 and uint8 values.
_WIDENED_DOT4 = {"int8": "tvmp.dot4_i16_s8", "uint8": "tvmp.dot4_i16_u8"}
_WIDENED_HELPER = "tvmp_dot4_i16"

#: ... and for one 3-wide depthwise row under two output pixels.
_ROW3X2 = {"int8": ("tvmp.row3x2_s8s8", "tvmp_row3x2_s8"), "uint8": ("tvmp.row3x2_u8s8", "tvmp_row3x2_u8")}

_registered: set[str] = set()


def _dot4_functions(dtype: str, helper: str):
    """(description, implementation) PrimFuncs of the 4-long dot product for `dtype` activations."""

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, w: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (4,), dtype, offset_factor=1)
        W = T.match_buffer(w, (4,), "int8", offset_factor=1)
        C = T.match_buffer(c, (1,), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0], A[0:4], W[0:4])
            T.writes(C[0])
            for k in T.serial(0, 4):
                with T.sblock("update"):
                    vk = T.axis.remap("R", [k])
                    C[0] = C[0] + T.Cast("int32", A[vk]) * T.Cast("int32", W[vk])

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, w: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (4,), dtype, offset_factor=1)
        W = T.match_buffer(w, (4,), "int8", offset_factor=1)
        C = T.match_buffer(c, (1,), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0], A[0:4], W[0:4])
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


def _row3x2_functions(dtype: str, helper: str):
    """(description, implementation) PrimFuncs of one 3-tap row under 2 output pixels a column apart."""

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, w: T.handle, c: T.handle) -> None:
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
    def impl(a: T.handle, w: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (4,), dtype, offset_factor=1)
        W = T.match_buffer(w, (3,), "int8", offset_factor=1)
        C = T.match_buffer(c, (2,), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:2], A[0:4], W[0:3])
            T.writes(C[0:2])
            T.evaluate(T.call_extern("void", helper, A.access_ptr("r"), W.access_ptr("r"), C.access_ptr("rw")))

    return desc, impl


def _widened_dot4_functions(dtype: str, helper: str):
    """(description, implementation) PrimFuncs of the 4-long dot product over `dtype` activations held in an int16
    buffer (`Schedule.unsafe_set_dtype`: each read narrows back to `dtype`, lossless) laid out (2, 2) as
    a[k % 2, k // 2], i.e. (a0, a2, a1, a3) in memory."""

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, w: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (2, 2), "int16", offset_factor=1)
        W = T.match_buffer(w, (4,), "int8", offset_factor=1)
        C = T.match_buffer(c, (1,), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0], A[0:2, 0:2], W[0:4])
            T.writes(C[0])
            for k in T.serial(0, 4):
                with T.sblock("update"):
                    vk = T.axis.remap("R", [k])
                    C[0] = C[0] + T.Cast("int32", T.Cast(dtype, A[vk % 2, vk // 2])) * T.Cast("int32", W[vk])

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, w: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (2, 2), "int16", offset_factor=1)
        W = T.match_buffer(w, (4,), "int8", offset_factor=1)
        C = T.match_buffer(c, (1,), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0], A[0:2, 0:2], W[0:4])
            T.writes(C[0])
            C[0] = T.call_extern("int32", helper, A.access_ptr("r"), W.access_ptr("r"), C[0])

    return desc, impl


def widened_dot4_intrin(dtype: str) -> str:
    """The name of the 4-long dot-product tensor intrinsic for `dtype` (int8 or uint8) activations widened to int16
    and interleaved (see the module docstring), registered with TVM on first use."""
    name = _WIDENED_DOT4[dtype]
    return _register(name, lambda: _widened_dot4_functions(dtype, _WIDENED_HELPER))


def row3x2_intrin(dtype: str) -> str:
    """The name of the tensor intrinsic for one 3-tap depthwise row under two output pixels (`dtype`: int8 or
    uint8 activations), registered with TVM on first use. The helper builds the weight pair (w0, w2) from the row's
    bytes: a kernel that unrolls its window rows keeps them in registers across its pixel loop."""
    name, helper = _ROW3X2[dtype]
    return _register(name, lambda: _row3x2_functions(dtype, helper))


def strided_dot4_intrin(dtype: str) -> str:
    """The name of the 4-long dot-product tensor intrinsic for `dtype` activations a stride apart (`a[k * stride]`),
    registered with TVM on first use. Its helper gathers the 4 bytes into SMLAD's operand pairs itself, so a caller
    that dots one pixel's channels with several weight rows (unrolled) shares the gathering: no copy in memory."""
    name, helper = _STRIDED_DOT4[dtype]
    return _register(name, lambda: _strided_dot4_functions(dtype, helper))


def dot4_intrin(dtype: str) -> str:
    """The name of the 4-long dot-product tensor intrinsic for `dtype` (int8 or uint8) activations, registered
    with TVM on first use."""
    name, helper = _DOT4[dtype]
    return _register(name, lambda: _dot4_functions(dtype, helper))


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


def _helper_source(helper: str) -> str:
    widen, a_type = _WIDEN[helper]
    return _dsp_helper(
        helper, "acc + a[0]*w[0] + a[1]*w[1] + a[2]*w[2] + a[3]*w[3]",
        f"int32_t {helper}(const {a_type}* a, const int8_t* w, int32_t acc)",
        f"""  uint32_t x, y, x13, y13;
  memcpy(&x, a, 4);  /* one (unaligned) word load */
  memcpy(&y, w, 4);
  __asm__("{widen} %0, %1, ror #8" : "=r"(x13) : "r"(x));  /* bytes 1 and 3; the rotation costs nothing */
  __asm__("sxtb16 %0, %1, ror #8" : "=r"(y13) : "r"(y));
  acc = __smlad(__{widen}(x), __sxtb16(y), acc);  /* bytes 0 and 2 */
  return __smlad(x13, y13, acc);
""",
        "  return acc + a[0] * w[0] + a[1] * w[1] + a[2] * w[2] + a[3] * w[3];\n")


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


def _widened_helper_source(helper: str) -> str:
    return _dsp_helper(
        helper, "acc + a0*w[0] + a1*w[1] + a2*w[2] + a3*w[3], a stored as int16 (a0, a2, a1, a3)",
        f"int32_t {helper}(const int16_t* a, const int8_t* w, int32_t acc)",
        """  uint32_t a02, a13, y, y13;
  memcpy(&a02, a, 4);  /* (a0, a2): SMLAD's operand pair as it is */
  memcpy(&a13, a + 2, 4);
  memcpy(&y, w, 4);
  __asm__("sxtb16 %0, %1, ror #8" : "=r"(y13) : "r"(y));
  acc = __smlad(a02, __sxtb16(y), acc);
  return __smlad(a13, y13, acc);
""",
        "  return acc + a[0] * w[0] + a[2] * w[1] + a[1] * w[2] + a[3] * w[3];\n")


def _row3x2_helper_source(helper: str) -> str:
    widen, a_type = ("uxtb16", "uint8_t") if helper.endswith("u8") else ("sxtb16", "int8_t")
    return _dsp_helper(
        helper, "acc[0] += a[0]*w[0] + a[1]*w[1] + a[2]*w[2];  acc[1] += a[1]*w[0] + a[2]*w[1] + a[3]*w[2]",
        f"void {helper}(const {a_type}* a, const int8_t* w, int32_t* acc)",
        f"""  uint32_t x, x13;
  memcpy(&x, a, 4);  /* a[0..3]: one (unaligned) word load */
  __asm__("{widen} %0, %1, ror #8" : "=r"(x13) : "r"(x));  /* (a1, a3) */
  uint32_t x02 = __{widen}(x);  /* (a0, a2) */
  uint32_t w02 = ((uint32_t)(int32_t)w[0] & 0xFFFFu) | ((uint32_t)(int32_t)w[2] << 16);
  int32_t w1 = w[1];
  acc[0] = __smlabb((int32_t)x13, w1, __smlad(x02, w02, acc[0]));  /* a0*w0 + a2*w2, then a1*w1 */
  acc[1] = __smlatb((int32_t)x02, w1, __smlad(x13, w02, acc[1]));  /* a1*w0 + a3*w2, then a2*w1 */
""",
        """  acc[0] += a[0] * w[0] + a[1] * w[1] + a[2] * w[2];
  acc[1] += a[1] * w[0] + a[2] * w[1] + a[3] * w[2];
""")


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
_HELPERS = {"tvmp_dot4_s8": _helper_source, "tvmp_dot4_u8": _helper_source,
            "tvmp_dot4_strided_s8": _strided_helper_source, "tvmp_dot4_strided_u8": _strided_helper_source,
            "tvmp_dot4_i16": _widened_helper_source,
            "tvmp_row3x2_s8": _row3x2_helper_source, "tvmp_row3x2_u8": _row3x2_helper_source,
            "tvmp_ssat8": _saturate_source,
            "tvmp_usat8": _saturate_source, "tvmp_smmulr": _smmulr_source}

_CALL = re.compile(r"\b(" + "|".join(_HELPERS) + r")\(")


def helper_definitions(source: str) -> str:
    """C definitions of the helpers `source` calls (each guarded, so kernels can be concatenated)."""
    return "".join(_HELPERS[h](h) for h in dict.fromkeys(_CALL.findall(source)))


#: TVM declares each extern callee (`int32_t tvmp_dot4_s8(void*, void*, int32_t);`): the definitions replace that.
DECLARATION = re.compile(r"^\w+ (?:" + "|".join(_HELPERS) + r")\(.*\);\n", re.M)
