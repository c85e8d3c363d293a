/*
 * tk_conv2d_s8.c: CONV_2D with int8 activations and per-channel int8
 * weights.
 *
 * input [n, h, w, c_in], filter [c_out, kh, kw, c_in] (OHWI), bias c_out
 * int32 values, output [n, oh, ow, c_out]. Direct convolution: for every
 * output element the window is accumulated in int32, the bias added, and
 * the sum requantized per output channel. Cost: n*oh*ow*c_out*kh*kw*c_in
 * multiply-accumulates, no scratch memory.
 */
#include "tk_fixed_point.h"
#include "tk_internal.h"
#include "tk_kernels.h"

tk_status tk_conv2d_s8_check(const tk_conv_params *params, const tk_quant_per_channel *quant,
                             const tk_dims *input_dims, const tk_dims *filter_dims,
                             const tk_dims *output_dims) {
  if (params == NULL) {
    return TK_ERROR_NULL_POINTER;
  }
  TK_RETURN_IF_ERROR(tk_check_dims(input_dims));
  TK_RETURN_IF_ERROR(tk_check_dims(filter_dims));
  TK_RETURN_IF_ERROR(tk_check_dims(output_dims));
  if (input_dims->n != output_dims->n || filter_dims->c != input_dims->c ||
      filter_dims->n != output_dims->c) {
    return TK_ERROR_SHAPE;
  }
  TK_RETURN_IF_ERROR(tk_check_offsets(params->input_offset, params->output_offset));
  TK_RETURN_IF_ERROR(tk_check_clamp(&params->clamp));
  TK_RETURN_IF_ERROR(tk_check_window(input_dims->h, filter_dims->h, params->stride_h,
                                     params->dilation_h, params->pad_h, output_dims->h));
  TK_RETURN_IF_ERROR(tk_check_window(input_dims->w, filter_dims->w, params->stride_w,
                                     params->dilation_w, params->pad_w, output_dims->w));
  return tk_check_quant_per_channel(quant, output_dims->c);
}

/* Assumes tk_conv2d_s8_check returned TK_OK for these arguments. */
void tk_conv2d_s8(const tk_conv_params *params, const tk_quant_per_channel *quant,
                  const tk_dims *input_dims, const int8_t *input, const tk_dims *filter_dims,
                  const int8_t *filter, const int32_t *bias, const tk_dims *output_dims,
                  int8_t *output) {
  const int32_t in_h = input_dims->h;
  const int32_t in_w = input_dims->w;
  const int32_t in_c = input_dims->c;
  const int32_t k_h = filter_dims->h;
  const int32_t k_w = filter_dims->w;
  const int32_t out_h = output_dims->h;
  const int32_t out_w = output_dims->w;
  const int32_t out_c = output_dims->c;
  int32_t batch;
  int32_t out_y;
  int32_t out_x;
  int32_t oc;

  for (batch = 0; batch < input_dims->n; ++batch) {
    const int8_t *image = input + (size_t)batch * in_h * in_w * in_c;
    for (out_y = 0; out_y < out_h; ++out_y) {
      const int32_t in_y0 = out_y * params->stride_h - params->pad_h;
      for (out_x = 0; out_x < out_w; ++out_x) {
        const int32_t in_x0 = out_x * params->stride_w - params->pad_w;
        for (oc = 0; oc < out_c; ++oc) {
          const int8_t *kernel = filter + (size_t)oc * k_h * k_w * in_c;
          int32_t acc = 0;
          int32_t ky;
          int32_t kx;

          for (ky = 0; ky < k_h; ++ky) {
            const int32_t in_y = in_y0 + ky * params->dilation_h;
            if (in_y < 0 || in_y >= in_h) {
              continue;
            }
            for (kx = 0; kx < k_w; ++kx) {
              const int32_t in_x = in_x0 + kx * params->dilation_w;
              const int8_t *pixel;
              const int8_t *taps;
              if (in_x < 0 || in_x >= in_w) {
                continue;
              }
              pixel = image + ((size_t)in_y * in_w + in_x) * in_c;
              taps = kernel + ((size_t)ky * k_w + kx) * in_c;
              acc = tk_dot_offset_s8(acc, pixel, params->input_offset, taps, 0, in_c);
            }
          }

          output[(((size_t)batch * out_h + out_y) * out_w + out_x) * out_c + oc] =
              tk_output_s8(acc, bias, oc, quant, params->output_offset, &params->clamp);
        }
      }
    }
  }
}
