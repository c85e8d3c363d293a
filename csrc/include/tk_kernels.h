/*
 * tk_kernels.h: the toolkit's int8 kernel library.
 *
 * Portable C99 kernels that reproduce the integer arithmetic of TensorFlow
 * Lite Micro's reference kernels bit for bit. Activations are int8 with a
 * zero point per tensor, weights int8 symmetric with a scale per output
 * channel, and biases int32. Requantization uses a 32-bit fixed-point
 * multiplier and a power-of-two shift with TFLM's double rounding: a
 * rounding doubling high multiply, then a rounding right shift.
 *
 * Every kernel comes in two parts. `tk_<op>_check` validates shapes and
 * parameters and returns a status. `tk_<op>` runs the op and assumes that the
 * check passed. No kernel allocates memory, and none reads or writes outside
 * the arrays its dims describe.
 *
 * Argument order for every kernel: op parameters, quantization, then
 * (dims, data) pairs for inputs, filter and bias, and the output last.
 * Layouts: activations NHWC, convolution filters OHWI, depthwise filters
 * 1HWC (C = input channels x depth multiplier), fully connected weights
 * [output, input].
 */
#ifndef TK_KERNELS_H
#define TK_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Status returned by every check function. */
typedef enum {
  TK_OK = 0,
  TK_ERROR_NULL_POINTER = 1,
  TK_ERROR_SHAPE = 2,
  TK_ERROR_PARAMETER = 3
} tk_status;

/* Shape of a 4-D tensor. Activations are NHWC; a filter is OHWI, so for a
 * filter n is the output channel count and c the input channel count.
 * Every field is at least 1. */
typedef struct {
  int32_t n;
  int32_t h;
  int32_t w;
  int32_t c;
} tk_dims;

/* Clamp applied to the int8 output, from the fused activation:
 * -128 <= min <= max <= 127. */
typedef struct {
  int32_t min;
  int32_t max;
} tk_clamp;

/* Fixed-point requantization factor for one tensor: the real factor is
 * multiplier * 2^(shift - 31), with multiplier in [2^30, 2^31) or 0 and
 * shift in [-31, 30]. */
typedef struct {
  int32_t multiplier;
  int32_t shift;
} tk_quant;

/* Requantization factors per output channel: arrays of `count` entries,
 * with the same meaning as tk_quant. */
typedef struct {
  const int32_t *multiplier;
  const int32_t *shift;
  int32_t count;
} tk_quant_per_channel;

/* CONV_2D parameters. input_offset is minus the input zero point
 * (-127..128), output_offset the output zero point (-128..127). pad_h and
 * pad_w are the padding before the first row and column. */
typedef struct {
  int32_t input_offset;
  int32_t output_offset;
  int32_t stride_h;
  int32_t stride_w;
  int32_t dilation_h;
  int32_t dilation_w;
  int32_t pad_h;
  int32_t pad_w;
  tk_clamp clamp;
} tk_conv_params;

/* DEPTHWISE_CONV_2D parameters: as tk_conv_params, plus the number of
 * output channels per input channel. */
typedef struct {
  int32_t input_offset;
  int32_t output_offset;
  int32_t stride_h;
  int32_t stride_w;
  int32_t dilation_h;
  int32_t dilation_w;
  int32_t pad_h;
  int32_t pad_w;
  int32_t depth_multiplier;
  tk_clamp clamp;
} tk_depthwise_conv_params;

/* FULLY_CONNECTED parameters. filter_offset is minus the weight zero point
 * (0 for symmetric int8 weights). */
typedef struct {
  int32_t input_offset;
  int32_t filter_offset;
  int32_t output_offset;
  tk_clamp clamp;
} tk_fully_connected_params;

/* AVERAGE_POOL_2D and MAX_POOL_2D parameters. Input and output share one
 * quantization, so no offset is needed. */
typedef struct {
  int32_t stride_h;
  int32_t stride_w;
  int32_t filter_h;
  int32_t filter_w;
  int32_t pad_h;
  int32_t pad_w;
  tk_clamp clamp;
} tk_pool_params;

/* ADD parameters. Each input is shifted left by left_shift (20 for int8),
 * scaled by its own factor (shift <= 0), summed, and the sum scaled to the
 * output. */
typedef struct {
  int32_t input1_offset;
  int32_t input2_offset;
  int32_t output_offset;
  int32_t left_shift;
  tk_quant input1;
  tk_quant input2;
  tk_quant output;
  tk_clamp clamp;
} tk_add_params;

