"""Codebook kernels: CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED on
weights stored as b-bit indices into int8 tables, against the int8
reference arithmetic run on the unpacked weights (exact equality)."""

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
    TK_ERROR_PARAMETER,
    TK_ERROR_SHAPE,
    TK_OK,
    ConvCase,
    conv_cases,
    fully_connected_cases,
    max_examples,
    note_case,
)
from toolkit.pack import CodebookTensor, find_codebook, pack_indices


def random_codebook(
    rows: int, row_length: int, bits: int, shared: bool, seed: int, table_size: int | None = None
) -> CodebookTensor:
    """A codebook of `bits`-bit indices with random int8 tables."""
    rng = np.random.default_rng(seed)
    size = table_size or int(rng.integers(1, (1 << bits) + 1))
    tables = rng.integers(-128, 128, size=(1 if shared else rows, size)).astype(np.int8)
    positions = rng.integers(0, size, size=(rows, row_length))
    return CodebookTensor(bits, tables, pack_indices(positions, bits), row_length)


codebook_settings = st.tuples(st.integers(1, 8), st.booleans(), st.integers(0, 2**32 - 1))


@settings(max_examples=max_examples(300), **PROPERTY_SETTINGS)
@given(case=conv_cases(depthwise=False), layout=codebook_settings)
def test_conv2d_codebook_matches_reference(
    kernels: KernelLibrary, case: ConvCase, layout: tuple[int, bool, int]
) -> None:
    bits, shared, seed = layout
    shape = case.filter.shape
    packed = random_codebook(shape[0], int(np.prod(shape[1:])), bits, shared, seed)
    weights = packed.unpack().reshape(shape)
    note_case(ConvCase(case.input, weights, case.bias, case.params))
    expected = reference.conv2d(case.input, weights, case.bias, **case.params)
    actual = kernels.conv2d_codebook(case.input, packed, shape, case.bias, **case.params)
    np.testing.assert_array_equal(actual, expected)


@settings(max_examples=max_examples(300), **PROPERTY_SETTINGS)
@given(case=conv_cases(depthwise=True), layout=codebook_settings)
def test_depthwise_codebook_matches_reference(
    kernels: KernelLibrary, case: ConvCase, layout: tuple[int, bool, int]
) -> None:
    bits, shared, seed = layout
    shape = case.filter.shape
    packed = random_codebook(shape[3], shape[1] * shape[2], bits, shared, seed)
    # One row per output channel: the transpose of the 1HWC filter's [kh*kw, c_out] view.
    weights = packed.unpack().T.reshape(shape)
    note_case(ConvCase(case.input, weights, case.bias, case.params))
    expected = reference.depthwise_conv2d(case.input, weights, case.bias, **case.params)
    actual = kernels.depthwise_conv2d_codebook(case.input, packed, shape, case.bias, **case.params)
    np.testing.assert_array_equal(actual, expected)


@settings(max_examples=max_examples(300), **PROPERTY_SETTINGS)
@given(case=fully_connected_cases(), layout=codebook_settings)
def test_fully_connected_codebook_matches_reference(
    kernels: KernelLibrary, case: ConvCase, layout: tuple[int, bool, int]
) -> None:
    bits, shared, seed = layout
    units, depth = case.filter.shape
    packed = random_codebook(units, depth, bits, shared, seed)
    weights = packed.unpack()
    note_case(ConvCase(case.input, weights, case.bias, case.params))
    expected = reference.fully_connected(case.input, weights, case.bias, **case.params)
    actual = kernels.fully_connected_codebook(case.input, packed, case.bias, **case.params)
    np.testing.assert_array_equal(actual, expected)


FC_PARAMS: dict[str, Any] = {
    "input_offset": 3,
    "filter_offset": 0,
    "output_offset": -7,
    "clamp": (-128, 127),
}


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("shared", [False, True])
def test_every_bit_width_odd_rows(kernels: KernelLibrary, bits: int, shared: bool) -> None:
    """Rows of 13 indices: 13 * bits is a multiple of 8 only for bits = 8,
    so every other width ends its rows inside a byte."""
    units, depth = 7, 13
    packed = random_codebook(units, depth, bits, shared, seed=bits, table_size=1 << bits)
    rng = np.random.default_rng(bits)
    inputs = rng.integers(-128, 128, size=(2, depth)).astype(np.int8)
    bias = rng.integers(-5000, 5000, size=units).astype(np.int32)
    params = {**FC_PARAMS, "multipliers": [1 << 30] * units, "shifts": [-4] * units}
    expected = reference.fully_connected(inputs, packed.unpack(), bias, **params)
    actual = kernels.fully_connected_codebook(inputs, packed, bias, **params)
    np.testing.assert_array_equal(actual, expected)


def test_index_out_of_table_rejected(kernels: KernelLibrary) -> None:
    """A 3-entry table with 2-bit indices: index 3 would read past it."""
    tables = np.array([[1, 2, 3]], dtype=np.int8)
    packed = CodebookTensor(2, tables, pack_indices(np.array([[0, 1, 2, 3]]), 2), 4)
    assert kernels.codebook_check(packed, 1, 4) == TK_ERROR_PARAMETER


def test_codebook_check_statuses(kernels: KernelLibrary) -> None:
    good = random_codebook(3, 10, 3, shared=False, seed=1, table_size=8)
    assert kernels.codebook_check(good, 3, 10) == TK_OK
    # Rows longer than the packed bytes hold.
    assert kernels.codebook_check(good, 3, 11) == TK_ERROR_SHAPE
    too_wide = CodebookTensor(9, good.tables, good.indices, 10)
    assert kernels.codebook_check(too_wide, 3, 10) == TK_ERROR_PARAMETER
    small_table = CodebookTensor(1, good.tables, good.indices, 10)
    assert kernels.codebook_check(small_table, 3, 10) == TK_ERROR_PARAMETER


def test_find_codebook_round_trip() -> None:
    rng = np.random.default_rng(5)
    for values in (1, 2, 3, 4, 9, 16, 100, 256):
        centroids = rng.integers(-127, 128, size=(11, values))
        chosen = rng.integers(0, values, size=(11, 37))
        rows = np.take_along_axis(centroids, chosen, axis=1).astype(np.int8)
        packed = find_codebook(rows)
        assert packed is not None
        np.testing.assert_array_equal(packed.unpack(), rows)
        assert packed.table_size <= 1 << packed.bits


def test_find_codebook_prefers_shared_table() -> None:
    rows = np.tile(np.array([-3, 0, 5, 9], dtype=np.int8), (20, 8))
    packed = find_codebook(rows)
    assert packed is not None
    assert packed.shared_table
    assert packed.bits == 2


def test_find_codebook_rejects_dense_rows() -> None:
    rows = np.arange(-128, 128, dtype=np.int16).astype(np.int8)[None, :].repeat(2, axis=0)
    assert find_codebook(rows, max_bits=7) is None
