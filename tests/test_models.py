"""Whole models: generated C against TFLite Micro, exactly (max abs diff 0)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.helpers import read_toyadmos_windows, shared_model
from toolkit.deploy import deploy
from toolkit.validate import validate

INT8_MODELS = ["resnet8_cifar10_int8", "dscnn_kws_int8", "autoencoder_toyadmos_int8"]


@pytest.fixture(scope="session")
def int8_deployments(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each reference int8 model deployed once per session."""
    root = tmp_path_factory.mktemp("int8")
    out = {}
    for name in INT8_MODELS:
        out[name] = deploy(shared_model(f"{name}.tflite"), root / name).out_dir
    return out


@pytest.mark.parametrize("name", INT8_MODELS)
def test_int8_model_matches_tflm(int8_deployments: dict[str, Path], name: str) -> None:
    result = validate(int8_deployments[name], count=20, seed=1)
    assert result.samples == 20
    for output in result.outputs:
        assert output.max_abs_diff == 0, result.summary()


def test_autoencoder_real_windows_match_tflm(int8_deployments: dict[str, Path]) -> None:
    windows = read_toyadmos_windows(shared_model("autoencoder_toyadmos_input.bin"))
    result = validate(int8_deployments["autoencoder_toyadmos_int8"], inputs=windows)
    assert result.samples == 40
    assert result.outputs[0].max_abs_diff == 0, result.summary()


def test_resnet8_arena_matches_tflm_head(int8_deployments: dict[str, Path]) -> None:
    import json

    report = json.loads((int8_deployments["resnet8_cifar10_int8"] / "report.json").read_text())
    assert report["tflm_arena"]["head"] == 49152
    assert report["arena_bytes"] <= report["tflm_arena"]["head"]
    assert report["arena_bytes"] >= report["peak_live_bytes"]


@pytest.fixture(scope="session")
def converted_deployments(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The float Keras reference models converted by the toolkit and deployed,
    once per session. The autoencoder is calibrated on its real windows; the
    image models, which come without data, on random inputs."""
    root = tmp_path_factory.mktemp("converted")
    windows = read_toyadmos_windows(shared_model("autoencoder_toyadmos_input.bin"))
    calibration = {"autoencoder_toyadmos": windows}
    out = {}
    for name in ["resnet8_cifar10", "autoencoder_toyadmos", "mobilenet_vww96"]:
        result = deploy(shared_model(f"{name}.h5"), root / name, calibration=calibration.get(name))
        out[name] = result.out_dir
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet8_cifar10", "mobilenet_vww96"])
def test_converted_model_matches_tflm(converted_deployments: dict[str, Path], name: str) -> None:
    result = validate(converted_deployments[name], count=20, seed=2)
    for output in result.outputs:
        assert output.max_abs_diff == 0, result.summary()


@pytest.mark.slow
def test_converted_autoencoder_matches_tflm(converted_deployments: dict[str, Path]) -> None:
    windows = read_toyadmos_windows(shared_model("autoencoder_toyadmos_input.bin"))
    result = validate(converted_deployments["autoencoder_toyadmos"], inputs=windows)
    assert result.samples == 40
    assert result.outputs[0].max_abs_diff == 0, result.summary()


def test_find_layer_reports_nothing_when_equal(int8_deployments: dict[str, Path]) -> None:
    result = validate(int8_deployments["dscnn_kws_int8"], count=2, find_layer=True)
    assert result.ok
    assert result.first_mismatch is None


def test_find_layer_names_corrupted_layer(
    int8_deployments: dict[str, Path], tmp_path: Path
) -> None:
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(int8_deployments["dscnn_kws_int8"], broken)
    source = (broken / "model.c").read_text()
    # Shift the output zero point of layer 4 (a CONV_2D) by one step.
    marker = "static const tk_conv_params model_l4_params = {"
    head, tail = source.split(marker)
    fields = tail.split(",")
    fields[1] = f" {int(fields[1]) + 1}"
    (broken / "model.c").write_text(head + marker + ",".join(fields))

    result = validate(broken, count=3, find_layer=True)
    assert not result.ok
    assert result.first_mismatch is not None
    assert result.first_mismatch.layer == 4
    assert result.first_mismatch.op == "CONV_2D"


def test_report_lists_every_layer(int8_deployments: dict[str, Path]) -> None:
    import json

    report = json.loads((int8_deployments["dscnn_kws_int8"] / "report.json").read_text())
    ops = [layer["op"] for layer in report["layers"]]
    assert ops.count("DEPTHWISE_CONV_2D") == 4
    assert report["weight_bytes"] < report["tflite_bytes"]
    assert all(np.isfinite(layer["macs"]) for layer in report["layers"])
