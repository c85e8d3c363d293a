"""N:M packing of pruned int8 weights (for example 2:4).

When every group of m consecutive weights of every row contains at most n
nonzero values, the packer stores n values and n bit-packed positions per
group. The layout is what `tk_n_m` in csrc/include/tk_kernels.h reads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from toolkit.pack.codebook import bits_for, pack_indices

# Patterns the packer tries, densest first.
PATTERNS = ((2, 4), (1, 4), (4, 8), (2, 8), (1, 8))


@dataclass
class NMTensor:
    """n values and positions per group of m weights, for every row."""

    n: int
    m: int
    values: np.ndarray  # int8 [rows, groups * n]
    positions: np.ndarray  # uint8 [rows, row_bytes], bit-packed
    shape: tuple[int, int]

    @property
    def position_bits(self) -> int:
        return bits_for(self.m)

    @property
    def value_bytes(self) -> int:
        return int(self.values.size)

    @property
    def index_bytes(self) -> int:
        return int(self.positions.size)

    @property
    def nbytes(self) -> int:
        return self.value_bytes + self.index_bytes

    def unpack(self) -> np.ndarray:
        """Rebuild the dense int8 matrix."""
        from toolkit.pack.codebook import unpack_indices

        rows, length = self.shape
        groups = math.ceil(length / self.m)
        offsets = unpack_indices(self.positions, self.position_bits, groups * self.n)
        columns = (np.arange(groups * self.n) // self.n) * self.m + offsets
        dense = np.zeros((rows, groups * self.m), dtype=np.int8)
        # A stored zero may share its position with a nonzero value, so only
        # the nonzero values are written.
        for row in range(rows):
            nonzero = self.values[row] != 0
            dense[row, columns[row][nonzero].astype(np.int64)] = self.values[row][nonzero]
        return dense[:, :length]


def pack_n_m(matrix: np.ndarray, n: int, m: int) -> NMTensor | None:
    """Store `matrix` as n of every m weights, or return None when a group
    has more than n nonzero weights."""
    matrix = np.asarray(matrix, dtype=np.int8)
    rows, length = matrix.shape
    groups = math.ceil(length / m)
    padded = np.zeros((rows, groups * m), dtype=np.int8)
    padded[:, :length] = matrix
    grouped = padded.reshape(rows, groups, m)
    if ((grouped != 0).sum(axis=2) > n).any():
        return None
    # Nonzero positions first (a stable sort keeps their order), then zeros.
    order = np.argsort(grouped == 0, axis=2, kind="stable")[:, :, :n]
    stored = np.take_along_axis(grouped, order, axis=2)
    # A stored zero must still point inside the row, so it takes the group's
    # first position, which every group has.
    order = np.where(stored == 0, 0, order)
    values = stored.reshape(rows, groups * n)
    positions = pack_indices(order.reshape(rows, groups * n), bits_for(m))
    return NMTensor(n, m, values.astype(np.int8), positions, (rows, length))


def find_n_m(matrix: np.ndarray) -> NMTensor | None:
    """Pack `matrix` with the first pattern of PATTERNS it satisfies, or
    return None."""
    for n, m in PATTERNS:
        packed = pack_n_m(matrix, n, m)
        if packed is not None:
            return packed
    return None
