/*
 * tk_codebook_s8.c: CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED on
 * codebook-packed weights (Deep Compression weight sharing).
 *
 * Each weight is a b-bit index into its output channel's int8 table. The
 * loops read it straight from flash, so nothing is expanded into RAM.
 * The arithmetic is that of the int8 kernels, so the outputs equal theirs
 * on the unpacked weights. Cost: the int8 kernel's multiply-accumulates
 * plus one index extraction and one table read per weight use.
 */
#include "tk_fixed_point.h"
#include "tk_internal.h"
#include "tk_kernels.h"

/* Index `position` of a packed row: bits [position*bits, (position+1)*bits)
 * from the least significant bit of row[0]. */
static inline int32_t tk_codebook_index(const uint8_t *row, int32_t position, int32_t bits) {
  const int32_t bit = position * bits;
  const int32_t byte = bit >> 3;
  const int32_t shift = bit & 7;
  uint32_t word = row[byte];

  /* Only an index that crosses into the next byte reads it, and that byte
   * is inside the row because the row stores all of its index bits. */
  if (shift + bits > 8) {
    word |= (uint32_t)row[byte + 1] << 8;
  }
  return (int32_t)((word >> shift) & ((1u << bits) - 1u));
}

/* The int8 weight at `position` of output channel `row`. */
static inline int32_t tk_codebook_weight(const tk_codebook *codebook, int32_t row,
                                         int32_t position) {
  const uint8_t *indices = codebook->indices + (size_t)row * codebook->row_bytes;
  const int8_t *table = codebook->table + (size_t)row * codebook->table_stride;
  return table[tk_codebook_index(indices, position, codebook->bits)];
}

tk_status tk_codebook_check(const tk_codebook *codebook, int32_t rows, int32_t row_length) {
  int32_t row;
  int32_t i;

  if (codebook == NULL || codebook->table == NULL || codebook->indices == NULL) {
    return TK_ERROR_NULL_POINTER;
  }
  if (codebook->bits < 1 || codebook->bits > 8 || codebook->table_size < 1 ||
      codebook->table_size > (1 << codebook->bits)) {
    return TK_ERROR_PARAMETER;
  }
  if ((codebook->table_stride != 0 && codebook->table_stride < codebook->table_size) ||
      rows < 1 || row_length < 1 || codebook->row_count != rows ||
      (int64_t)codebook->row_bytes * 8 < (int64_t)row_length * codebook->bits) {
    return TK_ERROR_SHAPE;
  }
  for (row = 0; row < rows; ++row) {
    const uint8_t *indices = codebook->indices + (size_t)row * codebook->row_bytes;
    for (i = 0; i < row_length; ++i) {
      if (tk_codebook_index(indices, i, codebook->bits) >= codebook->table_size) {
        return TK_ERROR_PARAMETER;
      }
    }
  }
  return TK_OK;
}

/* Assumes tk_conv2d_s8_check (with a filter of these dims) and
 * tk_codebook_check(filter, c_out, kh*kw*c_in) returned TK_OK. */
void tk_conv2d_codebook_s8(const tk_conv_params *params, const tk_quant_per_channel *quant,
                           const tk_dims *input_dims, const int8_t *input,
                           const tk_dims *filter_dims, const tk_codebook *filter,
                           const int32_t *bias, const tk_dims *output_dims, int8_t *output) {
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
          int32_t acc = 0;
          int32_t ky;
          int32_t kx;
          int32_t ic;

          for (ky = 0; ky < k_h; ++ky) {
            const int32_t in_y = in_y0 + ky * params->dilation_h;
            if (in_y < 0 || in_y >= in_h) {
              continue;
            }
            for (kx = 0; kx < k_w; ++kx) {
              const int32_t in_x = in_x0 + kx * params->dilation_w;
              const int8_t *pixel;
              int32_t position;
              if (in_x < 0 || in_x >= in_w) {
                continue;
              }
              pixel = image + ((size_t)in_y * in_w + in_x) * in_c;
              position = (ky * k_w + kx) * in_c;
              for (ic = 0; ic < in_c; ++ic) {
                acc += (pixel[ic] + params->input_offset) *
                       tk_codebook_weight(filter, oc, position + ic);
              }
            }
          }

          output[(((size_t)batch * out_h + out_y) * out_w + out_x) * out_c + oc] =
              tk_output_s8(acc, bias, oc, quant, params->output_offset, &params->clamp);
        }
      }
    }
  }
}

/* Assumes tk_depthwise_conv2d_s8_check (with a filter of these dims) and
 * tk_codebook_check(filter, c_out, kh*kw) returned TK_OK. */
void tk_depthwise_conv2d_codebook_s8(const tk_depthwise_conv_params *params,
                                     const tk_quant_per_channel *quant,
                                     const tk_dims *input_dims, const int8_t *input,
                                     const tk_dims *filter_dims, const tk_codebook *filter,
                                     const int32_t *bias, const tk_dims *output_dims,
                                     int8_t *output) {
  const int32_t in_h = input_dims->h;
  const int32_t in_w = input_dims->w;
  const int32_t in_c = input_dims->c;
  const int32_t k_h = filter_dims->h;
  const int32_t k_w = filter_dims->w;
  const int32_t out_h = output_dims->h;
  const int32_t out_w = output_dims->w;
  const int32_t out_c = output_dims->c;
  const int32_t multiplier = params->depth_multiplier;
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
          const int32_t ic = oc / multiplier;
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
              if (in_x < 0 || in_x >= in_w) {
                continue;
              }
              acc += (image[((size_t)in_y * in_w + in_x) * in_c + ic] + params->input_offset) *
                     tk_codebook_weight(filter, oc, ky * k_w + kx);
            }
          }

          output[(((size_t)batch * out_h + out_y) * out_w + out_x) * out_c + oc] =
              tk_output_s8(acc, bias, oc, quant, params->output_offset, &params->clamp);
        }
      }
    }
  }
}

/* Assumes tk_fully_connected_s8_check and tk_codebook_check(filter, units,
 * depth) returned TK_OK. */
void tk_fully_connected_codebook_s8(const tk_fully_connected_params *params,
                                    const tk_quant_per_channel *quant, int32_t batches,
                                    int32_t depth, int32_t units, const int8_t *input,
                                    const tk_codebook *filter, const int32_t *bias,
                                    int8_t *output) {
  int32_t batch;
  int32_t unit;

  for (batch = 0; batch < batches; ++batch) {
    const int8_t *row = input + (size_t)batch * depth;
    for (unit = 0; unit < units; ++unit) {
      int32_t acc = 0;
      int32_t i;

      for (i = 0; i < depth; ++i) {
        acc += (row[i] + params->input_offset) *
               (tk_codebook_weight(filter, unit, i) + params->filter_offset);
      }

      output[(size_t)batch * units + unit] =
          tk_output_s8(acc, bias, unit, quant, params->output_offset, &params->clamp);
    }
  }
}
