"""Weight sharing (weight clustering) for Keras 3 models, as in Deep Compression.

`cluster` replaces the kernel of each chosen Dense, Conv2D and DepthwiseConv2D
layer with K trainable shared values (centroids) and one fixed integer index
per weight. The forward pass uses the kernel gather(centroids, indices), so
the gradient that reaches a centroid is the sum of the gradients of the
weights assigned to it, and `model.fit` fine-tunes the centroids while the
indices stay fixed. `strip_clustering` turns the result back into standard
Keras layers whose kernels contain only the shared values.

With per-channel clustering every output channel has its own K centroids.
Per-channel quantization maps each float value of a channel to one int8
value, so the int8 TFLite weights of such a channel also take at most K
distinct values. Folding a following BatchNormalization scales whole output
channels and keeps that property.

Importing this module imports Keras, because the clustered layers subclass
Keras layers and must be registered before a saved clustered model is loaded.
"""

from __future__ import annotations

import logging
import math
import zlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

import numpy as np

from toolkit.errors import ToolkitError
from toolkit.keras_io import import_keras

keras = import_keras()
ops = keras.ops

# NOTE: Keras 3.15 exports no public name for the class of models built with
# keras.Model(inputs, outputs), so it is imported from the implementation package.
from keras.src.models.functional import Functional  # noqa: E402

logger = logging.getLogger(__name__)

# Keras classes as Any-typed names, so that mypy accepts them as base classes.
_Dense: Any = keras.layers.Dense
_Conv2D: Any = keras.layers.Conv2D
_DepthwiseConv2D: Any = keras.layers.DepthwiseConv2D

ClusterInit = Literal["linear", "kmeans++", "density"]
INITS: tuple[str, ...] = ("linear", "kmeans++", "density")

# int8 weights take at most 256 distinct values, so more clusters cannot share anything.
MAX_CLUSTERS = 256

# Maximum number of Lloyd iterations after initialisation. They stop earlier
# when no weight changes cluster.
KMEANS_ITERATIONS = 20

# Config keys that the clustered layers add to the config of the layer they replace.
_CLUSTER_CONFIG_KEYS = ("clusters", "per_channel", "preserve_zeros")


# ---------------------------------------------------------------------------
# k-means on numpy arrays
# ---------------------------------------------------------------------------


