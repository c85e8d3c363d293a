"""Codebook packing of int8 weights (Deep Compression weight sharing).

The packer reads the structure from the int8 tensor itself. When every
output channel (row) uses at most 2^b distinct values, the rows are stored
as b-bit indices into per-row int8 tables. When all rows together use few
enough values, one shared table serves them all. This also packs models that other
tools clustered.

Layout, as `tk_codebook` in csrc/include/tk_kernels.h reads it: a table of
`table_size` int8 values per row (or one shared table), and per row
ceil(row_length * b / 8) bytes of indices, index i at bits [i*b, (i+1)*b)
counted from the least significant bit of the row's first byte.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class CodebookTensor:
    """Rows of int8 weights as b-bit indices into int8 tables."""

    bits: int
    tables: np.ndarray  # int8 [rows, table_size], or [1, table_size] when shared
    indices: np.ndarray  # uint8 [rows, row_bytes]
    row_length: int

    @property
    def shared_table(self) -> bool:
        return self.tables.shape[0] == 1 and self.indices.shape[0] > 1

    @property
    def table_size(self) -> int:
        return int(self.tables.shape[1])

    @property
    def row_bytes(self) -> int:
        return int(self.indices.shape[1])

    @property
    def table_bytes(self) -> int:
        return int(self.tables.size)

    @property
    def index_bytes(self) -> int:
        return int(self.indices.size)

    @property
    def nbytes(self) -> int:
        return self.table_bytes + self.index_bytes

    def unpack(self) -> np.ndarray:
        """Rebuild the int8 rows [rows, row_length]."""
        rows = self.indices.shape[0]
        positions = unpack_indices(self.indices, self.bits, self.row_length)
        tables = np.broadcast_to(self.tables, (rows, self.table_size))
        return np.take_along_axis(tables, positions.astype(np.int64), axis=1).astype(np.int8)


def bits_for(count: int) -> int:
    """Index width for a table of `count` entries (at least 1 bit)."""
    return max(1, math.ceil(math.log2(count))) if count > 1 else 1


def pack_indices(positions: np.ndarray, bits: int) -> np.ndarray:
    """Bit-pack non-negative integers [rows, length] below 2^bits into
    uint8 [rows, ceil(length * bits / 8)], least significant bit first."""
    if not 1 <= bits <= 8:
        raise ValueError(f"index width {bits} is outside 1..8")
    positions = np.asarray(positions, dtype=np.uint16)
    if positions.size and int(positions.max()) >= 1 << bits:
        raise ValueError(f"index {int(positions.max())} does not fit in {bits} bits")
    rows, length = positions.shape
    # One bit per column, least significant first, then eight bits per byte.
    shifts = np.arange(bits, dtype=np.uint16)
    bit_matrix = ((positions[:, :, None] >> shifts) & 1).astype(np.uint8).reshape(rows, -1)
    row_bytes = math.ceil(length * bits / 8)
    padded = np.zeros((rows, row_bytes * 8), dtype=np.uint8)
    padded[:, : bit_matrix.shape[1]] = bit_matrix
    return np.packbits(padded, axis=1, bitorder="little")


def unpack_indices(packed: np.ndarray, bits: int, length: int) -> np.ndarray:
    """Inverse of `pack_indices`: uint8 rows back to integers [rows, length]."""
    rows = packed.shape[0]
    bit_matrix = np.unpackbits(packed, axis=1, bitorder="little")[:, : length * bits]
    weights = (1 << np.arange(bits, dtype=np.uint16)).astype(np.uint16)
    return (bit_matrix.reshape(rows, length, bits).astype(np.uint16) * weights).sum(axis=2)


def find_codebook(rows: np.ndarray, max_bits: int = 8) -> CodebookTensor | None:
    """Pack int8 rows [rows, row_length] as a codebook, or return None when
    a row uses more than 2^max_bits distinct values.

    Of a shared table and per-row tables, the smaller encoding is returned.
    """
    rows = np.asarray(rows, dtype=np.int8)
    if rows.ndim != 2 or rows.size == 0:
        raise ValueError(f"expected a non-empty 2-D array of rows, got shape {rows.shape}")
    candidates = []

    shared = np.unique(rows)
    if shared.size <= 1 << max_bits:
        bits = bits_for(shared.size)
        positions = np.searchsorted(shared, rows)
        candidates.append(
            CodebookTensor(bits, shared[None, :], pack_indices(positions, bits), rows.shape[1])
        )

    per_row = [np.unique(row) for row in rows]
    table_size = max(values.size for values in per_row)
    if table_size <= 1 << max_bits:
        bits = bits_for(table_size)
        tables = np.zeros((rows.shape[0], table_size), dtype=np.int8)
        positions = np.zeros(rows.shape, dtype=np.int64)
        for r, values in enumerate(per_row):
            tables[r, : values.size] = values
            positions[r] = np.searchsorted(values, rows[r])
        candidates.append(
            CodebookTensor(bits, tables, pack_indices(positions, bits), rows.shape[1])
        )

    if not candidates:
        return None
    return min(candidates, key=lambda c: c.nbytes)
