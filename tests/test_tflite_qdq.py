"""The rewrites that bring TVM's import of an int8 .tflite into the NCHW QDQ form fold-qdq reads (tflite_qdq.py):
each checked on a small Relax function against the expected one (numerics: tests/test_int8_mlperf.py)."""

from __future__ import annotations

import tvm
from tvm.script import relax as R

from tvm_pipeline.tvm_adapter.tflite_qdq import sink_permutes, tflite_idioms


def _assert_rewrites(rewrite, before, expected) -> None:
    """`rewrite(before)`, with dead and alias bindings dropped, is structurally `expected`."""
    cleanup = tvm.transform.Sequential([tvm.relax.transform.CanonicalizeBindings(),
                                        tvm.relax.transform.DeadCodeElimination()])
    got = cleanup(tvm.IRModule({"main": rewrite(before.with_attr("global_symbol", "main"))}))
    tvm.ir.assert_structural_equal(got, tvm.IRModule({"main": expected.with_attr("global_symbol", "main")}))


def test_permutes_sink_through_quantize_and_dequantize_and_cancel():
    @R.function
    def before(x: R.Tensor((1, 4, 2, 2), "float32")):
        with R.dataflow():
            a = R.permute_dims(x, axes=[0, 2, 3, 1])
            q = R.quantize(a, R.const([0.5, 0.25, 1.0, 2.0], "float32"), R.const(0, "int32"), out_dtype="int8",
                           axis=3)
            d = R.dequantize(q, R.const(0.5, "float32"), R.const(-3, "int32"), out_dtype="float32", axis=0)
            b = R.permute_dims(d, axes=[0, 3, 1, 2])
            R.output(b)
        return b

    @R.function
    def expected(x: R.Tensor((1, 4, 2, 2), "float32")):
        with R.dataflow():
            # the per-channel axis 3 of the NHWC tensor is axis 1 of the NCHW one
            q = R.quantize(x, R.const([0.5, 0.25, 1.0, 2.0], "float32"), R.const(0, "int32"), out_dtype="int8",
                           axis=1)
            d = R.dequantize(q, R.const(0.5, "float32"), R.const(-3, "int32"), out_dtype="float32", axis=0)
            R.output(d)
        return d

    _assert_rewrites(sink_permutes, before, expected)


def test_permutes_stop_at_a_reshape_and_move_below_a_pool():
    @R.function
    def before(x: R.Tensor((1, 4, 2, 2), "int8")):
        with R.dataflow():
            a = R.permute_dims(x, axes=[0, 2, 3, 1])
            d = R.dequantize(a, R.const(1.0, "float32"), R.const(0, "int32"), out_dtype="float32", axis=0)
            p = R.nn.avg_pool2d(d, pool_size=[2, 2], strides=[2, 2], layout="NHWC", out_layout="NHWC")
            r = R.reshape(p, R.shape([1, 4]))
            R.output(r)
        return r

    @R.function
    def expected(x: R.Tensor((1, 4, 2, 2), "int8")):
        with R.dataflow():
            d = R.dequantize(x, R.const(1.0, "float32"), R.const(0, "int32"), out_dtype="float32", axis=0)
            p = R.nn.avg_pool2d(d, pool_size=[2, 2], strides=[2, 2], layout="NCHW", out_layout="NCHW")
            t = R.permute_dims(p, axes=[0, 2, 3, 1])  # NHWC flatten order: this one stays
            r = R.reshape(t, R.shape([1, 4]))
            R.output(r)
        return r

    _assert_rewrites(sink_permutes, before, expected)


def test_tflite_activation_clip_moves_before_the_quantize_or_goes():
    @R.function
    def before(v: R.Tensor((1, 8), "float32")):
        with R.dataflow():
            q = R.quantize(v, R.const(0.5, "float32"), R.const(-128, "int32"), out_dtype="int8", axis=0)
            relu = R.clip(q, -128, 127)  # ReLU with zero point -128: the quantize saturates there already
            relu6 = R.clip(relu, -128, -116)  # ReLU6: (-116 - -128) * 0.5 = 6.0
            R.output(relu6)
        return relu6

    @R.function
    def expected(v: R.Tensor((1, 8), "float32")):
        with R.dataflow():
            c = R.clip(v, R.prim_value(0.0), R.prim_value(6.0))
            relu6 = R.quantize(c, R.const(0.5, "float32"), R.const(-128, "int32"), out_dtype="int8", axis=0)
            R.output(relu6)
        return relu6

    _assert_rewrites(tflite_idioms, before, expected)


def test_tflite_integer_average_pool_becomes_a_qdq_chain():
    @R.function
    def before(x: R.Tensor((1, 2, 2, 4), "int8")):
        with R.dataflow():
            w = R.astype(x, "int32")
            p = R.nn.avg_pool2d(w, pool_size=[2, 2], strides=[2, 2], layout="NHWC", out_layout="NHWC")
            y = R.astype(p, "int8")
            R.output(y)
        return y

    @R.function
    def expected(x: R.Tensor((1, 2, 2, 4), "int8")):
        with R.dataflow():
            d = R.dequantize(x, R.const(1.0, "float32"), R.const(0, "int32"), out_dtype="float32", axis=0)
            p = R.nn.avg_pool2d(d, pool_size=[2, 2], strides=[2, 2], layout="NHWC", out_layout="NHWC")
            y = R.quantize(p, R.const(1.0, "float32"), R.const(0, "int32"), out_dtype="int8", axis=0)
            R.output(y)
        return y

    _assert_rewrites(tflite_idioms, before, expected)
