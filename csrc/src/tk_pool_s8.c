/*
 * tk_pool_s8.c: AVERAGE_POOL_2D and MAX_POOL_2D on int8 activations.
 *
 * input [n, h, w, c], output [n, oh, ow, c], both with the same
 * quantization. A window that reaches into the padding covers only the
 * input elements inside it: the average divides by that count, rounding
 * half away from zero. Cost: n*oh*ow*c*kh*kw reads, no scratch memory.
 */
#include "tk_fixed_point.h"
#include "tk_internal.h"
#include "tk_kernels.h"

tk_status tk_pool_s8_check(const tk_pool_params *params, const tk_dims *input_dims,
                           const tk_dims *output_dims) {
  if (params == NULL) {
    return TK_ERROR_NULL_POINTER;
  }
  TK_RETURN_IF_ERROR(tk_check_dims(input_dims));
  TK_RETURN_IF_ERROR(tk_check_dims(output_dims));
  if (input_dims->n != output_dims->n || input_dims->c != output_dims->c) {
    return TK_ERROR_SHAPE;
  }
  TK_RETURN_IF_ERROR(tk_check_clamp(&params->clamp));
  TK_RETURN_IF_ERROR(tk_check_window(input_dims->h, params->filter_h, params->stride_h, 1,
                                     params->pad_h, output_dims->h));
  return tk_check_window(input_dims->w, params->filter_w, params->stride_w, 1, params->pad_w,
                         output_dims->w);
}

/* First and one-past-last filter taps of a window starting at `origin` that
 * fall inside [0, size). */
static void tk_window_bounds(int32_t origin, int32_t filter, int32_t size, int32_t *start,
                             int32_t *end) {
  *start = origin < 0 ? -origin : 0;
  *end = size - origin < filter ? size - origin : filter;
}

/* Assumes tk_pool_s8_check returned TK_OK for these arguments. */
void tk_avg_pool_s8(const tk_pool_params *params, const tk_dims *input_dims, const int8_t *input,
                    const tk_dims *output_dims, int8_t *output) {
  const int32_t in_h = input_dims->h;
  const int32_t in_w = input_dims->w;
  const int32_t channels = input_dims->c;
  int32_t batch;
  int32_t out_y;
  int32_t out_x;
  int32_t c;

  for (batch = 0; batch < input_dims->n; ++batch) {
    const int8_t *image = input + (size_t)batch * in_h * in_w * channels;
    for (out_y = 0; out_y < output_dims->h; ++out_y) {
      const int32_t in_y0 = out_y * params->stride_h - params->pad_h;
      int32_t y_start;
      int32_t y_end;
      tk_window_bounds(in_y0, params->filter_h, in_h, &y_start, &y_end);
      for (out_x = 0; out_x < output_dims->w; ++out_x) {
        const int32_t in_x0 = out_x * params->stride_w - params->pad_w;
        int32_t x_start;
        int32_t x_end;
        tk_window_bounds(in_x0, params->filter_w, in_w, &x_start, &x_end);
        for (c = 0; c < channels; ++c) {
          int32_t sum = 0;
          int32_t count = 0;
          int32_t ky;
          int32_t kx;

          for (ky = y_start; ky < y_end; ++ky) {
            for (kx = x_start; kx < x_end; ++kx) {
              sum += image[((size_t)(in_y0 + ky) * in_w + (in_x0 + kx)) * channels + c];
              ++count;
            }
          }

          /* The check guarantees count >= 1. Integer division truncates, so
           * adding half the divisor rounds half away from zero. */
          sum = sum > 0 ? (sum + count / 2) / count : (sum - count / 2) / count;
          output[(((size_t)batch * output_dims->h + out_y) * output_dims->w + out_x) * channels +
                 c] = (int8_t)tk_clamp_int(sum, params->clamp.min, params->clamp.max);
        }
      }
    }
  }
}

/* Assumes tk_pool_s8_check returned TK_OK for these arguments. */
void tk_max_pool_s8(const tk_pool_params *params, const tk_dims *input_dims, const int8_t *input,
                    const tk_dims *output_dims, int8_t *output) {
  const int32_t in_h = input_dims->h;
  const int32_t in_w = input_dims->w;
  const int32_t channels = input_dims->c;
  int32_t batch;
  int32_t out_y;
  int32_t out_x;
  int32_t c;

  for (batch = 0; batch < input_dims->n; ++batch) {
    const int8_t *image = input + (size_t)batch * in_h * in_w * channels;
    for (out_y = 0; out_y < output_dims->h; ++out_y) {
      const int32_t in_y0 = out_y * params->stride_h - params->pad_h;
      int32_t y_start;
      int32_t y_end;
      tk_window_bounds(in_y0, params->filter_h, in_h, &y_start, &y_end);
      for (out_x = 0; out_x < output_dims->w; ++out_x) {
        const int32_t in_x0 = out_x * params->stride_w - params->pad_w;
        int32_t x_start;
        int32_t x_end;
        tk_window_bounds(in_x0, params->filter_w, in_w, &x_start, &x_end);
        for (c = 0; c < channels; ++c) {
          int32_t max = -128;
          int32_t ky;
          int32_t kx;

          for (ky = y_start; ky < y_end; ++ky) {
            for (kx = x_start; kx < x_end; ++kx) {
              const int32_t value =
                  image[((size_t)(in_y0 + ky) * in_w + (in_x0 + kx)) * channels + c];
              max = value > max ? value : max;
            }
          }

          output[(((size_t)batch * output_dims->h + out_y) * output_dims->w + out_x) * channels +
                 c] = (int8_t)tk_clamp_int(max, params->clamp.min, params->clamp.max);
        }
      }
    }
  }
}
