"""Pruned and shared weights in one byte per nonzero weight.

Deep Compression stores a pruned, weight-shared layer as the nonzero
weights only, each with a short gap to the previous one and a short
codebook index. Here each entry is one byte: the high four bits count the
positions skipped since the previous stored weight, the low four bits index
the row's 16-entry int8 table. A gap of more than 15 is bridged by filler
entries that point at a 0 in the table. The layout is what
`tk_sparse_codebook` in csrc/include/tk_kernels.h reads.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TABLE_SIZE = 16
MAX_GAP = 15
_MAX_ENTRIES = (1 << 16) - 1


@dataclass
class SparseCodebookTensor:
    """Entries, row starts and 16-entry tables of an int8 matrix."""

    tables: np.ndarray  # int8 [rows, 16], or [1, 16] when shared
    entries: np.ndarray  # uint8 [entry_count]
    row_starts: np.ndarray  # uint16 [rows + 1]
    shape: tuple[int, int]

    @property
    def shared_table(self) -> bool:
        return self.tables.shape[0] == 1 and self.shape[0] > 1

    @property
    def table_bytes(self) -> int:
        return int(self.tables.size)

    @property
    def index_bytes(self) -> int:
        return int(self.entries.size + 2 * self.row_starts.size)

    @property
    def nbytes(self) -> int:
        return self.table_bytes + self.index_bytes

    def unpack(self) -> np.ndarray:
        """Rebuild the dense int8 matrix."""
        rows, length = self.shape
        dense = np.zeros(self.shape, dtype=np.int8)
        for row in range(rows):
            table = self.tables[0 if self.shared_table else row]
            position = -1
            for code in self.entries[int(self.row_starts[row]) : int(self.row_starts[row + 1])]:
                position += int(code >> 4) + 1
                dense[row, position] = table[int(code & 15)]
        return dense


def _row_table(values: np.ndarray) -> np.ndarray | None:
    """Build a 16-entry table of the row's values and a 0, or return None
    when they do not fit."""
    distinct = np.union1d(np.unique(values), [0]).astype(np.int8)
    if distinct.size > TABLE_SIZE:
        return None
    table = np.zeros(TABLE_SIZE, dtype=np.int8)
    table[: distinct.size] = distinct
    return table


def _encode_row(row: np.ndarray, table: np.ndarray) -> list[int]:
    zero_index = int(np.flatnonzero(table == 0)[0])
    lookup = {int(v): i for i, v in enumerate(table)}
    entries = []
    previous = -1
    for position in np.flatnonzero(row):
        gap = int(position) - previous - 1
        while gap > MAX_GAP:
            # A filler stored weight of 0, MAX_GAP positions on.
            entries.append((MAX_GAP << 4) | zero_index)
            gap -= MAX_GAP + 1
        entries.append((gap << 4) | lookup[int(row[position])])
        previous = int(position)
    return entries


def find_sparse_codebook(matrix: np.ndarray) -> SparseCodebookTensor | None:
    """Encode an int8 matrix whose rows use at most 15 nonzero values (plus
    0), or return None when a row needs more or the counts overflow uint16."""
    matrix = np.asarray(matrix, dtype=np.int8)
    shared = _row_table(matrix)
    tables = [shared] if shared is not None else [_row_table(row) for row in matrix]
    if any(table is None for table in tables):
        return None
    entries: list[int] = []
    starts = [0]
    for index, row in enumerate(matrix):
        table = tables[0 if shared is not None else index]
        assert table is not None
        entries += _encode_row(row, table)
        starts.append(len(entries))
    if len(entries) > _MAX_ENTRIES:
        return None
    return SparseCodebookTensor(
        np.stack([t for t in tables if t is not None]).astype(np.int8),
        np.array(entries, dtype=np.uint8),
        np.array(starts, dtype=np.uint16),
        (int(matrix.shape[0]), int(matrix.shape[1])),
    )
