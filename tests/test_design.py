"""Design aids: the per-layer profile, the depthwise-separable rewrite, the
architecture builders and the `toolkit profile` command."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from toolkit.cli import main
from toolkit.convert import to_int8_tflite
from toolkit.deploy import deploy
from toolkit.design import (
    depthwise_separable,
    ds_cnn,
    mobilenet_v1,
    profile,
    resnet8,
    separable_weights,
)
from toolkit.errors import ToolkitError
from toolkit.keras_io import import_keras
from toolkit.validate import validate


@pytest.fixture(scope="session")
def keras() -> Any:
    return import_keras()


@pytest.fixture(scope="session")
def tiny_model(keras: Any) -> Any:
    """A 6x6x2 input, a 3x3 convolution whose output also feeds a residual Add, a 1x1
    convolution without bias followed by batch normalization, average pooling,
    flatten and a softmax Dense layer."""
    inputs = keras.Input((6, 6, 2))
    first = keras.layers.Conv2D(4, 3, padding="same", name="conv_a")(inputs)
    second = keras.layers.Conv2D(4, 1, use_bias=False, name="conv_b")(first)
    second = keras.layers.BatchNormalization(name="norm")(second)
    added = keras.layers.Add(name="add")([first, second])
    pooled = keras.layers.AveragePooling2D(2, name="pool")(added)
    flat = keras.layers.Flatten(name="flatten")(pooled)
    outputs = keras.layers.Dense(5, activation="softmax", name="dense")(flat)
    return keras.Model(inputs, outputs, name="tiny")


def test_profile_tiny_model_by_hand(tiny_model: Any) -> None:
    result = profile(tiny_model)

    names = [row.name for row in result.rows]
    assert names == ["conv_a", "conv_b", "norm", "add", "pool", "flatten", "dense"]
    rows = {row.name: row for row in result.rows}

    assert rows["conv_a"].output_shape == (6, 6, 4)
    assert rows["pool"].output_shape == (3, 3, 4)
    assert rows["flatten"].output_shape == (36,)

    # Parameters: 3*3*2*4 + 4, 4*4, 4 * 4 (gamma, beta, mean, variance), 36*5 + 5.
    assert [rows[n].parameters for n in names] == [76, 16, 16, 0, 0, 0, 185]
    assert result.total_parameters == 293

    # MACs: 36 positions * 72 kernel elements, 36 * 16, 36 * 5.
    assert [rows[n].macs for n in names] == [2592, 576, 0, 0, 0, 0, 180]
    assert result.total_macs == 3348

    # Weight bytes: kernels at 1 byte and biases at 4. The normalization folds into
    # conv_b, which then needs an int32 bias of 4 channels.
    assert [rows[n].weight_bytes for n in names] == [72 + 16, 16, 16, 0, 0, 0, 180 + 20]

    # Live int8 bytes: input 72, conv_a 144 (alive until the Add), conv_b 144 (the
    # normalization shares it), add 144, pool 36 (flatten shares it), dense 5.
    assert [rows[n].activation_bytes for n in names] == [
        72 + 144,
        144 + 144,
        144 + 144,
        144 + 144 + 144,
        144 + 36,
        36,
        36 + 5,
    ]
    assert result.peak_activation_bytes == 432


def test_profile_table_lists_totals(tiny_model: Any) -> None:
    table = profile(tiny_model).table()

    assert "conv_a" in table
    assert "293" in table
    assert "3,348" in table
    assert "432 bytes" in table


def _conv_model(keras: Any) -> Any:
    inputs = keras.Input((10, 10, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv_same")(inputs)
    x = keras.layers.Conv2D(8, 1, name="pointwise_only")(x)
    x = keras.layers.Conv2D(6, 3, strides=2, name="conv_strided")(x)
    return keras.Model(inputs, x)


def test_depthwise_separable_layer_types(keras: Any) -> None:
    model = _conv_model(keras)

    result = depthwise_separable(model)

    kinds = [(type(layer).__name__, layer.name) for layer in result.layers[1:]]
    assert kinds == [
        ("DepthwiseConv2D", "conv_same_depthwise"),
        ("Conv2D", "conv_same_pointwise"),
        ("Conv2D", "pointwise_only"),
        ("DepthwiseConv2D", "conv_strided_depthwise"),
        ("Conv2D", "conv_strided_pointwise"),
    ]
    assert result.get_layer("conv_strided_depthwise").strides == (2, 2)
    assert result.get_layer("conv_same_pointwise").get_config()["activation"] == "relu"
    assert result.output.shape == model.output.shape


def test_depthwise_separable_exact_for_separable_kernel() -> None:
    rng = np.random.default_rng(0)
    depthwise = rng.standard_normal((3, 3, 4, 1))
    pointwise = rng.standard_normal((1, 1, 4, 6))
    kernel = depthwise * pointwise  # broadcasts to [3, 3, 4, 6]

    fitted_depthwise, fitted_pointwise = separable_weights(kernel)

    np.testing.assert_allclose(fitted_depthwise * fitted_pointwise, kernel, atol=1e-10)


def test_separable_weights_least_squares() -> None:
    rng = np.random.default_rng(3)
    kernel = rng.standard_normal((3, 3, 4, 6))

    depthwise, pointwise = separable_weights(kernel)
    error = np.linalg.norm(depthwise * pointwise - kernel)

    # The optimum leaves, per input channel, every singular value but the largest.
    slices = kernel.transpose(2, 0, 1, 3).reshape(4, 9, 6)
    singular_values = np.linalg.svd(slices, compute_uv=False)
    assert error == pytest.approx(np.sqrt(np.sum(singular_values[:, 1:] ** 2)))
    for _ in range(5):
        nudged = depthwise + 0.01 * rng.standard_normal(depthwise.shape)
        assert np.linalg.norm(nudged * pointwise - kernel) > error


def test_depthwise_separable_beats_random_init(keras: Any) -> None:
    model = _conv_model(keras)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((8, 10, 10, 3)).astype(np.float32)
    expected = np.asarray(model(x))

    fitted = depthwise_separable(model)
    random_init = keras.models.clone_model(fitted)  # same layers, fresh initial weights
    fitted_error = float(np.mean((np.asarray(fitted(x)) - expected) ** 2))
    random_error = float(np.mean((np.asarray(random_init(x)) - expected) ** 2))

    assert fitted_error < random_error


def test_depthwise_separable_rejects_pointwise(keras: Any) -> None:
    with pytest.raises(ToolkitError, match="1x1"):
        depthwise_separable(_conv_model(keras), layers=["pointwise_only"])
    with pytest.raises(ToolkitError, match="not found"):
        depthwise_separable(_conv_model(keras), layers=["missing"])


BUILDERS: dict[str, Callable[[], Any]] = {
    "ds_cnn": ds_cnn,
    "mobilenet_v1": mobilenet_v1,
    "resnet8": resnet8,
}


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_builder_converts_and_deploys(name: str, tmp_path: Path) -> None:
    model = BUILDERS[name]()
    shape = tuple(model.input_shape[1:])
    calibration = np.random.default_rng(2).standard_normal((8, *shape)).astype(np.float32)

    flatbuffer = to_int8_tflite(model, calibration)
    deployment = deploy(flatbuffer, tmp_path / name)
    result = validate(tmp_path / name, count=2)

    assert result.ok, result.summary()
    ops = {layer["op"] for layer in deployment.report["layers"]}
    assert ops <= {
        "CONV_2D",
        "DEPTHWISE_CONV_2D",
        "FULLY_CONNECTED",
        "AVERAGE_POOL_2D",
        "ADD",
        "RESHAPE",
        "SOFTMAX",
    }
    # On these chain-like graphs the Keras-level estimate equals the planner's bound.
    assert profile(model).peak_activation_bytes == deployment.report["peak_live_bytes"]


def test_builder_parameter_counts() -> None:
    assert resnet8().count_params() == 78_666
    assert ds_cnn().count_params() == 24_332
    assert mobilenet_v1(alpha=0.25).count_params() == 219_058


@pytest.fixture(scope="session")
def saved_tiny_model(tiny_model: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("profile") / "tiny.keras"
    tiny_model.save(path)
    return path


def test_cli_profile_prints_table(saved_tiny_model: Path, capsys: pytest.CaptureFixture) -> None:
    status = main(["profile", str(saved_tiny_model)])

    output = capsys.readouterr().out
    assert status == 0
    assert "conv_a" in output
    assert "432 bytes" in output


def test_cli_profile_arena(saved_tiny_model: Path, capsys: pytest.CaptureFixture) -> None:
    status = main(["profile", str(saved_tiny_model), "--arena"])

    output = capsys.readouterr().out
    assert status == 0
    assert "arena" in output
    assert "peak live" in output


def test_cli_profile_tflite(tiny_model: Any, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    calibration = np.random.default_rng(3).standard_normal((4, 6, 6, 2)).astype(np.float32)
    path = tmp_path / "tiny.tflite"
    path.write_bytes(to_int8_tflite(tiny_model, calibration))

    status = main(["profile", str(path), "--arena"])

    output = capsys.readouterr().out
    assert status == 0
    assert "skipped" in output
    assert "arena" in output


REFERENCE_MODELS = [
    "resnet8_cifar10.h5",
    "autoencoder_toyadmos.h5",
    "mobilenet_vww96.h5",
    "resnet8_cifar10_int8.tflite",
    "dscnn_kws_int8.tflite",
    "autoencoder_toyadmos_int8.tflite",
]


@pytest.mark.slow
@pytest.mark.parametrize("name", REFERENCE_MODELS)
def test_cli_profile_reference_model(name: str, capsys: pytest.CaptureFixture) -> None:
    """`toolkit profile --arena` on every reference model prints the peak of
    live activation bytes, a lower bound, beside the planner's arena."""
    import re

    from tests.helpers import shared_model
    from toolkit.cli import main

    assert main(["profile", str(shared_model(name)), "--arena"]) == 0
    printed = capsys.readouterr().out
    peak = re.search(r"peak live activation bytes: ([\d,]+)", printed)
    arena = re.search(r"arena bytes: +([\d,]+) \(memory planner\)", printed)
    assert peak is not None, printed
    assert arena is not None, printed
    print(f"{name}: peak {peak.group(1)}, arena {arena.group(1)}")
    assert int(peak.group(1).replace(",", "")) <= int(arena.group(1).replace(",", ""))
