/*
 * tk_depthwise_conv2d_s8.c: DEPTHWISE_CONV_2D with int8 activations and
 * per-channel int8 weights.
 *
 * input [n, h, w, c_in], filter [1, kh, kw, c_out] with
 * c_out = c_in * depth_multiplier, bias c_out int32 values, output
 * [n, oh, ow, c_out]. Output channel ic * depth_multiplier + m reads input
 * channel ic only. Cost: n*oh*ow*c_out*kh*kw multiply-accumulates, no
 * scratch memory.
 */
#include "tk_fixed_point.h"
#include "tk_internal.h"
#include "tk_kernels.h"

tk_status tk_depthwise_conv2d_s8_check(const tk_depthwise_conv_params *params,
                                       const tk_quant_per_channel *quant,
                                       const tk_dims *input_dims, const tk_dims *filter_dims,
                                       const tk_dims *output_dims) {
  if (params == NULL) {
    return TK_ERROR_NULL_POINTER;
  }
  TK_RETURN_IF_ERROR(tk_check_dims(input_dims));
  TK_RETURN_IF_ERROR(tk_check_dims(filter_dims));
  TK_RETURN_IF_ERROR(tk_check_dims(output_dims));
  if (params->depth_multiplier < 1) {
    return TK_ERROR_PARAMETER;
  }
  if (input_dims->n != output_dims->n || filter_dims->n != 1 ||
      filter_dims->c != output_dims->c ||
      output_dims->c != input_dims->c * params->depth_multiplier) {
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

/* Assumes tk_depthwise_conv2d_s8_check returned TK_OK for these arguments. */
void tk_depthwise_conv2d_s8(const tk_depthwise_conv_params *params,
                            const tk_quant_per_channel *quant, const tk_dims *input_dims,
                            const int8_t *input, const tk_dims *filter_dims,
                            const int8_t *filter, const int32_t *bias,
                            const tk_dims *output_dims, int8_t *output) {
  const int32_t in_h = input_dims->h;
  const int32_t in_w = input_dims->w;
  const int32_t in_c = input_dims->c;
  const int32_t k_h = filter_dims->h;
  const int32_t k_w = filter_dims->w;
  const int32_t out_h = output_dims->h;
  const int32_t out_w = output_dims->w;
  const int32_t out_c = output_dims->c;
  const int32_t multiplier = params->depth_multiplier;
  const size_t in_step = (size_t)params->dilation_w * (size_t)in_c;
  int32_t batch;
  int32_t out_y;
  int32_t out_x;
  int32_t oc;

  for (batch = 0; batch < input_dims->n; ++batch) {
    const int8_t *image = input + (size_t)batch * in_h * in_w * in_c;
    int8_t *out = output + (size_t)batch * out_h * out_w * out_c;

    for (out_y = 0; out_y < out_h; ++out_y) {
      const int32_t in_y0 = out_y * params->stride_h - params->pad_h;
      int32_t ky_begin;
      int32_t ky_end;

      tk_window_taps(in_y0, params->dilation_h, k_h, in_h, &ky_begin, &ky_end);
      for (out_x = 0; out_x < out_w; ++out_x) {
        const int32_t in_x0 = out_x * params->stride_w - params->pad_w;
        int32_t kx_begin;
        int32_t kx_end;
        int32_t ic = 0;
        int32_t m = 0;

        /* The taps inside the input are found once per output pixel, so the
         * inner loops run without bounds checks. */
        tk_window_taps(in_x0, params->dilation_w, k_w, in_w, &kx_begin, &kx_end);
        for (oc = 0; oc < out_c; ++oc) {
          int32_t acc = 0;
          int32_t ky;

          for (ky = ky_begin; ky < ky_end; ++ky) {
            const int32_t in_y = in_y0 + ky * params->dilation_h;
            const int32_t in_x = in_x0 + kx_begin * params->dilation_w;
            size_t in_index = ((size_t)in_y * in_w + (size_t)in_x) * in_c + (size_t)ic;
            size_t filter_index = ((size_t)ky * k_w + (size_t)kx_begin) * out_c + (size_t)oc;
            int32_t kx;

            for (kx = kx_begin; kx < kx_end; ++kx) {
              acc += (image[in_index] + params->input_offset) * filter[filter_index];
              in_index += in_step;
              filter_index += (size_t)out_c;
            }
          }
          *out++ = tk_output_s8(acc, bias, oc, quant, params->output_offset, &params->clamp);
          /* Output channel oc reads input channel oc / multiplier. */
          if (++m == multiplier) {
            m = 0;
            ++ic;
          }
        }
      }
    }
  }
}
