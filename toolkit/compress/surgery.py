"""Filter pruning by model surgery: remove whole filters and shrink the layers that read them.

`filter_prune` removes the output channels (filters) of Conv2D and Dense
layers with the smallest L1 norm and builds a smaller dense Keras model with
the same functional graph. Every layer that reads a removed channel shrinks
with it:

- Conv2D and Dense consumers lose the matching input channels of their kernels.
- DepthwiseConv2D (depth_multiplier 1) and BatchNormalization lose the
  channel from their weights and pass the smaller channel count on.
- Weightless element-wise layers (activations, dropout, pooling, padding)
  pass the smaller channel count on.
- A Dense layer after Flatten of an H x W x C tensor loses the kernel rows
  (h * W + w) * C + c of each removed channel c.
- All inputs of an element-wise merge such as a residual Add must keep the
  same channels. The producers that feed one merge form a group, the group's
  channels are ranked by the L1 norm summed over its producers, and the same
  channels are removed from every producer.

Channels stay unchanged when they reach a model output, when any layer that
this module cannot shrink reads them (Concatenate, Reshape, a Softmax over
channels, a grouped convolution, channels_first layers, a DepthwiseConv2D with
depth_multiplier > 1, or a layer called more than once), and when they come
from a model input.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from toolkit.compress.cluster import _check_model, _clone, _copy_layer
from toolkit.errors import ToolkitError
from toolkit.keras_io import import_keras

keras = import_keras()

logger = logging.getLogger(__name__)

# Weightless layers that act on each channel separately, so removing a channel
# from their input removes the same channel from their output.
_CHANNELWISE_LAYERS = frozenset(
    {
        "Activation",
        "ReLU",
        "LeakyReLU",
        "ELU",
        "PReLU",
        "Dropout",
        "SpatialDropout2D",
        "GaussianDropout",
        "GaussianNoise",
        "AveragePooling2D",
        "MaxPooling2D",
        "GlobalAveragePooling2D",
        "GlobalMaxPooling2D",
        "ZeroPadding2D",
        "Cropping2D",
        "UpSampling2D",
        "Identity",
    }
)
# Merges whose inputs must have the same channels, element by element.
_MERGE_LAYERS = frozenset({"Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum"})
# Activations that mix the channels of a tensor, so an Activation layer using them
# cannot pass a smaller channel count on.
_CHANNEL_MIXING_ACTIVATIONS = frozenset({"softmax", "log_softmax"})


@dataclass
class _Space:
    """A set of tensors that share one channel numbering, and the layers that write it."""

    channels: int
    producers: list[Any] = field(default_factory=list)
    # Why the channels must stay, or None when they can be removed.
    fixed_reason: str | None = None


@dataclass
class _Flattened:
    """A Flatten output: `positions` copies of the channels of `space`, channel fastest."""

    space: int
    channels: int
    positions: int


class _ChannelGraph:
    """Union-find over channel spaces, filled by walking the model's layer calls in order."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.spaces: list[_Space] = []
        # Maps the id of a tensor to its space, or to a _Flattened record.
        self.space_of: dict[int, int] = {}
        self.flattened: dict[int, _Flattened] = {}
        # Maps the id of a layer to the space (or _Flattened) of its input and of its output.
        self.input_of: dict[int, int | _Flattened] = {}
        self.output_of: dict[int, int] = {}

    def new_space(self, channels: int, fixed_reason: str | None = None) -> int:
        self.parent.append(len(self.parent))
        self.spaces.append(_Space(channels, fixed_reason=fixed_reason))
        return len(self.parent) - 1

    def root(self, space: int) -> int:
        while self.parent[space] != space:
            self.parent[space] = self.parent[self.parent[space]]
            space = self.parent[space]
        return space

    def union(self, first: int, second: int) -> int:
        first, second = self.root(first), self.root(second)
        if first == second:
            return first
        merged, absorbed = self.spaces[first], self.spaces[second]
        merged.producers.extend(absorbed.producers)
        merged.fixed_reason = merged.fixed_reason or absorbed.fixed_reason
        self.parent[second] = first
        return first

    def fix(self, space: int, reason: str) -> None:
        root = self.spaces[self.root(space)]
        if root.fixed_reason is None:
            root.fixed_reason = reason

    def fix_tensor(self, tensor: Any, reason: str) -> None:
        if id(tensor) in self.space_of:
            self.fix(self.space_of[id(tensor)], reason)
        elif id(tensor) in self.flattened:
            self.fix(self.flattened[id(tensor)].space, reason)

    def space(self, space: int) -> _Space:
        return self.spaces[self.root(space)]


