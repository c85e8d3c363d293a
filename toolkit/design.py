"""Design aids for small models: a per-layer cost profile, a depthwise-separable
rewrite of standard convolutions, and builders of reference architectures.

The builders use only layers that the TFLite converter turns into ops with a
toolkit kernel: CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, AVERAGE_POOL_2D,
ADD, RESHAPE and SOFTMAX. BatchNormalization folds into the convolution before
it, and ReLU and ReLU6 fuse into the op before them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from toolkit.errors import ToolkitError
from toolkit.keras_io import import_keras
from toolkit.report import format_table

if TYPE_CHECKING:
    import keras

# Layers that the TFLite converter folds into the op before them, or that become a
# RESHAPE sharing its input's buffer, so their output needs no memory of its own.
# Activation and ReLU layers count here only for ReLU and ReLU6 (see _aliases_input).
_ALIAS_LAYER_TYPES = frozenset(
    {"BatchNormalization", "Dropout", "Flatten", "Reshape", "Activation", "ReLU"}
)
_FUSED_ACTIVATIONS = frozenset({"relu", "relu6", "linear"})

# Bytes per element in an int8 deployment: weights are int8 and biases int32.
WEIGHT_BYTES = 1
BIAS_BYTES = 4


@dataclass
class LayerProfile:
    """Costs of one layer call, for batch size 1 and int8 deployment."""

    name: str
    type: str
    output_shape: tuple[int, ...]
    parameters: int
    macs: int
    weight_bytes: int
    activation_bytes: int


@dataclass
class Profile:
    """Per-layer costs of a model, in execution order, with totals."""

    model_name: str
    rows: list[LayerProfile]
    total_parameters: int

    @property
    def peak_activation_bytes(self) -> int:
        return max((row.activation_bytes for row in self.rows), default=0)

    @property
    def total_macs(self) -> int:
        return sum(row.macs for row in self.rows)

    @property
    def total_weight_bytes(self) -> int:
        return sum(row.weight_bytes for row in self.rows)

    def table(self) -> str:
        """Format the rows as a text table followed by the totals."""
        headers = ["layer", "type", "output", "params", "MACs", "weight bytes", "live bytes"]
        rows = [
            [
                row.name,
                row.type,
                "x".join(str(dim) for dim in row.output_shape),
                f"{row.parameters:,}",
                f"{row.macs:,}",
                f"{row.weight_bytes:,}",
                f"{row.activation_bytes:,}",
            ]
            for row in self.rows
        ]
        lines = [
            f"model: {self.model_name}",
            format_table(headers, rows, right={3, 4, 5, 6}),
            "",
            f"parameters:              {self.total_parameters:,}",
            f"MACs per inference:      {self.total_macs:,}",
            f"weight bytes at int8:    {self.total_weight_bytes:,} "
            "(weights 1 byte, biases 4 bytes each)",
            f"peak live activations:   {self.peak_activation_bytes:,} bytes at int8 "
            "(estimated from the Keras graph before conversion)",
        ]
        return "\n".join(lines)


def profile(model: keras.Model) -> Profile:
    """Compute parameters, MACs, int8 weight bytes and live activation bytes per layer.

    MACs count the multiply-accumulates of layers with a kernel (Dense and the
    convolutions). Other layers count 0, as in the deploy report. Live bytes at a
    layer are the int8 sizes of the tensors alive during its call: its inputs,
    its output and earlier tensors still needed later. Outputs of layers that
    conversion folds away (BatchNormalization, ReLU, ReLU6, Dropout) or turns into
    a RESHAPE (Flatten, Reshape) share their input's buffer and are counted once.

    NOTE: the deployed arena can differ, because the converter may order the ops
    of parallel branches differently and because the memory planner shares a
    RESHAPE buffer only when its input is not used elsewhere.
    """
    nodes = _nodes_in_execution_order(model)

    # Maps the id of each tensor to the id of the buffer that stores it.
    buffer_of: dict[int, int] = {}
    buffer_size: dict[int, int] = {}
    first_step: dict[int, int] = {}
    last_step: dict[int, int] = {}
    producer: dict[int, Any] = {}
    for tensor in model.inputs:
        buffer_of[id(tensor)] = id(tensor)
        buffer_size[id(tensor)] = _int8_bytes(tensor.shape)
        first_step[id(tensor)] = 0
        last_step[id(tensor)] = 0

    for step, node in enumerate(nodes):
        layer = node.operation
        for tensor in node.input_tensors:
            buffer = buffer_of[id(tensor)]
            last_step[buffer] = max(last_step[buffer], step)
        for tensor in node.outputs:
            producer[id(tensor)] = layer
            if _aliases_input(layer) and len(node.input_tensors) == 1:
                buffer_of[id(tensor)] = buffer_of[id(node.input_tensors[0])]
                continue
            buffer_of[id(tensor)] = id(tensor)
            buffer_size[id(tensor)] = _int8_bytes(tensor.shape)
            first_step[id(tensor)] = step
            last_step[id(tensor)] = step
    final_step = max(len(nodes) - 1, 0)
    for tensor in model.outputs:
        last_step[buffer_of[id(tensor)]] = final_step

    rows = []
    counted_layers: set[int] = set()
    for step, node in enumerate(nodes):
        layer = node.operation
        output = node.outputs[0]
        live = sum(
            size
            for buffer, size in buffer_size.items()
            if first_step[buffer] <= step <= last_step[buffer]
        )
        first_call = id(layer) not in counted_layers
        counted_layers.add(id(layer))
        input_producer = producer.get(id(node.input_tensors[0])) if node.input_tensors else None
        rows.append(
            LayerProfile(
                name=layer.name,
                type=type(layer).__name__,
                output_shape=tuple(int(dim) for dim in output.shape[1:]),
                parameters=int(layer.count_params()) if first_call else 0,
                macs=_macs(layer, output.shape),
                weight_bytes=_weight_bytes(layer, input_producer) if first_call else 0,
                activation_bytes=live,
            )
        )
    return Profile(model.name, rows, int(model.count_params()))


def _nodes_in_execution_order(model: Any) -> list[Any]:
    """Return the layer calls of a Sequential or Functional model in the order Keras runs them."""
    keras = import_keras()
    try:
        inputs, outputs = model.inputs, model.outputs
    except (AttributeError, ValueError) as error:
        raise ToolkitError(
            f"model {model.name!r} has no defined inputs ({error}); build it with keras.Input"
        ) from error
    graph = model if hasattr(model, "_nodes_by_depth") else keras.Model(inputs, outputs)
    nodes = []
    # Keras runs a Functional model from the deepest node (the inputs) to depth 0.
    for depth in sorted(graph._nodes_by_depth, reverse=True):
        for node in graph._nodes_by_depth[depth]:
            if node.operation is None or node.is_input:
                continue
            nodes.append(node)
    return nodes


def _int8_bytes(shape: Sequence[int | None]) -> int:
    dims = [int(dim) for dim in shape[1:] if dim is not None]
    if len(dims) != len(shape) - 1:
        raise ToolkitError(
            f"tensor shape {tuple(shape)} has unknown dimensions besides the batch; give the "
            "model input a fixed shape"
        )
    return math.prod(dims)


def _aliases_input(layer: Any) -> bool:
    kind = type(layer).__name__
    if kind not in _ALIAS_LAYER_TYPES:
        return False
    if kind == "Activation":
        return getattr(layer.activation, "__name__", "") in _FUSED_ACTIVATIONS
    if kind == "ReLU":
        return layer.negative_slope == 0 and layer.threshold == 0 and layer.max_value in (None, 6)
    return True


def _output_channels_axis(layer: Any) -> int:
    return 1 if getattr(layer, "data_format", "channels_last") == "channels_first" else -1


def _macs(layer: Any, output_shape: Sequence[int]) -> int:
    """Multiply-accumulates of one call: output positions times kernel elements."""
    if hasattr(layer, "layers"):
        return profile(layer).total_macs
    kernels = [
        weight
        for weight in layer.weights
        if weight.name in ("kernel", "depthwise_kernel", "pointwise_kernel")
    ]
    if not kernels:
        return 0
    dims = [int(dim) for dim in output_shape[1:]]
    channels = dims[_output_channels_axis(layer)]
    positions = math.prod(dims) // channels
    return positions * sum(math.prod(kernel.shape) for kernel in kernels)


def _weight_bytes(layer: Any, input_producer: Any) -> int:
    kind = type(layer).__name__
    if hasattr(layer, "layers"):
        return profile(layer).total_weight_bytes
    if kind == "BatchNormalization":
        # Conversion folds the normalization into the layer before it. That layer
        # gains an int32 bias of its own only when it had none.
        if input_producer is not None and getattr(input_producer, "use_bias", True) is False:
            return BIAS_BYTES * int(layer.weights[0].shape[0])
        return 0
    total = 0
    for weight in layer.weights:
        per_element = BIAS_BYTES if weight.name == "bias" else WEIGHT_BYTES
        total += per_element * math.prod(weight.shape)
    return total


def depthwise_separable(model: keras.Model, layers: list[str] | None = None) -> keras.Model:
    """Replace standard Conv2D layers by a DepthwiseConv2D and a 1x1 Conv2D.

    `layers` names the Conv2D layers to replace (default: every Conv2D with a
    kernel larger than 1x1 and groups=1). The depthwise layer keeps the kernel
    size, strides, padding and dilation and has no bias. The 1x1 layer gets the
    bias and the activation. The weights are the least-squares fit of the
    original kernel. For each input channel c, the rank-1 truncated SVD of the
    [kh*kw, cout] slice K[:, :, c, :] gives the depthwise filter of c and row c of
    the pointwise kernel. Returns a new model and leaves `model` unchanged.
    """
    from toolkit.compress.factorize import replace_layers

    keras = import_keras()
    by_name = {layer.name: layer for layer in model.layers}
    if layers is None:
        names = [layer.name for layer in model.layers if _is_standard_conv(keras, layer)]
    else:
        names = list(layers)
        for name in names:
            layer = by_name.get(name)
            if layer is None:
                raise ToolkitError(
                    f"layer {name!r} not found in model {model.name!r}; its layers are "
                    f"{sorted(by_name)}"
                )
            if not _is_standard_conv(keras, layer):
                raise ToolkitError(
                    f"layer {name!r} is a {type(layer).__name__}, not a Conv2D with a kernel "
                    "larger than 1x1 and groups=1, so it has no depthwise-separable form"
                )

    replacements = {name: _separable_replacement(keras, by_name[name]) for name in names}
    return replace_layers(model, replacements)


def _is_standard_conv(keras: Any, layer: Any) -> bool:
    return (
        isinstance(layer, keras.layers.Conv2D)
        and layer.groups == 1
        and tuple(layer.kernel_size) != (1, 1)
    )


def separable_weights(kernel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fit a Conv2D kernel [kh, kw, cin, cout] by depthwise [kh, kw, cin, 1] and pointwise
    [1, 1, cin, cout] kernels, minimising the Frobenius error of their product."""
    kernel_h, kernel_w, channels_in, channels_out = kernel.shape
    depthwise = np.zeros((kernel_h, kernel_w, channels_in, 1), dtype=np.float64)
    pointwise = np.zeros((1, 1, channels_in, channels_out), dtype=np.float64)
    for channel in range(channels_in):
        block = kernel[:, :, channel, :].reshape(kernel_h * kernel_w, channels_out)
        u, singular_values, vt = np.linalg.svd(block.astype(np.float64), full_matrices=False)
        root = np.sqrt(singular_values[0])
        depthwise[:, :, channel, 0] = (u[:, 0] * root).reshape(kernel_h, kernel_w)
        pointwise[0, 0, channel, :] = root * vt[0]
    return depthwise, pointwise