def cluster_weights(
    kernel: np.ndarray,
    clusters: int,
    channel_ndim: int,
    init: str = "linear",
    preserve_zeros: bool = False,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cluster the values of a kernel and return (centroids, indices, pinned).

    The last `channel_ndim` axes of `kernel` index the output channels, and each
    channel gets its own `clusters` centroids. `channel_ndim=0` clusters the whole
    tensor as one group. Returns float64 centroids of shape [groups, clusters],
    int32 indices in [0, clusters) of the kernel's shape, and a boolean array
    [groups, clusters] that is True for a centroid pinned at exactly 0.

    A group with at most `clusters` distinct values keeps them exactly. Unused
    centroids are 0 and no weight refers to them. With `preserve_zeros` every
    group that contains exact zeros pins centroid 0 at 0.0 for them, and its
    other weights share the remaining `clusters - 1` centroids.
    """
    if rng is None:
        rng = np.random.default_rng(0)
    groups = math.prod(kernel.shape[kernel.ndim - channel_ndim :]) if channel_ndim else 1
    matrix = np.asarray(kernel, dtype=np.float64).reshape(-1, groups)

    centroids = np.zeros((groups, clusters), dtype=np.float64)
    indices = np.zeros(matrix.shape, dtype=np.int32)
    pinned = np.zeros((groups, clusters), dtype=bool)
    for group in range(groups):
        values = matrix[:, group]
        if preserve_zeros and np.any(values == 0):
            zero = values == 0
            nonzero_values = values[~zero]
            if nonzero_values.size and clusters < 2:
                raise ToolkitError(
                    f"preserve_zeros=True with clusters={clusters} leaves no centroid for "
                    f"the {nonzero_values.size} nonzero weights of channel {group}. Pass "
                    "clusters >= 2 or preserve_zeros=False."
                )
            used, labels = _kmeans_1d(nonzero_values, clusters - 1, init, rng)
            pinned[group, 0] = True
            centroids[group, 1 : 1 + used.size] = used
            indices[~zero, group] = labels + 1
        else:
            used, labels = _kmeans_1d(values, clusters, init, rng)
            centroids[group, : used.size] = used
            indices[:, group] = labels
    return centroids, indices.reshape(kernel.shape), pinned


def _kmeans_1d(
    values: np.ndarray, count: int, init: str, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Cluster 1-D values into at most `count` clusters with Lloyd's algorithm.

    Returns the used centroids in ascending order and the index of each value's
    centroid. Every returned centroid is the mean of the values assigned to it.
    """
    if values.size == 0 or count < 1:
        return np.zeros(0), np.zeros(values.shape, dtype=np.int32)
    distinct = np.unique(values)
    if distinct.size <= count:
        return distinct, np.searchsorted(distinct, values).astype(np.int32)

    centroids = _initial_centroids(values, count, init, rng)
    labels = _nearest(values, centroids)
    for _ in range(KMEANS_ITERATIONS):
        centroids = _cluster_means(values, labels, centroids)
        new_labels = _nearest(values, centroids)
        if np.array_equal(new_labels, labels):
            break
        labels = new_labels
    centroids = _cluster_means(values, labels, centroids)

    # Drop centroids without members and number the others in ascending order.
    counts = np.bincount(labels, minlength=centroids.size)
    used = np.flatnonzero(counts)
    order = used[np.argsort(centroids[used], kind="stable")]
    renumber = np.zeros(centroids.size, dtype=np.int32)
    renumber[order] = np.arange(order.size, dtype=np.int32)
    return centroids[order], renumber[labels]


def _initial_centroids(
    values: np.ndarray, count: int, init: str, rng: np.random.Generator
) -> np.ndarray:
    if init == "linear":
        # Evenly spaced over [min, max], so the rare large weights keep a centroid near them.
        return np.linspace(values.min(), values.max(), count)
    if init == "density":
        # Evenly spaced levels of the empirical CDF, so dense regions get more centroids.
        # Levels that fall on the same value give one centroid, so fewer may be used.
        levels = (np.arange(count) + 0.5) / count
        return np.unique(np.quantile(values, levels))
    return _kmeans_plus_plus(values, count, rng)


def _kmeans_plus_plus(values: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Choose centroids among the values, each with probability proportional to D^2.

    D is the distance from a value to the nearest centroid chosen so far.
    """
    chosen = [values[rng.integers(values.size)]]
    squared_distance = (values - chosen[0]) ** 2
    while len(chosen) < count:
        total = squared_distance.sum()
        if total <= 0:
            break
        pick = values[rng.choice(values.size, p=squared_distance / total)]
        chosen.append(pick)
        squared_distance = np.minimum(squared_distance, (values - pick) ** 2)
    return np.asarray(chosen)


def _nearest(values: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Return the index of the nearest centroid for each value. Ties go to the lower centroid."""
    order = np.argsort(centroids, kind="stable")
    ascending = centroids[order]
    boundaries = (ascending[1:] + ascending[:-1]) / 2
    return order[np.searchsorted(boundaries, values, side="left")].astype(np.int32)


def _cluster_means(values: np.ndarray, labels: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Return the mean of each cluster. A cluster without members keeps its centroid."""
    sums = np.bincount(labels, weights=values, minlength=centroids.size)
    counts = np.bincount(labels, minlength=centroids.size)
    return np.where(counts > 0, sums / np.maximum(counts, 1), centroids)


# ---------------------------------------------------------------------------
# Clustered Keras layers
# ---------------------------------------------------------------------------


class _KernelWrapper:
    """Behaviour shared by the layers that rewrite a Keras kernel (clustered
    and pruned layers): their variable layout, and rejecting LoRA and Keras
    quantization. `_wrapper_kind` and `_strip_function` name them in errors."""

    _wrapper_kind = "wrapped"
    _strip_function = "strip"

    # Dense and Conv2D save their kernel under their own variable layout, so
    # the wrapping layers go back to the Layer default: all variables in
    # creation order.
    def save_own_variables(self, store: Any) -> None:
        keras.layers.Layer.save_own_variables(self, store)

    def load_own_variables(self, store: Any) -> None:
        keras.layers.Layer.load_own_variables(self, store)

    def enable_lora(self, *args: Any, **kwargs: Any) -> None:
        raise ToolkitError(
            f"LoRA is not supported on the {self._wrapper_kind} layer "
            f"{getattr(self, 'name', '?')!r}. Call {self._strip_function} first."
        )

    def quantize(self, *args: Any, **kwargs: Any) -> None:
        raise ToolkitError(
            f"Keras quantization is not supported on the {self._wrapper_kind} layer "
            f"{getattr(self, 'name', '?')!r}. Call {self._strip_function} first, or convert "
            "the stripped model with toolkit.convert.to_int8_tflite."
        )


class _ClusteredKernel(_KernelWrapper):
    """Mixin that replaces a layer's kernel variable with centroids and indices.

    A subclass derives from this mixin and then from the Keras class that it
    replaces, and its `build` calls `_build_clustered_kernel`. The inherited
    `call` reads `self.kernel`, which is the gathered kernel here.

    Variables: `centroids` [groups, clusters] (trainable), `indices` of the
    kernel's shape (int32, not trainable) and, with preserve_zeros, `pinned`
    [groups, clusters] (1.0 for a centroid that the forward pass keeps at exactly 0).
    A layer built outside `cluster` has all-zero variables until weights are
    assigned or loaded.
    """

    _wrapper_kind = "clustered"
    _strip_function = "strip_clustering"

    # Number of trailing kernel axes that index the output channels.
    channel_ndim = 1
    # The standard Keras class that strip_clustering puts back.
    plain_class: Any = None

    def __init__(
        self,
        *args: Any,
        clusters: int = 16,
        per_channel: bool = True,
        preserve_zeros: bool = False,
        **kwargs: Any,
    ) -> None:
        if kwargs.get("lora_rank"):
            raise ToolkitError(
                f"{type(self).__name__} does not support LoRA (lora_rank="
                f"{kwargs['lora_rank']}). Remove lora_rank from the layer config."
            )
        super().__init__(*args, **kwargs)
        self.clusters = int(clusters)
        self.per_channel = bool(per_channel)
        self.preserve_zeros = bool(preserve_zeros)

    def _build_clustered_kernel(self, kernel_shape: tuple[int, ...]) -> None:
        layer: Any = self
        channel_shape = kernel_shape[len(kernel_shape) - self.channel_ndim :]
        groups = math.prod(channel_shape) if self.per_channel else 1

        layer.centroids = layer.add_weight(
            name="centroids",
            shape=(groups, self.clusters),
            initializer="zeros",
            trainable=True,
            dtype=layer.dtype,
        )
        layer.indices = layer.add_weight(
            name="indices",
            shape=kernel_shape,
            initializer="zeros",
            trainable=False,
            dtype="int32",
        )
        if self.preserve_zeros:
            layer.pinned = layer.add_weight(
                name="pinned",
                shape=(groups, self.clusters),
                initializer="zeros",
                trainable=False,
                dtype=layer.dtype,
            )

        # Adding these offsets turns the per-channel indices into indices of the
        # flattened centroids: channel c uses entries [c * clusters, (c + 1) * clusters).
        # The channels of a DepthwiseConv2D kernel [kh, kw, in, multiplier] are
        # numbered in * multiplier + m, the order of its output channels.
        self._index_offsets: np.ndarray | None = None
        if self.per_channel:
            channel_numbers = np.arange(groups, dtype=np.int32).reshape(channel_shape)
            self._index_offsets = channel_numbers * np.int32(self.clusters)

    def shared_kernel(self) -> Any:
        """Return the kernel gather(centroids, indices) in the variable dtype."""
        layer: Any = self
        centroids = layer.centroids
        if self.preserve_zeros:
            # where() passes no gradient to the pinned centroids and outputs exactly 0.
            centroids = ops.where(
                ops.greater(layer.pinned, 0), ops.zeros_like(centroids), centroids
            )
        indices = layer.indices
        if self._index_offsets is not None:
            indices = ops.add(indices, self._index_offsets)
        return ops.take(ops.reshape(centroids, (-1,)), indices)

    @property
    def kernel(self) -> Any:
        """The gathered kernel in the compute dtype, which the inherited `call` reads."""
        layer: Any = self
        if not layer.built:
            raise AttributeError(f"Layer {layer.name!r} must be built before reading `kernel`.")
        return ops.cast(self.shared_kernel(), layer.compute_dtype)

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_config()  # type: ignore[misc]
        config.update(
            clusters=self.clusters,
            per_channel=self.per_channel,
            preserve_zeros=self.preserve_zeros,
        )
        return config


def _build_bias(layer: Any, size: int) -> None:
    if layer.use_bias:
        layer.bias = layer.add_weight(
            name="bias",
            shape=(size,),
            initializer=layer.bias_initializer,
            regularizer=layer.bias_regularizer,
            constraint=layer.bias_constraint,
            trainable=True,
            dtype=layer.dtype,
        )
    else:
        layer.bias = None


def _input_channels(layer: Any, input_shape: Sequence[int | None]) -> int:
    channel_axis = -1 if layer.data_format == "channels_last" else 1
    channels = input_shape[channel_axis]
    if channels is None:
        raise ValueError(f"Layer {layer.name!r} needs a known channel count, got {input_shape}.")
    layer.input_spec = keras.layers.InputSpec(
        min_ndim=layer.rank + 2, axes={channel_axis: channels}
    )
    return int(channels)


@keras.saving.register_keras_serializable(package="toolkit")
class ClusteredDense(_ClusteredKernel, _Dense):
    """Dense layer whose kernel [in, out] is gather(centroids, indices), with `out` channels."""

    plain_class = keras.layers.Dense

    def build(self, input_shape: Sequence[int | None]) -> None:
        input_dim = int(input_shape[-1])  # type: ignore[arg-type]
        self._build_clustered_kernel((input_dim, self.units))
        _build_bias(self, self.units)
        self.input_spec = keras.layers.InputSpec(min_ndim=2, axes={-1: input_dim})
        self.built = True


@keras.saving.register_keras_serializable(package="toolkit")
class ClusteredConv2D(_ClusteredKernel, _Conv2D):
    """Conv2D layer whose kernel [kh, kw, in / groups, out] is gather(centroids, indices)."""

    plain_class = keras.layers.Conv2D

    def build(self, input_shape: Sequence[int | None]) -> None:
        channels = _input_channels(self, input_shape)
        if channels % self.groups != 0:
            raise ValueError(
                f"Layer {self.name!r} has {channels} input channels, which groups="
                f"{self.groups} does not divide."
            )
        # Validates the input shape, as Conv2D.build does.
        self.compute_output_shape(input_shape)
        self._build_clustered_kernel((*self.kernel_size, channels // self.groups, self.filters))
        _build_bias(self, self.filters)
        self.built = True


@keras.saving.register_keras_serializable(package="toolkit")
class ClusteredDepthwiseConv2D(_ClusteredKernel, _DepthwiseConv2D):
    """DepthwiseConv2D layer whose kernel [kh, kw, in, multiplier] is gather(centroids, indices).

    Output channel in * multiplier + m, the order of Keras and TFLite, has its own centroids.
    """

    channel_ndim = 2
    plain_class = keras.layers.DepthwiseConv2D

    def build(self, input_shape: Sequence[int | None]) -> None:
        channels = _input_channels(self, input_shape)
        self.compute_output_shape(input_shape)
        self._build_clustered_kernel((*self.kernel_size, channels, self.depth_multiplier))
        _build_bias(self, channels * self.depth_multiplier)
        self.built = True


_CLUSTERED_CLASSES: dict[type, Any] = {
    keras.layers.Dense: ClusteredDense,
    keras.layers.Conv2D: ClusteredConv2D,
    keras.layers.DepthwiseConv2D: ClusteredDepthwiseConv2D,
}
_CLUSTERABLE_NAMES = ", ".join(cls.__name__ for cls in _CLUSTERED_CLASSES)


# ---------------------------------------------------------------------------
# Model transforms
# ---------------------------------------------------------------------------


def cluster(
    model: Any,
    clusters: int = 16,
    per_channel: bool = True,
    init: ClusterInit | str = "linear",
    layers: list[str] | None = None,
    preserve_zeros: bool = False,
    seed: int = 0,
) -> Any:
    """Copy `model` and cluster the kernel of each chosen layer to `clusters` shared values.

    Each chosen Dense, Conv2D and DepthwiseConv2D layer (`layers=None` chooses
    all of them, names in nested Sequential and Functional models included)
    becomes a clustered layer of the same name. Its centroids start from
    `init` ("linear" spaces them evenly over the weight range, "kmeans++" and
    "density" follow the weight distribution) followed by k-means, and its
    indices stay fixed when the copy is fine-tuned with `model.fit`. Clustering
    is per output channel unless `per_channel` is False. With `preserve_zeros`
    exact zeros map to a centroid held at 0, one of the `clusters`. `seed` fixes
    the kmeans++ choices. All other layers and biases are copied unchanged, and
    `model` itself is not modified. The copy is not compiled.

    NOTE: kernel regularizers and constraints are not applied to the centroids
    during fine-tuning. They stay in the layer configs, so `strip_clustering`
    restores them.

    Raises ToolkitError for invalid options, an unknown or unsupported layer
    name, a subclassed or unbuilt model, and LoRA or Keras-quantized layers.
    """
    _check_options(clusters, init, seed)
    _check_model(model, "cluster")
    chosen = _choose_layers(model, layers)

    def make_layer(layer: Any) -> Any:
        if id(layer) not in chosen:
            return _copy_layer(layer)
        config = {
            **layer.get_config(),
            "clusters": clusters,
            "per_channel": per_channel,
            "preserve_zeros": preserve_zeros,
        }
        return _CLUSTERED_CLASSES[type(layer)].from_config(config)

    clone, pairs = _clone(model, make_layer)
    for old, new in pairs:
        if id(old) in chosen:
            rng = np.random.default_rng([seed, zlib.crc32(old.name.encode())])
            _assign_clusters(old, new, init, rng)
        else:
            new.set_weights(old.get_weights())
    return clone


def strip_clustering(model: Any) -> Any:
    """Copy `model` and replace every clustered layer with its standard Keras layer.

    The new kernels contain the gathered shared values, so each output channel
    has at most `clusters` distinct values. The layer names, configs and other
    weights stay the same, and `model` itself is not modified. A model without
    clustered layers gives a plain copy.
    """
    _check_model(model, "strip_clustering")

    def make_layer(layer: Any) -> Any:
        if not isinstance(layer, _ClusteredKernel):
            return _copy_layer(layer)
        config = layer.get_config()
        for key in _CLUSTER_CONFIG_KEYS:
            config.pop(key)
        return layer.plain_class.from_config(config)

    clone, pairs = _clone(model, make_layer)
    for old, new in pairs:
        if isinstance(old, _ClusteredKernel):
            weights = [old.shared_kernel().numpy()]
            if old.bias is not None:  # type: ignore[attr-defined]
                weights.append(old.bias.numpy())  # type: ignore[attr-defined]
            new.set_weights(weights)
        else:
            new.set_weights(old.get_weights())
    return clone


def _check_options(clusters: Any, init: Any, seed: Any) -> None:
    if isinstance(clusters, bool) or not isinstance(clusters, int | np.integer):
        raise ToolkitError(
            f"clusters is {clusters!r}, expected an integer from 1 to {MAX_CLUSTERS}."
        )
    if not 1 <= clusters <= MAX_CLUSTERS:
        raise ToolkitError(
            f"clusters is {clusters}, expected 1 to {MAX_CLUSTERS}, because int8 weights take "
            f"at most {MAX_CLUSTERS} distinct values. Pass a value such as 16."
        )
    if init not in INITS:
        raise ToolkitError(
            f"init is {init!r}, expected one of {', '.join(repr(name) for name in INITS)}."
        )
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ToolkitError(f"seed is {seed!r}, expected a non-negative integer.")


def _check_model(model: Any, function: str) -> None:
    if not isinstance(model, keras.Sequential | Functional):
        raise ToolkitError(
            f"{function} needs a Sequential or Functional keras.Model, received "
            f"{type(model).__name__}. Subclassed models cannot be cloned layer by layer: "
            "rebuild the model with the functional API."
        )
    if not model.built:
        raise ToolkitError(
            f"Model {model.name!r} is not built, so its layers have no weights yet. Give it "
            f"an Input or call it on data before calling {function}."
        )


def _leaf_layers(model: Any) -> Iterator[Any]:
    """Yield the layers of `model`, and those of nested Sequential and Functional models."""
    for layer in model.layers:
        if isinstance(layer, keras.Sequential | Functional):
            yield from _leaf_layers(layer)
        else:
            yield layer


def _choose_layers(model: Any, names: Sequence[str] | None) -> set[int]:
    """Return the ids of the layers to cluster; raise for unknown or unsupported names."""
    all_layers = list(_leaf_layers(model))
    clusterable = [layer for layer in all_layers if type(layer) in _CLUSTERED_CLASSES]
    clusterable_names = ", ".join(layer.name for layer in clusterable) or "none"
    if names is None:
        if not clusterable:
            raise ToolkitError(
                f"Model {model.name!r} has no {_CLUSTERABLE_NAMES} layers to cluster."
            )
        chosen = clusterable
    else:
        if isinstance(names, str):
            raise ToolkitError(
                f"layers is the string {names!r}, expected a list of layer names such as "
                f"[{names!r}]."
            )
        by_name: dict[str, list[Any]] = {}
        for layer in all_layers:
            by_name.setdefault(layer.name, []).append(layer)
        chosen = []
        for name in names:
            if name not in by_name:
                raise ToolkitError(
                    f"Layer {name!r} not found in model {model.name!r}. Clusterable layers: "
                    f"{clusterable_names}."
                )
            for layer in by_name[name]:
                if type(layer) not in _CLUSTERED_CLASSES:
                    raise ToolkitError(
                        f"Layer {name!r} is a {type(layer).__name__}, but cluster supports only "
                        f"{_CLUSTERABLE_NAMES} layers. Clusterable layers: {clusterable_names}."
                    )
                chosen.append(layer)

    for layer in chosen:
        if getattr(layer, "lora_enabled", False) or getattr(layer, "quantization_mode", None):
            raise ToolkitError(
                f"Layer {layer.name!r} uses LoRA or Keras quantization, which cluster does not "
                "support. Merge or remove them before clustering."
            )
        # DepthwiseConv2D calls them depthwise_regularizer and depthwise_constraint.
        regularizer = getattr(layer, "kernel_regularizer", None) or getattr(
            layer, "depthwise_regularizer", None
        )
        constraint = getattr(layer, "kernel_constraint", None) or getattr(
            layer, "depthwise_constraint", None
        )
        if regularizer is not None or constraint is not None:
            logger.warning(
                "layer %s: its kernel regularizer and constraint are not applied to the "
                "centroids during fine-tuning",
                layer.name,
            )
    return {id(layer) for layer in chosen}


def _copy_layer(layer: Any) -> Any:
    return layer.__class__.from_config(layer.get_config())


def _clone(model: Any, make_layer: Callable[[Any], Any]) -> tuple[Any, list[tuple[Any, Any]]]:
    """Clone `model` with `make_layer` and return the clone and the (old, new) layer pairs.

    keras.models.clone_model creates new, freshly initialised weights, so the
    caller copies the weights over pair by pair.
    """
    pairs: list[tuple[Any, Any]] = []

    def clone_layer(layer: Any) -> Any:
        new = make_layer(layer)
        pairs.append((layer, new))
        return new

    clone = keras.models.clone_model(model, clone_function=clone_layer, recursive=True)
    return clone, pairs


def _assign_clusters(old: Any, new: Any, init: str, rng: np.random.Generator) -> None:
    kernel = old.kernel.numpy()
    channel_ndim = new.channel_ndim if new.per_channel else 0
    centroids, indices, pinned = cluster_weights(
        kernel, new.clusters, channel_ndim, init, new.preserve_zeros, rng
    )
    new.centroids.assign(centroids.astype(new.centroids.dtype))
    new.indices.assign(indices)
    if new.preserve_zeros:
        new.pinned.assign(pinned.astype(new.pinned.dtype))
    if new.bias is not None:
        new.bias.assign(old.bias.numpy())

    logger.info(
        "layer %s: %d weights share %d values per %s",
        old.name,
        kernel.size,
        new.clusters,
        "output channel" if new.per_channel else "tensor",
    )