def filter_prune(model: Any, fraction: float = 0.5, layers: list[str] | None = None) -> Any:
    """Remove the lowest-L1 filters of Conv2D and Dense layers and shrink their consumers.

    Each chosen producer (`layers=None` chooses every Conv2D and Dense layer
    whose output channels can be removed, see the module docstring) loses
    round(fraction * filters) output channels, keeping at least one. Producers
    that feed one element-wise merge are pruned together, and naming one of
    them prunes the whole group. Returns a new dense Keras model with the same
    functional graph and layer names. The removed channels' contribution is
    lost, so fine-tune the result. `model` itself is not modified, and the copy
    is not compiled.

    Raises ToolkitError for a fraction outside [0, 1), unknown layer names,
    named layers that are not Conv2D or Dense or whose filters must stay, and
    subclassed, unbuilt or nested models.
    """
    if isinstance(fraction, bool) or not isinstance(fraction, int | float | np.floating):
        raise ToolkitError(f"fraction is {fraction!r}, expected a number in [0, 1) such as 0.5.")
    if not 0.0 <= float(fraction) < 1.0:
        raise ToolkitError(
            f"fraction is {fraction}, expected a value in [0, 1): the fraction of filters "
            "removed from each chosen layer."
        )
    _check_model(model, "filter_prune")
    nested = [layer.name for layer in model.layers if isinstance(layer, keras.Model)]
    if nested:
        raise ToolkitError(
            f"Model {model.name!r} contains the nested models {', '.join(nested)}, which "
            "filter_prune does not support. Rebuild it as one flat functional model."
        )

    graph = _trace_channels(model)
    chosen_spaces = _choose_spaces(model, graph, layers)
    keep = _channels_to_keep(graph, chosen_spaces, float(fraction))
    if not keep:
        logger.info("model %s: no filters removed", model.name)

    def kept(space: int | _Flattened | None) -> np.ndarray | None:
        if space is None:
            return None
        if isinstance(space, _Flattened):
            channels = keep.get(graph.root(space.space))
            if channels is None:
                return None
            positions = np.arange(space.positions)[:, np.newaxis] * space.channels
            return (positions + channels[np.newaxis, :]).reshape(-1)
        return keep.get(graph.root(space))

    def make_layer(layer: Any) -> Any:
        output_keep = kept(graph.output_of.get(id(layer)))
        if output_keep is None or type(layer) not in (keras.layers.Conv2D, keras.layers.Dense):
            return _copy_layer(layer)
        config = layer.get_config()
        config["filters" if isinstance(layer, keras.layers.Conv2D) else "units"] = int(
            output_keep.size
        )
        return layer.__class__.from_config(config)

    clone, pairs = _clone(model, make_layer)
    for old, new in pairs:
        input_keep = kept(graph.input_of.get(id(old)))
        output_keep = kept(graph.output_of.get(id(old)))
        new.set_weights(_sliced_weights(old, input_keep, output_keep))

    logger.info(
        "model %s: filter pruning kept %d of %d parameters",
        model.name,
        clone.count_params(),
        model.count_params(),
    )
    return clone


def _trace_channels(model: Any) -> _ChannelGraph:
    """Assign a channel space to every tensor and record which spaces must stay whole."""
    graph = _ChannelGraph()
    for tensor in model.inputs:
        graph.space_of[id(tensor)] = graph.new_space(
            int(tensor.shape[-1] or 0), "they come from a model input"
        )

    for node in _nodes_in_execution_order(model):
        _trace_node(graph, node)

    for tensor in model.outputs:
        graph.fix_tensor(tensor, "they reach a model output")
    return graph