def _separable_replacement(keras: Any, layer: Any) -> Any:
    from toolkit.compress.factorize import Replacement

    kernel = np.asarray(keras.ops.convert_to_numpy(layer.kernel))
    depthwise_kernel, pointwise_kernel = separable_weights(kernel)
    config = layer.get_config()
    depthwise = keras.layers.DepthwiseConv2D(
        layer.kernel_size,
        strides=layer.strides,
        padding=layer.padding,
        depth_multiplier=1,
        data_format=layer.data_format,
        dilation_rate=layer.dilation_rate,
        use_bias=False,
        name=f"{layer.name}_depthwise",
        dtype=layer.dtype_policy,
    )
    pointwise = keras.layers.Conv2D(
        layer.filters,
        1,
        data_format=layer.data_format,
        activation=config["activation"],
        use_bias=layer.use_bias,
        name=f"{layer.name}_pointwise",
        dtype=layer.dtype_policy,
    )
    pointwise_weights = [pointwise_kernel]
    if layer.use_bias:
        pointwise_weights.append(np.asarray(keras.ops.convert_to_numpy(layer.bias)))
    return Replacement([depthwise, pointwise], [[depthwise_kernel], pointwise_weights])


def _conv_bn_relu(
    keras: Any,
    x: Any,
    filters: int,
    kernel_size: Any,
    strides: Any = 1,
    relu6: bool = False,
    use_bias: bool = False,
) -> Any:
    conv = keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=use_bias,
        kernel_initializer="he_normal",
    )
    x = conv(x)
    x = keras.layers.BatchNormalization()(x)
    return keras.layers.ReLU(6.0 if relu6 else None)(x)


