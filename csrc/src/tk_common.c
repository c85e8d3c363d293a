/*
 * tk_common.c: helpers shared by the kernels and exported for tests.
 */
#include "tk_fixed_point.h"
#include "tk_kernels.h"

int32_t tk_requantize(int32_t x, int32_t multiplier, int32_t shift) {
  return tk_multiply_by_quantized_multiplier(x, multiplier, shift);
}
