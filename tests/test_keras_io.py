"""Tests for toolkit.keras_io.load_model on shared models and small synthetic files."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from tests.helpers import shared_model
from toolkit.errors import ToolkitError
from toolkit.keras_io import import_keras, import_tensorflow, load_model

SEED = 0

# Weights of the synthetic Keras 2 model, in the order Keras 2 saves them.
_WEIGHT_SHAPES = {
    "conv": [("kernel", (3, 3, 3, 4)), ("bias", (4,))],
    "depthwise": [("depthwise_kernel", (3, 3, 4, 1)), ("bias", (4,))],
    "norm": [
        ("gamma", (4,)),
        ("beta", (4,)),
        ("moving_mean", (4,)),
        ("moving_variance", (4,)),
    ],
    "dense": [("kernel", (4, 2)), ("bias", (2,))],
}


def _random_input(shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(SEED).random(shape, dtype=np.float32)


def _keras2_layer(
    class_name: str, name: str, config: dict[str, Any], inbound: str | None
) -> dict[str, Any]:
    """Return one layer entry as Keras 2.4 writes it into a functional model config."""
    inbound_nodes = [] if inbound is None else [[[inbound, 0, 0, {}]]]
    return {
        "class_name": class_name,
        "config": {"name": name, "trainable": True, "dtype": "float32", **config},
        "name": name,
        "inbound_nodes": inbound_nodes,
    }


def _keras2_functional_config() -> dict[str, Any]:
    """Return a Keras 2.4 style config with the keys that Keras 3 rejects or reads wrongly."""
    layers = [
        _keras2_layer(
            "InputLayer",
            "image",
            {"batch_input_shape": [None, 8, 8, 3], "sparse": False, "ragged": False},
            None,
        ),
        _keras2_layer(
            "Conv2D",
            "conv",
            {"filters": 4, "kernel_size": [3, 3], "padding": "same", "groups": 1},
            "image",
        ),
        _keras2_layer(
            "DepthwiseConv2D",
            "depthwise",
            {"kernel_size": [3, 3], "padding": "same", "groups": 1, "depth_multiplier": 1},
            "conv",
        ),
        _keras2_layer("BatchNormalization", "norm", {"axis": [3], "epsilon": 0.001}, "depthwise"),
        _keras2_layer("ReLU", "relu", {"max_value": None}, "norm"),
        _keras2_layer("GlobalAveragePooling2D", "pool", {"data_format": "channels_last"}, "relu"),
        _keras2_layer("Dense", "dense", {"units": 2, "activation": "softmax"}, "pool"),
    ]
    # Keras 2 writes a mixed precision policy as a dict that Keras 3 cannot read.
    layers[4]["config"]["dtype"] = {"class_name": "Policy", "config": {"name": "float32"}}
    return {
        "class_name": "Functional",
        "config": {
            "name": "tiny",
            "layers": layers,
            "input_layers": [["image", 0, 0]],
            "output_layers": [["dense", 0, 0]],
        },
    }


def _write_keras2_h5(
    path: Path, model_config: dict[str, Any], weights: dict[str, list[np.ndarray]]
) -> None:
    """Write an HDF5 file in the layout of Keras 2.4 `model.save("x.h5")`."""
    layer_names = [layer["config"]["name"] for layer in model_config["config"]["layers"]]
    with h5py.File(path, "w") as h5_file:
        h5_file.attrs["keras_version"] = "2.4.0"
        h5_file.attrs["backend"] = "tensorflow"
        h5_file.attrs["model_config"] = json.dumps(model_config).encode("utf-8")
        group = h5_file.create_group("model_weights")
        group.attrs["layer_names"] = [name.encode("utf-8") for name in layer_names]
        for layer_name in layer_names:
            layer_group = group.create_group(layer_name)
            weight_names = [
                f"{layer_name}/{weight}:0" for weight, _ in _WEIGHT_SHAPES.get(layer_name, [])
            ]
            layer_group.attrs["weight_names"] = [name.encode("utf-8") for name in weight_names]
            for weight_name, value in zip(weight_names, weights.get(layer_name, []), strict=True):
                layer_group.create_dataset(weight_name, data=value)


def _random_weights() -> dict[str, list[np.ndarray]]:
    rng = np.random.default_rng(SEED)
    weights = {
        layer: [rng.normal(size=shape).astype(np.float32) for _, shape in entries]
        for layer, entries in _WEIGHT_SHAPES.items()
    }
    # A variance must be positive.
    weights["norm"][3] = np.abs(weights["norm"][3]) + 0.5
    return weights


def _reference_model(weights: dict[str, list[np.ndarray]]) -> Any:
    """Build the synthetic model in Keras 3 code and set the given weights."""
    keras = import_keras()
    inputs = keras.Input((8, 8, 3), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="depthwise")(x)
    x = keras.layers.BatchNormalization(epsilon=0.001, name="norm")(x)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(2, activation="softmax", name="dense")(x)
    model = keras.Model(inputs, outputs)
    for name, values in weights.items():
        model.get_layer(name).set_weights(values)
    return model


@pytest.fixture(scope="session")
def keras2_h5(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list]]:
    path = tmp_path_factory.mktemp("keras2") / "tiny.h5"
    weights = _random_weights()
    _write_keras2_h5(path, _keras2_functional_config(), weights)
    return path, weights


@pytest.fixture(scope="session")
def tiny_model() -> Any:
    keras = import_keras()
    keras.utils.set_random_seed(SEED)
    inputs = keras.Input((6, 6, 2), name="pixels")
    x = keras.layers.Conv2D(3, 3, activation="relu")(inputs)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(2)(x)
    return keras.Model(inputs, outputs)


# Shared reference models


def test_mobilenet_loads(shared_keras_model: Any) -> None:
    model = shared_keras_model("mobilenet_vww96.h5")
    assert model.input_shape == (None, 96, 96, 3)
    assert model.output_shape == (None, 2)


def test_mobilenet_predicts_probabilities(shared_keras_model: Any) -> None:
    model = shared_keras_model("mobilenet_vww96.h5")
    output = model.predict(_random_input((2, 96, 96, 3)), verbose=0)
    np.testing.assert_allclose(output.sum(axis=1), 1.0, rtol=1e-5)


def test_mobilenet_weights_match_file(shared_keras_model: Any) -> None:
    model = shared_keras_model("mobilenet_vww96.h5")
    with h5py.File(shared_model("mobilenet_vww96.h5"), "r") as h5_file:
        group = h5_file["model_weights"]
        for layer in model.layers:
            layer_group = group[layer.name]
            names = [name.decode("utf-8") for name in layer_group.attrs["weight_names"]]
            saved = [np.asarray(layer_group[name]) for name in names]
            loaded = layer.get_weights()
            assert len(loaded) == len(saved), layer.name
            for loaded_value, saved_value in zip(loaded, saved, strict=True):
                np.testing.assert_array_equal(loaded_value, saved_value, err_msg=layer.name)


def test_mobilenet_logs_dropped_groups(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="toolkit.keras_io"):
        load_model(shared_model("mobilenet_vww96.h5"))
    messages = [record.getMessage() for record in caplog.records]
    assert any("layer depthwise_conv2d:" in message and "groups" in message for message in messages)


@pytest.mark.parametrize("name", ["resnet8_cifar10.h5", "autoencoder_toyadmos.h5"])
def test_h5_matches_keras_loader(shared_keras_model: Any, name: str) -> None:
    keras = import_keras()
    model = shared_keras_model(name)
    reference = keras.models.load_model(shared_model(name), compile=False)
    inputs = _random_input((4, *model.input_shape[1:]))
    np.testing.assert_allclose(
        model.predict(inputs, verbose=0), reference.predict(inputs, verbose=0), atol=1e-6
    )


# Synthetic Keras 2 files


def test_keras2_h5_matches_reference(keras2_h5: tuple[Path, dict]) -> None:
    path, weights = keras2_h5
    model = load_model(path)
    inputs = _random_input((3, 8, 8, 3))
    expected = _reference_model(weights).predict(inputs, verbose=0)
    np.testing.assert_allclose(model.predict(inputs, verbose=0), expected, atol=1e-6)


def test_keras2_h5_logs_each_dropped_key(
    keras2_h5: tuple[Path, dict], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="toolkit.keras_io"):
        load_model(keras2_h5[0])
    dropped = [
        record.getMessage()
        for record in caplog.records
        if "dropped Keras 2 config key" in record.getMessage()
    ]
    assert any(message.startswith("layer depthwise:") for message in dropped)
    assert all("groups" in message for message in dropped)


def test_keras2_h5_converts_dtype_policy(keras2_h5: tuple[Path, dict]) -> None:
    model = load_model(keras2_h5[0])
    assert model.get_layer("relu").compute_dtype == "float32"


def test_keras2_sequential_batch_input_shape(tmp_path: Path) -> None:
    dense_config = {"units": 3, "activation": "relu", "batch_input_shape": [None, 4]}
    config = {
        "class_name": "Sequential",
        "config": {
            "name": "sequential",
            "layers": [
                {"class_name": "Dense", "config": {"name": "hidden", **dense_config}},
                {"class_name": "Dense", "config": {"name": "head", "units": 2}},
            ],
        },
    }
    rng = np.random.default_rng(SEED)
    weights = [rng.normal(size=shape).astype(np.float32) for shape in [(4, 3), (3,), (3, 2), (2,)]]
    path = tmp_path / "sequential.h5"
    with h5py.File(path, "w") as h5_file:
        h5_file.attrs["model_config"] = json.dumps(config).encode("utf-8")
        group = h5_file.create_group("model_weights")
        group.attrs["layer_names"] = [b"hidden", b"head"]
        for layer_name, values in [("hidden", weights[:2]), ("head", weights[2:])]:
            names = [f"{layer_name}/kernel:0", f"{layer_name}/bias:0"]
            group.create_group(layer_name).attrs["weight_names"] = [n.encode() for n in names]
            for weight_name, value in zip(names, values, strict=True):
                group[layer_name].create_dataset(weight_name, data=value)

    model = load_model(path)
    inputs = _random_input((5, 4))
    expected = np.maximum(inputs @ weights[0] + weights[1], 0) @ weights[2] + weights[3]
    assert model.input_shape == (None, 4)
    np.testing.assert_allclose(model.predict(inputs, verbose=0), expected, rtol=1e-5, atol=1e-5)


def test_keras2_tf_op_layer_rejected(tmp_path: Path) -> None:
    config = _keras2_functional_config()
    config["config"]["layers"][4]["class_name"] = "TFOpLambda"
    path = tmp_path / "tf_op.h5"
    _write_keras2_h5(path, config, _random_weights())
    with pytest.raises(ToolkitError, match=r"Layer 'relu' .* class 'TFOpLambda'"):
        load_model(path)


def test_keras2_lambda_rejected(tmp_path: Path) -> None:
    config = _keras2_functional_config()
    config["config"]["layers"][4]["class_name"] = "Lambda"
    path = tmp_path / "lambda.h5"
    _write_keras2_h5(path, config, _random_weights())
    with pytest.raises(ToolkitError, match=r"Layer 'relu' .* Lambda"):
        load_model(path)


def test_h5_weights_only_rejected(tmp_path: Path, tiny_model: Any) -> None:
    path = tmp_path / "tiny.weights.h5"
    tiny_model.save_weights(path)
    with pytest.raises(ToolkitError, match="contains no model config"):
        load_model(path)


def test_h5_corrupt_rejected(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.h5"
    path.write_bytes(b"this is not an HDF5 file")
    with pytest.raises(ToolkitError) as raised:
        load_model(path)
    assert str(path) in str(raised.value)
    assert ".keras file" in str(raised.value)


def test_h5_weight_count_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "truncated.h5"
    _write_keras2_h5(path, _keras2_functional_config(), _random_weights())
    with h5py.File(path, "a") as h5_file:
        del h5_file["model_weights/dense/dense/bias:0"]
        h5_file["model_weights/dense"].attrs["weight_names"] = [b"dense/kernel:0"]
    with pytest.raises(ToolkitError, match="Cannot load the weights"):
        load_model(path)


# .keras files and SavedModel directories


def test_keras_file_roundtrip(tmp_path: Path, tiny_model: Any) -> None:
    path = tmp_path / "tiny.keras"
    tiny_model.save(path)
    inputs = _random_input((2, 6, 6, 2))
    model = load_model(path)
    np.testing.assert_allclose(
        model.predict(inputs, verbose=0), tiny_model.predict(inputs, verbose=0), atol=1e-6
    )


def test_keras_file_corrupt_rejected(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.keras"
    path.write_bytes(b"not a zip archive")
    with pytest.raises(ToolkitError, match=r"Cannot load the \.keras file .*corrupt\.keras"):
        load_model(path)


def test_saved_model_roundtrip(tmp_path: Path, tiny_model: Any) -> None:
    path = tmp_path / "saved"
    tiny_model.export(path, verbose=False)
    inputs = _random_input((2, 6, 6, 2))
    model = load_model(path)
    assert model.input_shape == (None, 6, 6, 2)
    np.testing.assert_allclose(
        model.predict(inputs, verbose=0), tiny_model.predict(inputs, verbose=0), atol=1e-6
    )


def test_saved_model_without_signature(tmp_path: Path) -> None:
    tf = import_tensorflow()
    path = tmp_path / "no_signature"
    tf.saved_model.save(tf.Module(), path)
    with pytest.raises(ToolkitError, match="serving_default"):
        load_model(path)


def test_plain_directory_rejected(tmp_path: Path) -> None:
    with pytest.raises(ToolkitError, match=r"not a TensorFlow SavedModel"):
        load_model(tmp_path)


def test_missing_file_rejected(tmp_path: Path) -> None:
    path = tmp_path / "absent.h5"
    with pytest.raises(ToolkitError) as raised:
        load_model(path)
    assert f"Model not found: {path}" in str(raised.value)
    assert "SavedModel directory" in str(raised.value)


def test_unknown_extension_rejected(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"")
    with pytest.raises(ToolkitError, match=r"Unknown model format '\.onnx'"):
        load_model(path)


# The shared_model helper in conftest.py


def test_shared_model_skips_without_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no_such_model.h5"):
        shared_model("no_such_model.h5")


def test_shared_model_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no_such_model.h5"):
        shared_model("no_such_model.h5")