def _depthwise_bn_relu(keras: Any, x: Any, strides: Any = 1, relu6: bool = False) -> Any:
    # Keras computes the fan-in of a depthwise kernel [3, 3, channels, 1] as 9 * channels,
    # but each output is a sum over 9 inputs. Scaling by the fan-out (9) keeps the activation
    # variance of an untrained model, whose outputs otherwise shrink towards zero block
    # by block until the int8 scale of the logits is too small for TFLM's SOFTMAX.
    depthwise = keras.layers.DepthwiseConv2D(
        3,
        strides=strides,
        padding="same",
        use_bias=False,
        depthwise_initializer=keras.initializers.VarianceScaling(2.0, "fan_out"),
    )
    x = depthwise(x)
    x = keras.layers.BatchNormalization()(x)
    return keras.layers.ReLU(6.0 if relu6 else None)(x)


def _classifier(keras: Any, x: Any, classes: int, dropout: float = 0.0) -> Any:
    """Average over the whole feature map, then a softmax Dense layer.

    AveragePooling2D over the full map converts to AVERAGE_POOL_2D, where
    GlobalAveragePooling2D would convert to MEAN, which has no toolkit kernel.
    """
    pool_size = tuple(int(dim) for dim in x.shape[1:3])
    x = keras.layers.AveragePooling2D(pool_size=pool_size)(x)
    x = keras.layers.Flatten()(x)
    if dropout:
        x = keras.layers.Dropout(dropout)(x)
    return keras.layers.Dense(classes, activation="softmax")(x)


