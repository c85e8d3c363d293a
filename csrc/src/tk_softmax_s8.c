/*
 * tk_softmax_s8.c: SOFTMAX over the last dimension, int8 in and out.
 *
 * input and output rows x depth; the output has scale 1/256 and zero point
 * -128. The arithmetic is TFLM's reference int8 softmax. Differences from
 * the row maximum become fixed-point numbers with 5 integer bits. exp() is
 * evaluated in fixed point, as a polynomial on [-1/4, 0) times exp(-2^k)
 * for each set bit of the rest. The sum of exps keeps 12 integer bits, and
 * its reciprocal comes from three Newton-Raphson steps. Cost: two
 * exp() evaluations per element, no scratch memory.
 */
#include "tk_fixed_point.h"
#include "tk_internal.h"
#include "tk_kernels.h"

/* Integer bits of the scaled input difference and of the sum of exps. */
#define TK_SOFTMAX_DIFF_INTEGER_BITS 5
#define TK_SOFTMAX_SUM_INTEGER_BITS 12
#define TK_SOFTMAX_MAX_DEPTH 511

/* Fixed-point product of two raw values: the integer bits of the result are
 * the sum of the operands' integer bits. */
static int32_t tk_fp_mul(int32_t a, int32_t b) {
  return tk_saturating_rounding_doubling_high_mul(a, b);
}

/* exp(x) for x in [-1/4, 0), x and the result with 0 integer bits: Taylor
 * series around -1/8 up to the x^4 term. */
static int32_t tk_exp_on_small_interval(int32_t x_raw) {
  /* exp(-1/8) and 1/3 with 0 integer bits; 1/8 is 2^28. */
  const int32_t exp_minus_one_eighth = 1895147668;
  const int32_t one_third = 715827883;
  const int32_t x = tk_wrapping_add(x_raw, (int32_t)1 << 28);
  const int32_t x2 = tk_fp_mul(x, x);
  const int32_t x3 = tk_fp_mul(x2, x);
  const int32_t x4 = tk_fp_mul(x2, x2);
  const int32_t x4_over_4 = tk_rounding_divide_by_pot(x4, 2);
  const int32_t poly = tk_rounding_divide_by_pot(
      tk_wrapping_add(tk_fp_mul(tk_wrapping_add(x4_over_4, x3), one_third), x2), 1);

  return tk_wrapping_add(exp_minus_one_eighth,
                         tk_fp_mul(exp_minus_one_eighth, tk_wrapping_add(x, poly)));
}

/* exp(a) for a <= 0 given with `integer_bits` integer bits (at most 5);
 * the result has 0 integer bits. */
static int32_t tk_exp_on_negative_values(int32_t a, int32_t integer_bits) {
  /* exp(-2^k) with 0 integer bits for k = -2 .. 4. */
  static const int32_t exp_minus_pot[7] = {1672461947, 1302514674, 790015084, 290630308,
                                           39332535,   720401,     242};
  const int32_t fractional_bits = 31 - integer_bits;
  const int32_t one_quarter = (int32_t)1 << (fractional_bits - 2);
  const int32_t mask = one_quarter - 1;
  const int32_t a_mod_quarter_minus_quarter = (a & mask) - one_quarter;
  const int32_t remainder = tk_wrapping_sub(a_mod_quarter_minus_quarter, a);
  int32_t result = tk_exp_on_small_interval(
      tk_saturating_shift_left(a_mod_quarter_minus_quarter, integer_bits));
  int32_t k;

  /* The remainder is -a rounded down to a multiple of 1/4: multiply in
   * exp(-2^k) for each of its set bits that the format can hold. */
  for (k = -2; k <= 4; ++k) {
    if (integer_bits > k && (remainder & ((int32_t)1 << (fractional_bits + k))) != 0) {
      result = tk_fp_mul(result, exp_minus_pot[k + 2]);
    }
  }

  return a == 0 ? INT32_MAX : result;
}

