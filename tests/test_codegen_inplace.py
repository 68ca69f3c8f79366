"""The C code generator's in-place proof (`LoweredKernel.inplace_params`): the inputs the planner may give the
output's storage. An input qualifies when each of its reads either finishes before the output's first write (an
earlier top-level statement) or is the store's own element; a helper that takes a pointer into the input reads it
at indices the proof cannot see, so it only counts before the output is written."""

from __future__ import annotations

from tvm import te
from tvm.script import tirx as T

from tvm_pipeline import tvm_adapter


def _inplace(func) -> tuple[int, ...]:
    return tvm_adapter.lower_to_c(func, "tvmp_kernel").inplace_params


def test_elementwise_output_may_replace_its_input() -> None:
    x = te.placeholder((8,), "int8", name="x")
    out = te.compute((8,), lambda i: x[i] + te.const(1, "int8"), name="out")
    assert _inplace(te.create_prim_func([x, out])) == (0,)


def test_input_read_whole_before_the_output_is_written() -> None:
    """A reduction over all of x, then out[i] from x[i]: every read of x ends before the first write."""
    x = te.placeholder((8,), "int32", name="x")
    k = te.reduce_axis((0, 8), "k")
    total = te.compute((1,), lambda _: te.sum(x[k], axis=k), name="total")
    out = te.compute((8,), lambda i: x[i] * total[0], name="out")
    assert _inplace(te.create_prim_func([x, out])) == (0,)


def test_input_read_at_another_element_while_writing() -> None:
    x = te.placeholder((8,), "int8", name="x")
    out = te.compute((8,), lambda i: x[i] + x[7 - i], name="out")
    assert _inplace(te.create_prim_func([x, out])) == ()


@T.prim_func(private=True)
def _pointer_read_while_writing(x: T.Buffer((16,), "int8"), w: T.Buffer((4,), "int8"), out: T.Buffer((16,), "int8")):
    # out[i] = dot(x[i], x[i + 4 mod 16], ...): the helper reads elements of x that earlier iterations overwrote
    for i in range(16):
        out[i] = T.Cast("int8", T.call_extern("int32", "tvmp_dot4_strided_s8", x.access_ptr("r", offset=i % 4), 4,
                                               w.access_ptr("r"), T.Cast("int32", x[i])))


@T.prim_func(private=True)
def _pointer_read_before_writing(x: T.Buffer((16,), "int8"), w: T.Buffer((4,), "int8"), out: T.Buffer((16,), "int8")):
    acc = T.alloc_buffer((1,), "int32")
    acc[0] = T.call_extern("int32", "tvmp_dot4_strided_s8", x.access_ptr("r"), 4, w.access_ptr("r"), 0)
    for i in range(16):
        out[i] = T.Cast("int8", T.Cast("int32", x[i]) + acc[0])


def test_pointer_reads_count_where_they_happen() -> None:
    assert _inplace(_pointer_read_while_writing) == ()
    assert _inplace(_pointer_read_before_writing) == (0,)
