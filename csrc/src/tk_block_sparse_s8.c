/*
 * tk_block_sparse_s8.c: CONV_2D and FULLY_CONNECTED on block-sparse int8
 * weights (pruned at block, filter, channel or single-weight granularity).
 *
 * Each output channel walks only the stored blocks of its block row, so
 * the multiply-accumulates of pruned blocks are skipped. With symmetric
 * weights (zero point 0) those contribute nothing, so the outputs equal
 * the int8 kernels' on the dense weights. Cost: the stored weights' share
 * of the dense multiply-accumulates, plus a division per conv weight to
 * find its filter tap. No scratch memory.
 */
#include "tk_fixed_point.h"
#include "tk_internal.h"
#include "tk_kernels.h"

tk_status tk_block_sparse_check(const tk_block_sparse *sparse, int32_t rows, int32_t row_length) {
  int32_t block_row_count;
  int32_t block_col_count;
  int32_t i;

  if (sparse == NULL || sparse->row_starts == NULL ||
      (sparse->block_count > 0 && (sparse->values == NULL || sparse->block_columns == NULL))) {
    return TK_ERROR_NULL_POINTER;
  }
  if (sparse->block_rows < 1 || sparse->block_cols < 1 || sparse->block_count < 0 || rows < 1 ||
      row_length < 1) {
    return TK_ERROR_SHAPE;
  }
  block_row_count = (rows + sparse->block_rows - 1) / sparse->block_rows;
  block_col_count = (row_length + sparse->block_cols - 1) / sparse->block_cols;
  /* The descriptor states its own row count, so a matrix of another height
   * is rejected before row_starts is read past its end. */
  if (sparse->block_row_count != block_row_count) {
    return TK_ERROR_SHAPE;
  }
  if (sparse->row_starts[0] != 0 || sparse->row_starts[block_row_count] != sparse->block_count) {
    return TK_ERROR_SHAPE;
  }
  for (i = 0; i < block_row_count; ++i) {
    if (sparse->row_starts[i] > sparse->row_starts[i + 1]) {
      return TK_ERROR_SHAPE;
    }
  }
  for (i = 0; i < sparse->block_count; ++i) {
    if (sparse->block_columns[i] >= block_col_count) {
      return TK_ERROR_SHAPE;
    }
  }
  return TK_OK;
}


/* Assumes tk_conv2d_s8_check (with a filter of these dims) and
 * tk_block_sparse_check(filter, c_out, kh*kw*c_in) returned TK_OK. */
void tk_conv2d_block_sparse_s8(const tk_conv_params *params, const tk_quant_per_channel *quant,
                               const tk_dims *input_dims, const int8_t *input,
                               const tk_dims *filter_dims, const tk_block_sparse *filter,
                               const int32_t *bias, const tk_dims *output_dims,
                               int8_t *output) {
  const int32_t in_h = input_dims->h;
  const int32_t in_w = input_dims->w;
  const int32_t in_c = input_dims->c;
  const int32_t k_w = filter_dims->w;
  const int32_t row_length = filter_dims->h * filter_dims->w * filter_dims->c;
  const int32_t out_h = output_dims->h;
  const int32_t out_w = output_dims->w;
  const int32_t out_c = output_dims->c;
  const int32_t block_rows = filter->block_rows;
  const int32_t block_cols = filter->block_cols;
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
          const int32_t block_row = oc / block_rows;
          const int32_t row_in_block = oc - block_row * block_rows;
          int32_t acc = 0;
          int32_t block;

          for (block = filter->row_starts[block_row]; block < filter->row_starts[block_row + 1];
               ++block) {
            const int8_t *weights =
                filter->values + ((size_t)block * block_rows + row_in_block) * block_cols;
            const int32_t column0 = filter->block_columns[block] * block_cols;
            int32_t j;

            for (j = 0; j < block_cols && column0 + j < row_length; ++j) {
              /* Column k of an HWI row is tap (k / (kw*c_in), k / c_in % kw), channel k % c_in. */
              const int32_t k = column0 + j;
              const int32_t ic = k % in_c;
              const int32_t tap = k / in_c;
              const int32_t in_y = in_y0 + (tap / k_w) * params->dilation_h;
              const int32_t in_x = in_x0 + (tap % k_w) * params->dilation_w;
              if (weights[j] == 0 || in_y < 0 || in_y >= in_h || in_x < 0 || in_x >= in_w) {
                continue;
              }
              acc += (image[((size_t)in_y * in_w + in_x) * in_c + ic] + params->input_offset) *
                     weights[j];
            }
          }

          output[(((size_t)batch * out_h + out_y) * out_w + out_x) * out_c + oc] =
              tk_output_s8(acc, bias, oc, quant, params->output_offset, &params->clamp);
        }
      }
    }
  }
}

/* Assumes tk_fully_connected_s8_check, a filter_offset of 0 and
 * tk_block_sparse_check(filter, units, depth) returned TK_OK. */
void tk_fully_connected_block_sparse_s8(const tk_fully_connected_params *params,
                                        const tk_quant_per_channel *quant, int32_t batches,
                                        int32_t depth, int32_t units, const int8_t *input,
                                        const tk_block_sparse *filter, const int32_t *bias,
                                        int8_t *output) {
  const int32_t block_rows = filter->block_rows;
  const int32_t block_cols = filter->block_cols;
  int32_t batch;
  int32_t unit;

  for (batch = 0; batch < batches; ++batch) {
    const int8_t *row = input + (size_t)batch * depth;
    for (unit = 0; unit < units; ++unit) {
      const int32_t block_row = unit / block_rows;
      const int32_t row_in_block = unit - block_row * block_rows;
      int32_t acc = 0;
      int32_t block;

      for (block = filter->row_starts[block_row]; block < filter->row_starts[block_row + 1];
           ++block) {
        const int8_t *weights =
            filter->values + ((size_t)block * block_rows + row_in_block) * block_cols;
        const int32_t column0 = filter->block_columns[block] * block_cols;
        int32_t j;

        for (j = 0; j < block_cols && column0 + j < depth; ++j) {
          acc += (row[column0 + j] + params->input_offset) * weights[j];
        }
      }

      output[(size_t)batch * units + unit] =
          tk_output_s8(acc, bias, unit, quant, params->output_offset, &params->clamp);
    }
  }
}
