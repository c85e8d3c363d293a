"""Whole models whose int8 weights were pruned by another tool: the packer
finds the zero blocks and the sparse kernels match TFLite Micro exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.helpers import shared_model
from toolkit.deploy import deploy
from toolkit.tflite_edit import replace_constants
from toolkit.tflite_import import load_tflite
from toolkit.validate import validate


def prune_int8_model(name: str, pattern: str, seed: int = 0) -> bytes:
    """Zero weights of every CONV_2D and FULLY_CONNECTED of a shared int8 model
    in place: 80% smallest (unstructured), half of the 1x4 blocks, or 30% of
    the filters."""
    path = shared_model(f"{name}.tflite")
    graph = load_tflite(path)
    rng = np.random.default_rng(seed)
    replacements = {}
    for op in graph.ops:
        if op.kind not in ("CONV_2D", "FULLY_CONNECTED"):
            continue
        weights = graph.tensors[op.inputs[1]]
        assert weights.data is not None
        rows = weights.data.reshape(weights.shape[0], -1).copy()
        if pattern == "unstructured":
            rows[np.abs(rows) < np.quantile(np.abs(rows), 0.8)] = 0
        elif pattern == "block":
            usable = rows.shape[1] // 4 * 4
            blocks = rows[:, :usable].reshape(rows.shape[0], -1, 4)
            blocks *= (rng.random(blocks.shape[:2]) < 0.5)[..., None].astype(np.int8)
            rows[:, :usable] = blocks.reshape(rows.shape[0], usable)
        else:
            rows[rng.random(rows.shape[0]) < 0.3] = 0
        replacements[weights.index] = rows.reshape(weights.shape)
    return replace_constants(path.read_bytes(), replacements)


@pytest.mark.parametrize("pattern", ["unstructured", "block", "filter"])
@pytest.mark.parametrize("name", ["resnet8_cifar10_int8", "dscnn_kws_int8"])
def test_pruned_int8_model_matches_tflm(name: str, pattern: str, tmp_path: Path) -> None:
    result = deploy(prune_int8_model(name, pattern), tmp_path / "out")
    formats = {layer["format"] for layer in result.report["layers"]}
    assert any(f.startswith("block-sparse") for f in formats), formats
    assert result.report["packed_weight_bytes"] < result.report["int8_weight_bytes"]
    checked = validate(result.out_dir, count=20, seed=5)
    assert checked.outputs[0].max_abs_diff == 0, checked.summary()


def test_forced_sparse_on_dense_model(tmp_path: Path) -> None:
    """The sparse format forced on a model that was not pruned: layers with
    any zero weight use it, and the outputs still match."""
    result = deploy(
        shared_model("autoencoder_toyadmos_int8.tflite"), tmp_path / "out", weight_format="sparse"
    )
    assert validate(result.out_dir, count=5).ok