def ds_cnn(
    input_shape: tuple[int, int, int] = (49, 10, 1),
    classes: int = 12,
    filters: int = 64,
    blocks: int = 4,
    dropout: float = 0.2,
) -> keras.Model:
    """Build a DS-CNN keyword-spotting model (the MLPerf Tiny layout by default).

    A 10x4 convolution with stride 2, then `blocks` depthwise-separable blocks
    (3x3 depthwise and 1x1 pointwise, each with batch normalization and ReLU),
    average pooling over the feature map and a softmax classifier. The input
    default is 49 frames of 10 MFCC features.
    """
    keras = import_keras()
    inputs = keras.Input(shape=input_shape)
    x = _conv_bn_relu(keras, inputs, filters, (10, 4), strides=2)
    x = keras.layers.Dropout(dropout)(x)
    for _ in range(blocks):
        x = _depthwise_bn_relu(keras, x)
        x = _conv_bn_relu(keras, x, filters, 1)
    outputs = _classifier(keras, x, classes, dropout)
    return keras.Model(inputs, outputs, name="ds_cnn")


# (pointwise filters at alpha 1, depthwise stride) of the 13 MobileNetV1 blocks.
_MOBILENET_V1_BLOCKS = (
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),
    (1024, 1),
)


def mobilenet_v1(
    input_shape: tuple[int, int, int] = (96, 96, 3), classes: int = 2, alpha: float = 0.25
) -> keras.Model:
    """Build MobileNetV1 with width multiplier `alpha` and ReLU6 activations.

    The defaults are the MLPerf Tiny visual wake words configuration. All
    convolutions use "same" padding, so stride-2 layers need no ZeroPadding2D
    (which would convert to PAD, an op without a toolkit kernel).
    """
    if alpha <= 0:
        raise ToolkitError(f"alpha is {alpha}, expected a positive width multiplier such as 0.25")
    keras = import_keras()
    inputs = keras.Input(shape=input_shape)
    x = _conv_bn_relu(keras, inputs, max(1, int(32 * alpha)), 3, strides=2, relu6=True)
    for filters, strides in _MOBILENET_V1_BLOCKS:
        x = _depthwise_bn_relu(keras, x, strides=strides, relu6=True)
        x = _conv_bn_relu(keras, x, max(1, int(filters * alpha)), 1, relu6=True)
    outputs = _classifier(keras, x, classes)
    return keras.Model(inputs, outputs, name=f"mobilenet_v1_{alpha:g}")


def resnet8(input_shape: tuple[int, int, int] = (32, 32, 3), classes: int = 10) -> keras.Model:
    """Build ResNet-8 as in MLPerf Tiny image classification.

    A 3x3 convolution with 16 filters, then three residual stacks of 16, 32 and
    64 filters (the last two with stride 2 and a strided 1x1 convolution on the
    shortcut), average pooling over the feature map and a softmax classifier.
    """
    keras = import_keras()
    inputs = keras.Input(shape=input_shape)
    x = _conv_bn_relu(keras, inputs, 16, 3, use_bias=True)
    for filters, strides in ((16, 1), (32, 2), (64, 2)):
        y = _conv_bn_relu(keras, x, filters, 3, strides=strides, use_bias=True)
        y = keras.layers.Conv2D(filters, 3, padding="same", kernel_initializer="he_normal")(y)
        y = keras.layers.BatchNormalization()(y)
        if strides != 1:
            shortcut = keras.layers.Conv2D(
                filters, 1, strides=strides, padding="same", kernel_initializer="he_normal"
            )
            x = shortcut(x)
        x = keras.layers.Add()([x, y])
        x = keras.layers.ReLU()(x)
    outputs = _classifier(keras, x, classes)
    return keras.Model(inputs, outputs, name="resnet8")
