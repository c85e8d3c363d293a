/*
 * tk_fully_connected_s8.c: FULLY_CONNECTED with int8 activations and int8
 * weights.
 *
 * input [batches, depth], filter [units, depth], bias units int32 values,
 * output [batches, units]. Cost: batches*units*depth multiply-accumulates,
 * no scratch memory.
 */
#include "tk_fixed_point.h"
#include "tk_internal.h"
#include "tk_kernels.h"

tk_status tk_fully_connected_s8_check(const tk_fully_connected_params *params,
                                      const tk_quant_per_channel *quant, int32_t batches,
                                      int32_t depth, int32_t units) {
  if (params == NULL) {
    return TK_ERROR_NULL_POINTER;
  }
  if (batches < 1 || depth < 1 || units < 1) {
    return TK_ERROR_SHAPE;
  }
  TK_RETURN_IF_ERROR(tk_check_offsets(params->input_offset, params->output_offset));
  if (params->filter_offset < -127 || params->filter_offset > 128) {
    return TK_ERROR_PARAMETER;
  }
  TK_RETURN_IF_ERROR(tk_check_clamp(&params->clamp));
  return tk_check_quant_per_channel(quant, units);
}

/* Assumes tk_fully_connected_s8_check returned TK_OK for these arguments. */
void tk_fully_connected_s8(const tk_fully_connected_params *params,
                           const tk_quant_per_channel *quant, int32_t batches, int32_t depth,
                           int32_t units, const int8_t *input, const int8_t *filter,
                           const int32_t *bias, int8_t *output) {
  int32_t batch;
  int32_t unit;

  for (batch = 0; batch < batches; ++batch) {
    const int8_t *row = input + (size_t)batch * depth;
    for (unit = 0; unit < units; ++unit) {
      const int8_t *weights = filter + (size_t)unit * depth;
      const int32_t acc =
          tk_dot_offset_s8(0, row, params->input_offset, weights, params->filter_offset, depth);

      output[(size_t)batch * units + unit] =
          tk_output_s8(acc, bias, unit, quant, params->output_offset, &params->clamp);
    }
  }
}
