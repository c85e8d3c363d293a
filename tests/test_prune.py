"""Tests for toolkit.compress.prune (masks, schedules, strip) and toolkit.compress.surgery."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from toolkit.compress.prune import (
    ConstantSparsity,
    PolynomialDecay,
    PrunedConv2D,
    PrunedDense,
    PrunedDepthwiseConv2D,
    PruningCallback,
    kernel_matrix,
    kernel_sparsity,
    prune,
    pruning_mask,
    strip_pruning,
)
from toolkit.compress.surgery import filter_prune
from toolkit.convert import random_calibration, to_int8_tflite
from toolkit.deploy import deploy
from toolkit.design import profile
from toolkit.errors import ToolkitError
from toolkit.keras_io import import_keras
from toolkit.tflite_import import import_tflite
from toolkit.validate import validate

keras = import_keras()

SEED = 0
PRUNED_CLASSES = (PrunedConv2D, PrunedDepthwiseConv2D, PrunedDense)

# Random kernels of each supported layer kind: (Keras kernel shape, depthwise).
KERNEL_SHAPES = {
    "dense": ((20, 12), False),
    "conv": ((3, 3, 5, 8), False),
    "depthwise": ((3, 3, 6, 2), True),
}


def _small_model() -> Any:
    """Conv2D, DepthwiseConv2D (multiplier 2), Flatten and Dense on 8x8x3 inputs."""
    keras.utils.set_random_seed(SEED)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, activation="relu", name="depthwise")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    outputs = keras.layers.Dense(10, name="dense")(x)
    return keras.Model(inputs, outputs, name="small")


def _regression_data(count: int = 64) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(SEED)
    x = rng.normal(size=(count, 8, 8, 3)).astype(np.float32)
    y = rng.normal(size=(count, 10)).astype(np.float32)
    return x, y


def _pruned_layers(model: Any) -> list[Any]:
    return [layer for layer in model.layers if isinstance(layer, PRUNED_CLASSES)]


def _mask_matrix(layer: Any) -> np.ndarray:
    mask = layer.pruning_mask.numpy()
    return kernel_matrix(mask, depthwise=isinstance(layer, PrunedDepthwiseConv2D))


@pytest.fixture(scope="session")
def small_model() -> Any:
    return _small_model()


@pytest.fixture(scope="session")
def digits() -> tuple[Any, Any]:
    """The digits data and the example CNN trained on it (about 10 s)."""
    from toolkit.examples.digits import load_digits_data, train_model

    data = load_digits_data(SEED)
    return data, train_model(data, epochs=30, seed=SEED)


# ---------------------------------------------------------------------------
# Masks on numpy kernels
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(KERNEL_SHAPES))
@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.9])
def test_unstructured_mask_sparsity(kind: str, sparsity: float) -> None:
    shape, depthwise = KERNEL_SHAPES[kind]
    kernel = np.random.default_rng(SEED).normal(size=shape)
    mask = pruning_mask(kernel, sparsity, "unstructured", depthwise=depthwise)

    assert mask.shape == kernel.shape
    assert set(np.unique(mask)) <= {0.0, 1.0}
    assert abs(np.sum(mask == 0) - sparsity * kernel.size) <= 0.5
    # Every kept weight is at least as large as every pruned one.
    if sparsity > 0:
        assert np.abs(kernel[mask == 1]).min() >= np.abs(kernel[mask == 0]).max()


@pytest.mark.parametrize("kind", sorted(KERNEL_SHAPES))
@pytest.mark.parametrize("block", [(1, 4), (2, 2), (4, 3)])
def test_block_mask_aligned_to_blocks(kind: str, block: tuple[int, int]) -> None:
    shape, depthwise = KERNEL_SHAPES[kind]
    kernel = np.random.default_rng(SEED).normal(size=shape)
    matrix = kernel_matrix(
        pruning_mask(kernel, 0.5, "block", block, depthwise=depthwise), depthwise
    )

    rows, columns = matrix.shape
    for row in range(0, rows, block[0]):
        for column in range(0, columns, block[1]):
            values = np.unique(matrix[row : row + block[0], column : column + block[1]])
            assert values.size == 1, f"block at ({row}, {column}) is partly pruned"
    assert abs(np.mean(matrix == 0) - 0.5) <= math.prod(block) / matrix.size


@pytest.mark.parametrize("kind", sorted(KERNEL_SHAPES))
@pytest.mark.parametrize("n_m", [(2, 4), (1, 4), (1, 2), (3, 8)])
def test_n_m_mask_keeps_n_per_group(kind: str, n_m: tuple[int, int]) -> None:
    shape, depthwise = KERNEL_SHAPES[kind]
    kernel = np.random.default_rng(SEED).normal(size=shape)
    n, m = n_m
    matrix = kernel_matrix(
        pruning_mask(kernel, 0.5, "n:m", n_m=n_m, depthwise=depthwise), depthwise
    )
    magnitude = np.abs(kernel_matrix(kernel, depthwise))

    for start in range(0, matrix.shape[1], m):
        group = matrix[:, start : start + m]
        assert np.all(group.sum(axis=1) == min(n, group.shape[1]))
        # The kept weights are the largest of their group.
        group_magnitude = magnitude[:, start : start + m]
        kept_min = np.where(group == 1, group_magnitude, np.inf).min(axis=1)
        pruned_max = np.where(group == 0, group_magnitude, -np.inf).max(axis=1)
        assert np.all(kept_min >= pruned_max)
    if matrix.shape[1] % m == 0:
        assert np.mean(matrix == 0) == pytest.approx(1 - n / m)


@pytest.mark.parametrize("kind", sorted(KERNEL_SHAPES))
def test_filter_mask_zeros_whole_rows(kind: str) -> None:
    shape, depthwise = KERNEL_SHAPES[kind]
    kernel = np.random.default_rng(SEED).normal(size=shape)
    matrix = kernel_matrix(pruning_mask(kernel, 0.5, "filter", depthwise=depthwise), depthwise)

    row_values = [np.unique(row) for row in matrix]
    assert all(values.size == 1 for values in row_values)
    zero_rows = sum(values[0] == 0 for values in row_values)
    assert zero_rows == round(0.5 * matrix.shape[0])

    # The pruned rows have the smallest L1 norms.
    norms = np.abs(kernel_matrix(kernel, depthwise)).sum(axis=1)
    assert norms[matrix[:, 0] == 1].min() >= norms[matrix[:, 0] == 0].max()


@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_channel_mask_zeros_input_channels(kind: str) -> None:
    shape, _ = KERNEL_SHAPES[kind]
    kernel = np.random.default_rng(SEED).normal(size=shape)
    mask = pruning_mask(kernel, 0.5, "channel")

    # The input channel axis is -2 in Dense [in, out] and Conv2D [kh, kw, in, out].
    per_channel = np.moveaxis(mask, -2, 0).reshape(shape[-2], -1)
    assert all(np.unique(channel).size == 1 for channel in per_channel)
    zero_channels = int(np.sum(per_channel[:, 0] == 0))
    assert abs(zero_channels - 0.5 * shape[-2]) <= 0.5


def test_channel_mask_depthwise_zeros_channel_outputs() -> None:
    shape, _ = KERNEL_SHAPES["depthwise"]
    kernel = np.random.default_rng(SEED).normal(size=shape)
    mask = pruning_mask(kernel, 0.5, "channel", depthwise=True)

    # Input channel i feeds outputs i * multiplier + m, all zeroed together.
    per_channel = np.moveaxis(mask, 2, 0).reshape(shape[2], -1)
    assert all(np.unique(channel).size == 1 for channel in per_channel)
    assert int(np.sum(per_channel[:, 0] == 0)) == shape[2] // 2


# ---------------------------------------------------------------------------
# Pruned models
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("granularity", ["unstructured", "block", "n:m", "channel", "filter"])
def test_prune_model_granularity(small_model: Any, granularity: str) -> None:
    pruned = prune(small_model, 0.5, granularity, block=(2, 2))

    layers = _pruned_layers(pruned)
    assert [layer.name for layer in layers] == ["conv", "depthwise", "dense"]
    sparsity = kernel_sparsity(pruned)
    for layer in layers:
        matrix = _mask_matrix(layer)
        # Conv "channel" pruning has 3 input channels, so 1 of 3 is the nearest count.
        tolerance = 0.17 if granularity == "channel" else 0.07
        assert sparsity[layer.name] == pytest.approx(0.5, abs=tolerance), layer.name
        if granularity == "filter":
            assert all(np.unique(row).size == 1 for row in matrix), layer.name
    # The original model keeps its dense kernels.
    assert all(value == 0 for value in kernel_sparsity(small_model).values())


def test_prune_chosen_layers_only(small_model: Any) -> None:
    pruned = prune(small_model, 0.5, layers=["dense"])

    assert [layer.name for layer in _pruned_layers(pruned)] == ["dense"]
    assert isinstance(pruned.get_layer("conv"), keras.layers.Conv2D)
    np.testing.assert_array_equal(
        pruned.get_layer("conv").get_weights()[0], small_model.get_layer("conv").get_weights()[0]
    )


def test_masked_weights_stay_zero_after_fit(small_model: Any) -> None:
    pruned = prune(small_model, 0.6)
    masks = {layer.name: _mask_matrix(layer).copy() for layer in _pruned_layers(pruned)}
    before = {layer.name: layer.masked_kernel().copy() for layer in _pruned_layers(pruned)}

    x, y = _regression_data()
    pruned.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    pruned.fit(x, y, epochs=3, batch_size=16, verbose=0)

    for layer in _pruned_layers(pruned):
        depthwise = isinstance(layer, PrunedDepthwiseConv2D)
        stored = kernel_matrix(layer._kernel.numpy(), depthwise)
        pruned_weights = masks[layer.name] == 0
        assert np.all(stored[pruned_weights] == 0), layer.name
        np.testing.assert_array_equal(_mask_matrix(layer), masks[layer.name])
        # The kept weights did train.
        assert not np.array_equal(layer.masked_kernel(), before[layer.name]), layer.name


def test_schedule_reaches_final_sparsity(small_model: Any) -> None:
    schedule = PolynomialDecay(0.1, 0.75, begin_step=0, end_step=12, frequency=4)
    pruned = prune(small_model, schedule=schedule)
    assert all(value == 0 for value in kernel_sparsity(pruned).values())

    x, y = _regression_data()
    pruned.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    # 8 steps per epoch: updates at steps 0, 4 and 8 in the first epoch.
    pruned.fit(x, y, epochs=1, batch_size=8, verbose=0, callbacks=[PruningCallback()])
    halfway = kernel_sparsity(pruned)
    zeros_halfway = {layer.name: layer.masked_kernel() == 0 for layer in _pruned_layers(pruned)}
    print(f"\nsparsity after 8 steps: {halfway}")
    for value in halfway.values():
        assert schedule.sparsity_at(0) - 0.05 < value < schedule.final_sparsity

    # A second fit call continues from optimizer.iterations and reaches end_step 12.
    pruned.fit(x, y, epochs=1, batch_size=8, verbose=0, callbacks=[PruningCallback()])
    final = kernel_sparsity(pruned)
    print(f"sparsity after 16 steps: {final}")
    for layer in _pruned_layers(pruned):
        assert final[layer.name] == pytest.approx(0.75, abs=0.01)
        # No weight that was pruned halfway came back.
        assert np.all(layer.masked_kernel()[zeros_halfway[layer.name]] == 0)


def test_schedule_values() -> None:
    schedule = PolynomialDecay(0.2, 0.8, begin_step=10, end_step=30, power=3, frequency=5)

    assert schedule.sparsity_at(0) == pytest.approx(0.2)
    assert schedule.sparsity_at(10) == pytest.approx(0.2)
    assert schedule.sparsity_at(20) == pytest.approx(0.8 - 0.6 * 0.5**3)
    assert schedule.sparsity_at(30) == pytest.approx(0.8)
    assert schedule.sparsity_at(99) == pytest.approx(0.8)
    assert schedule.last_update_step(9) is None
    assert schedule.last_update_step(12) == 10
    assert schedule.last_update_step(29) == 25
    assert schedule.last_update_step(50) == 30

    constant = ConstantSparsity(0.5, begin_step=3, frequency=10)
    assert constant.last_update_step(2) is None
    assert constant.last_update_step(3) == 3
    assert constant.last_update_step(100) == 93
    assert constant.sparsity_at(100) == 0.5


def test_constant_schedule_applies_at_begin_step(small_model: Any) -> None:
    pruned = prune(small_model, granularity="n:m", schedule=ConstantSparsity(0.5, begin_step=4))
    x, y = _regression_data(32)
    pruned.compile(optimizer="sgd", loss="mse")

    pruned.fit(x, y, epochs=1, batch_size=8, verbose=0, callbacks=[PruningCallback()])
    assert all(value == 0 for value in kernel_sparsity(pruned).values())
    pruned.fit(x, y, epochs=1, batch_size=8, verbose=0, callbacks=[PruningCallback()])
    for layer in _pruned_layers(pruned):
        matrix = _mask_matrix(layer)
        for start in range(0, matrix.shape[1], 4):
            assert np.all(matrix[:, start : start + 4].sum(axis=1) <= 2), layer.name


def test_strip_gives_plain_model(small_model: Any, tmp_path: Path) -> None:
    pruned = prune(small_model, 0.7, "block", block=(2, 4))
    stripped = strip_pruning(pruned)

    plain_types = {type(layer) for layer in stripped.layers}
    assert plain_types == {
        keras.layers.InputLayer,
        keras.layers.Conv2D,
        keras.layers.DepthwiseConv2D,
        keras.layers.Flatten,
        keras.layers.Dense,
    }
    assert all("pruning_mask" not in weight.path for weight in stripped.weights)
    assert kernel_sparsity(stripped) == kernel_sparsity(pruned)
    for layer in stripped.layers:
        for weight in layer.get_weights():
            # Masked weights are +0.0, not -0.0.
            assert not np.any(np.signbit(weight) & (weight == 0)), layer.name

    x, _ = _regression_data(8)
    np.testing.assert_array_equal(stripped.predict(x, verbose=0), pruned.predict(x, verbose=0))

    # The stripped model loads without the toolkit's custom objects.
    path = tmp_path / "stripped.keras"
    stripped.save(path)
    config = keras.saving.load_model(path, compile=False).get_config()
    assert "sparsity" not in str(config)


def test_pruned_model_saves_and_loads(small_model: Any, tmp_path: Path) -> None:
    schedule = PolynomialDecay(0.0, 0.5, begin_step=0, end_step=10)
    pruned = prune(small_model, 0.4, "filter", schedule=None)
    scheduled = prune(small_model, schedule=schedule, layers=["conv"])

    for model, name in [(pruned, "one_shot.keras"), (scheduled, "scheduled.keras")]:
        model.save(tmp_path / name)
        loaded = keras.saving.load_model(tmp_path / name, compile=False)
        assert kernel_sparsity(loaded) == kernel_sparsity(model)
        for old, new in zip(_pruned_layers(model), _pruned_layers(loaded), strict=True):
            assert new.schedule == old.schedule
            assert new.granularity == old.granularity
            np.testing.assert_array_equal(_mask_matrix(new), _mask_matrix(old))


def test_digits_pruned_80_percent_keeps_accuracy(digits: tuple[Any, Any]) -> None:
    data, model = digits

    def accuracy(candidate: Any) -> float:
        predictions = np.argmax(candidate.predict(data.x_test, verbose=0), axis=1)
        return float(np.mean(predictions == data.y_test))

    start = time.perf_counter()
    pruned = prune(model, 0.8)
    one_shot = accuracy(pruned)
    keras.utils.set_random_seed(SEED)
    pruned.compile(
        optimizer=keras.optimizers.Adam(learning_rate=1e-3),
        loss="sparse_categorical_crossentropy",
    )
    pruned.fit(data.x_train, data.y_train, epochs=8, batch_size=32, verbose=0)
    stripped = strip_pruning(pruned)
    baseline, fine_tuned = accuracy(model), accuracy(stripped)
    print(
        f"\ndigits test accuracy: dense {baseline:.2%}, 80% pruned {one_shot:.2%}, "
        f"fine-tuned 8 epochs {fine_tuned:.2%} ({time.perf_counter() - start:.1f} s); "
        f"kernel sparsity {kernel_sparsity(stripped)}"
    )

    for value in kernel_sparsity(stripped).values():
        assert value == pytest.approx(0.8, abs=0.005)
    assert fine_tuned >= baseline - 0.02


# ---------------------------------------------------------------------------
# int8 conversion of pruned weights
# ---------------------------------------------------------------------------


def test_zero_filter_converts_and_matches_tflm(tmp_path: Path) -> None:
    keras.utils.set_random_seed(SEED)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(5, name="dense")(x)
    model = keras.Model(inputs, outputs, name="zero_filter")
    kernel, bias = model.get_layer("conv").get_weights()
    kernel[..., 1] = 0.0
    # A nonzero bias on the zero filter makes the converter pick a tiny nonzero weight scale
    # whose int32 bias still fits (TF 2.21).
    bias[:] = [0.1, 0.5, -0.2, 0.05]
    model.get_layer("conv").set_weights([kernel, bias])

    flatbuffer = to_int8_tflite(model, random_calibration((8, 8, 3), seed=SEED))
    graph = import_tflite(flatbuffer)
    weighted = [op for op in graph.ops if op.kind in ("CONV_2D", "FULLY_CONNECTED")]
    assert [op.kind for op in weighted] == ["CONV_2D", "FULLY_CONNECTED"]
    for op in weighted:
        quantization = graph.tensor(op.inputs[1]).quantization
        assert quantization is not None
        scales = np.asarray(quantization.scale)
        print(f"\n{op.kind} weight scales: {scales}")
        assert np.all(np.isfinite(scales)), op.kind
        assert np.all(scales > 0), op.kind
    conv_weights = graph.tensor(weighted[0].inputs[1]).data
    assert conv_weights is not None
    assert np.all(conv_weights[1] == 0)

    model_path = tmp_path / "zero_filter.tflite"
    model_path.write_bytes(flatbuffer)
    deploy(model_path, tmp_path / "out")
    result = validate(tmp_path / "out", count=20)
    assert result.outputs[0].max_abs_diff == 0, result.summary()


# ---------------------------------------------------------------------------
# Filter pruning by surgery
# ---------------------------------------------------------------------------


def _residual_model() -> Any:
    """Conv+BN+ReLU, a residual Add with a 1x1 shortcut, DepthwiseConv2D, Flatten and Dense."""
    keras.utils.set_random_seed(SEED)
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    branch = keras.layers.Conv2D(6, 3, padding="same", name="branch")(x)
    branch = keras.layers.BatchNormalization(name="branch_bn")(branch)
    shortcut = keras.layers.Conv2D(6, 1, name="shortcut")(x)
    x = keras.layers.Add(name="add")([branch, shortcut])
    x = keras.layers.ReLU(name="add_relu")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="depthwise")(x)
    x = keras.layers.MaxPooling2D(2, name="pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dropout(0.1, name="dropout")(x)
    x = keras.layers.Dense(12, activation="relu", name="hidden")(x)
    outputs = keras.layers.Dense(4, name="logits")(x)
    return keras.Model(inputs, outputs, name="residual")


def _silence_channels(model: Any, removed: dict[str, list[int]]) -> None:
    """Make the given output channels exactly 0 everywhere downstream of their producers.

    Kernels and biases of the channels become 0, BatchNormalization maps them to 0,
    and the DepthwiseConv2D bias of a silenced channel becomes 0.
    """
    rng = np.random.default_rng(SEED)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            channels = layer.gamma.shape[0]
            layer.set_weights(
                [
                    rng.uniform(0.5, 2.0, channels),
                    rng.normal(0.0, 0.3, channels),
                    rng.normal(0.0, 0.3, channels),
                    rng.uniform(0.5, 2.0, channels),
                ]
            )
    for name, channels in removed.items():
        layer = model.get_layer(name)
        weights = layer.get_weights()
        weights[0][..., channels] = 0.0
        weights[1][channels] = 0.0
        layer.set_weights(weights)
    for bn_name, producer in [("stem_bn", "stem"), ("branch_bn", "branch")]:
        gamma, beta, mean, variance = model.get_layer(bn_name).get_weights()
        beta[removed[producer]] = 0.0
        mean[removed[producer]] = 0.0
        model.get_layer(bn_name).set_weights([gamma, beta, mean, variance])
    depthwise_kernel, depthwise_bias = model.get_layer("depthwise").get_weights()
    depthwise_bias[removed["branch"]] = 0.0
    model.get_layer("depthwise").set_weights([depthwise_kernel, depthwise_bias])


def test_filter_prune_exact_on_silent_channels() -> None:
    model = _residual_model()
    removed = {
        "stem": [0, 3, 4, 7],
        "branch": [1, 2, 5],
        "shortcut": [1, 2, 5],
        "hidden": [0, 2, 4, 6, 8, 10],
    }
    _silence_channels(model, removed)

    pruned = filter_prune(model, 0.5)

    expected_channels = {"stem": 4, "branch": 3, "shortcut": 3, "hidden": 6, "logits": 4}
    for name, channels in expected_channels.items():
        assert pruned.get_layer(name).get_weights()[0].shape[-1] == channels, name
    assert pruned.get_layer("stem_bn").get_weights()[0].shape == (4,)
    assert pruned.get_layer("depthwise").get_weights()[0].shape == (3, 3, 3, 1)
    # Flatten of 3x3x3 into hidden: 27 rows instead of 54.
    assert pruned.get_layer("hidden").get_weights()[0].shape == (27, 6)

    x = np.random.default_rng(SEED).normal(size=(8, 6, 6, 3)).astype(np.float32)
    np.testing.assert_allclose(
        pruned.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-5
    )


def test_filter_prune_named_add_group() -> None:
    model = _residual_model()
    pruned = filter_prune(model, 0.5, layers=["shortcut"])

    channels = {
        layer.name: layer.get_weights()[0].shape[-1]
        for layer in pruned.layers
        if layer.get_weights()
    }
    assert channels["branch"] == channels["shortcut"] == 3
    assert channels["stem"] == 8
    assert channels["hidden"] == 12


def test_filter_prune_resnet8(shared_keras_model: Callable[[str], Any], tmp_path: Path) -> None:
    model = shared_keras_model("resnet8_cifar10.h5")
    start = time.perf_counter()
    pruned = filter_prune(model, 0.5)

    before, after = profile(model), profile(pruned)
    print(
        f"\nresnet8 filter pruning by half: parameters {model.count_params():,} -> "
        f"{pruned.count_params():,}, MACs {before.total_macs:,} -> {after.total_macs:,}"
    )
    assert pruned.count_params() < 0.4 * model.count_params()
    assert after.total_macs < 0.4 * before.total_macs
    assert tuple(pruned.outputs[0].shape) == tuple(model.outputs[0].shape)
    # The softmax Dense writes the model output, so it keeps its 10 units.
    assert pruned.get_layer("dense").get_weights()[0].shape == (32, 10)
    assert [layer.name for layer in pruned.layers] == [layer.name for layer in model.layers]

    deploy(pruned, tmp_path / "out", calibration=None)
    result = validate(tmp_path / "out", count=20)
    print(f"deploy and validate: {time.perf_counter() - start:.1f} s")
    assert result.outputs[0].max_abs_diff == 0, result.summary()


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"sparsity": -0.1}, "sparsity is -0.1"),
        ({"sparsity": 1.0}, r"sparsity is 1.0, expected a value in \[0, 1\)"),
        ({"sparsity": "half"}, "sparsity is 'half'"),
        ({"granularity": "rows"}, "granularity is 'rows'"),
        ({"granularity": "block", "block": (0, 4)}, r"block is \(0, 4\)"),
        ({"granularity": "block", "block": (4,)}, r"block is \(4,\)"),
        ({"granularity": "n:m", "n_m": (4, 4)}, "n must be less than m"),
        ({"granularity": "n:m", "n_m": (2, 4, 8)}, r"n_m is \(2, 4, 8\)"),
        ({"layers": ["missing"]}, "Layer 'missing' not found"),
        ({"layers": ["flatten"]}, "Layer 'flatten' is a Flatten"),
        ({"layers": "dense"}, "layers is 'dense'"),
        ({"schedule": 0.5}, "schedule is a float"),
    ],
)
def test_prune_errors(small_model: Any, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ToolkitError, match=message):
        prune(small_model, **options)


def test_prune_rejects_pruned_layer(small_model: Any) -> None:
    pruned = prune(small_model, 0.5)
    with pytest.raises(ToolkitError, match="already pruned"):
        prune(pruned, 0.5, layers=["dense"])


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            {"initial_sparsity": 0.0, "final_sparsity": 1.0, "begin_step": 0, "end_step": 5},
            "final_sparsity is 1.0",
        ),
        (
            {"initial_sparsity": 0.0, "final_sparsity": 0.5, "begin_step": 5, "end_step": 5},
            "end_step is 5",
        ),
        (
            {
                "initial_sparsity": 0.0,
                "final_sparsity": 0.5,
                "begin_step": 0,
                "end_step": 5,
                "frequency": 0,
            },
            "frequency is 0",
        ),
        (
            {
                "initial_sparsity": 0.0,
                "final_sparsity": 0.5,
                "begin_step": 0,
                "end_step": 5,
                "power": 0,
            },
            "power is 0",
        ),
    ],
)
def test_schedule_errors(arguments: dict[str, Any], message: str) -> None:
    with pytest.raises(ToolkitError, match=message):
        PolynomialDecay(**arguments)


def test_callback_without_pruned_layers(small_model: Any) -> None:
    model = keras.models.clone_model(small_model)
    model.compile(optimizer="sgd", loss="mse")
    x, y = _regression_data(8)
    with pytest.raises(ToolkitError, match="found no pruned layers"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[PruningCallback()])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"fraction": 1.0}, r"fraction is 1.0, expected a value in \[0, 1\)"),
        ({"fraction": -0.5}, "fraction is -0.5"),
        ({"layers": ["missing"]}, "Layer 'missing' not found"),
        (
            {"layers": ["logits"]},
            "filters of layer 'logits' cannot be removed, because they reach a model output",
        ),
        ({"layers": ["stem_bn"]}, "Layer 'stem_bn' is a BatchNormalization"),
    ],
)
def test_filter_prune_errors(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ToolkitError, match=message):
        filter_prune(_residual_model(), **options)
