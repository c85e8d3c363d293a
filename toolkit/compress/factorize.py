"""Low-rank factorization of Dense and Conv2D layers by truncated SVD.

A Dense layer with kernel W [in, out] becomes Dense(r, linear, no bias) followed
by Dense(out) with the original bias and activation. The kernels A and B of the
two layers, with W ~ A @ B, come from the r largest singular values of W, whose
square roots are split between A and B.

A Conv2D layer with kernel K [kh, kw, cin, cout] becomes one of two forms:

- "pointwise": a kh x kw convolution into r channels, then a 1x1 convolution
  to cout channels, from the SVD of K reshaped to [kh*kw*cin, cout];
- "separable": a kh x 1 convolution into r channels, then a 1 x kw convolution
  to cout channels, from the SVD of K rearranged to [kh*cin, kw*cout].

The first factor keeps the strides, padding and dilation of the original in
the dimensions it covers, and the last factor carries the bias and the
activation. Both forms compute the same function as the original layer when
r is the full rank of the matrix, because zero padding and strides act on
height and width independently and the first factor has no bias.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from toolkit.errors import ToolkitError
from toolkit.keras_io import import_keras
from toolkit.report import format_table

if TYPE_CHECKING:
    import keras

DEFAULT_ENERGY = 0.9
CONV_FORMS = ("auto", "pointwise", "separable")

# Relative slack when comparing cumulative energy with the requested fraction, so
# that energy=1.0 is met despite rounding in the sum of squared singular values.
_ENERGY_TOLERANCE = 1e-9


@dataclass
class LayerFactorization:
    """One row of a factorization report: a Dense or Conv2D layer and what became of it."""

    name: str
    kind: str
    original_parameters: int
    parameters: int
    rank: int | None = None
    form: str | None = None
    energy: float | None = None
    note: str = ""

    @property
    def factorized(self) -> bool:
        return self.form is not None


@dataclass
class FactorizeResult:
    """The factorized model and one row per Dense or Conv2D layer of the input model."""

    model: keras.Model
    layers: list[LayerFactorization]
    original_parameters: int
    parameters: int
    criterion: str = ""

    @property
    def saved_parameters(self) -> int:
        return self.original_parameters - self.parameters

    def summary(self) -> str:
        """Format a table of the layers and the total parameter counts before and after."""
        factorized = sum(row.factorized for row in self.layers)
        share = self.saved_parameters / self.original_parameters if self.original_parameters else 0
        headers = ["layer", "kind", "params", "factorized", "rank", "form", "energy", "note"]
        rows = [
            [
                row.name,
                row.kind,
                f"{row.original_parameters:,}",
                f"{row.parameters:,}",
                "-" if row.rank is None else str(row.rank),
                row.form or "-",
                "-" if row.energy is None else f"{row.energy:.3f}",
                row.note,
            ]
            for row in self.layers
        ]
        lines = [
            f"factorized {factorized} of {len(self.layers)} Dense/Conv2D layers"
            + (f" ({self.criterion})" if self.criterion else ""),
            f"parameters: {self.original_parameters:,} -> {self.parameters:,} "
            f"({self.saved_parameters:,} fewer, {share:.1%})",
            "energy is the fraction of the squared singular values kept; the relative "
            "Frobenius error of the kernel is sqrt(1 - energy)",
            "",
            format_table(headers, rows, right={2, 3, 4, 6}),
        ]
        return "\n".join(lines)


@dataclass
class Replacement:
    """New layers, applied in sequence, that take the place of one layer of a model.

    `weights[i]` is passed to `layers[i].set_weights` once the new model is built.
    """

    layers: list[Any]
    weights: list[list[np.ndarray]]


@dataclass
class _Criterion:
    """How to choose the rank of each layer: a fixed rank, an energy fraction or a size ratio."""

    rank: int | None = None
    energy: float | None = None
    target_ratio: float | None = None

    def describe(self) -> str:
        if self.rank is not None:
            return f"rank {self.rank}"
        if self.energy is not None:
            return f"energy {self.energy:g}"
        return f"target ratio {self.target_ratio:g}"


@dataclass
class _Candidate:
    """A factorization of one layer in one form, at the rank the criterion chose."""

    form: str
    rank: int
    parameters: int
    energy: float
    build: Callable[[], Replacement] = field(repr=False)


def factorize(
    model: keras.Model,
    rank: int | None = None,
    energy: float | None = DEFAULT_ENERGY,
    target_ratio: float | None = None,
    layers: list[str] | None = None,
    *,
    conv_form: str = "auto",
    allow_larger: bool = False,
) -> FactorizeResult:
    """Replace Dense and Conv2D layers by two low-rank factors and return the new model.

    Exactly one criterion chooses the rank r of each layer:

    - `rank`: the same r for every layer, capped at the full rank of its matrix;
    - `energy`: the smallest r whose squared singular values sum to at least this
      fraction of the total, in (0, 1];
    - `target_ratio`: the largest r whose factors have at most this fraction of the
      layer's parameters (kernel and bias), in (0, 1].

    `energy` defaults to 0.9 and applies only when `rank` and `target_ratio` are
    None. Passing `rank` or `target_ratio` together with an energy other than the
    default raises ToolkitError.

    `layers` names the layers to consider (default: every Dense and Conv2D layer).
    `conv_form` is "auto", "pointwise" or "separable". With "auto" each Conv2D
    gets the form with fewer parameters (more energy kept breaks ties), or under
    `target_ratio` the form that keeps more energy. Layers whose factors
    would not have fewer parameters are left alone and reported, unless
    `allow_larger` is true.

    The input model is not changed. Nested models are copied unchanged and their
    layers are not factorized. Regularizers and constraints of a factorized layer
    are not copied to its factors.
    """
    keras = import_keras()
    criterion = _criterion(rank, energy, target_ratio)
    if conv_form not in CONV_FORMS:
        raise ToolkitError(
            f"conv_form is {conv_form!r}, expected one of {', '.join(CONV_FORMS)}. Use auto to "
            "choose the smaller form per layer."
        )
    selected = _selected_layers(model, layers)

    rows: list[LayerFactorization] = []
    replacements: dict[str, Replacement] = {}
    for layer in model.layers:
        if layer.name not in selected:
            continue
        row, replacement = _factorize_layer(keras, layer, criterion, conv_form, allow_larger)
        rows.append(row)
        if replacement is not None:
            replacements[layer.name] = replacement

    new_model = replace_layers(model, replacements)
    return FactorizeResult(
        model=new_model,
        layers=rows,
        original_parameters=int(model.count_params()),
        parameters=int(new_model.count_params()),
        criterion=criterion.describe(),
    )


def replace_layers(model: keras.Model, replacements: Mapping[str, Replacement]) -> keras.Model:
    """Copy a Sequential or Functional model with some layers replaced by sequences of layers.

    Every other layer is rebuilt from its config and gets a copy of its weights,
    so the new model shares no variables with `model`. Layers called more than
    once (shared layers) are replaced by the same new layers at every call.
    """
    keras = import_keras()
    for name, replacement in replacements.items():
        if len(replacement.layers) != len(replacement.weights):
            raise ToolkitError(
                f"the replacement of layer {name!r} has {len(replacement.layers)} layers but "
                f"{len(replacement.weights)} weight lists; give one weight list per layer"
            )
    existing = {layer.name for layer in model.layers}
    for name, replacement in replacements.items():
        for new_layer in replacement.layers:
            if new_layer.name in existing:
                raise ToolkitError(
                    f"the replacement of layer {name!r} contains a layer named "
                    f"{new_layer.name!r}, which the model already has; rename the model layer"
                )

    def copy_layer(layer: Any) -> Any:
        if layer.name in replacements:
            # Never called: call_layer applies the replacement layers instead.
            return layer
        return layer.__class__.from_config(layer.get_config())

    if isinstance(model, keras.Sequential):
        new_model = _replace_in_sequential(keras, model, replacements, copy_layer)
    elif _is_functional(model):

        def call_layer(layer: Any, *args: Any, **kwargs: Any) -> Any:
            if layer.name not in replacements:
                return layer(*args, **kwargs)
            if len(args) != 1:
                raise ToolkitError(
                    f"layer {layer.name!r} is called with {len(args)} positional inputs, but "
                    "only layers with one input can be replaced"
                )
            outputs = args[0]
            for new_layer in replacements[layer.name].layers:
                outputs = new_layer(outputs)
            return outputs

        # Keep the names of the input layers, which clone_model would take from the
        # input tensors instead.
        input_tensors = keras.tree.map_structure(
            lambda tensor: keras.Input(
                batch_shape=tuple(tensor.shape),
                dtype=tensor.dtype,
                name=tensor._keras_history.operation.name,
            ),
            model.input,
        )
        new_model = keras.models.clone_model(
            model,
            input_tensors=input_tensors,
            clone_function=copy_layer,
            call_function=call_layer,
        )
    else:
        raise ToolkitError(
            f"model {model.name!r} is a subclassed {type(model).__name__}, whose layer graph "
            "cannot be rebuilt; build it as a Sequential or Functional model"
        )

    _copy_weights(model, new_model, replacements)
    return new_model


def _replace_in_sequential(
    keras: Any,
    model: Any,
    replacements: Mapping[str, Replacement],
    copy_layer: Callable[[Any], Any],
) -> Any:
    try:
        input_tensor = model.inputs[0]
    except (AttributeError, ValueError, IndexError, TypeError) as error:
        raise ToolkitError(
            f"Sequential model {model.name!r} has no defined input ({error}); start it with "
            "keras.Input(shape=...) or call it once on data"
        ) from error

    new_layers: list[Any] = [
        keras.Input(batch_shape=tuple(input_tensor.shape), dtype=input_tensor.dtype)
    ]
    for layer in model.layers:
        if layer.name in replacements:
            new_layers.extend(replacements[layer.name].layers)
        else:
            new_layers.append(copy_layer(layer))
    return keras.Sequential(new_layers, name=model.name)


def _copy_weights(model: Any, new_model: Any, replacements: Mapping[str, Replacement]) -> None:
    for layer in model.layers:
        replacement = replacements.get(layer.name)
        if replacement is None:
            if not layer.weights:
                continue
            new_model.get_layer(layer.name).set_weights(layer.get_weights())
            continue
        for new_layer, weights in zip(replacement.layers, replacement.weights, strict=True):
            new_layer.set_weights(weights)


def _is_functional(model: Any) -> bool:
    from keras.src.models.functional import Functional

    return isinstance(model, Functional)


def _criterion(rank: int | None, energy: float | None, target_ratio: float | None) -> _Criterion:
    others = [
        name
        for name, value in (("rank", rank), ("target_ratio", target_ratio))
        if value is not None
    ]
    if len(others) == 2:
        raise ToolkitError(
            "both rank and target_ratio are given; pass exactly one of rank, energy and "
            "target_ratio"
        )
    if others and energy is not None and energy != DEFAULT_ENERGY:
        raise ToolkitError(
            f"{others[0]} and energy={energy} are both given; pass exactly one of rank, energy "
            "and target_ratio"
        )

    if rank is not None:
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise ToolkitError(f"rank is {rank!r}, expected an integer of at least 1")
        return _Criterion(rank=rank)
    if target_ratio is not None:
        if not 0 < target_ratio <= 1:
            raise ToolkitError(
                f"target_ratio is {target_ratio}, expected a fraction of the layer parameters "
                "in (0, 1]"
            )
        return _Criterion(target_ratio=float(target_ratio))
    if energy is None:
        raise ToolkitError("rank, energy and target_ratio are all None; pass exactly one of them")
    if not 0 < energy <= 1:
        raise ToolkitError(
            f"energy is {energy}, expected the fraction of squared singular values to keep, in "
            "(0, 1]"
        )
    return _Criterion(energy=float(energy))


def _selected_layers(model: Any, names: Sequence[str] | None) -> set[str]:
    keras = import_keras()
    if names is None:
        return {
            layer.name
            for layer in model.layers
            if isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D, keras.Model))
        }
    known = {layer.name for layer in model.layers}
    missing = [name for name in names if name not in known]
    if missing:
        raise ToolkitError(
            f"layers {missing} not found in model {model.name!r}; its layers are {sorted(known)}"
        )
    return set(names)


def _factorize_layer(
    keras: Any, layer: Any, criterion: _Criterion, conv_form: str, allow_larger: bool
) -> tuple[LayerFactorization, Replacement | None]:
    kind = type(layer).__name__
    parameters = int(layer.count_params())
    row = LayerFactorization(layer.name, kind, parameters, parameters)

    if isinstance(layer, keras.Model):
        row.note = "nested model: copied unchanged"
        return row, None
    if isinstance(layer, keras.layers.Dense):
        candidates = [_dense_candidate(keras, layer, criterion)]
    elif isinstance(layer, keras.layers.Conv2D):
        if layer.groups != 1:
            row.note = f"grouped convolution (groups={layer.groups}): not factorized"
            return row, None
        candidates = _conv_candidates(keras, layer, criterion, conv_form)
    else:
        row.note = f"{kind} is not factorized (only Dense and Conv2D are)"
        return row, None

    usable = [candidate for candidate in candidates if candidate.rank >= 1]
    if not usable:
        row.note = "left alone: even rank 1 has more parameters than the target ratio allows"
        return row, None
    if criterion.target_ratio is not None:
        # Both forms fit the same parameter budget, so keep the more accurate one.
        best = min(usable, key=lambda c: (-c.energy, c.parameters))
    else:
        best = min(usable, key=lambda c: (c.parameters, -c.energy))

    if best.parameters >= parameters and not allow_larger:
        row.note = (
            f"left alone: rank {best.rank} ({best.form}) needs {best.parameters:,} parameters, "
            f"not fewer than {parameters:,}"
        )
        return row, None

    row.parameters = best.parameters
    row.rank = best.rank
    row.form = best.form
    row.energy = best.energy
    return row, best.build()


def _numpy(variable: Any) -> np.ndarray:
    keras = import_keras()
    return np.asarray(keras.ops.convert_to_numpy(variable), dtype=np.float64)


def _split_svd(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return U, the singular values and Vt of `matrix` (float64, thin SVD)."""
    u, singular_values, vt = np.linalg.svd(matrix, full_matrices=False)
    return u, singular_values, vt


