/*
 * tk_fixed_point.h: the integer rounding primitives that TFLite's reference
 * kernels use (from gemmlowp's fixed-point library), restated for C99.
 *
 * Fixed-point numbers here are int32 raw values with a given number of
 * integer bits: a raw value r with k integer bits stands for r * 2^(k - 31).
 * Sums that may exceed the int32 range wrap through uint32, which matches
 * two's-complement hardware without signed-overflow undefined behaviour.
 * Internal to the kernel library; not part of the public API.
 */
#ifndef TK_FIXED_POINT_H
#define TK_FIXED_POINT_H

#include <stdint.h>

/* a + b, wrapping modulo 2^32. */
static inline int32_t tk_wrapping_add(int32_t a, int32_t b) {
  return (int32_t)((uint32_t)a + (uint32_t)b);
}

/* a - b, wrapping modulo 2^32. */
static inline int32_t tk_wrapping_sub(int32_t a, int32_t b) {
  return (int32_t)((uint32_t)a - (uint32_t)b);
}

/* a * 2^shift for 0 <= shift <= 31, wrapping modulo 2^32. */
static inline int32_t tk_wrapping_shift_left(int32_t a, int32_t shift) {
  return (int32_t)((uint32_t)a << shift);
}

/* round(a * b / 2^31), ties away from zero, saturating the one overflow
 * case (INT32_MIN * INT32_MIN). */
static inline int32_t tk_saturating_rounding_doubling_high_mul(int32_t a, int32_t b) {
  int64_t product;
  int64_t nudge;

  if (a == INT32_MIN && b == INT32_MIN) {
    return INT32_MAX;
  }
  product = (int64_t)a * (int64_t)b;
  nudge = product >= 0 ? ((int64_t)1 << 30) : (1 - ((int64_t)1 << 30));
  /* Division, not a shift: it truncates toward zero as the reference does. */
  return (int32_t)((product + nudge) / ((int64_t)1 << 31));
}

/* round(x / 2^exponent) for 0 <= exponent <= 31, ties away from zero. */
static inline int32_t tk_rounding_divide_by_pot(int32_t x, int32_t exponent) {
  const int32_t mask = (int32_t)(((int64_t)1 << exponent) - 1);
  const int32_t remainder = x & mask;
  const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);

  /* An arithmetic right shift of a negative value: implementation-defined in
   * C99, arithmetic on every compiler this library supports (gcc, clang). */
  return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

/* x * 2^exponent for 0 <= exponent <= 31, saturating to the int32 range. */
static inline int32_t tk_saturating_shift_left(int32_t x, int32_t exponent) {
  int32_t threshold;

  if (exponent == 0) {
    return x;
  }
  threshold = (int32_t)(((int64_t)1 << (31 - exponent)) - 1);
  if (x > threshold) {
    return INT32_MAX;
  }
  if (x < -threshold) {
    return INT32_MIN;
  }
  return tk_wrapping_shift_left(x, exponent);
}

/* TFLM's MultiplyByQuantizedMultiplier with double rounding: a left shift
 * for positive shifts, the rounding high multiply, then a rounding right
 * shift for negative shifts. */
static inline int32_t tk_multiply_by_quantized_multiplier(int32_t x, int32_t multiplier,
                                                          int32_t shift) {
  const int32_t left_shift = shift > 0 ? shift : 0;
  const int32_t right_shift = shift > 0 ? 0 : -shift;

  return tk_rounding_divide_by_pot(
      tk_saturating_rounding_doubling_high_mul(tk_wrapping_shift_left(x, left_shift), multiplier),
      right_shift);
}

/* x clamped to [min, max]. */
static inline int32_t tk_clamp_int(int32_t x, int32_t min, int32_t max) {
  if (x < min) {
    return min;
  }
  if (x > max) {
    return max;
  }
  return x;
}

#endif /* TK_FIXED_POINT_H */