/* SOFTMAX parameters: input differences from the row maximum are scaled by
 * input_multiplier * 2^input_left_shift into a fixed-point number with 5
 * integer bits; differences below diff_min (<= 0) give an output of -128. */
typedef struct {
  int32_t input_multiplier;
  int32_t input_left_shift;
  int32_t diff_min;
} tk_softmax_params;

/* Affine quantization of one tensor: real = scale * (q - zero_point). */
typedef struct {
  float scale;
  int32_t zero_point;
} tk_affine;

/* Weights stored as a codebook: each row (one output channel) has b-bit
 * indices into a small table of int8 values, so the kernels look values up
 * as they go and never expand the weights into RAM.
 * - table: table_size int8 values per row, rows table_stride apart; a
 *   table_stride of 0 shares one table between all rows.
 * - indices: row_bytes bytes per row, every row starting on a byte
 *   boundary. Index i of a row occupies bits [i*bits, (i+1)*bits), counted
 *   from the least significant bit of byte 0.
 * - bits: 1..8; table_size: 1..2^bits; row_count: rows stored, which the
 *   check compares with the layer's output channels. */
typedef struct {
  const int8_t *table;
  const uint8_t *indices;
  int32_t bits;
  int32_t table_size;
  int32_t table_stride;
  int32_t row_bytes;
  int32_t row_count;
} tk_codebook;

/* Weights stored as block-sparse rows (block compressed sparse rows over
 * the [rows, row_length] view: rows are output channels, a conv row holds
 * kh*kw*c_in weights in HWI order). Only blocks of block_rows x block_cols
 * weights with a nonzero value are stored; the kernels skip the others.
 * - values: block_rows * block_cols int8 values per stored block, row-major
 *   inside the block; parts of edge blocks outside the matrix are 0.
 * - row_starts: block_row_count + 1 entries, with block_row_count =
 *   ceil(rows / block_rows); the blocks of block row i are entries
 *   [row_starts[i], row_starts[i + 1]) of values and block_columns, and the
 *   last entry is block_count.
 * - block_columns: block column (in units of block_cols) of each block.
 * Weight zero points must be 0 (symmetric int8), so that skipped weights
 * contribute nothing. */
typedef struct {
  const int8_t *values;
  const uint16_t *row_starts;
  const uint16_t *block_columns;
  int32_t block_rows;
  int32_t block_cols;
  int32_t block_row_count;
  int32_t block_count;
} tk_block_sparse;

/* Pruned and shared weights together, stored as in Deep Compression. Each
 * row keeps only its nonzero weights, one byte each. The high four bits of
 * a byte count the positions skipped since the previous stored weight, and
 * the low four bits index the row's 16-entry int8 table. A gap of more than 15
 * is bridged by filler entries that point at a table entry of 0.
 * - table: 16 int8 values per row (table_stride 16), or one shared table
 *   (table_stride 0).
 * - entries: entry_count bytes; row i owns [row_starts[i], row_starts[i+1]).
 * - row_starts: row_count + 1 entries, the last one entry_count. */
typedef struct {
  const int8_t *table;
  const uint8_t *entries;
  const uint16_t *row_starts;
  int32_t table_stride;
  int32_t row_count;
  int32_t entry_count;
} tk_sparse_codebook;

/* Weights pruned to an N:M pattern: in every group of m consecutive weights
 * of a row, only n are kept, as n int8 values plus n positions inside the
 * group. Groups with fewer than n nonzero weights store zeros.
 * - values: row_count * groups * n int8 values, groups = ceil(row_length / m).
 * - positions: per row, row_bytes bytes of bit-packed positions (position
 *   bits wide, least significant bit first), one per stored value.
 * - n, m: 1 <= n < m <= 256; position_bits: bits per position (m <= 2^bits). */
typedef struct {
  const int8_t *values;
  const uint8_t *positions;
  int32_t n;
  int32_t m;
  int32_t position_bits;
  int32_t row_bytes;
  int32_t row_count;
} tk_n_m;

/* Requantize a 32-bit accumulator: x * multiplier * 2^(shift - 31), rounded
 * as TFLM's MultiplyByQuantizedMultiplier (double rounding). */
int32_t tk_requantize(int32_t x, int32_t multiplier, int32_t shift);

/* CONV_2D. input: [n, h, w, c_in]; filter: [c_out, kh, kw, c_in];
 * bias: c_out values or NULL; output: [n, oh, ow, c_out];
 * quant: c_out entries. */