def _nodes_in_execution_order(model: Any) -> list[Any]:
    functional = (
        model if hasattr(model, "_nodes_by_depth") else keras.Model(model.inputs, model.outputs)
    )
    nodes = []
    # Keras runs a Functional model from the deepest node (the inputs) to depth 0.
    for depth in sorted(functional._nodes_by_depth, reverse=True):
        for node in functional._nodes_by_depth[depth]:
            if node.operation is not None and not node.is_input:
                nodes.append(node)
    return nodes


def _trace_node(graph: _ChannelGraph, node: Any) -> None:
    layer = node.operation
    kind = type(layer).__name__
    inputs = list(node.input_tensors)
    outputs = list(node.outputs)
    known_inputs = [t for t in inputs if id(t) in graph.space_of or id(t) in graph.flattened]
    reason = f"layer {layer.name!r} ({kind}) cannot shrink its input channels"

    def opaque() -> None:
        for tensor in inputs:
            graph.fix_tensor(tensor, reason)
        for tensor in outputs:
            graph.space_of[id(tensor)] = graph.new_space(
                int(tensor.shape[-1] or 0), f"layer {layer.name!r} ({kind}) writes them"
            )

    if len(known_inputs) != len(inputs) or len(layer._inbound_nodes) > 1 or len(outputs) != 1:
        reason = f"layer {layer.name!r} ({kind}) is called more than once or has several outputs"
        opaque()
        return
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        opaque()
        return

    (output,) = outputs
    flat_inputs = [t for t in inputs if id(t) in graph.flattened]
    if kind in ("Conv2D", "Dense"):
        if len(inputs) != 1 or getattr(layer, "groups", 1) != 1:
            opaque()
            return
        (tensor,) = inputs
        if flat_inputs and (kind != "Dense" or len(tensor.shape) != 2):
            opaque()
            return
        if flat_inputs:
            graph.input_of[id(layer)] = graph.flattened[id(tensor)]
        else:
            graph.input_of[id(layer)] = graph.space_of[id(tensor)]
        space = graph.new_space(int(output.shape[-1]))
        graph.spaces[space].producers.append(layer)
        graph.space_of[id(output)] = space
        graph.output_of[id(layer)] = space
        return

    if flat_inputs:
        # Only element-wise single-input layers keep the Flatten layout.
        if kind in _CHANNELWISE_LAYERS - {"PReLU"} and len(inputs) == 1 and _is_channelwise(layer):
            graph.flattened[id(output)] = graph.flattened[id(inputs[0])]
        else:
            opaque()
        return

    spaces = [graph.space_of[id(t)] for t in inputs]
    if kind == "Flatten" and len(inputs) == 1 and len(inputs[0].shape) >= 2:
        shape = inputs[0].shape
        positions = math.prod(int(dim) for dim in shape[1:-1]) if len(shape) > 2 else 1
        graph.flattened[id(output)] = _Flattened(spaces[0], int(shape[-1]), positions)
        return
    if kind == "DepthwiseConv2D" and layer.depth_multiplier == 1:
        _pass_through(graph, layer, spaces[0], output)
        return
    if kind == "BatchNormalization" and layer.axis in (-1, len(inputs[0].shape) - 1):
        _pass_through(graph, layer, spaces[0], output)
        return
    if kind in _CHANNELWISE_LAYERS and len(inputs) == 1 and _is_channelwise(layer):
        _pass_through(graph, layer, spaces[0], output)
        return
    if kind in _MERGE_LAYERS and len({int(t.shape[-1]) for t in inputs}) == 1:
        merged = spaces[0]
        for space in spaces[1:]:
            merged = graph.union(merged, space)
        graph.space_of[id(output)] = merged
        return
    opaque()


def _pass_through(graph: _ChannelGraph, layer: Any, space: int, output: Any) -> None:
    graph.input_of[id(layer)] = space
    graph.output_of[id(layer)] = space
    graph.space_of[id(output)] = space


def _is_channelwise(layer: Any) -> bool:
    kind = type(layer).__name__
    if kind == "Activation":
        return getattr(layer.activation, "__name__", "") not in _CHANNEL_MIXING_ACTIVATIONS
    if kind == "PReLU":
        # A PReLU with one slope per channel has weights that would need slicing.
        return not layer.weights or all(dim == 1 for dim in layer.weights[0].shape)
    return True


