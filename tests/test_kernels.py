"""Property tests of the C kernels in csrc/ against tests/tflm_reference.py.

Every comparison is exact. Shapes, strides, dilations, paddings, zero points
and requantization factors are drawn at random, the factors derived from
random float scales with toolkit.quantization as TFLM's prepare step does.
Array contents come from a numpy generator seeded by Hypothesis, because
Hypothesis's own array strategy fills most of a large array with one value.

Set TOOLKIT_MAX_EXAMPLES to cap the examples of every property test (the
sanitizer run uses it to stay short).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st

from tests import tflm_reference as reference
from tests.kernel_library import KernelLibrary
from toolkit import quantization

TK_OK = 0
TK_ERROR_NULL_POINTER = 1
TK_ERROR_SHAPE = 2
TK_ERROR_PARAMETER = 3

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1


def max_examples(count: int) -> int:
    """Return `count`, capped by the TOOLKIT_MAX_EXAMPLES environment variable if set."""
    cap = os.environ.get("TOOLKIT_MAX_EXAMPLES")
    return min(count, int(cap)) if cap else count


# derandomize makes every run draw the same examples, so CI is reproducible.
# Without a database, no earlier failure is replayed first.
PROPERTY_SETTINGS: dict[str, Any] = {"deadline": None, "derandomize": True, "database": None}


# Strategies: scales and fixed-point factors.


def float32_scales(min_exponent: int, max_exponent: int) -> st.SearchStrategy[float]:
    """Return a strategy for float32 values m * 2^e, m in [1, 2), e in the given range."""
    return st.builds(
        lambda mantissa, exponent: float(np.float32(math.ldexp(mantissa, exponent))),
        st.floats(1.0, 2.0, exclude_max=True),
        st.integers(min_exponent, max_exponent),
    )


def factor_exponents(terms: int) -> st.SearchStrategy[int]:
    """Return a strategy for log2 of the requantization factor of a sum of `terms` products.

    Three times in four near the factor that maps a typical accumulator
    (about sqrt(terms) * 100 * 74 for random int8 inputs and weights) to
    roughly 2^5, so that most outputs land inside the int8 range. Otherwise
    anywhere from below the smallest representable factor, which
    quantize_multiplier turns into multiplier 0, to factors above 1, which
    give positive shifts.
    """
    typical = -round(7.5 + 0.5 * math.log2(terms))
    typical_exponents = st.integers(typical - 3, typical + 2)
    any_exponent = st.integers(-36, 7)
    return st.integers(0, 3).flatmap(lambda pick: any_exponent if pick == 0 else typical_exponents)


@st.composite
def per_channel_factors(draw: st.DrawFn, channels: int, terms: int, fully_connected: bool = False):
    """Draw scales for a conv or fully connected layer whose accumulators sum
    `terms` products, and return (multipliers, shifts, output_scale) from
    toolkit.quantization."""
    input_scale = draw(float32_scales(-12, 2))
    output_scale = draw(float32_scales(-12, 2))
    per_tensor = draw(st.booleans())
    count = 1 if per_tensor else channels
    weight_scales = []
    for _ in range(count):
        mantissa = draw(st.floats(1.0, 2.0, exclude_max=True))
        factor = math.ldexp(mantissa, draw(factor_exponents(terms)))
        weight_scales.append(np.float32(factor * output_scale / input_scale))
    if per_tensor:
        weight_scales *= channels
    derive = (
        quantization.fully_connected_multipliers
        if fully_connected
        else quantization.conv_multipliers
    )
    multipliers, shifts = derive(input_scale, np.array(weight_scales), output_scale)
    return multipliers, shifts, output_scale


ACTIVATIONS = [
    quantization.ACTIVATION_NONE,
    quantization.ACTIVATION_RELU,
    quantization.ACTIVATION_RELU6,
    quantization.ACTIVATION_RELU_N1_TO_1,
]


@st.composite
def output_clamps(draw: st.DrawFn, scale: float, zero_point: int) -> tuple[int, int]:
    activation = draw(st.sampled_from(ACTIVATIONS))
    return quantization.activation_range(activation, scale, zero_point)


zero_points = st.integers(-128, 127)


# Strategies: array contents.


@st.composite
def int8_arrays(draw: st.DrawFn, shape: tuple[int, ...], zero_point: int = 0) -> np.ndarray:
    """Draw int8 values of one style: uniform, only the extremes, or near the zero point."""
    style = draw(st.sampled_from(["uniform", "extremes", "near_zero_point"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if style == "uniform":
        values = rng.integers(-128, 128, shape)
    elif style == "extremes":
        values = rng.choice([-128, 127], shape)
    else:
        values = np.clip(zero_point + rng.integers(-3, 4, shape), -128, 127)
    return values.astype(np.int8)


@st.composite
def optional_biases(draw: st.DrawFn, channels: int) -> np.ndarray | None:
    """Draw None (no bias) or int32 values of a random magnitude up to 2^28, small
    enough that no accumulator of the tests here overflows int32. Magnitudes
    above those of typical accumulators (2^13 to 2^16) are rare, because they
    saturate the output."""
    if draw(st.integers(0, 4)) == 0:
        return None
    bits = draw(st.sampled_from([4, 8, 12, 14, 16, 28]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return rng.integers(-(1 << bits), 1 << bits, channels).astype(np.int32)


# Strategies: window geometry.


def tflite_window(padding: str, size: int, kernel: int, stride: int, dilation: int):
    """Return (output size, padding before) as TFLite computes them for SAME or VALID."""
    effective_kernel = (kernel - 1) * dilation + 1
    if padding == "same":
        output = (size + stride - 1) // stride
    else:
        output = (size - effective_kernel + stride) // stride
    total_padding = max((output - 1) * stride + effective_kernel - size, 0)
    return output, total_padding // 2


@dataclass(frozen=True)
class Axis:
    """Geometry of one spatial axis of a sliding window."""

    size: int
    kernel: int
    stride: int
    dilation: int
    pad: int
    output: int


@st.composite
def window_axes(draw: st.DrawFn, padding: str, max_size: int, max_kernel: int, dilated: bool):
    """Draw one axis with TFLite SAME or VALID padding, or with an explicit pad
    before and an output size that the kernels' check accepts."""
    size = draw(st.integers(1, max_size))
    stride = draw(st.integers(1, 3))
    dilation = draw(st.integers(1, 3)) if dilated else 1
    if padding == "valid":
        max_kernel = min(max_kernel, (size - 1) // dilation + 1)
    kernel = draw(st.integers(1, max_kernel))
    if padding == "explicit":
        pad = draw(st.integers(0, kernel * dilation - 1))
        output = draw(st.integers(1, (size - 1 + pad) // stride + 1))
    else:
        output, pad = tflite_window(padding, size, kernel, stride, dilation)
    return Axis(size, kernel, stride, dilation, pad, output)


paddings = st.sampled_from(["same", "valid", "explicit"])


# Strategies: whole kernel cases.


@dataclass
class ConvCase:
    """Arrays and keyword parameters of one conv, depthwise conv or fully connected call."""

    input: np.ndarray
    filter: np.ndarray
    bias: np.ndarray | None
    params: dict[str, Any]


@st.composite
def conv_cases(draw: st.DrawFn, depthwise: bool) -> ConvCase:
    padding = draw(paddings)
    rows = draw(window_axes(padding, max_size=7, max_kernel=4, dilated=True))
    columns = draw(window_axes(padding, max_size=7, max_kernel=4, dilated=True))
    batches = draw(st.integers(1, 2))
    input_channels = draw(st.integers(1, 24))
    if depthwise:
        depth_multiplier = draw(st.integers(1, 3))
        output_channels = input_channels * depth_multiplier
        filter_shape = (1, rows.kernel, columns.kernel, output_channels)
    else:
        output_channels = draw(st.integers(1, 24))
        filter_shape = (output_channels, rows.kernel, columns.kernel, input_channels)

    input_zero_point = draw(zero_points)
    output_zero_point = draw(zero_points)
    terms = rows.kernel * columns.kernel * (1 if depthwise else input_channels)
    multipliers, shifts, output_scale = draw(per_channel_factors(output_channels, terms))
    params: dict[str, Any] = {
        "multipliers": multipliers,
        "shifts": shifts,
        "input_offset": -input_zero_point,
        "output_offset": output_zero_point,
        "stride": (rows.stride, columns.stride),
        "dilation": (rows.dilation, columns.dilation),
        "pad": (rows.pad, columns.pad),
        "output_size": (rows.output, columns.output),
        "clamp": draw(output_clamps(output_scale, output_zero_point)),
    }
    if depthwise:
        params["depth_multiplier"] = depth_multiplier

    input_shape = (batches, rows.size, columns.size, input_channels)
    return ConvCase(
        input=draw(int8_arrays(input_shape, input_zero_point)),
        filter=draw(int8_arrays(filter_shape)),
        bias=draw(optional_biases(output_channels)),
        params=params,
    )


def note_case(case: ConvCase) -> None:
    """Record the arrays of a case, so that a failure report shows the whole input."""
    note(f"params={case.params}")
    note(f"input={case.input.tolist()}")
    note(f"filter={case.filter.tolist()}")
    note(f"bias={None if case.bias is None else case.bias.tolist()}")


# tk_requantize.


int32_values = st.one_of(
    st.integers(INT32_MIN, INT32_MAX),
    st.sampled_from([INT32_MIN, INT32_MIN + 1, -1, 0, 1, INT32_MAX - 1, INT32_MAX]),
    st.integers(-(1 << 16), 1 << 16),
)
multipliers = st.one_of(st.just(0), st.integers(1 << 30, INT32_MAX))
shifts = st.integers(-31, 30)


@settings(max_examples=max_examples(500), **PROPERTY_SETTINGS)
@given(values=st.lists(int32_values, min_size=1, max_size=16), multiplier=multipliers, shift=shifts)
def test_requantize_matches_reference(
    kernels: KernelLibrary, values: list[int], multiplier: int, shift: int
) -> None:
    expected = reference.multiply_by_quantized_multiplier(np.array(values), multiplier, shift)
    actual = [kernels.requantize_scalar(value, multiplier, shift) for value in values]
    np.testing.assert_array_equal(actual, expected)


def test_requantize_saturates_int32_min_squared(kernels: KernelLibrary) -> None:
    # INT32_MIN * INT32_MIN / 2^31 = 2^31 does not fit, so the high multiply saturates.
    assert reference.saturating_rounding_doubling_high_mul(INT32_MIN, INT32_MIN) == INT32_MAX
    assert kernels.requantize_scalar(INT32_MIN, INT32_MIN, 0) == INT32_MAX
    # With a right shift the saturated value is then rounded: 2^31 / 2 = 2^30.
    assert kernels.requantize_scalar(INT32_MIN, INT32_MIN, -1) == 1 << 30


@pytest.mark.parametrize(
    ("x", "shift", "expected"),
    [
        # The high multiply alone (shift 0) rounds ties toward +infinity.
        (1, 0, 1),  # 0.5
        (-1, 0, 0),  # -0.5
        (3, 0, 2),  # 1.5
        (-3, 0, -1),  # -1.5
        # The rounding right shift rounds ties away from zero.
        (2, -1, 1),  # 0.5: the high multiply gives exactly 1, then 1 / 2
        (-2, -1, -1),  # -0.5
        (6, -1, 2),  # 1.5
        (-6, -1, -2),  # -1.5
        (20, -2, 3),  # 2.5
        (-20, -2, -3),  # -2.5
    ],
)
def test_requantize_rounds_exact_halves(
    kernels: KernelLibrary, x: int, shift: int, expected: int
) -> None:
    half = 1 << 30  # multiplier 2^30 is the factor 1/2 at shift 0
    assert reference.multiply_by_quantized_multiplier(x, half, shift) == expected
    assert kernels.requantize_scalar(x, half, shift) == expected


# CONV_2D and DEPTHWISE_CONV_2D.


@settings(max_examples=max_examples(800), **PROPERTY_SETTINGS)
@given(case=conv_cases(depthwise=False))
def test_conv2d_matches_reference(kernels: KernelLibrary, case: ConvCase) -> None:
    note_case(case)
    expected = reference.conv2d(case.input, case.filter, case.bias, **case.params)
    actual = kernels.conv2d(case.input, case.filter, case.bias, **case.params)
    np.testing.assert_array_equal(actual, expected)


@settings(max_examples=max_examples(800), **PROPERTY_SETTINGS)
@given(case=conv_cases(depthwise=True))
def test_depthwise_conv2d_matches_reference(kernels: KernelLibrary, case: ConvCase) -> None:
    note_case(case)
    expected = reference.depthwise_conv2d(case.input, case.filter, case.bias, **case.params)
    actual = kernels.depthwise_conv2d(case.input, case.filter, case.bias, **case.params)
    np.testing.assert_array_equal(actual, expected)


def padding_window_case(depthwise: bool) -> ConvCase:
    """Build a 1x1 input under a 2x2 filter with dilation 3 and pad 1.

    The taps of output (0, 0) fall on rows and columns -1 and 2, both outside
    the input. Outputs (0, 1) and (1, 0) have all taps outside along one axis.
    Only output (1, 1) reads the input.
    """
    channels = 3
    rng = np.random.default_rng(7)
    input = rng.integers(-128, 128, (1, 1, 1, channels)).astype(np.int8)
    if depthwise:
        filter = rng.integers(-128, 128, (1, 2, 2, channels)).astype(np.int8)
    else:
        filter = rng.integers(-128, 128, (channels, 2, 2, channels)).astype(np.int8)
    params: dict[str, Any] = {
        "multipliers": [1 << 30] * channels,
        "shifts": [-3, 0, 2],
        "input_offset": 17,
        "output_offset": -5,
        "stride": (1, 1),
        "dilation": (3, 3),
        "pad": (1, 1),
        "output_size": (2, 2),
        "clamp": (-128, 127),
    }
    if depthwise:
        params["depth_multiplier"] = 1
    bias = np.array([40, -300, 9], dtype=np.int32)
    return ConvCase(input, filter, bias, params)


@pytest.mark.parametrize("depthwise", [False, True], ids=["conv", "depthwise"])
def test_conv_window_in_padding_outputs_bias(kernels: KernelLibrary, depthwise: bool) -> None:
    case = padding_window_case(depthwise)
    run = kernels.depthwise_conv2d if depthwise else kernels.conv2d
    run_reference = reference.depthwise_conv2d if depthwise else reference.conv2d

    actual = run(case.input, case.filter, case.bias, **case.params)

    assert case.bias is not None
    bias_only = reference.multiply_by_quantized_multiplier(
        case.bias, np.array(case.params["multipliers"]), np.array(case.params["shifts"])
    )
    bias_only = np.clip(bias_only + case.params["output_offset"], -128, 127).astype(np.int8)
    # 40 / 16 = 2.5 rounds to 3, -300 / 2 = -150 and 9 * 2 = 18. Then the
    # output offset -5 is added and -155 clamped to -128.
    np.testing.assert_array_equal(bias_only, [-2, -128, 13])
    for position in [(0, 0), (0, 1), (1, 0)]:
        np.testing.assert_array_equal(actual[0, position[0], position[1]], bias_only)
    expected = run_reference(case.input, case.filter, case.bias, **case.params)
    np.testing.assert_array_equal(actual, expected)


def test_conv_one_by_one_input(kernels: KernelLibrary) -> None:
    rng = np.random.default_rng(11)
    input = rng.integers(-128, 128, (2, 1, 1, 5)).astype(np.int8)
    filter = rng.integers(-128, 128, (4, 3, 3, 5)).astype(np.int8)
    bias = rng.integers(-1000, 1000, 4).astype(np.int32)
    params: dict[str, Any] = {
        "multipliers": [1 << 30, 1 << 30, 1 << 30, 1 << 30],
        "shifts": [-7, -6, -5, -8],
        "input_offset": -3,
        "output_offset": 4,
        "stride": (1, 1),
        "dilation": (1, 1),
        "pad": (1, 1),  # SAME for a 3x3 filter
        "output_size": (1, 1),
        "clamp": (-128, 127),
    }
    actual = kernels.conv2d(input, filter, bias, **params)

    # Only the centre tap of the filter reads the input.
    accumulator = (input[:, 0, 0, :].astype(np.int64) - 3) @ filter[:, 1, 1, :].T.astype(np.int64)
    by_hand = reference.multiply_by_quantized_multiplier(
        accumulator + bias, np.array(params["multipliers"]), np.array(params["shifts"])
    )
    by_hand = np.clip(by_hand + 4, -128, 127).astype(np.int8)
    np.testing.assert_array_equal(actual[:, 0, 0, :], by_hand)
    np.testing.assert_array_equal(actual, reference.conv2d(input, filter, bias, **params))


def test_depthwise_conv_one_by_one_input(kernels: KernelLibrary) -> None:
    rng = np.random.default_rng(12)
    input = rng.integers(-128, 128, (1, 1, 1, 3)).astype(np.int8)
    filter = rng.integers(-128, 128, (1, 3, 3, 6)).astype(np.int8)
    params: dict[str, Any] = {
        "multipliers": [1 << 30] * 6,
        "shifts": [-6] * 6,
        "input_offset": 128,
        "output_offset": -128,
        "stride": (2, 2),
        "dilation": (1, 1),
        "pad": (1, 1),
        "depth_multiplier": 2,
        "output_size": (1, 1),
        "clamp": (-128, 127),
    }
    actual = kernels.depthwise_conv2d(input, filter, None, **params)
    expected = reference.depthwise_conv2d(input, filter, None, **params)
    np.testing.assert_array_equal(actual, expected)


# FULLY_CONNECTED.


@st.composite
def fully_connected_cases(draw: st.DrawFn) -> ConvCase:
    batches = draw(st.integers(1, 3))
    depth = draw(st.integers(1, 64))
    units = draw(st.integers(1, 24))
    input_zero_point = draw(zero_points)
    output_zero_point = draw(zero_points)
    multipliers, shifts, output_scale = draw(
        per_channel_factors(units, depth, fully_connected=True)
    )
    # TFLM's int8 weights are symmetric (offset 0), but the kernel also takes
    # any int8 weight zero point.
    filter_offset = draw(st.one_of(st.just(0), st.integers(-127, 128)))
    params = {
        "multipliers": multipliers,
        "shifts": shifts,
        "input_offset": -input_zero_point,
        "filter_offset": filter_offset,
        "output_offset": output_zero_point,
        "clamp": draw(output_clamps(output_scale, output_zero_point)),
    }
    return ConvCase(
        input=draw(int8_arrays((batches, depth), input_zero_point)),
        filter=draw(int8_arrays((units, depth), -filter_offset)),
        bias=draw(optional_biases(units)),
        params=params,
    )


@settings(max_examples=max_examples(600), **PROPERTY_SETTINGS)
@given(case=fully_connected_cases())
def test_fully_connected_matches_reference(kernels: KernelLibrary, case: ConvCase) -> None:
    note_case(case)
    expected = reference.fully_connected(case.input, case.filter, case.bias, **case.params)
    actual = kernels.fully_connected(case.input, case.filter, case.bias, **case.params)
    np.testing.assert_array_equal(actual, expected)


# AVERAGE_POOL_2D and MAX_POOL_2D.


@st.composite
def pool_cases(draw: st.DrawFn) -> tuple[np.ndarray, dict[str, Any]]:
    padding = draw(paddings)
    rows = draw(window_axes(padding, max_size=8, max_kernel=4, dilated=False))
    columns = draw(window_axes(padding, max_size=8, max_kernel=4, dilated=False))
    shape = (draw(st.integers(1, 2)), rows.size, columns.size, draw(st.integers(1, 24)))
    zero_point = draw(zero_points)
    scale = draw(float32_scales(-10, 0))
    params = {
        "filter_size": (rows.kernel, columns.kernel),
        "stride": (rows.stride, columns.stride),
        "pad": (rows.pad, columns.pad),
        "output_size": (rows.output, columns.output),
        "clamp": draw(output_clamps(scale, zero_point)),
    }
    return draw(int8_arrays(shape, zero_point)), params


@settings(max_examples=max_examples(600), **PROPERTY_SETTINGS)
@given(case=pool_cases())
def test_avg_pool_matches_reference(
    kernels: KernelLibrary, case: tuple[np.ndarray, dict[str, Any]]
) -> None:
    input, params = case
    note(f"input={input.tolist()}")
    np.testing.assert_array_equal(
        kernels.avg_pool(input, **params), reference.avg_pool(input, **params)
    )


@settings(max_examples=max_examples(600), **PROPERTY_SETTINGS)
@given(case=pool_cases())
def test_max_pool_matches_reference(
    kernels: KernelLibrary, case: tuple[np.ndarray, dict[str, Any]]
) -> None:
    input, params = case
    note(f"input={input.tolist()}")
    np.testing.assert_array_equal(
        kernels.max_pool(input, **params), reference.max_pool(input, **params)
    )


def test_avg_pool_rounds_halves_away_from_zero(kernels: KernelLibrary) -> None:
    # Windows of two values whose sums are odd: 3 / 2 -> 2, -3 / 2 -> -2,
    # 1 / 2 -> 1, -1 / 2 -> -1.
    input = np.array([1, 2, -1, -2, 0, 1, 0, -1], dtype=np.int8).reshape(1, 1, 8, 1)
    params = {
        "filter_size": (1, 2),
        "stride": (1, 2),
        "pad": (0, 0),
        "output_size": (1, 4),
        "clamp": (-128, 127),
    }
    expected = np.array([2, -2, 1, -1], dtype=np.int8).reshape(1, 1, 4, 1)
    np.testing.assert_array_equal(reference.avg_pool(input, **params), expected)
    np.testing.assert_array_equal(kernels.avg_pool(input, **params), expected)


@pytest.mark.parametrize("pool", ["avg_pool", "max_pool"])
def test_pool_one_by_one_input(kernels: KernelLibrary, pool: str) -> None:
    input = np.array([-128, -7, 0, 99, 127], dtype=np.int8).reshape(1, 1, 1, 5)
    params = {
        "filter_size": (3, 3),
        "stride": (1, 1),
        "pad": (1, 1),  # SAME: the window covers only the one input element
        "output_size": (1, 1),
        "clamp": (-100, 100),
    }
    expected = np.clip(input, -100, 100)
    np.testing.assert_array_equal(getattr(reference, pool)(input, **params), expected)
    np.testing.assert_array_equal(getattr(kernels, pool)(input, **params), expected)


# ADD.


@st.composite
def add_cases(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    output_shape = (
        draw(st.integers(1, 2)),
        draw(st.integers(1, 4)),
        draw(st.integers(1, 4)),
        draw(st.integers(1, 24)),
    )
    # Each input is broadcast along a random subset of the dimensions.
    input_shapes = []
    for _ in range(2):
        broadcast = draw(st.lists(st.booleans(), min_size=4, max_size=4))
        shape = tuple(
            1 if flag else size for flag, size in zip(broadcast, output_shape, strict=True)
        )
        input_shapes.append(shape)

    input1_scale = draw(float32_scales(-10, 0))
    input2_scale = float(np.float32(input1_scale * 2.0 ** draw(st.integers(-12, 12))))
    output_scale = float(
        np.float32(max(input1_scale, input2_scale) * 2.0 ** draw(st.integers(-10, 6)))
    )
    factors = quantization.add_parameters(input1_scale, input2_scale, output_scale)
    zero_point1 = draw(zero_points)
    zero_point2 = draw(zero_points)
    output_zero_point = draw(zero_points)
    params = {
        "input1_offset": -zero_point1,
        "input2_offset": -zero_point2,
        "output_offset": output_zero_point,
        "left_shift": factors["left_shift"],
        "input1_quant": (factors["input1_multiplier"], factors["input1_shift"]),
        "input2_quant": (factors["input2_multiplier"], factors["input2_shift"]),
        "output_quant": (factors["output_multiplier"], factors["output_shift"]),
        "clamp": draw(output_clamps(output_scale, output_zero_point)),
    }
    input1 = draw(int8_arrays(input_shapes[0], zero_point1))
    input2 = draw(int8_arrays(input_shapes[1], zero_point2))
    return input1, input2, params


@settings(max_examples=max_examples(800), **PROPERTY_SETTINGS)
@given(case=add_cases())
def test_add_matches_reference(
    kernels: KernelLibrary, case: tuple[np.ndarray, np.ndarray, dict[str, Any]]
) -> None:
    input1, input2, params = case
    note(f"input1={input1.tolist()}")
    note(f"input2={input2.tolist()}")
    np.testing.assert_array_equal(
        kernels.add(input1, input2, **params), reference.add(input1, input2, **params)
    )


@pytest.mark.parametrize("dimension", [0, 1, 2, 3], ids=["n", "h", "w", "c"])
def test_add_broadcasts_along_dimension(kernels: KernelLibrary, dimension: int) -> None:
    rng = np.random.default_rng(dimension)
    output_shape = (2, 3, 4, 5)
    broadcast_shape = tuple(1 if i == dimension else size for i, size in enumerate(output_shape))
    input1 = rng.integers(-128, 128, output_shape).astype(np.int8)
    input2 = rng.integers(-128, 128, broadcast_shape).astype(np.int8)
    factors = quantization.add_parameters(0.05, 0.02, 0.07)
    params = {
        "input1_offset": 3,
        "input2_offset": -9,
        "output_offset": 1,
        "left_shift": factors["left_shift"],
        "input1_quant": (factors["input1_multiplier"], factors["input1_shift"]),
        "input2_quant": (factors["input2_multiplier"], factors["input2_shift"]),
        "output_quant": (factors["output_multiplier"], factors["output_shift"]),
        "clamp": (-128, 127),
    }
    expected = reference.add(input1, input2, **params)
    # The broadcast operand gives the same result as its explicit copy.
    expanded = np.ascontiguousarray(np.broadcast_to(input2, output_shape))
    np.testing.assert_array_equal(reference.add(input1, expanded, **params), expected)
    np.testing.assert_array_equal(kernels.add(input1, input2, **params), expected)
    np.testing.assert_array_equal(kernels.add(input2, input1, **_swap_inputs(params)), expected)


def _swap_inputs(params: dict[str, Any]) -> dict[str, Any]:
    swapped = dict(params)
    swapped["input1_offset"], swapped["input2_offset"] = (
        params["input2_offset"],
        params["input1_offset"],
    )
    swapped["input1_quant"], swapped["input2_quant"] = (
        params["input2_quant"],
        params["input1_quant"],
    )
    return swapped


# SOFTMAX.


@st.composite
def softmax_cases(draw: st.DrawFn) -> tuple[np.ndarray, dict[str, int]]:
    rows = draw(st.integers(1, 3))
    depth = draw(st.one_of(st.integers(1, 511), st.sampled_from([1, 2, 255, 256, 510, 511])))
    input_scale = draw(float32_scales(-10, 0))
    beta = draw(st.one_of(st.just(1.0), float32_scales(-3, 2)))
    params = quantization.softmax_parameters(beta, input_scale)
    style = draw(st.sampled_from(["spread", "near_maximum", "equal"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    top = rng.integers(-128, 128)
    if style == "spread":
        # Values up to `width` steps below the top one: a narrow spread gives
        # probabilities in the middle of the range, a wide one mostly -128.
        width = draw(st.integers(1, 256))
        values = np.clip(top - rng.integers(0, width, (rows, depth)), -128, 127)
    elif style == "near_maximum":
        # Many values within a few steps of the maximum give the largest sums of exps.
        values = np.clip(top - rng.integers(0, 4, (rows, depth)), -128, 127)
    else:
        values = np.full((rows, depth), top)
    return values.astype(np.int8), params


@settings(max_examples=max_examples(800), **PROPERTY_SETTINGS)
@given(case=softmax_cases())
def test_softmax_matches_reference(
    kernels: KernelLibrary, case: tuple[np.ndarray, dict[str, int]]
) -> None:
    input, params = case
    note(f"input={input.tolist()}")
    np.testing.assert_array_equal(
        kernels.softmax(input, **params), reference.softmax(input, **params)
    )


def test_softmax_of_equal_values_is_uniform(kernels: KernelLibrary) -> None:
    # 4 equal values: probability 1/4 is 64 steps of 1/256 above -128.
    params = quantization.softmax_parameters(1.0, 0.1)
    input = np.full((1, 4), 5, dtype=np.int8)
    np.testing.assert_array_equal(reference.softmax(input, **params), [[-64] * 4])
    np.testing.assert_array_equal(kernels.softmax(input, **params), [[-64] * 4])


# QUANTIZE, requantize and DEQUANTIZE.


@st.composite
def quantize_cases(draw: st.DrawFn) -> tuple[np.ndarray, float, int]:
    # With a power-of-two scale the quotient x / scale is exact, so the
    # values below land exactly on a half or on its float32 neighbours.
    powers_of_two = st.integers(-20, 4).map(lambda exponent: math.ldexp(1.0, exponent))
    scale = draw(st.one_of(float32_scales(-20, 4), powers_of_two))

    def near_half(k: int, step: int) -> float:
        """(k + 0.5) * scale in float32, moved by `step` (-1, 0 or 1) units in the last place."""
        value = np.float32((k + 0.5) * scale)
        if step != 0:
            value = np.nextafter(value, np.float32(step * math.inf))
        return float(value)

    k_values = st.one_of(st.integers(-2, 2), st.integers(-300, 300))
    halves = st.builds(near_half, k_values, st.sampled_from([-1, 0, 1]))
    specials = st.sampled_from([math.nan, math.inf, -math.inf, 3.0e38, -3.0e38, 0.0, -0.0])
    values = draw(
        st.lists(
            st.one_of(st.floats(width=32, allow_nan=True), halves, specials),
            min_size=1,
            max_size=64,
        )
    )
    return np.array(values, dtype=np.float32), scale, draw(zero_points)


@settings(max_examples=max_examples(600), **PROPERTY_SETTINGS)
@given(case=quantize_cases())
def test_quantize_matches_reference(
    kernels: KernelLibrary, case: tuple[np.ndarray, float, int]
) -> None:
    input, scale, zero_point = case
    note(f"input={input.tolist()}")
    np.testing.assert_array_equal(
        kernels.quantize(input, scale=scale, zero_point=zero_point),
        reference.quantize(input, scale=scale, zero_point=zero_point),
    )


def test_quantize_special_values(kernels: KernelLibrary) -> None:
    input = np.array(
        [math.nan, math.inf, -math.inf, 3.0e38, -3.0e38, 0.5, -0.5, 1.5, -1.5, 2.5]
        + [0.49999997, -0.49999997, 8388609.0, -8388609.0],
        dtype=np.float32,
    )
    # NaN gives the zero point, and infinities and huge values saturate.
    # Halves round away from zero before the zero point (10) is added. 0.49999997 is
    # the float32 just below 0.5, which rounds to 0 (adding 0.5 in float32
    # would give 1.0).
    expected = np.array(
        [10, 127, -128, 127, -128, 11, 9, 12, 8, 13] + [10, 10, 127, -128], dtype=np.int8
    )
    np.testing.assert_array_equal(reference.quantize(input, scale=1.0, zero_point=10), expected)
    np.testing.assert_array_equal(kernels.quantize(input, scale=1.0, zero_point=10), expected)


ALL_INT8 = np.arange(-128, 128, dtype=np.int8)


@settings(max_examples=max_examples(300), **PROPERTY_SETTINGS)
@given(
    input_scale=float32_scales(-12, 2),
    factor_exponent=st.integers(-40, 10),
    input_zero_point=zero_points,
    output_zero_point=zero_points,
)
def test_requantize_s8_matches_reference(
    kernels: KernelLibrary,
    input_scale: float,
    factor_exponent: int,
    input_zero_point: int,
    output_zero_point: int,
) -> None:
    output_scale = float(np.float32(input_scale * 2.0**-factor_exponent * 1.37))
    multiplier, shift = quantization.requantize_multiplier(input_scale, output_scale)
    params = {
        "input_zero_point": input_zero_point,
        "multiplier": multiplier,
        "shift": shift,
        "output_zero_point": output_zero_point,
    }
    np.testing.assert_array_equal(
        kernels.requantize(ALL_INT8, **params), reference.requantize(ALL_INT8, **params)
    )


@settings(max_examples=max_examples(300), **PROPERTY_SETTINGS)
@given(scale=float32_scales(-40, 40), zero_point=zero_points)
def test_dequantize_matches_reference(
    kernels: KernelLibrary, scale: float, zero_point: int
) -> None:
    actual = kernels.dequantize(ALL_INT8, scale=scale, zero_point=zero_point)
    expected = reference.dequantize(ALL_INT8, scale=scale, zero_point=zero_point)
    assert actual.dtype == np.float32
    # Compare the bit patterns, which also distinguishes -0.0 from 0.0.
    np.testing.assert_array_equal(actual.view(np.uint32), expected.view(np.uint32))


# Check functions.


def valid_conv_arguments(**changes: Any) -> dict[str, Any]:
    """Arguments that tk_conv2d_s8_check accepts, with `changes` applied."""
    arguments: dict[str, Any] = {
        "input_shape": (1, 5, 5, 3),
        "filter_shape": (4, 3, 3, 3),
        "output_shape": (1, 5, 5, 4),
        "multipliers": [1 << 30] * 4,
        "shifts": [-5] * 4,
        "input_offset": 0,
        "output_offset": 0,
        "stride": (1, 1),
        "dilation": (1, 1),
        "pad": (1, 1),
        "clamp": (-128, 127),
    }
    arguments.update(changes)
    return arguments


CONV_CHECK_CASES = {
    "input channels mismatched": ({"filter_shape": (4, 3, 3, 2)}, TK_ERROR_SHAPE),
    "output channels mismatched": ({"output_shape": (1, 5, 5, 3)}, TK_ERROR_SHAPE),
    "batch mismatched": ({"output_shape": (2, 5, 5, 4)}, TK_ERROR_SHAPE),
    "zero height": ({"input_shape": (1, 0, 5, 3)}, TK_ERROR_SHAPE),
    "output too large": ({"output_shape": (1, 7, 5, 4)}, TK_ERROR_SHAPE),
    "stride_h 0": ({"stride": (0, 1)}, TK_ERROR_PARAMETER),
    "stride_w 0": ({"stride": (1, 0)}, TK_ERROR_PARAMETER),
    "dilation 0": ({"dilation": (1, 0)}, TK_ERROR_PARAMETER),
    "negative pad": ({"pad": (-1, 1)}, TK_ERROR_PARAMETER),
    "pad as large as the window": ({"pad": (3, 1)}, TK_ERROR_PARAMETER),
    "clamp min above max": ({"clamp": (10, 9)}, TK_ERROR_PARAMETER),
    "clamp outside int8": ({"clamp": (-129, 127)}, TK_ERROR_PARAMETER),
    "input offset 129": ({"input_offset": 129}, TK_ERROR_PARAMETER),
    "output offset 128": ({"output_offset": 128}, TK_ERROR_PARAMETER),
    "too few factors": ({"multipliers": [1 << 30] * 3, "shifts": [-5] * 3}, TK_ERROR_SHAPE),
    "shift 31": ({"shifts": [-5, -5, 31, -5]}, TK_ERROR_PARAMETER),
    "shift -32": ({"shifts": [-32, -5, -5, -5]}, TK_ERROR_PARAMETER),
    "negative multiplier": ({"multipliers": [1 << 30, -1, 1 << 30, 1 << 30]}, TK_ERROR_PARAMETER),
}


def test_conv2d_check_accepts_valid_arguments(kernels: KernelLibrary) -> None:
    assert kernels.conv2d_check(**valid_conv_arguments()) == TK_OK


@pytest.mark.parametrize(("changes", "status"), CONV_CHECK_CASES.values(), ids=CONV_CHECK_CASES)
def test_conv2d_check_rejects(kernels: KernelLibrary, changes: dict[str, Any], status: int) -> None:
    assert kernels.conv2d_check(**valid_conv_arguments(**changes)) == status


def valid_depthwise_arguments(**changes: Any) -> dict[str, Any]:
    """Arguments that tk_depthwise_conv2d_s8_check accepts, with `changes` applied."""
    arguments: dict[str, Any] = {
        "input_shape": (1, 5, 5, 3),
        "filter_shape": (1, 3, 3, 6),
        "output_shape": (1, 3, 3, 6),
        "multipliers": [1 << 30] * 6,
        "shifts": [-5] * 6,
        "input_offset": 0,
        "output_offset": 0,
        "stride": (2, 2),
        "dilation": (1, 1),
        "pad": (1, 1),
        "depth_multiplier": 2,
        "clamp": (-128, 127),
    }
    arguments.update(changes)
    return arguments


DEPTHWISE_CHECK_CASES = {
    "channels not input times multiplier": ({"depth_multiplier": 3}, TK_ERROR_SHAPE),
    "depth multiplier 0": ({"depth_multiplier": 0}, TK_ERROR_PARAMETER),
    "filter batch 2": ({"filter_shape": (2, 3, 3, 6)}, TK_ERROR_SHAPE),
    "filter channels mismatched": ({"filter_shape": (1, 3, 3, 5)}, TK_ERROR_SHAPE),
    "stride 0": ({"stride": (0, 2)}, TK_ERROR_PARAMETER),
    "clamp min above max": ({"clamp": (0, -1)}, TK_ERROR_PARAMETER),
    "too many factors": ({"multipliers": [1 << 30] * 7, "shifts": [-5] * 7}, TK_ERROR_SHAPE),
}


def test_depthwise_conv2d_check_accepts_valid_arguments(kernels: KernelLibrary) -> None:
    assert kernels.depthwise_conv2d_check(**valid_depthwise_arguments()) == TK_OK


@pytest.mark.parametrize(
    ("changes", "status"), DEPTHWISE_CHECK_CASES.values(), ids=DEPTHWISE_CHECK_CASES
)
def test_depthwise_conv2d_check_rejects(
    kernels: KernelLibrary, changes: dict[str, Any], status: int
) -> None:
    assert kernels.depthwise_conv2d_check(**valid_depthwise_arguments(**changes)) == status


def valid_fully_connected_arguments(**changes: Any) -> dict[str, Any]:
    """Arguments that tk_fully_connected_s8_check accepts, with `changes` applied."""
    arguments: dict[str, Any] = {
        "batches": 2,
        "depth": 8,
        "units": 3,
        "multipliers": [1 << 30] * 3,
        "shifts": [-5] * 3,
        "input_offset": 0,
        "filter_offset": 0,
        "output_offset": 0,
        "clamp": (-128, 127),
    }
    arguments.update(changes)
    return arguments


FULLY_CONNECTED_CHECK_CASES = {
    "depth 0": ({"depth": 0}, TK_ERROR_SHAPE),
    "batches 0": ({"batches": 0}, TK_ERROR_SHAPE),
    "units mismatched with factors": ({"units": 4}, TK_ERROR_SHAPE),
    "filter offset 129": ({"filter_offset": 129}, TK_ERROR_PARAMETER),
    "clamp min above max": ({"clamp": (1, 0)}, TK_ERROR_PARAMETER),
}


def test_fully_connected_check_accepts_valid_arguments(kernels: KernelLibrary) -> None:
    assert kernels.fully_connected_check(**valid_fully_connected_arguments()) == TK_OK


@pytest.mark.parametrize(
    ("changes", "status"), FULLY_CONNECTED_CHECK_CASES.values(), ids=FULLY_CONNECTED_CHECK_CASES
)
def test_fully_connected_check_rejects(
    kernels: KernelLibrary, changes: dict[str, Any], status: int
) -> None:
    assert kernels.fully_connected_check(**valid_fully_connected_arguments(**changes)) == status


def valid_pool_arguments(**changes: Any) -> dict[str, Any]:
    """Arguments that tk_pool_s8_check accepts, with `changes` applied."""
    arguments: dict[str, Any] = {
        "input_shape": (1, 6, 6, 4),
        "output_shape": (1, 3, 3, 4),
        "filter_size": (2, 2),
        "stride": (2, 2),
        "pad": (0, 0),
        "clamp": (-128, 127),
    }
    arguments.update(changes)
    return arguments


POOL_CHECK_CASES = {
    "channels mismatched": ({"output_shape": (1, 3, 3, 5)}, TK_ERROR_SHAPE),
    "output too large": ({"output_shape": (1, 4, 3, 4)}, TK_ERROR_SHAPE),
    "stride 0": ({"stride": (2, 0)}, TK_ERROR_PARAMETER),
    "filter 0": ({"filter_size": (0, 2)}, TK_ERROR_PARAMETER),
    "pad as large as the filter": ({"pad": (0, 2)}, TK_ERROR_PARAMETER),
    "clamp min above max": ({"clamp": (5, 4)}, TK_ERROR_PARAMETER),
}


def test_pool_check_accepts_valid_arguments(kernels: KernelLibrary) -> None:
    assert kernels.pool_check(**valid_pool_arguments()) == TK_OK


@pytest.mark.parametrize(("changes", "status"), POOL_CHECK_CASES.values(), ids=POOL_CHECK_CASES)
def test_pool_check_rejects(kernels: KernelLibrary, changes: dict[str, Any], status: int) -> None:
    assert kernels.pool_check(**valid_pool_arguments(**changes)) == status


def valid_add_arguments(**changes: Any) -> dict[str, Any]:
    """Arguments that tk_add_s8_check accepts, with `changes` applied."""
    arguments: dict[str, Any] = {
        "output_shape": (1, 2, 2, 3),
        "input1_strides": [12, 6, 3, 1],
        "input2_strides": [0, 0, 0, 1],
        "input1_offset": 0,
        "input2_offset": 0,
        "output_offset": 0,
        "left_shift": 20,
        "input1_quant": (1 << 30, 0),
        "input2_quant": (1 << 30, -1),
        "output_quant": (1 << 30, -18),
        "clamp": (-128, 127),
    }
    arguments.update(changes)
    return arguments


ADD_CHECK_CASES = {
    "negative stride": ({"input1_strides": [12, 6, -3, 1]}, TK_ERROR_SHAPE),
    "zero channels": ({"output_shape": (1, 2, 2, 0)}, TK_ERROR_SHAPE),
    "left shift 21": ({"left_shift": 21}, TK_ERROR_PARAMETER),
    "positive input shift": ({"input1_quant": (1 << 30, 1)}, TK_ERROR_PARAMETER),
    "positive output shift": ({"output_quant": (1 << 30, 1)}, TK_ERROR_PARAMETER),
    "input offset -128": ({"input2_offset": -128}, TK_ERROR_PARAMETER),
    "clamp min above max": ({"clamp": (127, -128)}, TK_ERROR_PARAMETER),
}


def test_add_check_accepts_valid_arguments(kernels: KernelLibrary) -> None:
    assert kernels.add_check(**valid_add_arguments()) == TK_OK


@pytest.mark.parametrize(("changes", "status"), ADD_CHECK_CASES.values(), ids=ADD_CHECK_CASES)
def test_add_check_rejects(kernels: KernelLibrary, changes: dict[str, Any], status: int) -> None:
    assert kernels.add_check(**valid_add_arguments(**changes)) == status


def valid_softmax_arguments(**changes: Any) -> dict[str, Any]:
    """Arguments that tk_softmax_s8_check accepts, with `changes` applied."""
    arguments: dict[str, Any] = {
        "rows": 2,
        "depth": 511,
        "input_multiplier": 1 << 30,
        "input_left_shift": 20,
        "diff_min": -100,
    }
    arguments.update(changes)
    return arguments


SOFTMAX_CHECK_CASES = {
    "depth 512": ({"depth": 512}, TK_ERROR_SHAPE),
    "depth 0": ({"depth": 0}, TK_ERROR_SHAPE),
    "rows 0": ({"rows": 0}, TK_ERROR_SHAPE),
    "left shift 32": ({"input_left_shift": 32}, TK_ERROR_PARAMETER),
    "negative left shift": ({"input_left_shift": -1}, TK_ERROR_PARAMETER),
    "negative multiplier": ({"input_multiplier": -1}, TK_ERROR_PARAMETER),
    "positive diff_min": ({"diff_min": 1}, TK_ERROR_PARAMETER),
}


def test_softmax_check_accepts_valid_arguments(kernels: KernelLibrary) -> None:
    assert kernels.softmax_check(**valid_softmax_arguments()) == TK_OK


@pytest.mark.parametrize(
    ("changes", "status"), SOFTMAX_CHECK_CASES.values(), ids=SOFTMAX_CHECK_CASES
)
def test_softmax_check_rejects(
    kernels: KernelLibrary, changes: dict[str, Any], status: int
) -> None:
    assert kernels.softmax_check(**valid_softmax_arguments(**changes)) == status


def test_checks_reject_null_pointers(kernels: KernelLibrary) -> None:
    ffi = kernels.ffi
    lib = kernels.lib
    dims = ffi.new("tk_dims *", {"n": 1, "h": 1, "w": 1, "c": 1})
    strides = ffi.new("int32_t[4]", [1, 1, 1, 1])
    # Valid for a 1x1 input, filter and output: only the pointers are wrong.
    conv_params = ffi.new(
        "tk_conv_params *", {"stride_h": 1, "stride_w": 1, "dilation_h": 1, "dilation_w": 1}
    )
    null_quant = ffi.new("tk_quant_per_channel *", {"count": 1})

    assert lib.tk_conv2d_s8_check(ffi.NULL, null_quant, dims, dims, dims) == TK_ERROR_NULL_POINTER
    assert lib.tk_conv2d_s8_check(conv_params, ffi.NULL, dims, dims, dims) == (
        TK_ERROR_NULL_POINTER
    )
    assert lib.tk_conv2d_s8_check(conv_params, null_quant, dims, dims, dims) == (
        TK_ERROR_NULL_POINTER
    )
    assert lib.tk_conv2d_s8_check(conv_params, null_quant, ffi.NULL, dims, dims) == (
        TK_ERROR_NULL_POINTER
    )
    assert lib.tk_depthwise_conv2d_s8_check(ffi.NULL, null_quant, dims, dims, dims) == (
        TK_ERROR_NULL_POINTER
    )
    assert lib.tk_fully_connected_s8_check(ffi.NULL, null_quant, 1, 1, 1) == TK_ERROR_NULL_POINTER
    assert lib.tk_pool_s8_check(ffi.NULL, dims, dims) == TK_ERROR_NULL_POINTER
    assert lib.tk_add_s8_check(ffi.NULL, dims, strides, strides) == TK_ERROR_NULL_POINTER
    assert lib.tk_softmax_s8_check(ffi.NULL, 1, 1) == TK_ERROR_NULL_POINTER
