/*
 * tk_internal.h: argument checks, the dot product and the output step
 * shared by the kernels.
 * Internal to the kernel library; not part of the public API.
 */
#ifndef TK_INTERNAL_H
#define TK_INTERNAL_H

#include "tk_fixed_point.h"
#include "tk_kernels.h"

#if defined(__ARM_FEATURE_MVE) && (__ARM_FEATURE_MVE & 1)
#include <arm_mve.h>
#endif

/* TK_OK when every field of dims is at least 1. */
static inline tk_status tk_check_dims(const tk_dims *dims) {
  if (dims == NULL) {
    return TK_ERROR_NULL_POINTER;
  }
  if (dims->n < 1 || dims->h < 1 || dims->w < 1 || dims->c < 1) {
    return TK_ERROR_SHAPE;
  }
  return TK_OK;
}

/* TK_OK when the clamp lies inside the int8 range and is not empty. */
static inline tk_status tk_check_clamp(const tk_clamp *clamp) {
  if (clamp->min < -128 || clamp->max > 127 || clamp->min > clamp->max) {
    return TK_ERROR_PARAMETER;
  }
  return TK_OK;
}

/* TK_OK when a requantization factor is in range. */
static inline tk_status tk_check_quant(int32_t multiplier, int32_t shift) {
  if (multiplier < 0 || shift < -31 || shift > 30) {
    return TK_ERROR_PARAMETER;
  }
  return TK_OK;
}

/* TK_OK when quant has `count` valid entries. */
static inline tk_status tk_check_quant_per_channel(const tk_quant_per_channel *quant,
                                                   int32_t count) {
  int32_t i;

  if (quant == NULL || quant->multiplier == NULL || quant->shift == NULL) {
    return TK_ERROR_NULL_POINTER;
  }
  if (quant->count != count) {
    return TK_ERROR_SHAPE;
  }
  for (i = 0; i < count; ++i) {
    if (tk_check_quant(quant->multiplier[i], quant->shift[i]) != TK_OK) {
      return TK_ERROR_PARAMETER;
    }
  }
  return TK_OK;
}

/* TK_OK when an input offset (minus an int8 zero point) and an output
 * offset (an int8 zero point) are in range. */
static inline tk_status tk_check_offsets(int32_t input_offset, int32_t output_offset) {
  if (input_offset < -127 || input_offset > 128 || output_offset < -128 || output_offset > 127) {
    return TK_ERROR_PARAMETER;
  }
  return TK_OK;
}

/* TK_OK when the spatial output size matches a window of `filter` taps,
 * `dilation` apart, moved by `stride` over `input` values with `pad` values
 * of padding before the first one. The last window must start inside the
 * input or its leading padding. */
static inline tk_status tk_check_window(int32_t input, int32_t filter, int32_t stride,
                                        int32_t dilation, int32_t pad, int32_t output) {
  if (filter < 1 || stride < 1 || dilation < 1 || pad < 0 || pad >= filter * dilation) {
    return TK_ERROR_PARAMETER;
  }
  if ((output - 1) * stride - pad > input - 1) {
    return TK_ERROR_SHAPE;
  }
  return TK_OK;
}

/* Add to acc the dot product of n int8 pairs, each value plus its offset:
 * sum of (x[i] + x_offset) * (w[i] + w_offset), in int32 as TFLM sums it. */
static inline int32_t tk_dot_offset_s8(int32_t acc, const int8_t *x, int32_t x_offset,
                                       const int8_t *w, int32_t w_offset, int32_t n) {
  int32_t i;

#if defined(__ARM_FEATURE_MVE) && (__ARM_FEATURE_MVE & 1)
  /* Helium (MVE), 16 pairs at a time, for rows long enough to pay for the
   * vector set-up. The sum expands to x.w + w_offset * sum(x) +
   * x_offset * sum(w) + n * x_offset * w_offset: the same int32 value as
   * the direct sum unless an int32 overflows. */
  if (n >= 16) {
    int32_t x_sum = 0;
    int32_t w_sum = 0;

    for (i = 0; i < n; i += 16) {
      const mve_pred16_t active = vctp8q((uint32_t)(n - i));
      const int8x16_t xv = vldrbq_z_s8(x + i, active);
      const int8x16_t wv = vldrbq_z_s8(w + i, active);

      acc = vmladavaq_p_s8(acc, xv, wv, active);
      x_sum = vaddvaq_p_s8(x_sum, xv, active);
      w_sum = vaddvaq_p_s8(w_sum, wv, active);
    }
    return acc + w_offset * x_sum + x_offset * w_sum + n * x_offset * w_offset;
  }
#endif
  for (i = 0; i < n; ++i) {
    acc += (x[i] + x_offset) * (w[i] + w_offset);
  }
  return acc;
}

/* Set [*begin, *end) to the taps that fall inside an input of `input`
 * values, for a window of `filter` taps, `dilation` apart, whose first tap
 * sits at `start` (negative inside the leading padding). */
static inline void tk_window_taps(int32_t start, int32_t dilation, int32_t filter, int32_t input,
                                  int32_t *begin, int32_t *end) {
  int32_t first = 0;
  int32_t last = filter;

  if (start < 0) {
    first = (-start + dilation - 1) / dilation;
  }
  if (start + (filter - 1) * dilation >= input) {
    last = input > start ? (input - start + dilation - 1) / dilation : 0;
  }
  *begin = first < filter ? first : filter;
  *end = last > *begin ? last : *begin;
}

/* The tail shared by the convolution and fully connected kernels: add the
 * channel's bias (if any), requantize, add the output zero point, clamp. */
static inline int8_t tk_output_s8(int32_t acc, const int32_t *bias, int32_t channel,
                                  const tk_quant_per_channel *quant, int32_t output_offset,
                                  const tk_clamp *clamp) {
  if (bias != NULL) {
    acc += bias[channel];
  }
  acc = tk_multiply_by_quantized_multiplier(acc, quant->multiplier[channel],
                                            quant->shift[channel]);
  return (int8_t)tk_clamp_int(acc + output_offset, clamp->min, clamp->max);
}

#define TK_RETURN_IF_ERROR(expr)    \
  do {                              \
    const tk_status tk_status_ = (expr); \
    if (tk_status_ != TK_OK) {      \
      return tk_status_;            \
    }                               \
  } while (0)

#endif /* TK_INTERNAL_H */
