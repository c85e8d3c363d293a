"""Block-sparse kernels: CONV_2D and FULLY_CONNECTED on weights whose zero
blocks are not stored, against the int8 reference arithmetic run on the
dense weights (exact equality)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests import tflm_reference as reference
from tests.kernel_library import KernelLibrary
from tests.test_kernels import (
    PROPERTY_SETTINGS,
    TK_ERROR_SHAPE,
    TK_OK,
    ConvCase,
    conv_cases,
    fully_connected_cases,
    max_examples,
    note_case,
)
from toolkit.pack.n_m import PATTERNS, pack_n_m
from toolkit.pack.sparse import BLOCK_SHAPES, find_block_sparse, pack_block_sparse
from toolkit.pack.sparse_codebook import find_sparse_codebook

# Block shape, fraction of blocks kept, seed.
sparsity_settings = st.tuples(
    st.sampled_from([*BLOCK_SHAPES, (2, 3), (3, 5)]),
    st.sampled_from([0.0, 0.1, 0.5, 0.9, 1.0]),
    st.integers(0, 2**32 - 1),
)


def prune_blocks(matrix: np.ndarray, block: tuple[int, int], keep: float, seed: int) -> np.ndarray:
    """Zero each r x c block of `matrix` with probability 1 - keep."""
    rng = np.random.default_rng(seed)
    r, c = block
    pruned = matrix.copy()
    for row in range(0, matrix.shape[0], r):
        for column in range(0, matrix.shape[1], c):
            if rng.random() >= keep:
                pruned[row : row + r, column : column + c] = 0
    return pruned


@settings(max_examples=max_examples(300), **PROPERTY_SETTINGS)
@given(case=conv_cases(depthwise=False), layout=sparsity_settings)
def test_conv2d_block_sparse_matches_reference(
    kernels: KernelLibrary, case: ConvCase, layout: tuple[tuple[int, int], float, int]
) -> None:
    block, keep, seed = layout
    shape = case.filter.shape
    rows = prune_blocks(case.filter.reshape(shape[0], -1), block, keep, seed)
    packed = pack_block_sparse(rows, block)
    assert packed is not None
    weights = rows.reshape(shape)
    note_case(ConvCase(case.input, weights, case.bias, case.params))
    expected = reference.conv2d(case.input, weights, case.bias, **case.params)
    actual = kernels.conv2d_block_sparse(case.input, packed, shape, case.bias, **case.params)
    np.testing.assert_array_equal(actual, expected)


@settings(max_examples=max_examples(300), **PROPERTY_SETTINGS)
@given(case=fully_connected_cases(), layout=sparsity_settings)
def test_fully_connected_block_sparse_matches_reference(
    kernels: KernelLibrary, case: ConvCase, layout: tuple[tuple[int, int], float, int]
) -> None:
    block, keep, seed = layout
    weights = prune_blocks(case.filter, block, keep, seed)
    packed = pack_block_sparse(weights, block)
    assert packed is not None
    # Block-sparse weights are symmetric int8: the zero point is 0.
    params = {**case.params, "filter_offset": 0}
    note_case(ConvCase(case.input, weights, case.bias, params))
    expected = reference.fully_connected(case.input, weights, case.bias, **params)
    actual = kernels.fully_connected_block_sparse(case.input, packed, case.bias, **params)
    np.testing.assert_array_equal(actual, expected)


FC_PARAMS: dict[str, Any] = {
    "input_offset": 3,
    "filter_offset": 0,
    "output_offset": -7,
    "clamp": (-128, 127),
}


@pytest.mark.parametrize("kind", ["empty", "dense", "empty_rows"])
@pytest.mark.parametrize("block", [(1, 1), (1, 4), (4, 4), (3, 5)])
def test_edge_tensors(kernels: KernelLibrary, kind: str, block: tuple[int, int]) -> None:
    units, depth = 9, 21
    rng = np.random.default_rng(1)
    weights = rng.integers(1, 128, size=(units, depth)).astype(np.int8)
    if kind == "empty":
        weights[:] = 0
    elif kind == "empty_rows":
        weights[[0, 4, 8]] = 0
    packed = pack_block_sparse(weights, block)
    assert packed is not None
    inputs = rng.integers(-128, 128, size=(2, depth)).astype(np.int8)
    bias = rng.integers(-5000, 5000, size=units).astype(np.int32)
    params = {**FC_PARAMS, "multipliers": [1 << 30] * units, "shifts": [-6] * units}
    expected = reference.fully_connected(inputs, weights, bias, **params)
    actual = kernels.fully_connected_block_sparse(inputs, packed, bias, **params)
    np.testing.assert_array_equal(actual, expected)
    if kind == "empty":
        assert packed.block_count == 0


def test_block_sparse_check_statuses(kernels: KernelLibrary) -> None:
    weights = np.zeros((6, 10), dtype=np.int8)
    weights[0, 0] = 5
    weights[5, 9] = -3
    packed = pack_block_sparse(weights, (2, 4))
    assert packed is not None
    assert kernels.block_sparse_check(packed, 6, 10) == TK_OK
    # A matrix with fewer block columns than the stored ones.
    assert kernels.block_sparse_check(packed, 6, 8) == TK_ERROR_SHAPE
    # More block rows than row starts describe.
    assert kernels.block_sparse_check(packed, 7, 10) == TK_ERROR_SHAPE


def test_find_block_sparse_round_trip() -> None:
    rng = np.random.default_rng(2)
    matrix = rng.integers(-127, 128, size=(13, 37)).astype(np.int8)
    matrix[rng.random(matrix.shape) < 0.8] = 0
    packed = find_block_sparse(matrix)
    assert packed is not None
    np.testing.assert_array_equal(packed.unpack(), matrix)
    assert find_block_sparse(np.ones((3, 3), dtype=np.int8)) is None


def shared_sparse_rows(rows: np.ndarray, keep: float, seed: int, shared: bool) -> np.ndarray:
    """Prune `rows` to about `keep` nonzero and map the rest onto 15 values
    per row (or 15 for all rows)."""
    rng = np.random.default_rng(seed)
    values = rng.integers(-127, 128, size=(1 if shared else rows.shape[0], 15))
    chosen = rng.integers(0, 15, size=rows.shape)
    mapped = np.take_along_axis(np.broadcast_to(values, (rows.shape[0], 15)), chosen, axis=1)
    mapped[rng.random(rows.shape) >= keep] = 0
    return mapped.astype(np.int8)


combined_settings = st.tuples(
    st.sampled_from([0.0, 0.05, 0.2, 0.5, 1.0]), st.integers(0, 2**32 - 1), st.booleans()
)


@settings(max_examples=max_examples(300), **PROPERTY_SETTINGS)
@given(case=conv_cases(depthwise=False), layout=combined_settings)
def test_conv2d_sparse_codebook_matches_reference(
    kernels: KernelLibrary, case: ConvCase, layout: tuple[float, int, bool]
) -> None:
    keep, seed, shared = layout
    shape = case.filter.shape
    rows = shared_sparse_rows(case.filter.reshape(shape[0], -1), keep, seed, shared)
    packed = find_sparse_codebook(rows)
    assert packed is not None
    weights = rows.reshape(shape)
    note_case(ConvCase(case.input, weights, case.bias, case.params))
    expected = reference.conv2d(case.input, weights, case.bias, **case.params)
    actual = kernels.conv2d_sparse_codebook(case.input, packed, shape, case.bias, **case.params)
    np.testing.assert_array_equal(actual, expected)


@settings(max_examples=max_examples(300), **PROPERTY_SETTINGS)
@given(case=fully_connected_cases(), layout=combined_settings)
def test_fully_connected_sparse_codebook_matches_reference(
    kernels: KernelLibrary, case: ConvCase, layout: tuple[float, int, bool]
) -> None:
    keep, seed, shared = layout
    weights = shared_sparse_rows(case.filter, keep, seed, shared)
    packed = find_sparse_codebook(weights)
    assert packed is not None
    params = {**case.params, "filter_offset": 0}
    note_case(ConvCase(case.input, weights, case.bias, params))
    expected = reference.fully_connected(case.input, weights, case.bias, **params)
    actual = kernels.fully_connected_sparse_codebook(case.input, packed, case.bias, **params)
    np.testing.assert_array_equal(actual, expected)


def test_sparse_codebook_long_gaps(kernels: KernelLibrary) -> None:
    """Nonzeros 40 positions apart need filler entries."""
    units, depth = 3, 130
    weights = np.zeros((units, depth), dtype=np.int8)
    weights[:, ::40] = np.array([5, -7, 9, 11], dtype=np.int8)
    packed = find_sparse_codebook(weights)
    assert packed is not None
    assert packed.entries.size > np.count_nonzero(weights)
    np.testing.assert_array_equal(packed.unpack(), weights)
    rng = np.random.default_rng(3)
    inputs = rng.integers(-128, 128, size=(2, depth)).astype(np.int8)
    params = {**FC_PARAMS, "multipliers": [1 << 30] * units, "shifts": [-3] * units}
    expected = reference.fully_connected(inputs, weights, None, **params)
    actual = kernels.fully_connected_sparse_codebook(inputs, packed, None, **params)
    np.testing.assert_array_equal(actual, expected)


def test_sparse_codebook_check_rejects_overrun(kernels: KernelLibrary) -> None:
    weights = np.zeros((2, 20), dtype=np.int8)
    weights[:, 19] = 3
    packed = find_sparse_codebook(weights)
    assert packed is not None
    assert kernels.sparse_codebook_check(packed, 2, 20) == TK_OK
    # The last entry of each row sits at position 19, past a row of 19.
    assert kernels.sparse_codebook_check(packed, 2, 19) == TK_ERROR_SHAPE


n_m_settings = st.tuples(st.sampled_from(PATTERNS), st.integers(0, 2**32 - 1))


def n_m_rows(rows: np.ndarray, n: int, m: int, seed: int) -> np.ndarray:
    """Keep at most n random weights of every m (some groups fewer)."""
    rng = np.random.default_rng(seed)
    pruned = np.zeros_like(rows)
    for start in range(0, rows.shape[1], m):
        width = min(m, rows.shape[1] - start)
        for row in range(rows.shape[0]):
            keep = rng.permutation(width)[: rng.integers(0, n + 1)]
            pruned[row, start + keep] = rows[row, start + keep]
    return pruned


@settings(max_examples=max_examples(300), **PROPERTY_SETTINGS)
@given(case=conv_cases(depthwise=False), layout=n_m_settings)
def test_conv2d_n_m_matches_reference(
    kernels: KernelLibrary, case: ConvCase, layout: tuple[tuple[int, int], int]
) -> None:
    (n, m), seed = layout
    shape = case.filter.shape
    rows = n_m_rows(case.filter.reshape(shape[0], -1), n, m, seed)
    packed = pack_n_m(rows, n, m)
    assert packed is not None
    weights = rows.reshape(shape)
    note_case(ConvCase(case.input, weights, case.bias, case.params))
    expected = reference.conv2d(case.input, weights, case.bias, **case.params)
    actual = kernels.conv2d_n_m(case.input, packed, shape, case.bias, **case.params)
    np.testing.assert_array_equal(actual, expected)


@settings(max_examples=max_examples(300), **PROPERTY_SETTINGS)
@given(case=fully_connected_cases(), layout=n_m_settings)
def test_fully_connected_n_m_matches_reference(
    kernels: KernelLibrary, case: ConvCase, layout: tuple[tuple[int, int], int]
) -> None:
    (n, m), seed = layout
    weights = n_m_rows(case.filter, n, m, seed)
    packed = pack_n_m(weights, n, m)
    assert packed is not None
    params = {**case.params, "filter_offset": 0}
    note_case(ConvCase(case.input, weights, case.bias, params))
    expected = reference.fully_connected(case.input, weights, case.bias, **params)
    actual = kernels.fully_connected_n_m(case.input, packed, case.bias, **params)
    np.testing.assert_array_equal(actual, expected)


def test_n_m_rejects_dense_groups() -> None:
    weights = np.ones((2, 8), dtype=np.int8)
    assert pack_n_m(weights, 2, 4) is None


def test_n_m_check_rejects_short_rows(kernels: KernelLibrary) -> None:
    weights = np.zeros((2, 8), dtype=np.int8)
    weights[:, 7] = 4
    packed = pack_n_m(weights, 2, 4)
    assert packed is not None
    assert kernels.n_m_check(packed, 2, 8) == TK_OK
    # Position 7 lies past a row of 7.
    assert kernels.n_m_check(packed, 2, 7) == TK_ERROR_SHAPE
