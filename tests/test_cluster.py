"""Tests for toolkit.compress.cluster: weight sharing, fine-tuning, strip and int8 conversion."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import read_toyadmos_windows, shared_model
from toolkit.compress import cluster, strip_clustering
from toolkit.compress.cluster import (
    INITS,
    ClusteredConv2D,
    ClusteredDense,
    ClusteredDepthwiseConv2D,
    cluster_weights,
)
from toolkit.convert import to_int8_tflite
from toolkit.errors import ToolkitError
from toolkit.keras_io import import_keras, import_tensorflow, load_model
from toolkit.tflite_import import import_tflite

keras = import_keras()

SEED = 0
LAYER_NAMES = ("conv", "depthwise", "dense")
PLAIN_CLASSES = {"conv": "Conv2D", "depthwise": "DepthwiseConv2D", "dense": "Dense"}

# Axis of the output channels in the int8 TFLite weights of each op.
TFLITE_CHANNEL_AXIS = {"CONV_2D": 0, "DEPTHWISE_CONV_2D": 3, "FULLY_CONNECTED": 0}


def _small_model(batch_norm: bool = False) -> Any:
    """Conv2D, DepthwiseConv2D (multiplier 2) and Dense, optionally each conv followed by BN.

    The BatchNormalization layers get random statistics, so that folding them into
    the convolutions changes the weights.
    """
    keras.utils.set_random_seed(SEED)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(6, 3, name="conv")(inputs)
    if batch_norm:
        x = keras.layers.BatchNormalization(name="conv_bn")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, name="depthwise")(x)
    if batch_norm:
        x = keras.layers.BatchNormalization(name="depthwise_bn")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(10, name="dense")(x)
    model = keras.Model(inputs, outputs, name="small")

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
    return model


def _inputs(count: int = 8) -> np.ndarray:
    return np.random.default_rng(SEED).normal(size=(count, 8, 8, 3)).astype(np.float32)


def _channel_matrix(kernel: np.ndarray, layer: Any) -> np.ndarray:
    """Reshape a Keras kernel to [weights per channel, output channels]."""
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return kernel.reshape(-1, kernel.shape[-2] * kernel.shape[-1])
    return kernel.reshape(-1, kernel.shape[-1])


def _max_distinct_per_column(matrix: np.ndarray) -> int:
    return max(np.unique(matrix[:, column]).size for column in range(matrix.shape[1]))


def _int8_weight_matrices(flatbuffer: bytes) -> dict[str, np.ndarray]:
    """Return the int8 weights of each CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED op.

    Each matrix is [weights per channel, output channels], keyed by op kind and index.
    """
    graph = import_tflite(flatbuffer)
    matrices = {}
    for op in graph.ops:
        if op.kind not in TFLITE_CHANNEL_AXIS:
            continue
        weights = graph.tensor(op.inputs[1])
        assert weights.dtype == "int8"
        assert weights.data is not None
        channels_last = np.moveaxis(weights.data, TFLITE_CHANNEL_AXIS[op.kind], -1)
        matrices[f"{op.kind}#{op.index}"] = channels_last.reshape(-1, channels_last.shape[-1])
    return matrices


def _accuracy(model: Any, images: np.ndarray, labels: np.ndarray) -> float:
    predictions = np.argmax(model.predict(images, verbose=0), axis=1)
    return float(np.mean(predictions == labels))


# ---------------------------------------------------------------------------
# k-means on numpy arrays
# ---------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    rows=st.integers(1, 40),
    channels=st.integers(1, 4),
    clusters=st.integers(2, 8),
    init=st.sampled_from(INITS),
    preserve_zeros=st.booleans(),
)
def test_cluster_weights_properties(
    data: st.DataObject,
    rows: int,
    channels: int,
    clusters: int,
    init: str,
    preserve_zeros: bool,
) -> None:
    # Values from a small grid, so that channels with repeated values and exact zeros are common.
    grid = st.integers(-6, 6).map(lambda step: step / 4)
    values = data.draw(st.lists(grid, min_size=rows * channels, max_size=rows * channels))
    kernel = np.array(values, dtype=np.float32).reshape(rows, channels)

    centroids, indices, pinned = cluster_weights(
        kernel, clusters, 1, init, preserve_zeros, np.random.default_rng(SEED)
    )

    assert centroids.shape == (channels, clusters)
    assert indices.shape == kernel.shape
    assert indices.min() >= 0
    assert indices.max() < clusters
    for channel in range(channels):
        column = kernel[:, channel].astype(np.float64)
        labels = indices[:, channel]
        shared = centroids[channel, labels]
        assert np.unique(shared).size <= clusters
        zero = column == 0
        if preserve_zeros and zero.any():
            assert pinned[channel, 0]
            assert centroids[channel, 0] == 0.0
            np.testing.assert_array_equal(labels[zero], 0)
            assert not np.any(labels[~zero] == 0)
        else:
            assert not pinned[channel].any()
        for label in np.unique(labels):
            if pinned[channel, label]:
                continue
            members = column[labels == label]
            np.testing.assert_allclose(centroids[channel, label], members.mean(), atol=1e-12)
        if np.unique(column).size <= clusters - int(preserve_zeros):
            np.testing.assert_array_equal(shared, column)


def test_kmeans_plus_plus_deterministic_per_seed() -> None:
    kernel = np.random.default_rng(1).normal(size=(50, 3))
    first = cluster_weights(kernel, 6, 1, "kmeans++", rng=np.random.default_rng(7))
    second = cluster_weights(kernel, 6, 1, "kmeans++", rng=np.random.default_rng(7))
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)


def test_linear_init_keeps_outlier() -> None:
    # One large outlier among small weights: linear initialisation gives it its own centroid.
    kernel = np.concatenate([np.linspace(-0.1, 0.1, 99), [3.0]]).reshape(-1, 1)
    centroids, indices, _ = cluster_weights(kernel, 4, 0, "linear")
    shared = centroids[0, indices[:, 0]]
    assert shared[-1] == 3.0


# ---------------------------------------------------------------------------
# Keras models
# ---------------------------------------------------------------------------


def test_cluster_replaces_only_chosen_layers() -> None:
    model = _small_model(batch_norm=True)
    original_weights = [weight.copy() for weight in model.get_weights()]

    clustered = cluster(model, clusters=4, layers=["conv", "dense"])

    assert isinstance(clustered.get_layer("conv"), ClusteredConv2D)
    assert isinstance(clustered.get_layer("dense"), ClusteredDense)
    assert type(clustered.get_layer("depthwise")) is keras.layers.DepthwiseConv2D
    assert clustered is not model
    for before, after in zip(original_weights, model.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)
    for name in ("depthwise", "conv_bn", "depthwise_bn"):
        for before, after in zip(
            model.get_layer(name).get_weights(),
            clustered.get_layer(name).get_weights(),
            strict=True,
        ):
            np.testing.assert_array_equal(before, after)
    np.testing.assert_array_equal(
        clustered.get_layer("conv").bias.numpy(), model.get_layer("conv").bias.numpy()
    )


def test_cluster_finds_layers_in_nested_models() -> None:
    inner = keras.Sequential(
        [keras.Input((5,)), keras.layers.Dense(4, name="inner_dense")], name="inner"
    )
    inputs = keras.Input((5,))
    outputs = keras.layers.Dense(3, name="outer_dense")(inner(inputs))
    model = keras.Model(inputs, outputs)

    clustered = cluster(model, clusters=2)

    assert isinstance(clustered.get_layer("inner").get_layer("inner_dense"), ClusteredDense)
    assert isinstance(clustered.get_layer("outer_dense"), ClusteredDense)
    stripped = strip_clustering(clustered)
    assert type(stripped.get_layer("inner").get_layer("inner_dense")) is keras.layers.Dense
    samples = np.random.default_rng(SEED).normal(size=(4, 5)).astype(np.float32)
    np.testing.assert_array_equal(
        stripped.predict(samples, verbose=0), clustered.predict(samples, verbose=0)
    )


@pytest.mark.parametrize("per_channel", [True, False], ids=["per_channel", "per_tensor"])
def test_sgd_step_sums_member_gradients(per_channel: bool) -> None:
    tf = import_tensorflow()
    learning_rate = 0.05
    clustered = cluster(_small_model(), clusters=4, per_channel=per_channel)
    clustered.compile(optimizer=keras.optimizers.SGD(learning_rate=learning_rate), loss="mse")
    x = _inputs()
    y = np.random.default_rng(SEED + 1).normal(size=(len(x), 10)).astype(np.float32)

    # The expected gradients come from the equivalent plain model, whose kernels are
    # the gathered kernels as ordinary variables.
    plain = strip_clustering(clustered)
    with tf.GradientTape() as tape:
        loss = keras.losses.MeanSquaredError()(y, plain(x, training=True))
    kernel_gradients = tape.gradient(loss, [plain.get_layer(name).kernel for name in LAYER_NAMES])

    centroids_before = {
        name: clustered.get_layer(name).centroids.numpy().astype(np.float64) for name in LAYER_NAMES
    }
    indices_before = {name: clustered.get_layer(name).indices.numpy() for name in LAYER_NAMES}
    clustered.train_on_batch(x, y)

    for name, gradient in zip(LAYER_NAMES, kernel_gradients, strict=True):
        layer = clustered.get_layer(name)
        indices = layer.indices.numpy()
        np.testing.assert_array_equal(indices, indices_before[name], err_msg=name)

        gradient_matrix = _channel_matrix(np.asarray(gradient, dtype=np.float64), layer)
        index_matrix = _channel_matrix(indices, layer)
        groups = gradient_matrix.shape[1] if per_channel else 1
        group_of_weight = np.broadcast_to(
            np.arange(gradient_matrix.shape[1]) % groups, gradient_matrix.shape
        )
        summed = np.zeros(layer.centroids.shape, dtype=np.float64)
        np.add.at(summed, (group_of_weight, index_matrix), gradient_matrix)
        assert np.abs(summed).max() > 1e-3, f"{name}: gradients too small to test"

        moved = layer.centroids.numpy().astype(np.float64) - centroids_before[name]
        np.testing.assert_allclose(
            moved, -learning_rate * summed, rtol=1e-5, atol=1e-7, err_msg=name
        )


@pytest.mark.parametrize("clusters", [4, 16])
@pytest.mark.parametrize("per_channel", [True, False], ids=["per_channel", "per_tensor"])
def test_strip_leaves_at_most_k_values(clusters: int, per_channel: bool) -> None:
    model = _small_model()
    clustered = cluster(model, clusters=clusters, per_channel=per_channel)

    stripped = strip_clustering(clustered)

    for name in LAYER_NAMES:
        layer = stripped.get_layer(name)
        assert type(layer).__name__ == PLAIN_CLASSES[name]
        assert layer.get_config() == model.get_layer(name).get_config()
        matrix = _channel_matrix(layer.kernel.numpy(), layer)
        assert _max_distinct_per_column(matrix) <= clusters, name
        distinct_in_tensor = np.unique(matrix).size
        if per_channel:
            # Channels have their own centroids, so the tensor as a whole has more values.
            assert distinct_in_tensor > clusters, name
        else:
            assert distinct_in_tensor <= clusters, name
    x = _inputs()
    np.testing.assert_array_equal(stripped.predict(x, verbose=0), clustered.predict(x, verbose=0))


def test_depthwise_channel_order() -> None:
    # Channel in * multiplier + m gets weights near 10 * channel, so clustering them
    # together with another channel would move weights far from their value.
    model = _small_model()
    layer = model.get_layer("depthwise")
    kernel_shape = layer.kernel.shape
    channels = kernel_shape[2] * kernel_shape[3]
    noise = np.random.default_rng(SEED).uniform(0.0, 1.0, (*kernel_shape[:2], channels))
    kernel = (10.0 * np.arange(channels) + noise).reshape(kernel_shape).astype(np.float32)
    layer.set_weights([kernel, layer.bias.numpy()])

    clustered = cluster(model, clusters=4, layers=["depthwise"])
    stripped = strip_clustering(clustered).get_layer("depthwise").kernel.numpy()

    original_matrix = _channel_matrix(kernel, layer)
    stripped_matrix = _channel_matrix(stripped, layer)
    centroids = clustered.get_layer("depthwise").centroids.numpy()
    for channel in range(channels):
        column = stripped_matrix[:, channel]
        assert np.all(np.isin(column, centroids[channel])), channel
        assert np.all(np.abs(column - original_matrix[:, channel]) <= 1.0), channel


@pytest.mark.parametrize("clusters", [4, 16])
@pytest.mark.parametrize("per_channel", [True, False], ids=["per_channel", "per_tensor"])
def test_int8_weights_at_most_k_values(clusters: int, per_channel: bool) -> None:
    clustered = cluster(_small_model(batch_norm=True), clusters=clusters, per_channel=per_channel)
    stripped = strip_clustering(clustered)

    # import_tflite rejects the MUL and ADD ops of an unfolded BatchNormalization,
    # so importing the model also checks that both were folded into the convolutions.
    matrices = _int8_weight_matrices(to_int8_tflite(stripped, _inputs(32)))

    assert len(matrices) == len(LAYER_NAMES)
    for key, matrix in matrices.items():
        assert _max_distinct_per_column(matrix) <= clusters, key


def test_preserve_zeros_after_fine_tuning() -> None:
    model = _small_model()
    zero_masks = {}
    for name in LAYER_NAMES:
        layer = model.get_layer(name)
        kernel = layer.kernel.numpy()
        # Magnitude pruning: zero the smallest 30% of the weights.
        kernel[np.abs(kernel) < np.percentile(np.abs(kernel), 30)] = 0.0
        zero_masks[name] = kernel == 0
        layer.set_weights([kernel, layer.bias.numpy()])

    # Without pinning, the zeros of every layer share a centroid with nonzero weights.
    unpinned = strip_clustering(cluster(model, clusters=4))
    for name in LAYER_NAMES:
        kernel = unpinned.get_layer(name).kernel.numpy()
        assert np.any(kernel[zero_masks[name]] != 0), name

    clustered = cluster(model, clusters=4, preserve_zeros=True)
    centroids_before = {name: clustered.get_layer(name).centroids.numpy() for name in LAYER_NAMES}
    # Adam moves every centroid whose gradient is nonzero, even by a tiny amount.
    clustered.compile(optimizer=keras.optimizers.Adam(learning_rate=0.01), loss="mse")
    x = _inputs(32)
    y = np.random.default_rng(SEED + 1).normal(size=(len(x), 10)).astype(np.float32)
    clustered.fit(x, y, batch_size=8, epochs=2, verbose=0)

    stripped = strip_clustering(clustered)
    for name in LAYER_NAMES:
        layer = clustered.get_layer(name)
        pinned = layer.pinned.numpy() > 0
        assert pinned.any(), name
        centroids = layer.centroids.numpy()
        np.testing.assert_array_equal(centroids[pinned], 0.0, err_msg=name)
        assert np.any(centroids[~pinned] != centroids_before[name][~pinned]), name
        np.testing.assert_array_equal(layer.kernel.numpy()[zero_masks[name]], 0.0, err_msg=name)
        stripped_kernel = stripped.get_layer(name).kernel.numpy()
        np.testing.assert_array_equal(stripped_kernel[zero_masks[name]], 0.0, err_msg=name)
        assert np.count_nonzero(stripped_kernel == 0) == np.count_nonzero(zero_masks[name]), name


@pytest.mark.parametrize("preserve_zeros", [False, True])
def test_clustered_model_save_load(tmp_path: Path, preserve_zeros: bool) -> None:
    clustered = cluster(_small_model(batch_norm=True), clusters=8, preserve_zeros=preserve_zeros)
    path = tmp_path / "clustered.keras"
    clustered.save(path)

    loaded = keras.models.load_model(path)
    loaded_by_toolkit = load_model(path)

    x = _inputs()
    expected = clustered.predict(x, verbose=0)
    for restored in (loaded, loaded_by_toolkit):
        for name, cls in zip(
            LAYER_NAMES, (ClusteredConv2D, ClusteredDepthwiseConv2D, ClusteredDense), strict=True
        ):
            layer = restored.get_layer(name)
            assert isinstance(layer, cls)
            assert layer.get_config() == clustered.get_layer(name).get_config()
            for saved, original in zip(
                layer.weights, clustered.get_layer(name).weights, strict=True
            ):
                assert saved.path == original.path
                np.testing.assert_array_equal(saved.numpy(), original.numpy())
        np.testing.assert_array_equal(restored.predict(x, verbose=0), expected)


def test_digits_accuracy_within_one_point() -> None:
    from toolkit.examples.digits import load_digits_data, train_model

    start = time.perf_counter()
    data = load_digits_data(seed=SEED)
    model = train_model(data, epochs=15, seed=SEED)
    float_accuracy = _accuracy(model, data.x_test, data.y_test)
    trained = time.perf_counter()

    clustered = cluster(model, clusters=16, per_channel=True, seed=SEED)
    clustered_accuracy = _accuracy(clustered, data.x_test, data.y_test)
    clustered.compile(
        optimizer=keras.optimizers.Adam(learning_rate=3e-4),
        loss="sparse_categorical_crossentropy",
    )
    clustered.fit(data.x_train, data.y_train, epochs=3, batch_size=32, verbose=0, shuffle=True)
    fine_tuned_accuracy = _accuracy(clustered, data.x_test, data.y_test)
    stripped_accuracy = _accuracy(strip_clustering(clustered), data.x_test, data.y_test)
    finished = time.perf_counter()

    print(
        f"digits test accuracy: float {float_accuracy:.2%}, clustered-16 before fine-tuning "
        f"{clustered_accuracy:.2%}, after 3 epochs {fine_tuned_accuracy:.2%}, stripped "
        f"{stripped_accuracy:.2%}; training {trained - start:.1f} s, clustering and "
        f"fine-tuning {finished - trained:.1f} s"
    )
    assert fine_tuned_accuracy >= float_accuracy - 0.01
    assert stripped_accuracy == fine_tuned_accuracy


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"clusters": 0}, "clusters is 0, expected 1 to 256"),
        ({"clusters": 257}, "clusters is 257, expected 1 to 256"),
        ({"clusters": 2.5}, "clusters is 2.5, expected an integer"),
        ({"init": "uniform"}, "init is 'uniform', expected one of 'linear', 'kmeans++'"),
        ({"seed": -1}, "seed is -1, expected a non-negative integer"),
        ({"layers": ["missing"]}, "Layer 'missing' not found in model 'small'"),
        ({"layers": ["conv_bn"]}, "Layer 'conv_bn' is a BatchNormalization"),
        ({"layers": "conv"}, "layers is the string 'conv'"),
    ],
)
def test_cluster_rejects_invalid_options(options: dict[str, Any], message: str) -> None:
    model = _small_model(batch_norm=True)
    with pytest.raises(ToolkitError, match="^" + re.escape(message)) as error:
        cluster(model, **options)
    if "layers" in options and not isinstance(options["layers"], str):
        assert "Clusterable layers: conv, depthwise, dense." in str(error.value)


def test_cluster_rejects_no_clusterable_layers() -> None:
    model = keras.Sequential([keras.Input((4,)), keras.layers.ReLU()], name="relu_only")
    with pytest.raises(ToolkitError, match="'relu_only' has no Dense, Conv2D, DepthwiseConv2D"):
        cluster(model)


def test_cluster_rejects_unclonable_models() -> None:
    class Subclassed(keras.Model):
        def call(self, inputs: Any) -> Any:
            return inputs

    with pytest.raises(ToolkitError, match="Subclassed models cannot be cloned"):
        cluster(Subclassed())
    with pytest.raises(ToolkitError, match="is not built"):
        cluster(keras.Sequential([keras.layers.Dense(2)], name="unbuilt"))


def test_preserve_zeros_needs_two_clusters() -> None:
    kernel = np.array([[0.0], [0.5]])
    with pytest.raises(ToolkitError, match="leaves no centroid for the 1 nonzero weights"):
        cluster_weights(kernel, 1, 1, preserve_zeros=True)


# ---------------------------------------------------------------------------
# MLPerf Tiny autoencoder (shared model)
# ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def toyadmos_stripped(shared_keras_model: Callable[[str], Any]) -> tuple[Any, Any]:
    """The ToyADMOS autoencoder and its copy clustered to 16 values per channel, stripped."""
    original = shared_keras_model("autoencoder_toyadmos.h5")
    return original, strip_clustering(cluster(original, clusters=16))


def test_toyadmos_dense_layers_keep_16_values(toyadmos_stripped: tuple[Any, Any]) -> None:
    original, stripped = toyadmos_stripped
    dense_names = [layer.name for layer in original.layers if isinstance(layer, keras.layers.Dense)]
    assert len(dense_names) == 10
    for name in dense_names:
        layer = stripped.get_layer(name)
        assert type(layer) is keras.layers.Dense
        assert _max_distinct_per_column(layer.kernel.numpy()) <= 16, name

    windows = read_toyadmos_windows(shared_model("autoencoder_toyadmos_input.bin"))
    expected = original.predict(windows, verbose=0)
    shared = stripped.predict(windows, verbose=0)
    relative_rms = np.sqrt(np.mean((shared - expected) ** 2) / np.mean(expected**2))
    assert relative_rms < 0.05


@pytest.mark.slow
def test_toyadmos_int8_weights_keep_16_values(toyadmos_stripped: tuple[Any, Any]) -> None:
    _, stripped = toyadmos_stripped
    windows = read_toyadmos_windows(shared_model("autoencoder_toyadmos_input.bin"))

    matrices = _int8_weight_matrices(to_int8_tflite(stripped, windows))

    assert len(matrices) == 10
    for key, matrix in matrices.items():
        assert _max_distinct_per_column(matrix) <= 16, key