def _choose_spaces(model: Any, graph: _ChannelGraph, names: Sequence[str] | None) -> set[int]:
    """Return the root spaces whose channels will be removed. Raise for names that cannot be."""
    producers = [layer for layer in model.layers if type(layer).__name__ in ("Conv2D", "Dense")]
    prunable = [
        layer
        for layer in producers
        if id(layer) in graph.output_of
        and graph.space(graph.output_of[id(layer)]).fixed_reason is None
    ]
    prunable_names = ", ".join(layer.name for layer in prunable) or "none"
    if names is None:
        return {graph.root(graph.output_of[id(layer)]) for layer in prunable}

    if isinstance(names, str) or not isinstance(names, Sequence):
        raise ToolkitError(
            f"layers is {names!r}, expected a list of layer names such as [{names!r}]."
        )
    by_name = {layer.name: layer for layer in model.layers}
    chosen = set()
    for name in names:
        if name not in by_name:
            raise ToolkitError(
                f"Layer {name!r} not found in model {model.name!r}. Layers whose filters can be "
                f"removed: {prunable_names}."
            )
        layer = by_name[name]
        if type(layer) not in (keras.layers.Conv2D, keras.layers.Dense):
            raise ToolkitError(
                f"Layer {name!r} is a {type(layer).__name__}, but filter_prune removes filters "
                f"of Conv2D and Dense layers only. Layers whose filters can be removed: "
                f"{prunable_names}."
            )
        space = graph.output_of.get(id(layer))
        reason = (
            graph.space(space).fixed_reason
            if space is not None
            else f"layer {name!r} is called more than once or reads channels it cannot shrink"
        )
        if reason is not None:
            raise ToolkitError(
                f"The filters of layer {name!r} cannot be removed, because {reason}. Layers "
                f"whose filters can be removed: {prunable_names}."
            )
        chosen.add(graph.root(space))  # type: ignore[arg-type]
    return chosen


def _channels_to_keep(
    graph: _ChannelGraph, chosen: set[int], fraction: float
) -> dict[int, np.ndarray]:
    """Rank each chosen space's channels by the L1 norm summed over its producers."""
    keep = {}
    for root in sorted(chosen):
        space = graph.spaces[root]
        scores = np.zeros(space.channels)
        for layer in space.producers:
            kernel = np.abs(layer.kernel.numpy().astype(np.float64))
            scores += kernel.reshape(-1, kernel.shape[-1]).sum(axis=0)
        removed = min(int(round(fraction * space.channels)), space.channels - 1)
        if removed <= 0:
            continue
        order = np.argsort(scores, kind="stable")
        keep[root] = np.sort(order[removed:])
        logger.info(
            "layers %s: removed %d of %d output channels",
            ", ".join(layer.name for layer in space.producers),
            removed,
            space.channels,
        )
    return keep


def _sliced_weights(
    layer: Any, input_keep: np.ndarray | None, output_keep: np.ndarray | None
) -> list[np.ndarray]:
    """Return the layer's weights without the removed input and output channels."""
    weights = layer.get_weights()
    kind = type(layer).__name__
    if input_keep is None and output_keep is None:
        return weights

    if kind in ("Conv2D", "Dense"):
        kernel = weights[0]
        if input_keep is not None:
            kernel = np.take(kernel, input_keep, axis=-2)
        if output_keep is not None:
            kernel = np.take(kernel, output_keep, axis=-1)
        sliced = [kernel]
        if len(weights) > 1:
            bias = weights[1] if output_keep is None else weights[1][output_keep]
            sliced.append(bias)
        return sliced
    # The remaining layers pass channels through, so their input and output keep the same ones.
    if input_keep is None:
        return weights
    if kind == "DepthwiseConv2D":
        # Kernel [kh, kw, channels, 1] and bias [channels].
        sliced = [np.take(weights[0], input_keep, axis=2)]
        sliced += [bias[input_keep] for bias in weights[1:]]
        return sliced
    # BatchNormalization: gamma, beta, moving mean and moving variance, one value per channel.
    return [weight[input_keep] for weight in weights]
