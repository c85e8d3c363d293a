"""Pruning through deploy: `.tflite` models pruned on their int8 weights and
Keras models pruned before conversion, packed sparse, matching TFLM."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.helpers import shared_model
from toolkit.deploy import deploy
from toolkit.errors import ToolkitError
from toolkit.pack.prune_int8 import PruningSpec, parse_spec, prune_rows
from toolkit.tflite_import import load_tflite
from toolkit.validate import validate


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("0.8", PruningSpec("unstructured", 0.8)),
        ("2:4", PruningSpec("n:m", 0.5, n_m=(2, 4))),
        ("block:1x4:0.5", PruningSpec("block", 0.5, block=(1, 4))),
        ("filter:0.5", PruningSpec("filter", 0.5)),
        ("channel:0.25", PruningSpec("channel", 0.25)),
    ],
)
def test_parse_spec(spec: str, expected: PruningSpec) -> None:
    assert parse_spec(spec) == expected


@pytest.mark.parametrize("spec", ["1.5", "4:2", "block:0x4:0.5", "rows:0.5", "abc"])
def test_parse_spec_rejects(spec: str) -> None:
    with pytest.raises(ToolkitError, match="pruning spec"):
        parse_spec(spec)


def test_prune_rows_patterns() -> None:
    rng = np.random.default_rng(0)
    rows = rng.integers(1, 128, size=(8, 36)).astype(np.int8)
    n_m = prune_rows(rows, parse_spec("2:4"), 4)
    assert ((n_m.reshape(8, 9, 4) != 0).sum(axis=2) == 2).all()
    block = prune_rows(rows, parse_spec("block:1x4:0.5"), 4)
    tiles = (block.reshape(8, 9, 4) != 0).sum(axis=2)
    assert set(np.unique(tiles)) <= {0, 4}
    filters = prune_rows(rows, parse_spec("filter:0.5"), 4)
    assert (filters == 0).all(axis=1).sum() == 4
    channels = prune_rows(rows, parse_spec("channel:0.25"), 4)
    assert (channels.reshape(8, 9, 4) == 0).all(axis=(0, 1)).sum() == 1


@pytest.mark.parametrize("spec", ["0.8", "2:4", "block:1x4:0.5", "filter:0.5"])
def test_pruned_tflite_matches_tflm(spec: str, tmp_path: Path) -> None:
    result = deploy(shared_model("dscnn_kws_int8.tflite"), tmp_path / "out", prune=spec)
    assert result.report["packed_weight_bytes"] <= result.report["int8_weight_bytes"]
    if spec == "2:4":
        assert "2:4" in {layer["format"] for layer in result.report["layers"]}
    checked = validate(result.out_dir, count=20, seed=6)
    assert checked.outputs[0].max_abs_diff == 0, checked.summary()


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["2:4", "block:1x4:0.5"])
def test_pruned_resnet8_keras_matches_tflm(spec: str, tmp_path: Path) -> None:
    result = deploy(shared_model("resnet8_cifar10.h5"), tmp_path / "out", prune=spec)
    graph = load_tflite(result.out_dir / "model.tflite")
    conv = next(op for op in graph.ops if op.kind == "CONV_2D" and op.index > 0)
    weights = graph.tensors[conv.inputs[1]].data
    assert weights is not None
    assert (weights == 0).mean() >= 0.45
    formats = {layer["format"] for layer in result.report["layers"]}
    assert ("2:4" if spec == "2:4" else "block-sparse 1x4") in formats
    checked = validate(result.out_dir, count=20, seed=7)
    assert checked.outputs[0].max_abs_diff == 0, checked.summary()


@pytest.mark.slow
def test_filter_pruned_resnet8_shrinks(tmp_path: Path) -> None:
    dense = deploy(shared_model("resnet8_cifar10.h5"), tmp_path / "dense", build=False)
    pruned = deploy(shared_model("resnet8_cifar10.h5"), tmp_path / "pruned", prune="filter:0.5")

    def totals(report: dict) -> tuple[int, int]:  # type: ignore[type-arg]
        layers = report["layers"]
        return sum(x["parameters"] for x in layers), sum(x["macs"] for x in layers)

    dense_parameters, dense_macs = totals(dense.report)
    pruned_parameters, pruned_macs = totals(pruned.report)
    print(
        f"parameters {dense_parameters} -> {pruned_parameters}, MACs {dense_macs} -> {pruned_macs}"
    )
    assert pruned_parameters < 0.4 * dense_parameters
    assert pruned_macs < 0.4 * dense_macs
    checked = validate(pruned.out_dir, count=20, seed=8)
    assert checked.outputs[0].max_abs_diff == 0, checked.summary()


def test_digits_pruned_and_shared(tmp_path: Path) -> None:
    """80% unstructured pruning plus 16 shared values, fine-tuned by
    distillation from the dense model: within 1 point of the float model's
    accuracy, with packed weights at most 0.25x of their int8 size."""
    from toolkit.deploy import FineTuning
    from toolkit.examples.digits import evaluate_deployment, load_digits_data, train_model

    data = load_digits_data()
    model = train_model(data, epochs=30)
    float_accuracy = float(
        np.mean(np.argmax(model.predict(data.x_test, verbose=0), axis=1) == data.y_test)
    )
    tuning = FineTuning(train=(data.x_train, data.y_train), epochs=25)
    result = deploy(
        model, tmp_path / "out", calibration=data.x_train, prune="0.8", cluster=16, tuning=tuning
    )
    tflite_accuracy, c_accuracy, mismatched = evaluate_deployment(result.out_dir, data)
    report = result.report
    ratio = report["packed_weight_bytes"] / report["int8_weight_bytes"]
    print(result.summary())
    print(
        f"float {float_accuracy:.4f}, TFLM {tflite_accuracy:.4f}, C {c_accuracy:.4f}, "
        f"packed/int8 {ratio:.3f}"
    )
    assert mismatched == 0
    assert float_accuracy - c_accuracy <= 0.01
    assert ratio <= 0.25
