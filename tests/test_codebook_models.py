"""Whole models with codebook-packed weights against TFLite Micro."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import read_toyadmos_windows, shared_model
from toolkit.cli import main
from toolkit.deploy import deploy
from toolkit.errors import ToolkitError
from toolkit.pack.share import kmeans_1d
from toolkit.tflite_import import load_tflite
from toolkit.validate import validate


@pytest.mark.parametrize("clusters", [16, 4])
@pytest.mark.parametrize("name", ["dscnn_kws_int8", "resnet8_cifar10_int8"])
def test_shared_int8_weights_match_tflm(name: str, clusters: int, tmp_path: Path) -> None:
    result = deploy(shared_model(f"{name}.tflite"), tmp_path / "out", cluster=clusters)
    formats = {layer["format"] for layer in result.report["layers"]}
    assert f"codebook {int(np.log2(clusters))}-bit" in formats
    checked = validate(result.out_dir, count=20, seed=4)
    assert checked.outputs[0].max_abs_diff == 0, checked.summary()


def test_shared_autoencoder_matches_on_real_windows(tmp_path: Path) -> None:
    result = deploy(shared_model("autoencoder_toyadmos_int8.tflite"), tmp_path / "out", cluster=4)
    windows = read_toyadmos_windows(shared_model("autoencoder_toyadmos_input.bin"))
    checked = validate(result.out_dir, inputs=windows)
    assert checked.outputs[0].max_abs_diff == 0, checked.summary()
    assert result.report["packed_weight_bytes"] < 0.3 * result.report["int8_weight_bytes"]


def test_each_channel_has_at_most_k_values(tmp_path: Path) -> None:
    deploy(shared_model("dscnn_kws_int8.tflite"), tmp_path / "out", cluster=4, build=False)
    graph = load_tflite(tmp_path / "out" / "model.tflite")
    for op in graph.ops:
        if op.kind in ("CONV_2D", "FULLY_CONNECTED"):
            weights = graph.tensors[op.inputs[1]].data
            assert weights is not None
            for row in weights.reshape(weights.shape[0], -1):
                assert np.unique(row).size <= 4


def test_kmeans_keeps_zeros_within_k() -> None:
    values = np.array([0, 0, -100, -90, 3, 4, 50, 60, 0, 127], dtype=np.int8)
    shared = kmeans_1d(values, 4)
    assert np.unique(shared).size <= 4
    assert (shared[values == 0] == 0).all()


def test_per_layer_config(tmp_path: Path) -> None:
    model = shared_model("dscnn_kws_int8.tflite")
    graph = load_tflite(model)
    first = graph.ops[0].name
    config = tmp_path / "compression.json"
    config.write_text(json.dumps({"cluster": 16, "layers": {first: {"cluster": 2}}}))
    result = deploy(model, tmp_path / "out", compression_config=config)
    formats = [layer["format"] for layer in result.report["layers"]]
    assert formats[0] == "codebook 1-bit"
    assert "codebook 4-bit" in formats
    assert validate(result.out_dir, count=5).ok


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"cluster": 0}', "1..256"),
        ('{"clusters": 4}', "unknown settings"),
        ('{"layers": {"nope": {"cluster": 4}}}', "nope"),
        ("{not json", "invalid JSON"),
    ],
)
def test_bad_config_rejected(text: str, message: str, tmp_path: Path) -> None:
    config = tmp_path / "compression.json"
    config.write_text(text)
    with pytest.raises(ToolkitError, match=message):
        deploy(shared_model("dscnn_kws_int8.tflite"), tmp_path / "out", compression_config=config)
    assert not (tmp_path / "out").exists()


def test_cli_cluster_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "kws"
    status = main(
        ["deploy", str(shared_model("dscnn_kws_int8.tflite")), "--out", str(out), "--cluster", "4"]
    )
    printed = capsys.readouterr().out
    assert status == 0
    for heading in ("bits/weight", "table", "indices", "vs int8", "at int8"):
        assert heading in printed
    assert "codebook 2-bit" in printed


def test_weight_format_int8_disables_packing(tmp_path: Path) -> None:
    result = deploy(
        shared_model("dscnn_kws_int8.tflite"),
        tmp_path / "out",
        cluster=4,
        weight_format="int8",
        build=False,
    )
    assert {layer["format"] for layer in result.report["layers"]} <= {"int8", "-"}


@pytest.mark.slow
@pytest.mark.parametrize("clusters", [16, 4])
@pytest.mark.parametrize("name", ["resnet8_cifar10", "autoencoder_toyadmos"])
def test_clustered_keras_model_matches_tflm(name: str, clusters: int, tmp_path: Path) -> None:
    """The float reference models clustered before conversion deploy as
    codebooks and match TFLM on the inputs of the dense tests."""
    windows = read_toyadmos_windows(shared_model("autoencoder_toyadmos_input.bin"))
    autoencoder = name == "autoencoder_toyadmos"
    result = deploy(
        shared_model(f"{name}.h5"),
        tmp_path / "out",
        calibration=windows if autoencoder else None,
        cluster=clusters,
    )
    bits = int(np.log2(clusters))
    formats = [layer["format"] for layer in result.report["layers"]]
    assert f"codebook {bits}-bit" in formats
    graph = load_tflite(result.out_dir / "model.tflite")
    for op in graph.ops:
        if op.kind in ("CONV_2D", "FULLY_CONNECTED"):
            weights = graph.tensors[op.inputs[1]].data
            assert weights is not None
            rows = weights.reshape(weights.shape[0], -1)
            assert max(np.unique(row).size for row in rows) <= clusters, op.name

    checked = (
        validate(result.out_dir, inputs=windows)
        if autoencoder
        else validate(result.out_dir, count=20, seed=2)
    )
    assert checked.outputs[0].max_abs_diff == 0, checked.summary()