def _energy(singular_values: np.ndarray, rank: int) -> float:
    squares = singular_values.astype(np.float64) ** 2
    total = float(squares.sum())
    return 1.0 if total == 0 else float(squares[:rank].sum() / total)


def _rank_for(
    criterion: _Criterion,
    singular_values: np.ndarray,
    parameters_at: Callable[[int], int],
    original_parameters: int,
) -> int:
    """Return the rank the criterion chooses, or 0 when no rank fits a target ratio."""
    full_rank = len(singular_values)
    if criterion.rank is not None:
        return min(criterion.rank, full_rank)
    if criterion.energy is not None:
        squares = singular_values.astype(np.float64) ** 2
        total = float(squares.sum())
        if total == 0:
            return 1
        cumulative = np.cumsum(squares) / total
        needed = criterion.energy - _ENERGY_TOLERANCE
        index = int(np.searchsorted(cumulative, needed))
        return min(index + 1, full_rank)

    assert criterion.target_ratio is not None
    budget = criterion.target_ratio * original_parameters
    per_rank = parameters_at(1) - parameters_at(0)
    rank = math.floor((budget - parameters_at(0)) / per_rank) if per_rank > 0 else 0
    return max(0, min(rank, full_rank))


def _dense_candidate(keras: Any, layer: Any, criterion: _Criterion) -> _Candidate:
    kernel = _numpy(layer.kernel)
    bias = _numpy(layer.bias) if layer.use_bias else None
    inputs, units = kernel.shape
    bias_count = units if layer.use_bias else 0

    def parameters_at(rank: int) -> int:
        return rank * (inputs + units) + bias_count

    u, singular_values, vt = _split_svd(kernel)
    rank = _rank_for(criterion, singular_values, parameters_at, int(layer.count_params()))

    def build() -> Replacement:
        root = np.sqrt(singular_values[:rank])
        first_kernel = u[:, :rank] * root
        second_kernel = root[:, np.newaxis] * vt[:rank]
        config = layer.get_config()
        first = keras.layers.Dense(
            rank, use_bias=False, name=f"{layer.name}_factor1", dtype=layer.dtype_policy
        )
        second = keras.layers.Dense(
            units,
            activation=config["activation"],
            use_bias=layer.use_bias,
            name=f"{layer.name}_factor2",
            dtype=layer.dtype_policy,
        )
        second_weights = [second_kernel] if bias is None else [second_kernel, bias]
        return Replacement([first, second], [[first_kernel], second_weights])

    energy = _energy(singular_values, rank) if rank else 0.0
    return _Candidate("dense", rank, parameters_at(rank), energy, build)