/* 1 / (1 + x) for x in [0, 1), x and the result with 0 integer bits. */
static int32_t tk_one_over_one_plus_x(int32_t x) {
  /* 48/17 and -32/17 with 2 integer bits; 1 with 2 integer bits is 2^29. */
  const int32_t constant_48_over_17 = 1515870810;
  const int32_t constant_neg_32_over_17 = -1010580540;
  const int32_t one_q2 = (int32_t)1 << 29;
  /* (x + 1) / 2, rounded half away from zero; 1 with 0 integer bits is
   * INT32_MAX. */
  const int64_t sum = (int64_t)x + INT32_MAX;
  const int32_t half_denominator = (int32_t)((sum + (sum >= 0 ? 1 : -1)) / 2);
  int32_t estimate =
      tk_wrapping_add(constant_48_over_17, tk_fp_mul(half_denominator, constant_neg_32_over_17));
  int i;

  for (i = 0; i < 3; ++i) {
    const int32_t half_denominator_times_estimate = tk_fp_mul(half_denominator, estimate);
    const int32_t one_minus = tk_wrapping_sub(one_q2, half_denominator_times_estimate);
    estimate = tk_wrapping_add(estimate,
                               tk_saturating_shift_left(tk_fp_mul(estimate, one_minus), 2));
  }

  /* estimate approximates 1 / half_denominator with 2 integer bits; halve
   * it by reading it with 1 integer bit, then rescale to 0 integer bits. */
  return tk_saturating_shift_left(estimate, 1);
}

/* Count of leading zero bits of a nonzero 32-bit value. */
static int32_t tk_count_leading_zeros(uint32_t x) {
  int32_t count = 0;

  while ((x & 0x80000000u) == 0) {
    x <<= 1;
    ++count;
  }
  return count;
}

tk_status tk_softmax_s8_check(const tk_softmax_params *params, int32_t rows, int32_t depth) {
  if (params == NULL) {
    return TK_ERROR_NULL_POINTER;
  }
  /* NOTE: rows longer than 511 values are rejected. With 512 or more
   * values near the maximum the sum of exps reaches 2^9, and the reference
   * then shifts an int32 by 32 or more bits, which has no defined result to
   * reproduce. */
  if (rows < 1 || depth < 1 || depth > TK_SOFTMAX_MAX_DEPTH) {
    return TK_ERROR_SHAPE;
  }
  if (params->input_multiplier < 0 || params->input_left_shift < 0 ||
      params->input_left_shift > 31 || params->diff_min > 0) {
    return TK_ERROR_PARAMETER;
  }
  return TK_OK;
}

/* Assumes tk_softmax_s8_check returned TK_OK for these arguments. */
void tk_softmax_s8(const tk_softmax_params *params, int32_t rows, int32_t depth,
                   const int8_t *input, int8_t *output) {
  int32_t row;

  for (row = 0; row < rows; ++row) {
    const int8_t *in = input + (size_t)row * depth;
    int8_t *out = output + (size_t)row * depth;
    int32_t max = -128;
    int32_t sum_of_exps = 0;
    int32_t headroom;
    int32_t bits_over_unit;
    int32_t reciprocal;
    int32_t i;

    for (i = 0; i < depth; ++i) {
      max = in[i] > max ? in[i] : max;
    }

    /* Sum exp(diff) with 12 integer bits, so up to 4096 ones fit. */
    for (i = 0; i < depth; ++i) {
      const int32_t diff = in[i] - max;
      if (diff >= params->diff_min) {
        const int32_t scaled = tk_saturating_rounding_doubling_high_mul(
            tk_wrapping_shift_left(diff, params->input_left_shift), params->input_multiplier);
        const int32_t exp_value = tk_exp_on_negative_values(scaled, TK_SOFTMAX_DIFF_INTEGER_BITS);
        sum_of_exps = tk_wrapping_add(
            sum_of_exps, tk_rounding_divide_by_pot(exp_value, TK_SOFTMAX_SUM_INTEGER_BITS));
      }
    }

    /* The row maximum contributes exp(0) = 1, so the sum is positive.
     * Normalize it to [1, 2), take the reciprocal, and keep the exponent. */
    headroom = tk_count_leading_zeros((uint32_t)sum_of_exps);
    bits_over_unit = TK_SOFTMAX_SUM_INTEGER_BITS - headroom;
    reciprocal = tk_one_over_one_plus_x(
        (int32_t)(((uint32_t)sum_of_exps << headroom) - ((uint32_t)1 << 31)));

    for (i = 0; i < depth; ++i) {
      const int32_t diff = in[i] - max;
      int32_t value = -128;
      if (diff >= params->diff_min) {
        const int32_t scaled = tk_saturating_rounding_doubling_high_mul(
            tk_wrapping_shift_left(diff, params->input_left_shift), params->input_multiplier);
        const int32_t exp_value = tk_exp_on_negative_values(scaled, TK_SOFTMAX_DIFF_INTEGER_BITS);
        const int32_t probability = tk_rounding_divide_by_pot(tk_fp_mul(reciprocal, exp_value),
                                                              bits_over_unit + 31 - 8);
        value = tk_clamp_int(probability - 128, -128, 127);
      }
      out[i] = (int8_t)value;
    }
  }
}