tk_status tk_conv2d_s8_check(const tk_conv_params *params, const tk_quant_per_channel *quant,
                             const tk_dims *input_dims, const tk_dims *filter_dims,
                             const tk_dims *output_dims);
void tk_conv2d_s8(const tk_conv_params *params, const tk_quant_per_channel *quant,
                  const tk_dims *input_dims, const int8_t *input, const tk_dims *filter_dims,
                  const int8_t *filter, const int32_t *bias, const tk_dims *output_dims,
                  int8_t *output);

/* DEPTHWISE_CONV_2D. input: [n, h, w, c_in]; filter: [1, kh, kw, c_out]
 * with c_out = c_in * depth_multiplier; bias: c_out values or NULL;
 * output: [n, oh, ow, c_out]; quant: c_out entries. */
tk_status tk_depthwise_conv2d_s8_check(const tk_depthwise_conv_params *params,
                                       const tk_quant_per_channel *quant,
                                       const tk_dims *input_dims, const tk_dims *filter_dims,
                                       const tk_dims *output_dims);
void tk_depthwise_conv2d_s8(const tk_depthwise_conv_params *params,
                            const tk_quant_per_channel *quant, const tk_dims *input_dims,
                            const int8_t *input, const tk_dims *filter_dims,
                            const int8_t *filter, const int32_t *bias,
                            const tk_dims *output_dims, int8_t *output);

/* FULLY_CONNECTED. input: batches x depth values, in any shape whose
 * element count is a multiple of depth. filter: [units, depth]. bias: units
 * values or NULL. output: [batches, units]. quant: units entries, so
 * per-tensor weights repeat one factor. */
tk_status tk_fully_connected_s8_check(const tk_fully_connected_params *params,
                                      const tk_quant_per_channel *quant, int32_t batches,
                                      int32_t depth, int32_t units);
void tk_fully_connected_s8(const tk_fully_connected_params *params,
                           const tk_quant_per_channel *quant, int32_t batches, int32_t depth,
                           int32_t units, const int8_t *input, const int8_t *filter,
                           const int32_t *bias, int8_t *output);

/* AVERAGE_POOL_2D and MAX_POOL_2D. input: [n, h, w, c]; output:
 * [n, oh, ow, c]. Windows that reach into the padding use only the
 * elements inside the input. */
tk_status tk_pool_s8_check(const tk_pool_params *params, const tk_dims *input_dims,
                           const tk_dims *output_dims);
void tk_avg_pool_s8(const tk_pool_params *params, const tk_dims *input_dims, const int8_t *input,
                    const tk_dims *output_dims, int8_t *output);
void tk_max_pool_s8(const tk_pool_params *params, const tk_dims *input_dims, const int8_t *input,
                    const tk_dims *output_dims, int8_t *output);

/* ADD with broadcasting. output: [n, h, w, c]; input1_strides and
 * input2_strides give, per dimension (n, h, w, c), the element step in that
 * input, 0 where the input is broadcast along the dimension. */
tk_status tk_add_s8_check(const tk_add_params *params, const tk_dims *output_dims,
                          const int32_t input1_strides[4], const int32_t input2_strides[4]);
void tk_add_s8(const tk_add_params *params, const tk_dims *output_dims,
               const int32_t input1_strides[4], const int8_t *input1,
               const int32_t input2_strides[4], const int8_t *input2, int8_t *output);

/* SOFTMAX over the last dimension. input and output: rows x depth values
 * with depth <= 511;
 * the output quantization is fixed at scale 1/256, zero point -128. */
tk_status tk_softmax_s8_check(const tk_softmax_params *params, int32_t rows, int32_t depth);
void tk_softmax_s8(const tk_softmax_params *params, int32_t rows, int32_t depth,
                   const int8_t *input, int8_t *output);

/* Codebook variants of CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED:
 * the same arithmetic as the int8 kernels, with weights read through a
 * tk_codebook. Rows are output channels: conv rows hold kh*kw*c_in indices
 * in HWI order, depthwise rows kh*kw indices in HW order, fully connected
 * rows `depth` indices. The checks also verify that every index is inside
 * the table, so they read the whole index array once. */
tk_status tk_codebook_check(const tk_codebook *codebook, int32_t rows, int32_t row_length);
void tk_conv2d_codebook_s8(const tk_conv_params *params, const tk_quant_per_channel *quant,
                           const tk_dims *input_dims, const int8_t *input,
                           const tk_dims *filter_dims, const tk_codebook *filter,
                           const int32_t *bias, const tk_dims *output_dims, int8_t *output);
