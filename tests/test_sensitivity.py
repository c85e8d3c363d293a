"""Tests for toolkit.compress.sensitivity on the digits example CNN."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from toolkit.compress.prune import prune, strip_pruning
from toolkit.compress.sensitivity import SensitivityScan, scan
from toolkit.errors import ToolkitError
from toolkit.examples.digits import DigitsData, load_digits_data, train_model

SEED = 0
SPARSITIES = (0.0, 0.25, 0.5, 0.75, 0.9)
WEIGHTED_LAYERS = ("Dense", "Conv2D", "DepthwiseConv2D")


@pytest.fixture(scope="module")
def digits() -> DigitsData:
    return load_digits_data(seed=SEED)


@pytest.fixture(scope="module")
def model(digits: DigitsData) -> Any:
    return train_model(digits, epochs=5, seed=SEED)


@pytest.fixture(scope="module")
def weights_before(model: Any) -> list[np.ndarray]:
    """The model's weights before the scan runs, copied."""
    return [np.array(weight) for weight in model.get_weights()]


@pytest.fixture(scope="module")
def sensitivity(
    model: Any, digits: DigitsData, weights_before: list[np.ndarray]
) -> SensitivityScan:
    result = scan(model, digits.x_test, digits.y_test, sparsities=SPARSITIES)
    print()
    print(result.table())
    return result


def _kernel_layers(model: Any) -> list[Any]:
    return [layer for layer in model.layers if type(layer).__name__ in WEIGHTED_LAYERS]


def _weight_bytes(model: Any) -> int:
    return sum(int(np.count_nonzero(layer.kernel.numpy())) for layer in _kernel_layers(model))


def test_scan_one_row_per_layer(model: Any, sensitivity: SensitivityScan) -> None:
    names = [layer.name for layer in _kernel_layers(model)]
    assert [row.name for row in sensitivity.rows] == names
    for row, layer in zip(sensitivity.rows, _kernel_layers(model), strict=True):
        assert row.parameters == layer.kernel.numpy().size
        assert sorted(row.accuracy) == list(SPARSITIES)


def test_scan_dense_accuracy_is_baseline(sensitivity: SensitivityScan) -> None:
    for row in sensitivity.rows:
        assert row.accuracy[0.0] == sensitivity.baseline_accuracy, row.name
        assert row.nonzero[0.0] == row.parameters, row.name


def test_scan_accuracy_falls_with_sparsity(sensitivity: SensitivityScan) -> None:
    # One-shot pruning without fine-tuning may gain a sample or two at a low
    # sparsity, so the check allows 2 points above the baseline.
    for row in sensitivity.rows:
        for sparsity in SPARSITIES:
            assert row.accuracy[sparsity] <= sensitivity.baseline_accuracy + 0.02, (
                row.name,
                sparsity,
            )
        assert row.accuracy[0.9] <= row.accuracy[0.25] + 0.02, row.name


def test_scan_keeps_input_model(
    model: Any, weights_before: list[np.ndarray], sensitivity: SensitivityScan
) -> None:
    after = model.get_weights()
    assert len(after) == len(weights_before)
    for before, now in zip(weights_before, after, strict=True):
        np.testing.assert_array_equal(before, now)


def test_propose_meets_ratio(sensitivity: SensitivityScan) -> None:
    proposal = sensitivity.propose(target_ratio=0.3)
    print(f"\nproposal for 30% of {sensitivity.dense_bytes} bytes: {proposal}")
    assert set(proposal) == {row.name for row in sensitivity.rows}
    assert sensitivity.weight_bytes(proposal) <= 0.3 * sensitivity.dense_bytes


def test_propose_prunes_large_layers_more(sensitivity: SensitivityScan) -> None:
    # NOTE: with the default max_drop=0.01 this does not hold for this model, because
    # the first step picks each layer's sparsity from that layer's drop alone. The first
    # conv2d (144 weights) loses under 1 point at 50%, and the classifier dense_1 (640)
    # loses more than 5. With max_drop=0 the drop per byte saved decides.
    proposal = sensitivity.propose(target_ratio=0.3, max_drop=0.0)
    print(f"\nproposal for 30% with max_drop=0: {proposal}")
    assert sensitivity.weight_bytes(proposal) <= 0.3 * sensitivity.dense_bytes
    smallest = min(sensitivity.rows, key=lambda row: row.parameters)
    for row in sensitivity.rows:
        if row.parameters > smallest.parameters:
            assert proposal[row.name] >= proposal[smallest.name], (row.name, proposal)


def test_propose_target_bytes(sensitivity: SensitivityScan) -> None:
    target = sensitivity.dense_bytes // 2
    proposal = sensitivity.propose(target_bytes=target)
    assert sensitivity.weight_bytes(proposal) <= target


def test_propose_unreachable_target_raises(sensitivity: SensitivityScan) -> None:
    with pytest.raises(ToolkitError, match="not reachable") as error:
        sensitivity.propose(target_ratio=0.05)
    best = sum(row.nonzero[0.9] for row in sensitivity.rows)
    assert str(best) in str(error.value)


def test_propose_invalid_targets_raise(sensitivity: SensitivityScan) -> None:
    with pytest.raises(ToolkitError, match="exactly one"):
        sensitivity.propose()
    with pytest.raises(ToolkitError, match="exactly one"):
        sensitivity.propose(target_bytes=100, target_ratio=0.5)
    with pytest.raises(ToolkitError, match="target_ratio"):
        sensitivity.propose(target_ratio=1.5)
    with pytest.raises(ToolkitError, match="max_drop"):
        sensitivity.propose(target_ratio=0.5, max_drop=-0.1)


def test_proposal_prunes_to_stated_size(model: Any, sensitivity: SensitivityScan) -> None:
    proposal = sensitivity.propose(target_ratio=0.3)
    pruned = model
    for name, sparsity in proposal.items():
        pruned = strip_pruning(prune(pruned, sparsity=sparsity, layers=[name]))
    assert _weight_bytes(pruned) == sensitivity.weight_bytes(proposal)
    assert _weight_bytes(pruned) <= 0.3 * sensitivity.dense_bytes


def test_scan_rejects_bad_input(model: Any, digits: DigitsData) -> None:
    x = digits.x_test[:20]
    y = digits.y_test[:20]
    with pytest.raises(ToolkitError, match="labels"):
        scan(model, x, y[:10])
    with pytest.raises(ToolkitError, match="integer class"):
        scan(model, x, y.astype(np.float32))
    with pytest.raises(ToolkitError, match="not found"):
        scan(model, x, y, layers=["missing"])
    with pytest.raises(ToolkitError, match="n:m"):
        scan(model, x, y, sparsities=(0.0, 0.75), granularity="n:m")


def test_scan_n_m_default_sparsities(model: Any, digits: DigitsData) -> None:
    dense_name = _kernel_layers(model)[-1].name
    result = scan(
        model, digits.x_test[:50], digits.y_test[:50], granularity="n:m", layers=[dense_name]
    )
    assert result.sparsities == (0.0, 0.5)
    row = result.rows[0]
    assert row.nonzero[0.5] == row.parameters // 2
