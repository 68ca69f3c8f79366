"""Receptive-field arithmetic for patch-based execution: which input window each patch of a stage needs.

Pure functions over rows and columns, no IR. A `Region` is a half-open box (y0, y1, x0, x1) of an NCHW tensor's
spatial plane. A `Window` is what a convolution-like op does to one output region: kernel, stride, padding.

For output rows [a, b) of a convolution with kernel k, stride s and top padding p over an input of H rows:

    first input row read  a*s - p           (negative: that many rows of the top padding are used)
    last input row read   (b-1)*s - p + k   (exclusive; past H: rows of the bottom padding are used)

so the patch computes exactly those output rows from the clipped input rows with padding max(0, p - a*s) on top
and max(0, (b-1)*s - p + k - H) at the bottom: padding only where the patch touches the image border, which is
what makes the patched stage compute the same numbers as the whole one.
"""

from __future__ import annotations

from dataclasses import dataclass

#: (y0, y1, x0, x1): rows y0..y1-1 and columns x0..x1-1 of a feature map.
Region = tuple[int, int, int, int]


@dataclass(frozen=True)
class Window:
    """A convolution's geometry: square or not, dilation 1. padding is (top, left, bottom, right)."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int, int, int]


@dataclass(frozen=True)
class PatchInput:
    """What a windowed op needs to compute one output region: the input region and the padding to apply to it."""

    region: Region
    padding: tuple[int, int, int, int]  # top, left, bottom, right: image-border padding only


def _span(a: int, b: int, k: int, s: int, pad: int, size: int) -> tuple[int, int, int, int]:
    start, end = a * s - pad, (b - 1) * s - pad + k
    return max(0, start), min(size, end), max(0, -start), max(0, end - size)


def window_input(window: Window, out: Region, in_hw: tuple[int, int]) -> PatchInput:
    """The input region (clipped to the image) and border padding that produce output region `out` exactly."""
    (kh, kw), (sh, sw), (pt, pl, _, _) = window.kernel, window.stride, window.padding
    y0, y1, top, bottom = _span(out[0], out[1], kh, sh, pt, in_hw[0])
    x0, x1, left, right = _span(out[2], out[3], kw, sw, pl, in_hw[1])
    return PatchInput((y0, y1, x0, x1), (top, left, bottom, right))


def hull(a: Region | None, b: Region) -> Region:
    """The smallest region holding both."""
    if a is None:
        return b
    return min(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), max(a[3], b[3])


def relative(inner: Region, outer: Region) -> Region:
    """`inner` in the coordinates of a patch that holds `outer` (inner must lie inside outer)."""
    if not (outer[0] <= inner[0] <= inner[1] <= outer[1] and outer[2] <= inner[2] <= inner[3] <= outer[3]):
        raise ValueError(f"region {inner} is not inside {outer}")
    return inner[0] - outer[0], inner[1] - outer[0], inner[2] - outer[2], inner[3] - outer[2]


def size(region: Region) -> tuple[int, int]:
    """(rows, columns)."""
    return region[1] - region[0], region[3] - region[2]


def grid(hw: tuple[int, int], rows: int, cols: int) -> list[Region]:
    """An rows x cols grid over an hw plane, row-major; patch sizes differ by at most one row or column."""
    if not (1 <= rows <= hw[0] and 1 <= cols <= hw[1]):
        raise ValueError(f"a {rows}x{cols} grid does not fit a {hw[0]}x{hw[1]} map")
    ys = [hw[0] * i // rows for i in range(rows + 1)]
    xs = [hw[1] * j // cols for j in range(cols + 1)]
    return [(ys[i], ys[i + 1], xs[j], xs[j + 1]) for i in range(rows) for j in range(cols)]