def _conv_candidates(
    keras: Any, layer: Any, criterion: _Criterion, conv_form: str
) -> list[_Candidate]:
    kernel = _numpy(layer.kernel)
    bias = _numpy(layer.bias) if layer.use_bias else None
    kernel_h, kernel_w, channels_in, channels_out = kernel.shape
    bias_count = channels_out if layer.use_bias else 0
    original = int(layer.count_params())
    candidates = []

    if conv_form in ("auto", "pointwise"):
        matrix = kernel.reshape(kernel_h * kernel_w * channels_in, channels_out)
        u, singular_values, vt = _split_svd(matrix)

        def pointwise_parameters(rank: int) -> int:
            return rank * (kernel_h * kernel_w * channels_in + channels_out) + bias_count

        rank = _rank_for(criterion, singular_values, pointwise_parameters, original)

        def build_pointwise(rank: int = rank) -> Replacement:
            root = np.sqrt(singular_values[:rank])
            first_kernel = (u[:, :rank] * root).reshape(kernel_h, kernel_w, channels_in, rank)
            second_kernel = (root[:, np.newaxis] * vt[:rank]).reshape(1, 1, rank, channels_out)
            first, second = _conv_factor_layers(
                keras, layer, rank, (kernel_h, kernel_w), (1, 1), separable=False
            )
            second_weights = [second_kernel] if bias is None else [second_kernel, bias]
            return Replacement([first, second], [[first_kernel], second_weights])

        energy = _energy(singular_values, rank) if rank else 0.0
        candidates.append(
            _Candidate("pointwise", rank, pointwise_parameters(rank), energy, build_pointwise)
        )

    if conv_form in ("auto", "separable") and kernel_h > 1 and kernel_w > 1:
        # Rows index (kernel row i, input channel c), columns (kernel column j, output o).
        matrix = kernel.transpose(0, 2, 1, 3).reshape(
            kernel_h * channels_in, kernel_w * channels_out
        )
        u_sep, singular_sep, vt_sep = _split_svd(matrix)

        def separable_parameters(rank: int) -> int:
            return rank * (kernel_h * channels_in + kernel_w * channels_out) + bias_count

        rank_sep = _rank_for(criterion, singular_sep, separable_parameters, original)

        def build_separable(rank: int = rank_sep) -> Replacement:
            root = np.sqrt(singular_sep[:rank])
            first_kernel = (u_sep[:, :rank] * root).reshape(kernel_h, 1, channels_in, rank)
            second_kernel = (
                (root[:, np.newaxis] * vt_sep[:rank])
                .reshape(rank, kernel_w, channels_out)
                .transpose(1, 0, 2)
                .reshape(1, kernel_w, rank, channels_out)
            )
            first, second = _conv_factor_layers(
                keras, layer, rank, (kernel_h, 1), (1, kernel_w), separable=True
            )
            second_weights = [second_kernel] if bias is None else [second_kernel, bias]
            return Replacement([first, second], [[first_kernel], second_weights])

        energy = _energy(singular_sep, rank_sep) if rank_sep else 0.0
        candidates.append(
            _Candidate(
                "separable", rank_sep, separable_parameters(rank_sep), energy, build_separable
            )
        )
    return candidates


