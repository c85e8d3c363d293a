"""TensorFlow Lite Micro's int8 reference arithmetic, restated in numpy.

Every kernel test compares the C kernels against these functions with exact
equality. Integer work happens in int64 arrays that contain int32 values.
Where the reference C++ wraps or truncates, the functions here wrap to the
int32 range or divide with truncation toward zero explicitly. numpy's `//`
floors instead, and its `>>` on negative int64 values is an arithmetic shift.

The fixed-point primitives follow gemmlowp's fixedpoint.h as TFLM uses it.
The kernels follow TFLM's reference_integer_ops (conv, depthwise conv, fully
connected, pooling, add) and reference_ops (softmax, quantize, requantize,
dequantize). Layouts match tk_kernels.h: activations NHWC, conv filters OHWI,
depthwise filters 1HWC, fully connected weights [units, depth].
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1

# Fixed-point formats of TFLM's int8 softmax: the scaled input difference has
# 5 integer bits and the sum of exps 12.
SOFTMAX_DIFF_INTEGER_BITS = 5
SOFTMAX_SUM_INTEGER_BITS = 12

Pair = tuple[int, int]


def _int64(x: ArrayLike) -> np.ndarray:
    return np.asarray(x, dtype=np.int64)


def wrap_int32(x: ArrayLike) -> np.ndarray:
    """Reduce int64 values modulo 2^32 into the int32 range (two's complement)."""
    return ((_int64(x) + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def _truncating_divide(numerator: ArrayLike, denominator: ArrayLike) -> np.ndarray:
    """C's integer division: the quotient rounded toward zero (denominator > 0)."""
    numerator = _int64(numerator)
    magnitude = np.abs(numerator) // denominator
    return np.where(numerator >= 0, magnitude, -magnitude)


def _require_int32(values: np.ndarray, description: str) -> None:
    """Raise ValueError when an int32 accumulator of the C++ reference would overflow.

    Signed overflow is undefined behaviour there, so a test input that reaches
    it has no defined expected output.
    """
    if values.size and (values.min() < INT32_MIN or values.max() > INT32_MAX):
        raise ValueError(
            f"{description} leaves the int32 range ({values.min()}..{values.max()}), "
            "so pick smaller test inputs"
        )


# Fixed-point primitives.


def saturating_rounding_doubling_high_mul(a: ArrayLike, b: ArrayLike) -> np.ndarray:
    """Compute round(a * b / 2^31) as gemmlowp's SaturatingRoundingDoublingHighMul.

    The nudge of +2^30 (or 1 - 2^30 for a negative product) before a division
    that truncates toward zero rounds ties toward +infinity. INT32_MIN * INT32_MIN
    is the one product whose result does not fit, and saturates to INT32_MAX.
    """
    a = _int64(a)
    b = _int64(b)
    product = a * b
    nudge = np.where(product >= 0, 1 << 30, 1 - (1 << 30))
    high = _truncating_divide(product + nudge, 1 << 31)
    overflow = (a == INT32_MIN) & (b == INT32_MIN)
    return np.where(overflow, INT32_MAX, high)


def rounding_divide_by_pot(x: ArrayLike, exponent: ArrayLike) -> np.ndarray:
    """Compute round(x / 2^exponent), ties away from zero, for 0 <= exponent <= 31.

    This is gemmlowp's RoundingDivideByPOT: an arithmetic shift (which rounds
    down), plus one when the discarded bits are more than half, or exactly half
    for x >= 0.
    """
    x = _int64(x)
    exponent = _int64(exponent)
    mask = (np.int64(1) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + (remainder > threshold)


def saturating_shift_left(x: ArrayLike, exponent: int) -> np.ndarray:
    """Compute x * 2^exponent clamped to the int32 range, for 0 <= exponent <= 31.

    gemmlowp's SaturatingRoundingMultiplyByPOT with a positive exponent: values
    beyond +-(2^(31 - exponent) - 1) saturate.
    """
    x = _int64(x)
    if exponent == 0:
        return x
    threshold = (1 << (31 - exponent)) - 1
    shifted = wrap_int32(x << exponent)
    return np.where(x > threshold, INT32_MAX, np.where(x < -threshold, INT32_MIN, shifted))


def multiply_by_quantized_multiplier(
    x: ArrayLike, multiplier: ArrayLike, shift: ArrayLike
) -> np.ndarray:
    """Scale x by multiplier * 2^(shift - 31) as TFLM's MultiplyByQuantizedMultiplier.

    This is TFLM's default double rounding: x is shifted left by a positive
    shift, multiplied by the rounding doubling high multiply, then divided by
    2^-shift for a negative shift with a rounding right shift.
    NOTE: the C++ computes x * (1 << shift) in int32, which is undefined when
    it overflows. Here, as in the C kernels, the product wraps modulo 2^32.
    """
    x = _int64(x)
    shift = _int64(shift)
    left_shift = np.maximum(shift, 0)
    right_shift = np.maximum(-shift, 0)
    shifted = wrap_int32(x << left_shift)
    return rounding_divide_by_pot(
        saturating_rounding_doubling_high_mul(shifted, multiplier), right_shift
    )


# Convolutions and fully connected.


def _tap_indices(output_size: int, stride: int, pad: int, tap_offset: int, input_size: int):
    """Input coordinates of one filter tap for every output coordinate, clipped
    into the input, and a mask of the ones that really lie inside it."""
    coordinates = np.arange(output_size) * stride - pad + tap_offset
    inside = (coordinates >= 0) & (coordinates < input_size)
    return np.clip(coordinates, 0, input_size - 1), inside


def _requantize_accumulator(
    accumulator: np.ndarray,
    bias: np.ndarray | None,
    multipliers: Sequence[int],
    shifts: Sequence[int],
    output_offset: int,
    clamp: Pair,
) -> np.ndarray:
    """Add the bias, scale per output channel (last axis), add the output zero
    point and clamp: the tail shared by conv, depthwise conv and fully connected."""
    if bias is not None:
        accumulator = accumulator + _int64(bias)
    _require_int32(accumulator, "the accumulator plus bias")
    scaled = multiply_by_quantized_multiplier(accumulator, _int64(multipliers), _int64(shifts))
    return np.clip(scaled + output_offset, clamp[0], clamp[1]).astype(np.int8)


def conv2d(
    input: np.ndarray,
    filter: np.ndarray,
    bias: np.ndarray | None,
    *,
    multipliers: Sequence[int],
    shifts: Sequence[int],
    input_offset: int,
    output_offset: int,
    stride: Pair,
    dilation: Pair,
    pad: Pair,
    output_size: Pair,
    clamp: Pair,
) -> np.ndarray:
    """Compute TFLM's per-channel int8 CONV_2D (reference_integer_ops::ConvPerChannel).

    input [n, h, w, c_in], filter [c_out, kh, kw, c_in], bias c_out int32
    values or None. pad is the padding before the first row and column, and
    taps that fall outside the input contribute nothing, which equals padding
    with the input zero point. Returns the int8 output [n, oh, ow, c_out].
    """
    batches, in_h, in_w, in_c = input.shape
    out_c, k_h, k_w, filter_c = filter.shape
    if filter_c != in_c:
        raise ValueError(f"filter has {filter_c} input channels, the input {in_c}")
    out_h, out_w = output_size
    offset_input = _int64(input) + input_offset
    weights = _int64(filter)
    accumulator = np.zeros((batches, out_h, out_w, out_c), dtype=np.int64)

    for ky in range(k_h):
        rows, rows_inside = _tap_indices(out_h, stride[0], pad[0], ky * dilation[0], in_h)
        for kx in range(k_w):
            columns, columns_inside = _tap_indices(out_w, stride[1], pad[1], kx * dilation[1], in_w)
            window = offset_input[:, rows][:, :, columns]
            inside = rows_inside[:, None] & columns_inside[None, :]
            window = window * inside[None, :, :, None]
            accumulator += window @ weights[:, ky, kx, :].T

    return _requantize_accumulator(accumulator, bias, multipliers, shifts, output_offset, clamp)


def depthwise_conv2d(
    input: np.ndarray,
    filter: np.ndarray,
    bias: np.ndarray | None,
    *,
    multipliers: Sequence[int],
    shifts: Sequence[int],
    input_offset: int,
    output_offset: int,
    stride: Pair,
    dilation: Pair,
    pad: Pair,
    depth_multiplier: int,
    output_size: Pair,
    clamp: Pair,
) -> np.ndarray:
    """Compute TFLM's per-channel int8 DEPTHWISE_CONV_2D
    (reference_integer_ops::DepthwiseConvPerChannel).

    input [n, h, w, c_in], filter [1, kh, kw, c_in * depth_multiplier].
    Output channel ic * depth_multiplier + m reads input channel ic only.
    Returns the int8 output [n, oh, ow, c_in * depth_multiplier].
    """
    batches, in_h, in_w, in_c = input.shape
    _, k_h, k_w, out_c = filter.shape
    if out_c != in_c * depth_multiplier:
        raise ValueError(f"filter has {out_c} channels, expected {in_c} x {depth_multiplier}")
    out_h, out_w = output_size
    # Repeat each input channel depth_multiplier times so that channel oc of
    # the repeated input is input channel oc // depth_multiplier.
    offset_input = np.repeat(_int64(input) + input_offset, depth_multiplier, axis=3)
    weights = _int64(filter)
    accumulator = np.zeros((batches, out_h, out_w, out_c), dtype=np.int64)

    for ky in range(k_h):
        rows, rows_inside = _tap_indices(out_h, stride[0], pad[0], ky * dilation[0], in_h)
        for kx in range(k_w):
            columns, columns_inside = _tap_indices(out_w, stride[1], pad[1], kx * dilation[1], in_w)
            window = offset_input[:, rows][:, :, columns]
            inside = rows_inside[:, None] & columns_inside[None, :]
            accumulator += window * inside[None, :, :, None] * weights[0, ky, kx, :]

    return _requantize_accumulator(accumulator, bias, multipliers, shifts, output_offset, clamp)


def fully_connected(
    input: np.ndarray,
    filter: np.ndarray,
    bias: np.ndarray | None,
    *,
    multipliers: Sequence[int],
    shifts: Sequence[int],
    input_offset: int,
    filter_offset: int,
    output_offset: int,
    clamp: Pair,
) -> np.ndarray:
    """Compute TFLM's int8 FULLY_CONNECTED (reference_integer_ops::FullyConnected,
    with a factor per unit as in FullyConnectedPerChannel).

    input [batches, depth], filter [units, depth]. Returns [batches, units].
    """
    offset_input = _int64(input) + input_offset
    offset_filter = _int64(filter) + filter_offset
    accumulator = offset_input @ offset_filter.T
    return _requantize_accumulator(accumulator, bias, multipliers, shifts, output_offset, clamp)


# Pooling.


def _pool_windows(input: np.ndarray, filter_size: Pair, stride: Pair, pad: Pair, output_size: Pair):
    """Yield, per filter tap, the input values under it for every output
    position [n, oh, ow, c] and the mask [oh, ow] of taps inside the input."""
    _, in_h, in_w, _ = input.shape
    out_h, out_w = output_size
    for ky in range(filter_size[0]):
        rows, rows_inside = _tap_indices(out_h, stride[0], pad[0], ky, in_h)
        for kx in range(filter_size[1]):
            columns, columns_inside = _tap_indices(out_w, stride[1], pad[1], kx, in_w)
            yield input[:, rows][:, :, columns], rows_inside[:, None] & columns_inside[None, :]


def avg_pool(
    input: np.ndarray,
    *,
    filter_size: Pair,
    stride: Pair,
    pad: Pair,
    output_size: Pair,
    clamp: Pair,
) -> np.ndarray:
    """Compute TFLM's int8 AVERAGE_POOL_2D (reference_integer_ops::AveragePool).

    Each window averages only its taps inside the input. The sum is divided by
    their count with C's truncating division after adding (or, for a sum <= 0,
    subtracting) half the count, which rounds half away from zero.
    """
    total = np.zeros((input.shape[0], *output_size, input.shape[3]), dtype=np.int64)
    count = np.zeros(output_size, dtype=np.int64)
    for window, inside in _pool_windows(_int64(input), filter_size, stride, pad, output_size):
        total += window * inside[None, :, :, None]
        count += inside
    if (count == 0).any():
        raise ValueError("a pooling window lies entirely in the padding")

    count = count[None, :, :, None]
    rounded = np.where(
        total > 0,
        _truncating_divide(total + count // 2, count),
        _truncating_divide(total - count // 2, count),
    )
    return np.clip(rounded, clamp[0], clamp[1]).astype(np.int8)


def max_pool(
    input: np.ndarray,
    *,
    filter_size: Pair,
    stride: Pair,
    pad: Pair,
    output_size: Pair,
    clamp: Pair,
) -> np.ndarray:
    """Compute TFLM's int8 MAX_POOL_2D (reference_integer_ops::MaxPool): the
    maximum of the taps inside the input, starting from -128, then clamped."""
    maximum = np.full((input.shape[0], *output_size, input.shape[3]), -128, dtype=np.int64)
    for window, inside in _pool_windows(_int64(input), filter_size, stride, pad, output_size):
        maximum = np.maximum(maximum, np.where(inside[None, :, :, None], window, -128))
    return np.clip(maximum, clamp[0], clamp[1]).astype(np.int8)


# Elementwise.


def add(
    input1: np.ndarray,
    input2: np.ndarray,
    *,
    input1_offset: int,
    input2_offset: int,
    output_offset: int,
    left_shift: int,
    input1_quant: Pair,
    input2_quant: Pair,
    output_quant: Pair,
    clamp: Pair,
) -> np.ndarray:
    """Compute TFLM's int8 ADD (reference_integer_ops::Add and BroadcastAdd4DSlow).

    The inputs broadcast against each other with numpy's rules. Each input,
    offset by minus its zero point and shifted left by left_shift, is scaled by
    its (multiplier, shift) pair with shift <= 0 (MultiplyByQuantizedMultiplier
    SmallerThanOneExp: the high multiply, then a rounding right shift). The
    int32 sum is scaled the same way by output_quant, offset and clamped.
    """

    def scale(value: np.ndarray, quant: Pair) -> np.ndarray:
        multiplier, shift = quant
        if shift > 0:
            raise ValueError(f"ADD needs shifts <= 0, got {shift}")
        high = saturating_rounding_doubling_high_mul(value, multiplier)
        return rounding_divide_by_pot(high, -shift)

    shifted1 = (_int64(input1) + input1_offset) * (1 << left_shift)
    shifted2 = (_int64(input2) + input2_offset) * (1 << left_shift)
    _require_int32(shifted1, "input1 shifted left")
    _require_int32(shifted2, "input2 shifted left")
    raw_sum = scale(shifted1, input1_quant) + scale(shifted2, input2_quant)
    _require_int32(raw_sum, "the sum of the scaled inputs")
    output = scale(raw_sum, output_quant) + output_offset
    return np.clip(output, clamp[0], clamp[1]).astype(np.int8)


# Softmax: gemmlowp's fixed-point exp() and reciprocal, vectorized.


def _fixed_point_mul(a: ArrayLike, b: ArrayLike) -> np.ndarray:
    """Product of two fixed-point raw values (gemmlowp's FixedPoint operator*):
    the result's integer bits are the sum of the operands' integer bits."""
    return saturating_rounding_doubling_high_mul(a, b)


def exp_on_interval_between_negative_one_quarter_and_0_excl(a: np.ndarray) -> np.ndarray:
    """Compute exp(a) for a in [-1/4, 0), input and result with 0 integer bits.

    A Taylor series around -1/8 up to the fourth power: with x = a + 1/8,
    exp(a) = exp(-1/8) * (1 + x + x^2/2 + x^3/6 + x^4/24).
    """
    exp_minus_one_eighth = 1895147668  # exp(-1/8) * 2^31, rounded
    one_third = 715827883  # 2^31 / 3, rounded
    x = wrap_int32(a + (1 << 28))  # 1/8 is 2^28 with 0 integer bits
    x2 = _fixed_point_mul(x, x)
    x3 = _fixed_point_mul(x2, x)
    x4 = _fixed_point_mul(x2, x2)
    x4_over_4 = rounding_divide_by_pot(x4, 2)
    # ((x^4/4 + x^3) / 3 + x^2) / 2 = x^4/24 + x^3/6 + x^2/2
    polynomial = rounding_divide_by_pot(
        wrap_int32(_fixed_point_mul(wrap_int32(x4_over_4 + x3), one_third) + x2), 1
    )
    return wrap_int32(
        exp_minus_one_eighth + _fixed_point_mul(exp_minus_one_eighth, wrap_int32(x + polynomial))
    )


# exp(-2^k) * 2^31, rounded, for k = -2 .. 4: gemmlowp's barrel shifter factors.
_EXP_OF_MINUS_POWER_OF_TWO = {
    -2: 1672461947,
    -1: 1302514674,
    0: 790015084,
    1: 290630308,
    2: 39332535,
    3: 720401,
    4: 242,
}


def exp_on_negative_values(a: np.ndarray, integer_bits: int) -> np.ndarray:
    """Compute exp(a) for a <= 0 given with `integer_bits` (at most 5) integer
    bits, as gemmlowp's exp_on_negative_values. The result has 0 integer bits.

    a is split into a part in [-1/4, 0), evaluated by the Taylor series, and a
    multiple of 1/4 whose set bits select factors exp(-2^k). a == 0 gives
    INT32_MAX, the largest value below 1.
    """
    if not 0 <= integer_bits <= 5:
        raise ValueError(f"integer_bits must be in 0..5, got {integer_bits}")
    a = _int64(a)
    fractional_bits = 31 - integer_bits
    one_quarter = 1 << (fractional_bits - 2)
    a_mod_quarter_minus_quarter = (a & (one_quarter - 1)) - one_quarter
    result = exp_on_interval_between_negative_one_quarter_and_0_excl(
        saturating_shift_left(a_mod_quarter_minus_quarter, integer_bits)
    )
    # remainder is -a rounded down to a multiple of 1/4, in the input format.
    remainder = wrap_int32(a_mod_quarter_minus_quarter - a)
    for exponent, factor in _EXP_OF_MINUS_POWER_OF_TWO.items():
        if integer_bits > exponent:
            bit_set = (remainder & (1 << (fractional_bits + exponent))) != 0
            result = np.where(bit_set, _fixed_point_mul(result, factor), result)
    return np.where(a == 0, INT32_MAX, result)


def one_over_one_plus_x_for_x_in_0_1(x: np.ndarray) -> np.ndarray:
    """Compute 1 / (1 + x) for x in [0, 1), input and result with 0 integer bits.

    gemmlowp's Newton-Raphson division: d = (1 + x) / 2 (a rounding half sum
    with 1 = INT32_MAX), the estimate 48/17 - 32/17 * d, three steps of
    e += e * (1 - d * e), all with 2 integer bits, then e / 2 rescaled to 0
    integer bits with saturation.
    """
    constant_48_over_17 = 1515870810  # 48/17 with 2 integer bits
    constant_neg_32_over_17 = -1010580540  # -32/17 with 2 integer bits
    one_with_2_integer_bits = 1 << 29
    total = _int64(x) + INT32_MAX
    half_denominator = _truncating_divide(total + np.where(total >= 0, 1, -1), 2)
    estimate = wrap_int32(
        constant_48_over_17 + _fixed_point_mul(half_denominator, constant_neg_32_over_17)
    )
    for _ in range(3):
        half_denominator_times_estimate = _fixed_point_mul(half_denominator, estimate)
        one_minus = wrap_int32(one_with_2_integer_bits - half_denominator_times_estimate)
        correction = saturating_shift_left(_fixed_point_mul(estimate, one_minus), 2)
        estimate = wrap_int32(estimate + correction)
    # Reading the 2-integer-bit estimate with 1 integer bit halves it. Then
    # rescale from 1 to 0 integer bits.
    return saturating_shift_left(estimate, 1)


def _count_leading_zeros_uint32(x: np.ndarray) -> np.ndarray:
    """Leading zero bits of positive values below 2^32, as a 32-bit word."""
    _, bit_length = np.frexp(_int64(x).astype(np.float64))  # exact below 2^53
    return 32 - bit_length.astype(np.int64)


def softmax(
    input: np.ndarray, *, input_multiplier: int, input_left_shift: int, diff_min: int
) -> np.ndarray:
    """Compute TFLM's int8 SOFTMAX (reference_ops::Softmax, the gemmlowp path)
    over the last axis. The output has scale 1/256 and zero point -128.

    For each row: d = x - max(row). Values with d < diff_min give -128. The
    others are scaled by input_multiplier * 2^input_left_shift into a number
    with 5 integer bits, exp() is taken in fixed point, and the sum of exps,
    kept with 12 integer bits, is normalized to [1, 2) for its reciprocal.
    The output is round(exp * reciprocal / 2^(bits over unit + 23)) - 128.
    """
    values = _int64(input)
    if values.shape[-1] > 511:
        raise ValueError("rows longer than 511 values can make the reference shift by 32 bits")
    rows = values.reshape(-1, values.shape[-1])
    diff = rows - rows.max(axis=1, keepdims=True)
    used = diff >= diff_min

    # MultiplyByQuantizedMultiplierGreaterThanOne: a left shift, then the high multiply.
    shifted_diff = wrap_int32(diff << input_left_shift)
    scaled_diff = saturating_rounding_doubling_high_mul(shifted_diff, input_multiplier)
    exp_values = exp_on_negative_values(scaled_diff, SOFTMAX_DIFF_INTEGER_BITS)

    # gemmlowp::Rescale from 0 to 12 integer bits, summed over the used values.
    terms = rounding_divide_by_pot(exp_values, SOFTMAX_SUM_INTEGER_BITS)
    sum_of_exps = np.where(used, terms, 0).sum(axis=1)
    _require_int32(sum_of_exps, "the sum of exps")

    # TFLM's GetReciprocal: shift the sum into [1, 2) and invert 1 + fraction.
    headroom = _count_leading_zeros_uint32(sum_of_exps)
    bits_over_unit = SOFTMAX_SUM_INTEGER_BITS - headroom
    shifted_sum_minus_one = (sum_of_exps << headroom) - (1 << 31)
    reciprocal = one_over_one_plus_x_for_x_in_0_1(shifted_sum_minus_one)

    exponent = (bits_over_unit + 31 - 8)[:, None]
    probability = rounding_divide_by_pot(
        _fixed_point_mul(reciprocal[:, None], exp_values), exponent
    )
    output = np.where(used, np.clip(probability - 128, -128, 127), -128)
    return output.astype(np.int8).reshape(values.shape)


# Quantize, requantize, dequantize.


def quantize(input: np.ndarray, *, scale: float, zero_point: int) -> np.ndarray:
    """Compute TFLM's float32 -> int8 QUANTIZE (reference_ops::AffineQuantize).

    The quotient x / scale is a float32 division, rounded half away from zero
    (TfLiteRound, i.e. roundf), plus the zero point, clamped to int8.
    NOTE: the C++ casts the rounded float to int32, which is undefined for NaN
    and out-of-range values. The C kernels, and so this function, map NaN to
    the zero point and saturate infinities and huge values.
    """
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        quotient = np.asarray(input, dtype=np.float32) / np.float32(scale)
    # float64 represents every float32 exactly, so adding 0.5 there cannot round up
    # a value just below a half, as it can in float32.
    magnitude = np.floor(np.abs(quotient.astype(np.float64)) + 0.5)
    rounded = np.copysign(magnitude, quotient)
    rounded = np.where(np.isnan(rounded), 0.0, np.clip(rounded, -512.0, 512.0))
    return np.clip(rounded.astype(np.int64) + zero_point, -128, 127).astype(np.int8)


def requantize(
    input: np.ndarray,
    *,
    input_zero_point: int,
    multiplier: int,
    shift: int,
    output_zero_point: int,
) -> np.ndarray:
    """Compute TFLM's int8 -> int8 QUANTIZE (reference_ops::Requantize):
    (q - input zero point) scaled by multiplier * 2^(shift - 31), plus the
    output zero point, clamped to int8."""
    scaled = multiply_by_quantized_multiplier(_int64(input) - input_zero_point, multiplier, shift)
    return np.clip(scaled + output_zero_point, -128, 127).astype(np.int8)


def dequantize(input: np.ndarray, *, scale: float, zero_point: int) -> np.ndarray:
    """Compute TFLM's int8 -> float32 DEQUANTIZE (reference_ops::Dequantize).

    TFLM widens the float32 scale to double, multiplies by q - zero_point and
    rounds the product to float32.
    """
    products = np.float64(np.float32(scale)) * (_int64(input) - zero_point)
    return products.astype(np.float32)
