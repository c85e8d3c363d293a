"""Magnitude pruning for Keras 3 models: one-shot or on a schedule during `model.fit`.

`prune` replaces the kernel of each chosen Dense, Conv2D and DepthwiseConv2D
layer with kernel * mask, where the mask is a non-trainable 0/1 variable of
the kernel's shape. The gradient of a masked weight is therefore 0, so
`model.fit` leaves it at 0. `strip_pruning` turns the result back into
standard Keras layers whose kernels contain exact zeros.

Masks are chosen on the [out, in * kh * kw] view of a kernel, with one row per
output channel. Each row is laid out as TFLite stores the weights (OHWI for
CONV_2D, [out, in] for FULLY_CONNECTED), so the input channel varies fastest.
A DepthwiseConv2D kernel [kh, kw, in, multiplier] has one row per output
channel in * multiplier + m and kh * kw columns. The granularities are:

- "unstructured": single weights, smallest magnitude first.
- "block": blocks of r rows x c columns (`block=(r, c)`), smallest mean
  magnitude first. Blocks at the right and bottom edges may be smaller.
- "n:m": in every group of m consecutive weights of a row (`n_m=(n, m)`),
  keep the n largest. A shorter last group keeps min(n, its length).
- "filter": whole rows (output channels, the filters), smallest L1 norm first.
- "channel": whole input channels, zeroed in every filter and kernel position,
  smallest L1 norm first. In a DepthwiseConv2D, input channel i feeds output
  channels i * multiplier ... i * multiplier + multiplier - 1, which are zeroed.

Groups are ranked by L1 norm divided by their size, which equals the L1 order
when all groups have the same size. The number of pruned groups is the one
whose weight count comes closest to sparsity * kernel size.

Importing this module imports Keras, because the pruned layers subclass Keras
layers and must be registered before a saved pruned model is loaded.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from toolkit.compress.cluster import (
    _check_model,
    _clone,
    _copy_layer,
    _KernelWrapper,
    _leaf_layers,
)
from toolkit.errors import ToolkitError
from toolkit.keras_io import import_keras

keras = import_keras()
ops = keras.ops

logger = logging.getLogger(__name__)

# Keras classes as Any-typed names, so that mypy accepts them as base classes.
_Dense: Any = keras.layers.Dense
_Conv2D: Any = keras.layers.Conv2D
_DepthwiseConv2D: Any = keras.layers.DepthwiseConv2D
_Callback: Any = keras.callbacks.Callback

Granularity = Literal["unstructured", "block", "n:m", "channel", "filter"]
GRANULARITIES: tuple[str, ...] = ("unstructured", "block", "n:m", "channel", "filter")

# Config keys that the pruned layers add to the config of the layer they replace.
_PRUNE_CONFIG_KEYS = ("sparsity", "granularity", "block", "n_m", "schedule")


# ---------------------------------------------------------------------------
# Schedules
# ---------------------------------------------------------------------------


def _check_sparsity(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ToolkitError(f"{name} is {value!r}, expected a number in [0, 1) such as 0.5.")
    if not 0.0 <= float(value) < 1.0:
        raise ToolkitError(
            f"{name} is {value}, expected a value in [0, 1): the fraction of weights set to "
            "zero, where 1 would remove every weight."
        )
    return float(value)


def _check_step(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ToolkitError(f"{name} is {value!r}, expected an integer >= {minimum}.")
    return int(value)


@dataclass(frozen=True)
class ConstantSparsity:
    """Prune to `sparsity` at `begin_step` and recompute the masks every `frequency` steps.

    Steps count optimizer updates (`optimizer.iterations`). `end_step=-1`
    keeps updating until training stops.
    """

    sparsity: float
    begin_step: int = 0
    end_step: int = -1
    frequency: int = 100

    def __post_init__(self) -> None:
        _check_sparsity(self.sparsity, "ConstantSparsity sparsity")
        _check_schedule_steps(self.begin_step, self.end_step, self.frequency, "ConstantSparsity")

    @property
    def final_sparsity(self) -> float:
        return float(self.sparsity)

    def sparsity_at(self, step: int) -> float:
        """Return the target sparsity after `step` optimizer updates."""
        return float(self.sparsity)

    def last_update_step(self, step: int) -> int | None:
        """Return the latest mask update step <= `step`, or None before `begin_step`."""
        return _last_update_step(self.begin_step, self.end_step, self.frequency, step)


@dataclass(frozen=True)
class PolynomialDecay:
    """Raise the sparsity from `initial_sparsity` to `final_sparsity` between two steps.

    The target after `step` optimizer updates is
    final + (initial - final) * (1 - (step - begin_step) / (end_step - begin_step)) ** power,
    with `step` clipped to [begin_step, end_step]. Masks are updated every
    `frequency` steps from `begin_step` and once more at `end_step`, so they
    reach `final_sparsity` when training runs past `end_step`.
    """

    initial_sparsity: float
    final_sparsity: float
    begin_step: int
    end_step: int
    power: float = 3.0
    frequency: int = 100

    def __post_init__(self) -> None:
        _check_sparsity(self.initial_sparsity, "PolynomialDecay initial_sparsity")
        _check_sparsity(self.final_sparsity, "PolynomialDecay final_sparsity")
        _check_schedule_steps(self.begin_step, self.end_step, self.frequency, "PolynomialDecay")
        if self.end_step <= self.begin_step:
            raise ToolkitError(
                f"PolynomialDecay end_step is {self.end_step}, expected a step after "
                f"begin_step {self.begin_step}."
            )
        if isinstance(self.power, bool) or not (
            isinstance(self.power, int | float) and self.power > 0
        ):
            raise ToolkitError(
                f"PolynomialDecay power is {self.power!r}, expected a positive number such as 3."
            )

    def sparsity_at(self, step: int) -> float:
        """Return the target sparsity after `step` optimizer updates."""
        clipped = min(max(step, self.begin_step), self.end_step)
        remaining = 1.0 - (clipped - self.begin_step) / (self.end_step - self.begin_step)
        value = self.final_sparsity + (self.initial_sparsity - self.final_sparsity) * (
            remaining**self.power
        )
        return float(value)

    def last_update_step(self, step: int) -> int | None:
        """Return the latest mask update step <= `step`, or None before `begin_step`."""
        return _last_update_step(self.begin_step, self.end_step, self.frequency, step)


Schedule = ConstantSparsity | PolynomialDecay
_SCHEDULE_CLASSES: dict[str, Any] = {
    "ConstantSparsity": ConstantSparsity,
    "PolynomialDecay": PolynomialDecay,
}


def _check_schedule_steps(begin_step: Any, end_step: Any, frequency: Any, name: str) -> None:
    _check_step(begin_step, f"{name} begin_step", 0)
    _check_step(end_step, f"{name} end_step", -1)
    _check_step(frequency, f"{name} frequency", 1)
    if end_step != -1 and end_step < begin_step:
        raise ToolkitError(
            f"{name} end_step is {end_step}, expected -1 (no end) or a step >= begin_step "
            f"{begin_step}."
        )


def _last_update_step(begin_step: int, end_step: int, frequency: int, step: int) -> int | None:
    if step < begin_step:
        return None
    if end_step != -1 and step >= end_step:
        return end_step
    return begin_step + (step - begin_step) // frequency * frequency


def _schedule_to_config(schedule: Schedule | None) -> dict[str, Any] | None:
    if schedule is None:
        return None
    return {"class_name": type(schedule).__name__, "config": asdict(schedule)}


def _schedule_from_config(config: Any) -> Schedule | None:
    if config is None or isinstance(config, ConstantSparsity | PolynomialDecay):
        return config
    if (
        not isinstance(config, dict)
        or config.get("class_name") not in _SCHEDULE_CLASSES
        or not isinstance(config.get("config"), dict)
    ):
        raise ToolkitError(
            f"schedule is {config!r}, expected None, a ConstantSparsity or a PolynomialDecay."
        )
    schedule: Schedule = _SCHEDULE_CLASSES[config["class_name"]](**config["config"])
    return schedule


# ---------------------------------------------------------------------------
# Masks on numpy arrays
# ---------------------------------------------------------------------------


def kernel_matrix(kernel: np.ndarray, depthwise: bool = False) -> np.ndarray:
    """Return the [out, in * kh * kw] view of a Keras kernel, rows in TFLite weight order.

    Dense [in, out] and Conv2D [kh, kw, in, out] kernels become [out, kh * kw * in]
    with the input channel varying fastest. A DepthwiseConv2D kernel
    [kh, kw, in, multiplier] becomes [in * multiplier, kh * kw].
    """
    if depthwise:
        return np.transpose(kernel, (2, 3, 0, 1)).reshape(kernel.shape[2] * kernel.shape[3], -1)
    return np.moveaxis(kernel, -1, 0).reshape(kernel.shape[-1], -1)


def kernel_from_matrix(
    matrix: np.ndarray, shape: Sequence[int], depthwise: bool = False
) -> np.ndarray:
    """Invert `kernel_matrix`: reshape a [out, ...] matrix to the Keras kernel `shape`."""
    if depthwise:
        kh, kw, channels, multiplier = shape
        return np.transpose(matrix.reshape(channels, multiplier, kh, kw), (2, 3, 0, 1))
    return np.moveaxis(matrix.reshape(shape[-1], *shape[:-1]), 0, -1)


def pruning_mask(
    kernel: np.ndarray,
    sparsity: float,
    granularity: str = "unstructured",
    block: Sequence[int] = (1, 4),
    n_m: Sequence[int] = (2, 4),
    depthwise: bool = False,
) -> np.ndarray:
    """Compute a 0/1 float32 mask of the kernel's shape that zeros the smallest weights.

    `kernel` is a Keras kernel, and `depthwise` marks a DepthwiseConv2D kernel.
    For "n:m" the pattern fixes the sparsity, so `sparsity` is not used. The
    other granularities zero the groups of the smallest magnitude, as the
    module docstring describes.
    """
    sparsity = _check_sparsity(sparsity, "sparsity")
    _check_granularity(granularity)
    block = _check_pair(block, "block")
    n_m = _check_n_m(n_m)
    kernel = np.asarray(kernel)
    if kernel.ndim not in (2, 4) or (depthwise and kernel.ndim != 4):
        raise ToolkitError(
            f"Kernel shape {kernel.shape} is not a Dense [in, out], Conv2D [kh, kw, in, out] "
            "or DepthwiseConv2D [kh, kw, in, multiplier] kernel."
        )

    magnitude = np.abs(kernel_matrix(kernel.astype(np.float64), depthwise))
    if granularity == "n:m":
        keep = _n_m_keep(magnitude, *n_m)
    else:
        labels = _group_labels(magnitude.shape, granularity, block, kernel, depthwise)
        keep = _keep_groups(magnitude, labels, sparsity)
    return kernel_from_matrix(keep.astype(np.float32), kernel.shape, depthwise)


def _group_labels(
    shape: tuple[int, ...],
    granularity: str,
    block: tuple[int, int],
    kernel: np.ndarray,
    depthwise: bool,
) -> np.ndarray:
    """Return the group number of every element of the [out, columns] matrix."""
    rows, columns = shape
    row_index, column_index = np.indices(shape)
    if granularity == "unstructured":
        return np.arange(rows * columns).reshape(shape)
    if granularity == "filter":
        return row_index
    if granularity == "block":
        block_rows, block_columns = block
        blocks_per_row = -(-columns // block_columns)
        return (row_index // block_rows) * blocks_per_row + column_index // block_columns
    # "channel": the input channel of each element.
    if depthwise:
        return row_index // kernel.shape[3]
    input_channels = kernel.shape[-2] if kernel.ndim == 4 else kernel.shape[0]
    return column_index % input_channels


def _keep_groups(magnitude: np.ndarray, labels: np.ndarray, sparsity: float) -> np.ndarray:
    """Return a keep mask without the groups of smallest mean magnitude, about `sparsity` of all."""
    flat_labels = labels.ravel()
    sizes = np.bincount(flat_labels)
    scores = np.bincount(flat_labels, weights=magnitude.ravel()) / np.maximum(sizes, 1)
    order = np.argsort(scores, kind="stable")
    pruned_counts = np.concatenate([[0], np.cumsum(sizes[order])])
    group_count = int(np.argmin(np.abs(pruned_counts - sparsity * magnitude.size)))
    pruned = np.zeros(sizes.size, dtype=bool)
    pruned[order[:group_count]] = True
    return ~pruned[labels]


def _n_m_keep(magnitude: np.ndarray, n: int, m: int) -> np.ndarray:
    """Keep the n largest of every m consecutive weights of each row."""
    rows, columns = magnitude.shape
    padded_columns = -(-columns // m) * m
    # Padding ranks below every real magnitude, so a short last group keeps its own weights.
    padded = np.full((rows, padded_columns), -1.0)
    padded[:, :columns] = magnitude
    groups = padded.reshape(rows, -1, m)
    # The rank of each weight in its group, 0 for the largest. Ties go to the earlier weight.
    descending = np.argsort(-groups, axis=-1, kind="stable")
    ranks = np.argsort(descending, axis=-1, kind="stable")
    return (ranks < n).reshape(rows, padded_columns)[:, :columns]


def _check_granularity(granularity: Any) -> None:
    if granularity not in GRANULARITIES:
        raise ToolkitError(
            f"granularity is {granularity!r}, expected one of "
            f"{', '.join(repr(name) for name in GRANULARITIES)}."
        )


def _check_pair(value: Any, name: str) -> tuple[int, int]:
    if (
        isinstance(value, str)
        or not isinstance(value, Sequence)
        or len(value) != 2
        or any(isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1 for v in value)
    ):
        raise ToolkitError(
            f"{name} is {value!r}, expected two positive integers such as (1, 4): rows of "
            "output channels and columns of input weights."
        )
    return int(value[0]), int(value[1])


def _check_n_m(value: Any) -> tuple[int, int]:
    try:
        n, m = _check_pair(value, "n_m")
    except ToolkitError:
        raise ToolkitError(
            f"n_m is {value!r}, expected two positive integers (n, m) such as (2, 4): keep n "
            "weights in every m consecutive weights."
        ) from None
    if n >= m:
        raise ToolkitError(
            f"n_m is {value!r}, but n must be less than m, otherwise nothing is pruned. Pass a "
            "pattern such as (2, 4)."
        )
    return n, m


# ---------------------------------------------------------------------------
# Pruned Keras layers
# ---------------------------------------------------------------------------


class _PrunedKernel(_KernelWrapper):
    """Mixin that multiplies a layer's kernel by a non-trainable 0/1 mask.

    A subclass derives from this mixin and then from the Keras class that it
    replaces. Its `build` creates `_kernel` (the stored weights) and calls
    `_build_mask`. The inherited `call` reads `self.kernel`, which is
    _kernel * pruning_mask here, so masked weights receive no gradient.
    """

    _wrapper_kind = "pruned"
    _strip_function = "strip_pruning"

    # The standard Keras class that strip_pruning puts back.
    plain_class: Any = None
    depthwise = False

    def __init__(
        self,
        *args: Any,
        sparsity: float = 0.5,
        granularity: str = "unstructured",
        block: Sequence[int] = (1, 4),
        n_m: Sequence[int] = (2, 4),
        schedule: Any = None,
        **kwargs: Any,
    ) -> None:
        if kwargs.get("lora_rank"):
            raise ToolkitError(
                f"{type(self).__name__} does not support LoRA (lora_rank="
                f"{kwargs['lora_rank']}). Remove lora_rank from the layer config."
            )
        super().__init__(*args, **kwargs)
        self.sparsity = _check_sparsity(sparsity, "sparsity")
        _check_granularity(granularity)
        self.granularity = granularity
        self.block = _check_pair(block, "block")
        self.n_m = _check_n_m(n_m)
        self.schedule = _schedule_from_config(schedule)

    def _build_mask(self) -> None:
        layer: Any = self
        layer.pruning_mask = layer.add_weight(
            name="pruning_mask",
            shape=tuple(layer._kernel.shape),
            initializer="ones",
            trainable=False,
            dtype=layer.dtype,
        )

    @property
    def kernel(self) -> Any:
        """The masked kernel in the compute dtype, which the inherited `call` reads."""
        layer: Any = self
        if not layer.built:
            raise AttributeError(f"Layer {layer.name!r} must be built before reading `kernel`.")
        masked = ops.multiply(layer._kernel, layer.pruning_mask)
        return ops.cast(masked, layer.compute_dtype)

    def masked_kernel(self) -> np.ndarray:
        """Return the stored kernel with the masked weights set to exactly +0.0."""
        layer: Any = self
        kernel = layer._kernel.numpy()
        mask = layer.pruning_mask.numpy()
        return np.where(mask > 0, kernel, np.zeros_like(kernel))

    def update_mask(self, sparsity: float | None = None) -> None:
        """Recompute the mask from the current masked kernel and zero the stored masked weights.

        Already masked weights have magnitude 0 and rank first, so a sparsity at
        least as high as before keeps them masked. `sparsity` defaults to the
        layer's `sparsity` setting.

        NOTE: an optimizer with momentum can still move a stored weight that was
        masked during training, but `kernel`, `masked_kernel` and `strip_pruning`
        apply the mask, so the weight stays 0 in every output.
        """
        layer: Any = self
        target = self.sparsity if sparsity is None else sparsity
        kernel = self.masked_kernel()
        mask = pruning_mask(kernel, target, self.granularity, self.block, self.n_m, self.depthwise)
        layer.pruning_mask.assign(mask.astype(layer.pruning_mask.dtype))
        layer._kernel.assign(np.where(mask > 0, kernel, 0).astype(kernel.dtype))

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_config()  # type: ignore[misc]
        config.update(
            sparsity=self.sparsity,
            granularity=self.granularity,
            block=list(self.block),
            n_m=list(self.n_m),
            schedule=_schedule_to_config(self.schedule),
        )
        return config


@keras.saving.register_keras_serializable(package="toolkit")
class PrunedDense(_PrunedKernel, _Dense):
    """Dense layer whose kernel [in, out] is multiplied by a 0/1 mask."""

    plain_class = keras.layers.Dense

    def build(self, input_shape: Sequence[int | None]) -> None:
        _Dense.build(self, input_shape)
        self._build_mask()


@keras.saving.register_keras_serializable(package="toolkit")
class PrunedConv2D(_PrunedKernel, _Conv2D):
    """Conv2D layer whose kernel [kh, kw, in / groups, out] is multiplied by a 0/1 mask."""

    plain_class = keras.layers.Conv2D

    def build(self, input_shape: Sequence[int | None]) -> None:
        _Conv2D.build(self, input_shape)
        self._build_mask()


@keras.saving.register_keras_serializable(package="toolkit")
class PrunedDepthwiseConv2D(_PrunedKernel, _DepthwiseConv2D):
    """DepthwiseConv2D layer whose kernel [kh, kw, in, multiplier] is multiplied by a 0/1 mask."""

    plain_class = keras.layers.DepthwiseConv2D
    depthwise = True

    def build(self, input_shape: Sequence[int | None]) -> None:
        # DepthwiseConv2D.build assigns `self.kernel`, which is a read-only property here,
        # so this build creates the same variables under `_kernel`.
        channel_axis = -1 if self.data_format == "channels_last" else 1
        channels = input_shape[channel_axis]
        if channels is None:
            raise ValueError(f"Layer {self.name!r} needs a known channel count, got {input_shape}.")

        self.input_spec = keras.layers.InputSpec(
            min_ndim=self.rank + 2, axes={channel_axis: channels}
        )
        # Validates the input shape, as DepthwiseConv2D.build does.
        self.compute_output_shape(input_shape)

        self._kernel = self.add_weight(
            name="kernel",
            shape=(*self.kernel_size, channels, self.depth_multiplier),
            initializer=self.depthwise_initializer,
            regularizer=self.depthwise_regularizer,
            constraint=self.depthwise_constraint,
            trainable=True,
            dtype=self.dtype,
        )
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias",
                shape=(channels * self.depth_multiplier,),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
                trainable=True,
                dtype=self.dtype,
            )
        else:
            self.bias = None

        self._build_mask()
        self.built = True


_PRUNED_CLASSES: dict[type, Any] = {
    keras.layers.Dense: PrunedDense,
    keras.layers.Conv2D: PrunedConv2D,
    keras.layers.DepthwiseConv2D: PrunedDepthwiseConv2D,
}
_PRUNABLE_NAMES = ", ".join(cls.__name__ for cls in _PRUNED_CLASSES)


# ---------------------------------------------------------------------------
# Model transforms
# ---------------------------------------------------------------------------


def prune(
    model: Any,
    sparsity: float = 0.5,
    granularity: Granularity | str = "unstructured",
    block: Sequence[int] = (1, 4),
    n_m: Sequence[int] = (2, 4),
    schedule: Schedule | None = None,
    layers: list[str] | None = None,
) -> Any:
    """Copy `model` and mask the kernel of each chosen layer by weight magnitude.

    Each chosen Dense, Conv2D and DepthwiseConv2D layer (`layers=None` chooses
    all of them, names in nested Sequential and Functional models included)
    becomes a pruned layer of the same name, whose forward pass uses
    kernel * mask. Without `schedule` the masks are computed at once, zeroing
    `sparsity` of each layer's weights in the pattern of `granularity` (see the
    module docstring). With a ConstantSparsity or PolynomialDecay `schedule`,
    the masks start as all ones and `PruningCallback` updates them during
    `model.fit`, and `sparsity` is not used. For "n:m" the pattern fixes the
    sparsity at 1 - n / m, and a shorter last group of a row keeps min(n, its
    length). So "n:m" uses neither `sparsity` nor the schedule's values, but
    the schedule still sets the steps at which the masks are computed.

    All other layers and biases are copied unchanged, and `model` itself is not
    modified. The copy is not compiled.

    Raises ToolkitError for invalid options, an unknown or unsupported layer
    name, an already pruned layer, a subclassed or unbuilt model, and LoRA or
    Keras-quantized layers.
    """
    sparsity = _check_sparsity(sparsity, "sparsity")
    _check_granularity(granularity)
    block = _check_pair(block, "block")
    n_m = _check_n_m(n_m)
    if schedule is not None and not isinstance(schedule, ConstantSparsity | PolynomialDecay):
        raise ToolkitError(
            f"schedule is a {type(schedule).__name__}, expected None (one-shot), "
            "ConstantSparsity or PolynomialDecay from toolkit.compress.prune."
        )
    _check_model(model, "prune")
    chosen = _choose_layers(model, layers)

    def make_layer(layer: Any) -> Any:
        if id(layer) not in chosen:
            return _copy_layer(layer)
        config = {
            **layer.get_config(),
            "sparsity": sparsity,
            "granularity": granularity,
            "block": list(block),
            "n_m": list(n_m),
            "schedule": _schedule_to_config(schedule),
        }
        return _PRUNED_CLASSES[type(layer)].from_config(config)

    clone, pairs = _clone(model, make_layer)
    for old, new in pairs:
        if id(old) not in chosen:
            new.set_weights(old.get_weights())
            continue
        new._kernel.assign(old.kernel.numpy())
        if old.bias is not None:
            new.bias.assign(old.bias.numpy())
        if schedule is None:
            new.update_mask()
            logger.info(
                "layer %s: %s pruning zeroed %.1f%% of %d weights",
                old.name,
                granularity,
                100.0 * float(np.mean(new.masked_kernel() == 0)),
                math.prod(new._kernel.shape),
            )
    return clone


def strip_pruning(model: Any) -> Any:
    """Copy `model` and replace every pruned layer with its standard Keras layer.

    The new kernels contain the masked weights as exact zeros (+0.0). Layer
    names, configs and other weights stay the same, and `model` itself is not
    modified. A model without pruned layers gives a plain copy.
    """
    _check_model(model, "strip_pruning")

    def make_layer(layer: Any) -> Any:
        if not isinstance(layer, _PrunedKernel):
            return _copy_layer(layer)
        config = layer.get_config()
        for key in _PRUNE_CONFIG_KEYS:
            config.pop(key)
        return layer.plain_class.from_config(config)

    clone, pairs = _clone(model, make_layer)
    for old, new in pairs:
        if isinstance(old, _PrunedKernel):
            weights = [old.masked_kernel()]
            if old.bias is not None:  # type: ignore[attr-defined]
                weights.append(old.bias.numpy())  # type: ignore[attr-defined]
            new.set_weights(weights)
        else:
            new.set_weights(old.get_weights())
    return clone


def kernel_sparsity(model: Any) -> dict[str, float]:
    """Return the fraction of exact zeros in the kernel of each Dense, Conv2D and
    DepthwiseConv2D layer, pruned or plain, keyed by layer name.

    A pruned layer counts the zeros of its masked kernel.
    """
    result = {}
    for layer in _leaf_layers(model):
        if isinstance(layer, _PrunedKernel):
            result[layer.name] = float(np.mean(layer.masked_kernel() == 0))  # type: ignore[attr-defined]
        elif type(layer) in _PRUNED_CLASSES:
            result[layer.name] = float(np.mean(layer.kernel.numpy() == 0))
    return result


class PruningCallback(_Callback):
    """Update the masks of the pruned layers on their schedules during `model.fit`.

    The schedule step is the optimizer's update count (`optimizer.iterations`)
    before each batch, so it continues across `fit` calls. When an update step
    of a layer's schedule has been reached since its last update, the mask is
    recomputed from the current masked kernel at the schedule's sparsity for
    that step. Masked weights have magnitude 0 and rank first, so a rising
    sparsity never unmasks a weight, and a weight that training drives to
    exactly 0 may be masked earlier than others of its magnitude rank.
    Layers pruned without a schedule keep their masks.

    Raises ToolkitError at the start of training when the model has no pruned layers.
    """

    def __init__(self) -> None:
        super().__init__()
        self._layers: list[Any] = []
        self._last_update: dict[int, int] = {}

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        pruned = [layer for layer in _leaf_layers(self.model) if isinstance(layer, _PrunedKernel)]
        if not pruned:
            raise ToolkitError(
                f"PruningCallback found no pruned layers in model {self.model.name!r}. Call "
                "toolkit.compress.prune.prune on the model before training it with this callback."
            )
        self._layers = [layer for layer in pruned if layer.schedule is not None]
        if not self._layers:
            logger.info(
                "model %s: the pruned layers have no schedule, so their masks stay fixed",
                self.model.name,
            )

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if not self._layers:
            return
        step = int(self.model.optimizer.iterations.numpy())
        for layer in self._layers:
            due = layer.schedule.last_update_step(step)
            if due is None or self._last_update.get(id(layer)) == due:
                continue
            target = layer.schedule.sparsity_at(due)
            layer.update_mask(target)
            self._last_update[id(layer)] = due
            logger.debug(
                "layer %s: mask updated at step %d to sparsity %.3f", layer.name, due, target
            )


def _choose_layers(model: Any, names: Sequence[str] | None) -> set[int]:
    """Return the ids of the layers to prune. Raise for unknown or unsupported names."""
    all_layers = list(_leaf_layers(model))
    prunable = [layer for layer in all_layers if type(layer) in _PRUNED_CLASSES]
    prunable_names = ", ".join(layer.name for layer in prunable) or "none"
    if names is None:
        if not prunable:
            raise ToolkitError(f"Model {model.name!r} has no {_PRUNABLE_NAMES} layers to prune.")
        chosen = prunable
    else:
        if isinstance(names, str) or not isinstance(names, Sequence):
            raise ToolkitError(
                f"layers is {names!r}, expected a list of layer names such as [{names!r}]."
            )
        by_name: dict[str, list[Any]] = {}
        for layer in all_layers:
            by_name.setdefault(layer.name, []).append(layer)
        chosen = []
        for name in names:
            if name not in by_name:
                raise ToolkitError(
                    f"Layer {name!r} not found in model {model.name!r}. Prunable layers: "
                    f"{prunable_names}."
                )
            for layer in by_name[name]:
                if isinstance(layer, _PrunedKernel):
                    raise ToolkitError(
                        f"Layer {name!r} is already pruned. Call strip_pruning first, then "
                        "prune the stripped model."
                    )
                if type(layer) not in _PRUNED_CLASSES:
                    raise ToolkitError(
                        f"Layer {name!r} is a {type(layer).__name__}, but prune supports only "
                        f"{_PRUNABLE_NAMES} layers. Prunable layers: {prunable_names}."
                    )
                chosen.append(layer)

    for layer in chosen:
        if getattr(layer, "lora_enabled", False) or getattr(layer, "quantization_mode", None):
            raise ToolkitError(
                f"Layer {layer.name!r} uses LoRA or Keras quantization, which prune does not "
                "support. Merge or remove them before pruning."
            )
    return {id(layer) for layer in chosen}
