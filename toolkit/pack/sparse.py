"""Block-sparse packing of pruned int8 weights.

The packer looks for all-zero blocks in the int8 tensor itself, so it packs
models pruned by any tool. The [rows, row_length] view, whose rows are output
channels, is cut into blocks of r x c weights. Only blocks with a nonzero
weight are stored (block compressed sparse rows). The layout is
what `tk_block_sparse` in csrc/include/tk_kernels.h reads: block values
row-major inside each block, uint16 row starts per block row, and a uint16
block column per stored block.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Block shapes the packer tries, from fine to coarse.
BLOCK_SHAPES = ((1, 1), (1, 4), (4, 1), (1, 8), (1, 16), (4, 4))
_MAX_INDEX = (1 << 16) - 1


@dataclass
class BlockSparseTensor:
    """Stored blocks of an int8 matrix and where they sit."""

    block: tuple[int, int]
    values: np.ndarray  # int8 [blocks, r * c]
    row_starts: np.ndarray  # uint16 [block_rows + 1]
    block_columns: np.ndarray  # uint16 [blocks]
    shape: tuple[int, int]

    @property
    def block_count(self) -> int:
        return int(self.block_columns.size)

    @property
    def nbytes(self) -> int:
        return int(self.values.size + 2 * self.row_starts.size + 2 * self.block_columns.size)

    @property
    def density(self) -> float:
        """Stored blocks over all blocks."""
        rows = math.ceil(self.shape[0] / self.block[0])
        columns = math.ceil(self.shape[1] / self.block[1])
        return self.block_count / (rows * columns)

    def unpack(self) -> np.ndarray:
        """Rebuild the dense int8 matrix."""
        r, c = self.block
        rows, length = self.shape
        padded = np.zeros((math.ceil(rows / r) * r, math.ceil(length / c) * c), dtype=np.int8)
        for block_row in range(self.row_starts.size - 1):
            for index in range(
                int(self.row_starts[block_row]), int(self.row_starts[block_row + 1])
            ):
                column = int(self.block_columns[index]) * c
                padded[block_row * r : (block_row + 1) * r, column : column + c] = self.values[
                    index
                ].reshape(r, c)
        return padded[:rows, :length]


def pack_block_sparse(matrix: np.ndarray, block: tuple[int, int]) -> BlockSparseTensor | None:
    """Store the nonzero r x c blocks of an int8 matrix, or return None when
    the counts do not fit the uint16 indices."""
    matrix = np.asarray(matrix, dtype=np.int8)
    r, c = block
    rows, length = matrix.shape
    block_rows, block_cols = math.ceil(rows / r), math.ceil(length / c)
    padded = np.zeros((block_rows * r, block_cols * c), dtype=np.int8)
    padded[:rows, :length] = matrix
    # [block_rows, block_cols, r, c]: one r x c tile per block.
    tiles = padded.reshape(block_rows, r, block_cols, c).transpose(0, 2, 1, 3)
    present = tiles.any(axis=(2, 3))
    if int(present.sum()) > _MAX_INDEX or block_cols > _MAX_INDEX:
        return None
    starts = np.concatenate([[0], np.cumsum(present.sum(axis=1))]).astype(np.uint16)
    block_rows_index, columns = np.nonzero(present)
    values = tiles[block_rows_index, columns].reshape(-1, r * c)
    return BlockSparseTensor(
        block, values.astype(np.int8), starts, columns.astype(np.uint16), (rows, length)
    )


def find_block_sparse(
    matrix: np.ndarray, shapes: tuple[tuple[int, int], ...] = BLOCK_SHAPES
) -> BlockSparseTensor | None:
    """Return the smallest block-sparse encoding of `matrix` over `shapes`, or
    None when the matrix has no zero to skip."""
    matrix = np.asarray(matrix, dtype=np.int8)
    if matrix.all():
        return None
    candidates = [packed for shape in shapes if (packed := pack_block_sparse(matrix, shape))]
    if not candidates:
        return None
    return min(candidates, key=lambda packed: packed.nbytes)
