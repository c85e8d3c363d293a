"""Fixed-point parameters of TFLite Micro's int8 kernels, derived in Python.

Each function computes, from the float32 scales in the flatbuffer, the same
integers that TFLM's prepare step computes, with the same float32 and
float64 steps, so that the generated C reproduces TFLM's outputs exactly.
"""

from __future__ import annotations

import math

import numpy as np

# Fused activation codes of the TFLite schema.
ACTIVATION_NONE = 0
ACTIVATION_RELU = 1
ACTIVATION_RELU_N1_TO_1 = 2
ACTIVATION_RELU6 = 3


def round_half_away(value: float) -> int:
    """Round as C's round(): halves away from zero (Python's round() does not)."""
    return int(math.floor(abs(value) + 0.5)) * (1 if value >= 0 else -1)


def quantize_multiplier(real: float) -> tuple[int, int]:
    """Split a positive real factor into (multiplier, shift) with
    real = multiplier * 2^(shift - 31) and multiplier in [2^30, 2^31).

    A factor of 0 gives (0, 0); a factor too small for a shift of -31 gives
    (0, 0) too, as in TFLite's QuantizeMultiplier.
    """
    if real == 0.0:
        return 0, 0
    if real < 0.0 or not math.isfinite(real):
        raise ValueError(f"requantization factor {real!r} must be finite and positive")
    fraction, shift = math.frexp(real)
    multiplier = round_half_away(fraction * (1 << 31))
    if multiplier == 1 << 31:
        multiplier //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return multiplier, shift


def conv_multipliers(
    input_scale: float, weight_scales: np.ndarray, output_scale: float
) -> tuple[list[int], list[int]]:
    """Per-channel factors of CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED:
    the float32 scales are widened to float64 before the product."""
    multipliers, shifts = [], []
    for weight_scale in np.asarray(weight_scales, dtype=np.float32):
        real = (
            float(np.float32(input_scale)) * float(weight_scale) / float(np.float32(output_scale))
        )
        multiplier, shift = quantize_multiplier(real)
        multipliers.append(multiplier)
        shifts.append(shift)
    return multipliers, shifts


def fully_connected_multipliers(
    input_scale: float, weight_scales: np.ndarray, output_scale: float
) -> tuple[list[int], list[int]]:
    """Factors of FULLY_CONNECTED, computed as for convolutions.

    Older TFLite code multiplied the input and weight scales in float32
    first. The tflite-micro package (0.dev20261023182759) widens both to
    float64, which changes the multiplier by a few units in the last place:
    the autoencoder clustered to 4 values differs by one step on one output
    otherwise.
    """
    return conv_multipliers(input_scale, weight_scales, output_scale)


def activation_range(activation: int, scale: float, zero_point: int) -> tuple[int, int]:
    """Compute the int8 output clamp of a fused activation. The bounds are
    quantized with a float32 division and rounded half away from zero, as
    TFLM does."""

    def quantize(value: float) -> int:
        quotient = np.float32(np.float32(value) / np.float32(scale))
        return zero_point + round_half_away(float(quotient))

    low, high = -128, 127
    if activation == ACTIVATION_RELU:
        low = max(low, quantize(0.0))
    elif activation == ACTIVATION_RELU6:
        low = max(low, quantize(0.0))
        high = min(high, quantize(6.0))
    elif activation == ACTIVATION_RELU_N1_TO_1:
        low = max(low, quantize(-1.0))
        high = min(high, quantize(1.0))
    elif activation != ACTIVATION_NONE:
        raise ValueError(f"fused activation code {activation} has no int8 clamp")
    return low, high


def add_parameters(input1_scale: float, input2_scale: float, output_scale: float) -> dict[str, int]:
    """ADD factors: both inputs are rescaled to twice the larger input scale
    with 20 extra bits, then the sum to the output scale."""
    left_shift = 20
    scale1 = float(np.float32(input1_scale))
    scale2 = float(np.float32(input2_scale))
    twice_max = 2.0 * max(scale1, scale2)
    input1 = quantize_multiplier(scale1 / twice_max)
    input2 = quantize_multiplier(scale2 / twice_max)
    output = quantize_multiplier(twice_max / ((1 << left_shift) * float(np.float32(output_scale))))
    return {
        "left_shift": left_shift,
        "input1_multiplier": input1[0],
        "input1_shift": input1[1],
        "input2_multiplier": input2[0],
        "input2_shift": input2[1],
        "output_multiplier": output[0],
        "output_shift": output[1],
    }


SOFTMAX_DIFF_INTEGER_BITS = 5


def softmax_parameters(beta: float, input_scale: float) -> dict[str, int]:
    """Compute the SOFTMAX factors. They bring the input difference scale
    beta * scale to a fixed-point number with 5 integer bits. Differences
    below diff_min underflow exp() and give probability 0."""
    integer_bits = SOFTMAX_DIFF_INTEGER_BITS
    real = min(
        float(np.float32(beta)) * float(np.float32(input_scale)) * (1 << (31 - integer_bits)),
        float((1 << 31) - 1),
    )
    multiplier, left_shift = quantize_multiplier(real)
    if left_shift < 0:
        raise ValueError(f"softmax input factor {real!r} is below 1, which TFLM rejects")
    radius = ((1 << integer_bits) - 1) * (1 << (31 - integer_bits)) / (1 << left_shift)
    return {
        "input_multiplier": multiplier,
        "input_left_shift": left_shift,
        "diff_min": -int(math.floor(radius)),
    }


def requantize_multiplier(input_scale: float, output_scale: float) -> tuple[int, int]:
    """Factor of an int8 -> int8 QUANTIZE op."""
    return quantize_multiplier(float(np.float32(input_scale)) / float(np.float32(output_scale)))
