/*
 * tk_quantize.c: QUANTIZE and DEQUANTIZE at the model edges.
 */
#include <math.h>

#include "tk_fixed_point.h"
#include "tk_kernels.h"

void tk_quantize_f32_s8(const tk_affine *output_quant, int32_t size, const float *input,
                        int8_t *output) {
  int32_t i;

  for (i = 0; i < size; ++i) {
    /* float division and roundf (half away from zero) as TFLM's reference.
     * The rounded value is clamped in float first, because converting an
     * out-of-range float to int32 is undefined; NaN becomes the zero point. */
    float rounded = roundf(input[i] / output_quant->scale);
    int32_t value;
    if (rounded != rounded) {
      rounded = 0.0f;
    }
    if (rounded > 512.0f) {
      rounded = 512.0f;
    } else if (rounded < -512.0f) {
      rounded = -512.0f;
    }
    value = (int32_t)rounded + output_quant->zero_point;
    output[i] = (int8_t)tk_clamp_int(value, -128, 127);
  }
}

void tk_requantize_s8(int32_t input_zero_point, const tk_quant *quant, int32_t output_zero_point,
                      int32_t size, const int8_t *input, int8_t *output) {
  int32_t i;

  for (i = 0; i < size; ++i) {
    const int32_t value = tk_multiply_by_quantized_multiplier(input[i] - input_zero_point,
                                                              quant->multiplier, quant->shift) +
                          output_zero_point;
    output[i] = (int8_t)tk_clamp_int(value, -128, 127);
  }
}

void tk_dequantize_s8_f32(const tk_affine *input_quant, int32_t size, const int8_t *input,
                          float *output) {
  int32_t i;

  for (i = 0; i < size; ++i) {
    /* TFLM multiplies in double and rounds to float. The product of a float
     * and an integer below 2^9 is exact in double, so one float multiply
     * rounds to the same value without double arithmetic on the device. */
    output[i] = input_quant->scale * (float)(input[i] - input_quant->zero_point);
  }
}
