"""Low-rank factorization: exactness at full rank, parameter counts, graph rebuilding,
and the factorized MLPerf Tiny autoencoder deployed against TFLite Micro."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.helpers import read_toyadmos_windows, shared_model
from toolkit.compress.factorize import FactorizeResult, factorize
from toolkit.deploy import deploy
from toolkit.errors import ToolkitError
from toolkit.keras_io import import_keras
from toolkit.validate import validate

RTOL = 1e-4
ATOL = 1e-5


@pytest.fixture(scope="session")
def keras() -> Any:
    return import_keras()


def _random_weights(model: Any, seed: int) -> None:
    """Give every weight of `model` standard normal values, biases included."""
    rng = np.random.default_rng(seed)
    model.set_weights([rng.standard_normal(w.shape).astype(np.float32) for w in model.weights])


def _predict(model: Any, x: np.ndarray) -> np.ndarray:
    # Functional models loaded from Keras 2 .h5 files take their one input as a list.
    takes_list = not isinstance(model, import_keras().Sequential) and isinstance(model.input, list)
    inputs = [x] if takes_list else x
    return np.asarray(model(inputs, training=False))


def test_dense_full_rank_matches_layer(keras: Any) -> None:
    model = keras.Sequential(
        [keras.Input((12,)), keras.layers.Dense(7, activation="relu", name="dense")]
    )
    _random_weights(model, seed=0)
    x = np.random.default_rng(1).standard_normal((5, 12)).astype(np.float32)

    result = factorize(model, rank=7, allow_larger=True)

    (row,) = result.layers
    assert row.form == "dense"
    assert row.rank == 7
    assert row.parameters == 7 * (12 + 7) + 7
    assert result.model.count_params() == 7 * (12 + 7) + 7
    assert [type(layer).__name__ for layer in result.model.layers] == ["Dense", "Dense"]
    assert result.model.layers[0].use_bias is False
    np.testing.assert_allclose(_predict(result.model, x), _predict(model, x), rtol=RTOL, atol=ATOL)


CONV_CASES = [
    pytest.param({"strides": 1, "padding": "same"}, id="same"),
    pytest.param({"strides": 2, "padding": "valid"}, id="valid-stride2"),
    pytest.param({"strides": (2, 1), "padding": "same"}, id="same-stride2x1"),
    pytest.param({"dilation_rate": (2, 3), "padding": "same"}, id="same-dilated"),
    pytest.param({"dilation_rate": 2, "padding": "valid", "use_bias": False}, id="no-bias"),
]


@pytest.mark.parametrize("settings", CONV_CASES)
@pytest.mark.parametrize("form", ["pointwise", "separable"])
def test_conv_full_rank_matches_layer(keras: Any, form: str, settings: dict[str, Any]) -> None:
    kernel_h, kernel_w, channels_in, channels_out = 3, 2, 3, 5
    inputs = keras.Input((13, 11, channels_in))
    conv = keras.layers.Conv2D(
        channels_out, (kernel_h, kernel_w), activation="relu", name="conv", **settings
    )
    model = keras.Model(inputs, conv(inputs))
    _random_weights(model, seed=2)
    x = np.random.default_rng(3).standard_normal((4, 13, 11, channels_in)).astype(np.float32)

    result = factorize(model, rank=1000, conv_form=form, allow_larger=True)

    (row,) = result.layers
    bias = channels_out if conv.use_bias else 0
    if form == "pointwise":
        rank = min(kernel_h * kernel_w * channels_in, channels_out)
        expected = rank * (kernel_h * kernel_w * channels_in + channels_out) + bias
    else:
        rank = min(kernel_h * channels_in, kernel_w * channels_out)
        expected = rank * (kernel_h * channels_in + kernel_w * channels_out) + bias
    assert row.form == form
    assert row.rank == rank
    assert row.parameters == expected
    assert result.model.count_params() == expected
    np.testing.assert_allclose(_predict(result.model, x), _predict(model, x), rtol=RTOL, atol=ATOL)


def test_separable_factor_shapes(keras: Any) -> None:
    inputs = keras.Input((16, 16, 4))
    conv = keras.layers.Conv2D(6, 5, strides=2, padding="same", name="conv")
    model = keras.Model(inputs, conv(inputs))

    result = factorize(model, rank=3, conv_form="separable")

    first, second = (result.model.get_layer(f"conv_factor{i}") for i in (1, 2))
    assert first.kernel.shape == (5, 1, 4, 3)
    assert first.strides == (2, 1)
    assert second.kernel.shape == (1, 5, 3, 6)
    assert second.strides == (1, 2)
    assert result.model.output.shape == model.output.shape


def test_low_rank_kernel_exact_at_energy_one(keras: Any) -> None:
    rng = np.random.default_rng(4)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(48, name="dense")])
    kernel = rng.standard_normal((64, 4)) @ rng.standard_normal((4, 48))
    model.set_weights([kernel.astype(np.float32), rng.standard_normal(48).astype(np.float32)])
    x = rng.standard_normal((6, 64)).astype(np.float32)

    result = factorize(model, energy=1.0)

    (row,) = result.layers
    assert row.rank == 4
    assert row.parameters == 4 * (64 + 48) + 48
    assert result.saved_parameters == 64 * 48 - 4 * (64 + 48)
    np.testing.assert_allclose(_predict(result.model, x), _predict(model, x), rtol=RTOL, atol=1e-4)


def test_energy_picks_smallest_rank(keras: Any) -> None:
    model = keras.Sequential([keras.Input((40,)), keras.layers.Dense(40, name="dense")])
    _random_weights(model, seed=5)
    singular_values = np.linalg.svd(model.layers[0].get_weights()[0], compute_uv=False)
    cumulative = np.cumsum(singular_values**2) / np.sum(singular_values**2)

    result = factorize(model, energy=0.5, allow_larger=True)

    rank = result.layers[0].rank
    assert rank is not None
    assert cumulative[rank - 1] >= 0.5
    assert cumulative[rank - 2] < 0.5
    assert result.layers[0].energy == pytest.approx(cumulative[rank - 1])


def test_target_ratio_respects_budget(keras: Any) -> None:
    model = keras.Sequential(
        [
            keras.Input((10, 10, 8)),
            keras.layers.Conv2D(16, 3, name="conv"),
            keras.layers.Flatten(),
            keras.layers.Dense(32, name="dense"),
        ]
    )

    result = factorize(model, target_ratio=0.3)

    for row in result.layers:
        assert row.factorized, row
        assert row.parameters <= 0.3 * row.original_parameters, row
        assert row.rank is not None
        assert row.rank >= 1


def test_layer_without_saving_left_alone(keras: Any) -> None:
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, name="small")])

    result = factorize(model, energy=0.99)

    (row,) = result.layers
    assert not row.factorized
    assert row.parameters == row.original_parameters
    assert "not fewer than" in row.note
    assert result.saved_parameters == 0
    assert [layer.name for layer in result.model.layers] == ["small"]


def test_layers_argument_limits_rows(keras: Any) -> None:
    model = keras.Sequential(
        [
            keras.Input((32,)),
            keras.layers.Dense(32, name="first"),
            keras.layers.Dense(32, name="second"),
        ]
    )

    result = factorize(model, rank=2, layers=["second"])

    assert [row.name for row in result.layers] == ["second"]
    assert "first" in [layer.name for layer in result.model.layers]
    with pytest.raises(ToolkitError, match="not found"):
        factorize(model, rank=2, layers=["missing"])


@pytest.mark.parametrize(
    "arguments",
    [
        {"rank": 2, "target_ratio": 0.5},
        {"rank": 2, "energy": 0.5},
        {"rank": None, "energy": None},
        {"rank": 0},
        {"energy": 1.5},
        {"target_ratio": 0.0},
        {"conv_form": "diagonal"},
    ],
)
def test_invalid_criteria_rejected(keras: Any, arguments: dict[str, Any]) -> None:
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(8)])
    with pytest.raises(ToolkitError):
        factorize(model, **arguments)


def test_input_model_untouched(keras: Any) -> None:
    model = keras.Sequential([keras.Input((32,)), keras.layers.Dense(32, name="dense")])
    before = [w.copy() for w in model.get_weights()]

    result = factorize(model, rank=2)
    result.model.set_weights([np.zeros_like(w) for w in result.model.get_weights()])

    for old, new in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)
    assert [layer.name for layer in model.layers] == ["dense"]


@pytest.fixture(scope="session")
def resnet8(shared_keras_model: Callable[[str], Any]) -> Any:
    return shared_keras_model("resnet8_cifar10.h5")


def test_resnet8_full_rank_matches(resnet8: Any) -> None:
    x = np.random.default_rng(6).standard_normal((2, 32, 32, 3)).astype(np.float32)

    result = factorize(resnet8, energy=1.0, allow_larger=True)

    assert sum(row.factorized for row in result.layers) == 10
    add_layers = [layer for layer in result.model.layers if type(layer).__name__ == "Add"]
    assert len(add_layers) == 3
    np.testing.assert_allclose(
        _predict(result.model, x), _predict(resnet8, x), rtol=RTOL, atol=ATOL
    )


def test_resnet8_energy_saves_parameters(resnet8: Any) -> None:
    result = factorize(resnet8, energy=0.8)

    assert result.parameters < result.original_parameters
    assert result.model.count_params() == result.parameters
    forms = {row.form for row in result.layers if row.factorized}
    assert forms <= {"pointwise", "separable", "dense"}
    assert "separable" in forms


@pytest.fixture(scope="session")
def toyadmos_windows() -> np.ndarray:
    return read_toyadmos_windows(shared_model("autoencoder_toyadmos_input.bin"))


@pytest.fixture(scope="session")
def factorized_autoencoder(shared_keras_model: Callable[[str], Any]) -> FactorizeResult:
    return factorize(shared_keras_model("autoencoder_toyadmos.h5"), energy=0.9)


def test_autoencoder_saves_stated_parameters(
    shared_keras_model: Callable[[str], Any], factorized_autoencoder: FactorizeResult
) -> None:
    original = shared_keras_model("autoencoder_toyadmos.h5")
    saved = original.count_params() - factorized_autoencoder.model.count_params()

    assert saved > 0
    assert factorized_autoencoder.saved_parameters == saved
    assert f"({saved:,} fewer" in factorized_autoencoder.summary()
    row_savings = [
        row.original_parameters - row.parameters for row in factorized_autoencoder.layers
    ]
    assert sum(row_savings) == saved


def test_autoencoder_reconstruction_error(
    shared_keras_model: Callable[[str], Any],
    factorized_autoencoder: FactorizeResult,
    toyadmos_windows: np.ndarray,
) -> None:
    original = shared_keras_model("autoencoder_toyadmos.h5")
    original_error = float(np.mean((_predict(original, toyadmos_windows) - toyadmos_windows) ** 2))
    factorized_output = _predict(factorized_autoencoder.model, toyadmos_windows)
    factorized_error = float(np.mean((factorized_output - toyadmos_windows) ** 2))

    close_output = _predict(factorize(original, energy=0.99).model, toyadmos_windows)
    close_error = float(np.mean((close_output - toyadmos_windows) ** 2))

    print(f"reconstruction MSE: original {original_error:.4f}, factorized {factorized_error:.4f}")
    assert np.isfinite(factorized_error)
    # Keeping more energy brings the error back towards that of the original model.
    assert close_error < factorized_error
    assert close_error == pytest.approx(original_error, rel=0.02)


def test_factorized_autoencoder_matches_tflm(
    factorized_autoencoder: FactorizeResult,
    toyadmos_windows: np.ndarray,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    out = tmp_path_factory.mktemp("factorized") / "autoencoder"
    deployment = deploy(factorized_autoencoder.model, out, calibration=toyadmos_windows)
    ops = [layer["op"] for layer in deployment.report["layers"]]
    assert ops.count("FULLY_CONNECTED") == 20

    result = validate(Path(out), inputs=toyadmos_windows)

    assert result.samples == 40
    for output in result.outputs:
        assert output.max_abs_diff == 0, result.summary()
