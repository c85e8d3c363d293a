/*
 * tk_sparse_codebook_s8.c: CONV_2D and FULLY_CONNECTED on pruned and shared
 * weights stored as one byte per nonzero weight (a 4-bit gap to the
 * previous one and a 4-bit table index), as in Deep Compression.
 *
 * Each output channel walks its entries, so pruned weights cost neither
 * storage nor multiply-accumulates; filler entries (table value 0) add
 * nothing. The outputs equal the int8 kernels' on the dense weights.
 * Cost: one multiply-accumulate per stored entry, plus a division per conv
 * entry to find its filter tap. No scratch memory.
 */
#include "tk_fixed_point.h"
#include "tk_internal.h"
#include "tk_kernels.h"

#define TK_GAP(entry) ((int32_t)((entry) >> 4))
#define TK_INDEX(entry) ((int32_t)((entry) & 15u))

tk_status tk_sparse_codebook_check(const tk_sparse_codebook *sparse, int32_t rows,
                                   int32_t row_length) {
  int32_t row;

  if (sparse == NULL || sparse->table == NULL || sparse->row_starts == NULL ||
      (sparse->entry_count > 0 && sparse->entries == NULL)) {
    return TK_ERROR_NULL_POINTER;
  }
  if (rows < 1 || row_length < 1 || sparse->row_count != rows || sparse->entry_count < 0 ||
      (sparse->table_stride != 0 && sparse->table_stride != 16)) {
    return TK_ERROR_SHAPE;
  }
  if (sparse->row_starts[0] != 0 || sparse->row_starts[rows] != sparse->entry_count) {
    return TK_ERROR_SHAPE;
  }
  for (row = 0; row < rows; ++row) {
    int32_t position = -1;
    int32_t entry;
    if (sparse->row_starts[row] > sparse->row_starts[row + 1]) {
      return TK_ERROR_SHAPE;
    }
    for (entry = sparse->row_starts[row]; entry < sparse->row_starts[row + 1]; ++entry) {
      position += TK_GAP(sparse->entries[entry]) + 1;
    }
    if (position >= row_length) {
      return TK_ERROR_SHAPE;
    }
  }
  return TK_OK;
}

/* Assumes tk_conv2d_s8_check (with a filter of these dims) and
 * tk_sparse_codebook_check(filter, c_out, kh*kw*c_in) returned TK_OK. */
void tk_conv2d_sparse_codebook_s8(const tk_conv_params *params, const tk_quant_per_channel *quant,
                                  const tk_dims *input_dims, const int8_t *input,
                                  const tk_dims *filter_dims, const tk_sparse_codebook *filter,
                                  const int32_t *bias, const tk_dims *output_dims,
                                  int8_t *output) {
  const int32_t in_h = input_dims->h;
  const int32_t in_w = input_dims->w;
  const int32_t in_c = input_dims->c;
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
          const int8_t *table = filter->table + (size_t)oc * filter->table_stride;
          int32_t position = -1;
          int32_t acc = 0;
          int32_t entry;

          for (entry = filter->row_starts[oc]; entry < filter->row_starts[oc + 1]; ++entry) {
            const uint8_t code = filter->entries[entry];
            int32_t tap;
            int32_t in_y;
            int32_t in_x;
            position += TK_GAP(code) + 1;
            /* Position k of an HWI row is tap k / c_in, channel k % c_in. */
            tap = position / in_c;
            in_y = in_y0 + (tap / k_w) * params->dilation_h;
            in_x = in_x0 + (tap % k_w) * params->dilation_w;
            if (in_y < 0 || in_y >= in_h || in_x < 0 || in_x >= in_w) {
              continue;
            }
            acc += (image[((size_t)in_y * in_w + in_x) * in_c + position % in_c] +
                    params->input_offset) *
                   table[TK_INDEX(code)];
          }

          output[(((size_t)batch * out_h + out_y) * out_w + out_x) * out_c + oc] =
              tk_output_s8(acc, bias, oc, quant, params->output_offset, &params->clamp);
        }
      }
    }
  }
}

/* Assumes tk_fully_connected_s8_check, a filter_offset of 0 and
 * tk_sparse_codebook_check(filter, units, depth) returned TK_OK. */
void tk_fully_connected_sparse_codebook_s8(const tk_fully_connected_params *params,
                                           const tk_quant_per_channel *quant, int32_t batches,
                                           int32_t depth, int32_t units, const int8_t *input,
                                           const tk_sparse_codebook *filter, const int32_t *bias,
                                           int8_t *output) {
  int32_t batch;
  int32_t unit;

  for (batch = 0; batch < batches; ++batch) {
    const int8_t *row = input + (size_t)batch * depth;
    for (unit = 0; unit < units; ++unit) {
      const int8_t *table = filter->table + (size_t)unit * filter->table_stride;
      int32_t position = -1;
      int32_t acc = 0;
      int32_t entry;

      for (entry = filter->row_starts[unit]; entry < filter->row_starts[unit + 1]; ++entry) {
        const uint8_t code = filter->entries[entry];
        position += TK_GAP(code) + 1;
        acc += (row[position] + params->input_offset) * table[TK_INDEX(code)];
      }

      output[(size_t)batch * units + unit] =
          tk_output_s8(acc, bias, unit, quant, params->output_offset, &params->clamp);
    }
  }
}
