/*
 * tk_n_m_s8.c: CONV_2D and FULLY_CONNECTED on N:M pruned int8 weights
 * (for example 2:4): n values and their positions per group of m weights.
 *
 * Each output channel reads only the stored values, so the kernels do
 * n/m of the dense multiply-accumulates, and stored zeros add nothing. The
 * outputs equal the int8 kernels' on the dense weights. No scratch memory.
 */
#include "tk_fixed_point.h"
#include "tk_internal.h"
#include "tk_kernels.h"

/* Position `index` of a row's bit-packed positions. */
static int32_t tk_n_m_position(const uint8_t *row, int32_t index, int32_t bits) {
  const int32_t bit = index * bits;
  const int32_t byte = bit >> 3;
  const int32_t shift = bit & 7;
  uint32_t word = row[byte];

  /* Positions are at most 8 bits, so a crossing reaches the next byte only.
   * That byte lies inside the row, because the row stores every bit. */
  if (shift + bits > 8) {
    word |= (uint32_t)row[byte + 1] << 8;
  }
  return (int32_t)((word >> shift) & ((1u << bits) - 1u));
}

tk_status tk_n_m_check(const tk_n_m *sparse, int32_t rows, int32_t row_length) {
  int32_t groups;
  int32_t row;
  int32_t i;

  if (sparse == NULL || sparse->values == NULL || sparse->positions == NULL) {
    return TK_ERROR_NULL_POINTER;
  }
  if (sparse->n < 1 || sparse->m <= sparse->n || sparse->m > 256 || sparse->position_bits < 1 ||
      sparse->position_bits > 8 || sparse->m > (1 << sparse->position_bits)) {
    return TK_ERROR_PARAMETER;
  }
  if (rows < 1 || row_length < 1 || sparse->row_count != rows) {
    return TK_ERROR_SHAPE;
  }
  groups = (row_length + sparse->m - 1) / sparse->m;
  if ((int64_t)sparse->row_bytes * 8 < (int64_t)groups * sparse->n * sparse->position_bits) {
    return TK_ERROR_SHAPE;
  }
  for (row = 0; row < rows; ++row) {
    const uint8_t *positions = sparse->positions + (size_t)row * sparse->row_bytes;
    for (i = 0; i < groups * sparse->n; ++i) {
      const int32_t position = tk_n_m_position(positions, i, sparse->position_bits);
      if (position >= sparse->m || (i / sparse->n) * sparse->m + position >= row_length) {
        return TK_ERROR_SHAPE;
      }
    }
  }
  return TK_OK;
}

/* Assumes tk_conv2d_s8_check (with a filter of these dims) and
 * tk_n_m_check(filter, c_out, kh*kw*c_in) returned TK_OK. */
void tk_conv2d_n_m_s8(const tk_conv_params *params, const tk_quant_per_channel *quant,
                      const tk_dims *input_dims, const int8_t *input, const tk_dims *filter_dims,
                      const tk_n_m *filter, const int32_t *bias, const tk_dims *output_dims,
                      int8_t *output) {
  const int32_t in_h = input_dims->h;
  const int32_t in_w = input_dims->w;
  const int32_t in_c = input_dims->c;
  const int32_t k_w = filter_dims->w;
  const int32_t row_length = filter_dims->h * filter_dims->w * filter_dims->c;
  const int32_t stored = (row_length + filter->m - 1) / filter->m * filter->n;
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
          const int8_t *values = filter->values + (size_t)oc * stored;
          const uint8_t *positions = filter->positions + (size_t)oc * filter->row_bytes;
          int32_t acc = 0;
          int32_t i;

          for (i = 0; i < stored; ++i) {
            /* Column k of an HWI row is tap k / c_in, channel k % c_in. */
            const int32_t k = (i / filter->n) * filter->m +
                              tk_n_m_position(positions, i, filter->position_bits);
            const int32_t tap = k / in_c;
            const int32_t in_y = in_y0 + (tap / k_w) * params->dilation_h;
            const int32_t in_x = in_x0 + (tap % k_w) * params->dilation_w;
            if (values[i] == 0 || in_y < 0 || in_y >= in_h || in_x < 0 || in_x >= in_w) {
              continue;
            }
            acc += (image[((size_t)in_y * in_w + in_x) * in_c + k % in_c] +
                    params->input_offset) *
                   values[i];
          }

          output[(((size_t)batch * out_h + out_y) * out_w + out_x) * out_c + oc] =
              tk_output_s8(acc, bias, oc, quant, params->output_offset, &params->clamp);
        }
      }
    }
  }
}

/* Assumes tk_fully_connected_s8_check, a filter_offset of 0 and
 * tk_n_m_check(filter, units, depth) returned TK_OK. */
void tk_fully_connected_n_m_s8(const tk_fully_connected_params *params,
                               const tk_quant_per_channel *quant, int32_t batches, int32_t depth,
                               int32_t units, const int8_t *input, const tk_n_m *filter,
                               const int32_t *bias, int8_t *output) {
  const int32_t stored = (depth + filter->m - 1) / filter->m * filter->n;
  int32_t batch;
  int32_t unit;

  for (batch = 0; batch < batches; ++batch) {
    const int8_t *row = input + (size_t)batch * depth;
    for (unit = 0; unit < units; ++unit) {
      const int8_t *values = filter->values + (size_t)unit * stored;
      const uint8_t *positions = filter->positions + (size_t)unit * filter->row_bytes;
      int32_t acc = 0;
      int32_t i;

      for (i = 0; i < stored; ++i) {
        const int32_t k =
            (i / filter->n) * filter->m + tk_n_m_position(positions, i, filter->position_bits);
        acc += (row[k] + params->input_offset) * values[i];
      }

      output[(size_t)batch * units + unit] =
          tk_output_s8(acc, bias, unit, quant, params->output_offset, &params->clamp);
    }
  }
}
