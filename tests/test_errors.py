"""Bad input: one clear error, and no output directory left behind."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.helpers import shared_model
from toolkit.cli import main
from toolkit.deploy import deploy
from toolkit.errors import ToolkitError
from toolkit.tflite_import import SUPPORTED_OPS


def _no_output(parent: Path, name: str) -> bool:
    """True when neither `name` nor a staging directory for it exists."""
    return not (parent / name).exists() and not list(parent.glob(f".{name}.*"))


@pytest.fixture(scope="session")
def tiny_keras_model():  # type: ignore[no-untyped-def]
    from toolkit.keras_io import import_keras

    keras = import_keras()
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [keras.Input(shape=(6,)), keras.layers.Dense(4, activation="relu"), keras.layers.Dense(3)]
    )


@pytest.fixture(scope="session")
def float_tflite(tiny_keras_model, tmp_path_factory: pytest.TempPathFactory) -> Path:  # type: ignore[no-untyped-def]
    """A float32 TFLite model (no quantization)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(tiny_keras_model)
    path = tmp_path_factory.mktemp("float") / "float.tflite"
    path.write_bytes(converter.convert())
    return path


@pytest.fixture(scope="session")
def tanh_tflite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An int8 model whose second op is TANH, which has no kernel."""
    from toolkit.convert import to_int8_tflite
    from toolkit.keras_io import import_keras

    keras = import_keras()
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input(shape=(6,)), keras.layers.Dense(4), keras.layers.Activation("tanh")]
    )
    data = np.random.default_rng(0).standard_normal((16, 6)).astype(np.float32)
    path = tmp_path_factory.mktemp("tanh") / "tanh.tflite"
    path.write_bytes(to_int8_tflite(model, data))
    return path


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ToolkitError, match="file not found"):
        deploy(tmp_path / "absent.tflite", tmp_path / "out")
    assert _no_output(tmp_path, "out")


def test_truncated_tflite(tmp_path: Path) -> None:
    data = shared_model("resnet8_cifar10_int8.tflite").read_bytes()
    truncated = tmp_path / "truncated.tflite"
    truncated.write_bytes(data[: len(data) // 3])
    with pytest.raises(ToolkitError, match="corrupt or truncated"):
        deploy(truncated, tmp_path / "out")
    assert _no_output(tmp_path, "out")


def test_corrupt_tflite(tmp_path: Path) -> None:
    data = bytearray(shared_model("dscnn_kws_int8.tflite").read_bytes())
    rng = np.random.default_rng(0)
    # Keep the identifier so the reader gets past the first check.
    data[8:200] = rng.integers(0, 256, size=192, dtype=np.uint8).tobytes()
    corrupt = tmp_path / "corrupt.tflite"
    corrupt.write_bytes(bytes(data))
    with pytest.raises(ToolkitError, match="corrupt|truncated"):
        deploy(corrupt, tmp_path / "out")
    assert _no_output(tmp_path, "out")


def test_not_a_tflite_file(tmp_path: Path) -> None:
    text = tmp_path / "notes.tflite"
    text.write_text("hello, this is not a model")
    with pytest.raises(ToolkitError, match="not a TFLite flatbuffer"):
        deploy(text, tmp_path / "out")
    assert _no_output(tmp_path, "out")


def test_float_model_rejected(float_tflite: Path, tmp_path: Path) -> None:
    with pytest.raises(ToolkitError, match="float32") as info:
        deploy(float_tflite, tmp_path / "out")
    assert "full-integer int8" in str(info.value)
    assert _no_output(tmp_path, "out")


def test_unsupported_op_named(tanh_tflite: Path, tmp_path: Path) -> None:
    with pytest.raises(ToolkitError, match="TANH") as info:
        deploy(tanh_tflite, tmp_path / "out")
    message = str(info.value)
    for op in SUPPORTED_OPS:
        assert op in message
    assert _no_output(tmp_path, "out")


def test_calibration_wrong_shape(tiny_keras_model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "calibration.npy"
    np.save(data, np.zeros((10, 7), dtype=np.float32))
    with pytest.raises(ToolkitError, match="calibration") as info:
        deploy(tiny_keras_model, tmp_path / "out", calibration=data)
    assert "7" in str(info.value)
    assert _no_output(tmp_path, "out")


def test_unknown_target(tmp_path: Path) -> None:
    model = shared_model("dscnn_kws_int8.tflite")
    with pytest.raises(ToolkitError, match="unknown target 'cortex-z9'"):
        deploy(model, tmp_path / "out", target="cortex-z9")
    assert _no_output(tmp_path, "out")


def test_foreign_directory_kept(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(ToolkitError, match="not empty"):
        deploy(shared_model("dscnn_kws_int8.tflite"), out)
    assert (out / "notes.txt").read_text() == "keep me"


def test_failed_redeploy_keeps_previous(tmp_path: Path) -> None:
    out = tmp_path / "out"
    deploy(shared_model("autoencoder_toyadmos_int8.tflite"), out, build=False)
    before = (out / "model.c").read_text()
    with pytest.raises(ToolkitError):
        deploy(tmp_path / "absent.tflite", out)
    assert (out / "model.c").read_text() == before


def test_cli_error_exit_status(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["deploy", str(tmp_path / "absent.tflite"), "--out", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert status == 1
    assert captured.err.startswith("error: ")
    assert "absent.tflite" in captured.err
    assert "Traceback" not in captured.err
    assert _no_output(tmp_path, "out")


def test_cli_validate_needs_deployment(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["validate", str(tmp_path)])
    assert status == 1
    assert "report.json not found" in capsys.readouterr().err


def test_validate_inputs_wrong_shape(tmp_path: Path) -> None:
    from toolkit.validate import validate

    out = deploy(shared_model("autoencoder_toyadmos_int8.tflite"), tmp_path / "out").out_dir
    with pytest.raises(ToolkitError, match=r"\[640\]"):
        validate(out, inputs=np.zeros((3, 600), dtype=np.float32))
