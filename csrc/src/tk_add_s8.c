/*
 * tk_add_s8.c: ADD of two int8 tensors with broadcasting.
 *
 * output [n, h, w, c]; each input is addressed through per-dimension element
 * steps, 0 along a broadcast dimension. Both inputs are brought to a common
 * scale with 20 extra bits of precision, summed in int32 and requantized to
 * the output, as TFLM's reference ADD does. Cost: a few multiplies per
 * element, no scratch memory.
 */
#include "tk_fixed_point.h"
#include "tk_internal.h"
#include "tk_kernels.h"

tk_status tk_add_s8_check(const tk_add_params *params, const tk_dims *output_dims,
                          const int32_t input1_strides[4], const int32_t input2_strides[4]) {
  int32_t i;

  if (params == NULL || input1_strides == NULL || input2_strides == NULL) {
    return TK_ERROR_NULL_POINTER;
  }
  TK_RETURN_IF_ERROR(tk_check_dims(output_dims));
  for (i = 0; i < 4; ++i) {
    if (input1_strides[i] < 0 || input2_strides[i] < 0) {
      return TK_ERROR_SHAPE;
    }
  }
  TK_RETURN_IF_ERROR(tk_check_offsets(params->input1_offset, params->output_offset));
  TK_RETURN_IF_ERROR(tk_check_offsets(params->input2_offset, params->output_offset));
  if (params->left_shift < 0 || params->left_shift > 20) {
    return TK_ERROR_PARAMETER;
  }
  TK_RETURN_IF_ERROR(tk_check_quant(params->input1.multiplier, params->input1.shift));
  TK_RETURN_IF_ERROR(tk_check_quant(params->input2.multiplier, params->input2.shift));
  TK_RETURN_IF_ERROR(tk_check_quant(params->output.multiplier, params->output.shift));
  if (params->input1.shift > 0 || params->input2.shift > 0 || params->output.shift > 0) {
    return TK_ERROR_PARAMETER;
  }
  return tk_check_clamp(&params->clamp);
}

/* One input value brought to the common scale: (q + offset) * 2^left_shift
 * times its factor. */
static int32_t tk_add_scale_input(int32_t value, int32_t offset, int32_t left_shift,
                                  const tk_quant *quant) {
  const int32_t shifted = (value + offset) * ((int32_t)1 << left_shift);
  return tk_rounding_divide_by_pot(
      tk_saturating_rounding_doubling_high_mul(shifted, quant->multiplier), -quant->shift);
}

/* Assumes tk_add_s8_check returned TK_OK for these arguments. */
void tk_add_s8(const tk_add_params *params, const tk_dims *output_dims,
               const int32_t input1_strides[4], const int8_t *input1,
               const int32_t input2_strides[4], const int8_t *input2, int8_t *output) {
  size_t out_index = 0;
  int32_t b;
  int32_t y;
  int32_t x;
  int32_t c;

  for (b = 0; b < output_dims->n; ++b) {
    for (y = 0; y < output_dims->h; ++y) {
      for (x = 0; x < output_dims->w; ++x) {
        const size_t base1 = (size_t)b * input1_strides[0] + (size_t)y * input1_strides[1] +
                             (size_t)x * input1_strides[2];
        const size_t base2 = (size_t)b * input2_strides[0] + (size_t)y * input2_strides[1] +
                             (size_t)x * input2_strides[2];
        for (c = 0; c < output_dims->c; ++c) {
          const int32_t scaled1 =
              tk_add_scale_input(input1[base1 + (size_t)c * input1_strides[3]],
                                 params->input1_offset, params->left_shift, &params->input1);
          const int32_t scaled2 =
              tk_add_scale_input(input2[base2 + (size_t)c * input2_strides[3]],
                                 params->input2_offset, params->left_shift, &params->input2);
          int32_t sum = tk_rounding_divide_by_pot(
              tk_saturating_rounding_doubling_high_mul(scaled1 + scaled2,
                                                       params->output.multiplier),
              -params->output.shift);

          sum += params->output_offset;
          output[out_index++] = (int8_t)tk_clamp_int(sum, params->clamp.min, params->clamp.max);
        }
      }
    }
  }
}