void tk_depthwise_conv2d_codebook_s8(const tk_depthwise_conv_params *params,
                                     const tk_quant_per_channel *quant,
                                     const tk_dims *input_dims, const int8_t *input,
                                     const tk_dims *filter_dims, const tk_codebook *filter,
                                     const int32_t *bias, const tk_dims *output_dims,
                                     int8_t *output);
void tk_fully_connected_codebook_s8(const tk_fully_connected_params *params,
                                    const tk_quant_per_channel *quant, int32_t batches,
                                    int32_t depth, int32_t units, const int8_t *input,
                                    const tk_codebook *filter, const int32_t *bias,
                                    int8_t *output);

/* Block-sparse variants of CONV_2D and FULLY_CONNECTED: the arithmetic of
 * the int8 kernels, with the multiply-accumulates of absent blocks skipped.
 * The check verifies every row start and block column. The weights' zero
 * point must be 0: the fully connected kernel ignores filter_offset. */
tk_status tk_block_sparse_check(const tk_block_sparse *sparse, int32_t rows, int32_t row_length);
void tk_conv2d_block_sparse_s8(const tk_conv_params *params, const tk_quant_per_channel *quant,
                               const tk_dims *input_dims, const int8_t *input,
                               const tk_dims *filter_dims, const tk_block_sparse *filter,
                               const int32_t *bias, const tk_dims *output_dims,
                               int8_t *output);
void tk_fully_connected_block_sparse_s8(const tk_fully_connected_params *params,
                                        const tk_quant_per_channel *quant, int32_t batches,
                                        int32_t depth, int32_t units, const int8_t *input,
                                        const tk_block_sparse *filter, const int32_t *bias,
                                        int8_t *output);

/* Sparse-codebook variants of CONV_2D and FULLY_CONNECTED. The check
 * verifies the row starts and that no row's entries run past row_length.
 * Weight zero points must be 0: the fully connected kernel ignores
 * filter_offset. */
tk_status tk_sparse_codebook_check(const tk_sparse_codebook *sparse, int32_t rows,
                                   int32_t row_length);
void tk_conv2d_sparse_codebook_s8(const tk_conv_params *params, const tk_quant_per_channel *quant,
                                  const tk_dims *input_dims, const int8_t *input,
                                  const tk_dims *filter_dims, const tk_sparse_codebook *filter,
                                  const int32_t *bias, const tk_dims *output_dims,
                                  int8_t *output);
void tk_fully_connected_sparse_codebook_s8(const tk_fully_connected_params *params,
                                           const tk_quant_per_channel *quant, int32_t batches,
                                           int32_t depth, int32_t units, const int8_t *input,
                                           const tk_sparse_codebook *filter, const int32_t *bias,
                                           int8_t *output);

/* N:M variants of CONV_2D and FULLY_CONNECTED. The check verifies that
 * every stored position lies inside its group and its row. Weight zero
 * points must be 0: the fully connected kernel ignores filter_offset. */
tk_status tk_n_m_check(const tk_n_m *sparse, int32_t rows, int32_t row_length);
void tk_conv2d_n_m_s8(const tk_conv_params *params, const tk_quant_per_channel *quant,
                      const tk_dims *input_dims, const int8_t *input, const tk_dims *filter_dims,
                      const tk_n_m *filter, const int32_t *bias, const tk_dims *output_dims,
                      int8_t *output);
void tk_fully_connected_n_m_s8(const tk_fully_connected_params *params,
                               const tk_quant_per_channel *quant, int32_t batches, int32_t depth,
                               int32_t units, const int8_t *input, const tk_n_m *filter,
                               const int32_t *bias, int8_t *output);

/* QUANTIZE float32 -> int8: round(x / scale) + zero_point, clamped. */
void tk_quantize_f32_s8(const tk_affine *output_quant, int32_t size, const float *input,
                        int8_t *output);

/* QUANTIZE int8 -> int8 with another scale or zero point. */
void tk_requantize_s8(int32_t input_zero_point, const tk_quant *quant, int32_t output_zero_point,
                      int32_t size, const int8_t *input, int8_t *output);

/* DEQUANTIZE int8 -> float32: scale * (q - zero_point). */
void tk_dequantize_s8_f32(const tk_affine *input_quant, int32_t size, const int8_t *input,
                          float *output);

#ifdef __cplusplus
}
#endif

#endif /* TK_KERNELS_H */