def _conv_factor_layers(
    keras: Any,
    layer: Any,
    rank: int,
    first_size: tuple[int, int],
    second_size: tuple[int, int],
    separable: bool,
) -> tuple[Any, Any]:
    """Build the two Conv2D factors of `layer`, unbuilt.

    In the pointwise form the first factor takes all strides, padding and dilation
    and the 1x1 second factor has none. In the separable form the first factor
    covers the height and the second the width, each with the original settings
    in its own dimension.
    """
    config = layer.get_config()
    stride_h, stride_w = layer.strides
    dilation_h, dilation_w = layer.dilation_rate
    if separable:
        first_strides, second_strides = (stride_h, 1), (1, stride_w)
        first_dilation, second_dilation = (dilation_h, 1), (1, dilation_w)
        second_padding = layer.padding
    else:
        first_strides, second_strides = (stride_h, stride_w), (1, 1)
        first_dilation, second_dilation = (dilation_h, dilation_w), (1, 1)
        second_padding = "valid"

    first = keras.layers.Conv2D(
        rank,
        first_size,
        strides=first_strides,
        padding=layer.padding,
        dilation_rate=first_dilation,
        data_format=layer.data_format,
        use_bias=False,
        name=f"{layer.name}_factor1",
        dtype=layer.dtype_policy,
    )
    second = keras.layers.Conv2D(
        layer.filters,
        second_size,
        strides=second_strides,
        padding=second_padding,
        dilation_rate=second_dilation,
        data_format=layer.data_format,
        activation=config["activation"],
        use_bias=layer.use_bias,
        name=f"{layer.name}_factor2",
        dtype=layer.dtype_policy,
    )
    return first, second
