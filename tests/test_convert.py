"""Tests for toolkit.convert: calibration data and int8 TFLite conversion."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.helpers import shared_model
from toolkit.convert import load_calibration, random_calibration, to_int8_tflite
from toolkit.errors import ToolkitError
from toolkit.keras_io import import_keras, import_tensorflow

SEED = 0
SHARED_H5_MODELS = ["resnet8_cifar10.h5", "autoencoder_toyadmos.h5", "mobilenet_vww96.h5"]

# TFLite builtin ops allowed in the converted reference models.
SUPPORTED_OPS = {
    "CONV_2D",
    "DEPTHWISE_CONV_2D",
    "FULLY_CONNECTED",
    "AVERAGE_POOL_2D",
    "MAX_POOL_2D",
    "ADD",
    "RESHAPE",
    "SOFTMAX",
    "QUANTIZE",
    "DEQUANTIZE",
    "MEAN",
}


def _interpreter(flatbuffer: bytes) -> Any:
    tf = import_tensorflow()
    with warnings.catch_warnings():
        # tf.lite.Interpreter warns that it is deprecated in favour of ai_edge_litert.
        warnings.simplefilter("ignore")
        # The reference kernels apply no delegate, so every op keeps its own entry
        # (XNNPACK would replace ops with DELEGATE nodes).
        interpreter = tf.lite.Interpreter(
            model_content=flatbuffer,
            experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_REF,
        )
    interpreter.allocate_tensors()
    return interpreter


def _op_names(flatbuffer: bytes) -> set[str]:
    # NOTE: _get_ops_details is private API of tf.lite.Interpreter (TF 2.21).
    return {op["op_name"] for op in _interpreter(flatbuffer)._get_ops_details()}


def _run_int8(flatbuffer: bytes, samples: np.ndarray) -> np.ndarray:
    """Run an int8-io TFLite model on float samples, one at a time, and dequantize outputs."""
    interpreter = _interpreter(flatbuffer)
    input_detail = interpreter.get_input_details()[0]
    output_detail = interpreter.get_output_details()[0]
    input_scale, input_zero_point = input_detail["quantization"]
    output_scale, output_zero_point = output_detail["quantization"]
    outputs = []
    for sample in samples:
        quantized = np.round(sample / input_scale + input_zero_point)
        interpreter.set_tensor(
            input_detail["index"], np.clip(quantized, -128, 127).astype(np.int8)[np.newaxis]
        )
        interpreter.invoke()
        raw = interpreter.get_tensor(output_detail["index"])[0].astype(np.float32)
        outputs.append((raw - output_zero_point) * output_scale)
    return np.stack(outputs)


def _tiny_model(input_shape: tuple[int | None, ...] = (6, 6, 2)) -> Any:
    keras = import_keras()
    keras.utils.set_random_seed(SEED)
    inputs = keras.Input(input_shape, name="pixels")
    x = keras.layers.Conv2D(3, 3, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(2, activation="softmax")(x)
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="session")
def tiny_model() -> Any:
    return _tiny_model()


@pytest.fixture(scope="session")
def tiny_calibration() -> np.ndarray:
    return random_calibration((6, 6, 2), count=8, seed=SEED)


@pytest.fixture(scope="session")
def tiny_int8(tiny_model: Any, tiny_calibration: np.ndarray) -> bytes:
    return to_int8_tflite(tiny_model, tiny_calibration, io_type="int8")


@pytest.fixture(scope="session", params=SHARED_H5_MODELS)
def shared_tflite(request: pytest.FixtureRequest, shared_keras_model: Any) -> bytes:
    model = shared_keras_model(request.param)
    calibration = random_calibration(model.input_shape[1:], count=10, seed=SEED)
    return to_int8_tflite(model, calibration)


# load_calibration


def test_calibration_batch_kept() -> None:
    data = np.zeros((5, 4, 3), dtype=np.float64)
    samples = load_calibration(data, (4, 3))
    assert samples.shape == (5, 4, 3)
    assert samples.dtype == np.float32


def test_calibration_single_sample_batched() -> None:
    samples = load_calibration(np.ones((4, 3)), (4, 3))
    assert samples.shape == (1, 4, 3)


def test_calibration_integers_become_float32() -> None:
    samples = load_calibration(np.arange(12, dtype=np.uint8).reshape(2, 6), (6,))
    assert samples.dtype == np.float32
    assert samples[1, 5] == 11.0


def test_calibration_unknown_dim_matches() -> None:
    samples = load_calibration(np.zeros((2, 7, 3)), (None, 3))
    assert samples.shape == (2, 7, 3)


def test_calibration_wrong_shape_message() -> None:
    with pytest.raises(ToolkitError) as raised:
        load_calibration(np.zeros((5, 3)), (4, 4), name="samples")
    message = str(raised.value)
    assert message.startswith("samples has shape (5, 3)")
    assert "(N, 4, 4)" in message
    assert "(4, 4)" in message


def test_calibration_npy_file(tmp_path: Path) -> None:
    path = tmp_path / "calibration.npy"
    np.save(path, np.ones((3, 2), dtype=np.float32))
    assert load_calibration(path, (2,)).shape == (3, 2)


def test_calibration_npy_wrong_shape_names_file(tmp_path: Path) -> None:
    path = tmp_path / "calibration.npy"
    np.save(path, np.ones((3, 5), dtype=np.float32))
    with pytest.raises(ToolkitError) as raised:
        load_calibration(str(path), (2,))
    assert f"file {path} has shape (3, 5)" in str(raised.value)


def test_calibration_npz_first_array(tmp_path: Path) -> None:
    path = tmp_path / "calibration.npz"
    np.savez(path, first=np.ones((2, 3)), second=np.zeros((4, 3)))
    assert load_calibration(path, (3,)).shape == (2, 3)


def test_calibration_npz_named_input(tmp_path: Path) -> None:
    path = tmp_path / "calibration.npz"
    np.savez(path, first=np.ones((2, 3)), pixels=np.zeros((4, 3)))
    assert load_calibration(path, (3,), input_name="pixels").shape == (4, 3)


def test_calibration_npz_empty(tmp_path: Path) -> None:
    path = tmp_path / "empty.npz"
    np.savez(path)
    with pytest.raises(ToolkitError, match="contains no arrays"):
        load_calibration(path, (3,))


def test_calibration_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.npy"
    with pytest.raises(ToolkitError, match="Calibration data file not found"):
        load_calibration(path, (3,))


def test_calibration_unknown_extension(tmp_path: Path) -> None:
    path = tmp_path / "calibration.csv"
    path.write_text("1,2,3\n")
    with pytest.raises(ToolkitError, match=r"extension '\.csv'"):
        load_calibration(path, (3,))


def test_calibration_corrupt_npy(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.npy"
    path.write_bytes(b"not numpy data")
    with pytest.raises(ToolkitError, match="Cannot read calibration data file"):
        load_calibration(path, (3,))


def test_calibration_pickled_objects_rejected(tmp_path: Path) -> None:
    path = tmp_path / "objects.npy"
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ToolkitError, match="Cannot read calibration data file"):
        load_calibration(path, (1,))


def test_calibration_strings_rejected() -> None:
    with pytest.raises(ToolkitError, match="dtype <U1"):
        load_calibration(np.array([["a", "b"]]), (2,))


def test_calibration_nan_rejected() -> None:
    data = np.zeros((2, 3), dtype=np.float32)
    data[1, 2] = np.nan
    with pytest.raises(ToolkitError, match="1 NaN or infinite"):
        load_calibration(data, (3,))


def test_calibration_inf_rejected() -> None:
    data = np.full((2, 3), np.inf)
    with pytest.raises(ToolkitError, match="6 NaN or infinite"):
        load_calibration(data, (3,))


def test_calibration_float64_overflow_rejected() -> None:
    with pytest.raises(ToolkitError, match="NaN or infinite"):
        load_calibration(np.full((1, 3), 1e300), (3,))


def test_calibration_empty_batch_rejected() -> None:
    with pytest.raises(ToolkitError, match="contains no samples"):
        load_calibration(np.zeros((0, 3)), (3,))


# random_calibration


def test_random_calibration_shape() -> None:
    samples = random_calibration((4, 2), count=7)
    assert samples.shape == (7, 4, 2)
    assert samples.dtype == np.float32


def test_random_calibration_seeded() -> None:
    np.testing.assert_array_equal(
        random_calibration((3,), seed=5), random_calibration((3,), seed=5)
    )


def test_random_calibration_seeds_differ() -> None:
    assert not np.array_equal(random_calibration((3,), seed=1), random_calibration((3,), seed=2))


def test_random_calibration_unknown_dim() -> None:
    with pytest.raises(ToolkitError, match=r"input shape \(\?, 3\)"):
        random_calibration((None, 3))


def test_random_calibration_zero_count() -> None:
    with pytest.raises(ToolkitError, match="count is 0"):
        random_calibration((3,), count=0)


# to_int8_tflite on a tiny model


def test_convert_deterministic(
    tiny_model: Any, tiny_calibration: np.ndarray, tiny_int8: bytes
) -> None:
    assert to_int8_tflite(tiny_model, tiny_calibration, io_type="int8") == tiny_int8


def test_convert_int8_interface(tiny_int8: bytes) -> None:
    interpreter = _interpreter(tiny_int8)
    input_detail = interpreter.get_input_details()[0]
    output_detail = interpreter.get_output_details()[0]
    assert input_detail["dtype"] == np.int8
    assert output_detail["dtype"] == np.int8
    assert list(input_detail["shape_signature"]) == [1, 6, 6, 2]


def test_convert_int8_has_no_float_edges(tiny_int8: bytes) -> None:
    ops = _op_names(tiny_int8)
    assert "QUANTIZE" not in ops
    assert "DEQUANTIZE" not in ops


def test_convert_float32_interface(tiny_model: Any, tiny_calibration: np.ndarray) -> None:
    flatbuffer = to_int8_tflite(tiny_model, tiny_calibration, io_type="float32")
    interpreter = _interpreter(flatbuffer)
    ops = _op_names(flatbuffer)
    assert interpreter.get_input_details()[0]["dtype"] == np.float32
    assert interpreter.get_output_details()[0]["dtype"] == np.float32
    assert "QUANTIZE" in ops
    assert "DEQUANTIZE" in ops


def test_convert_unknown_dim_from_calibration() -> None:
    model = _tiny_model((None, 5, 2))
    calibration = np.random.default_rng(SEED).random((4, 7, 5, 2), dtype=np.float32)
    interpreter = _interpreter(to_int8_tflite(model, calibration))
    assert list(interpreter.get_input_details()[0]["shape_signature"]) == [1, 7, 5, 2]


def test_convert_bad_io_type(tiny_model: Any, tiny_calibration: np.ndarray) -> None:
    with pytest.raises(ToolkitError, match="io_type is 'uint8'"):
        to_int8_tflite(tiny_model, tiny_calibration, io_type="uint8")  # type: ignore[arg-type]


def test_convert_calibration_shape_mismatch(tiny_model: Any) -> None:
    with pytest.raises(ToolkitError, match=r"shape \(3, 5, 5, 2\), expected \(N, 6, 6, 2\)"):
        to_int8_tflite(tiny_model, np.zeros((3, 5, 5, 2), dtype=np.float32))


def test_convert_two_inputs_rejected() -> None:
    keras = import_keras()
    first = keras.Input((3,), name="first")
    second = keras.Input((3,), name="second")
    model = keras.Model([first, second], keras.layers.Add()([first, second]))
    with pytest.raises(ToolkitError, match="has 2 inputs"):
        to_int8_tflite(model, np.zeros((1, 3), dtype=np.float32))


def test_convert_saved_model(tmp_path: Path, tiny_model: Any, tiny_calibration: Any) -> None:
    from toolkit.keras_io import load_model

    tiny_model.export(tmp_path / "saved", verbose=False)
    flatbuffer = to_int8_tflite(load_model(tmp_path / "saved"), tiny_calibration)
    assert "CONV_2D" in _op_names(flatbuffer)


# to_int8_tflite on the shared models


def test_shared_ops_supported(shared_tflite: bytes) -> None:
    assert _op_names(shared_tflite) <= SUPPORTED_OPS


def test_shared_batch_one(shared_tflite: bytes) -> None:
    shape_signature = _interpreter(shared_tflite).get_input_details()[0]["shape_signature"]
    assert shape_signature[0] == 1


def test_autoencoder_int8_close_to_float(shared_keras_model: Any) -> None:
    model = shared_keras_model("autoencoder_toyadmos.h5")
    path = shared_model("autoencoder_toyadmos_input.bin")
    windows = np.fromfile(path, dtype="<f4").reshape(40, 640)
    flatbuffer = to_int8_tflite(model, windows)

    expected = model.predict(windows, verbose=0)
    quantized = _run_int8(flatbuffer, windows)
    relative_rms = np.sqrt(np.mean((quantized - expected) ** 2) / np.mean(expected**2))
    assert relative_rms < 0.05
