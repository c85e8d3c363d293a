"""Import a `.tflite` flatbuffer into the toolkit's IR.

Reads the file with the `tflite` package (the generated flatbuffer schema),
checks that every op is supported and that the model is int8 between its
edges, and returns a `Graph`. This is the last step that may see a float
model; nothing after it imports TensorFlow.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import tflite

from toolkit.errors import ToolkitError
from toolkit.ir import Graph, Op, Quantization, Tensor

# Ops the code generator has kernels for, with the schema class of their
# builtin options and the option fields the toolkit reads.
SUPPORTED_OPS: dict[str, tuple[str | None, tuple[str, ...]]] = {
    "CONV_2D": (
        "Conv2DOptions",
        (
            "Padding",
            "StrideH",
            "StrideW",
            "DilationHFactor",
            "DilationWFactor",
            "FusedActivationFunction",
        ),
    ),
    "DEPTHWISE_CONV_2D": (
        "DepthwiseConv2DOptions",
        (
            "Padding",
            "StrideH",
            "StrideW",
            "DepthMultiplier",
            "DilationHFactor",
            "DilationWFactor",
            "FusedActivationFunction",
        ),
    ),
    "FULLY_CONNECTED": (
        "FullyConnectedOptions",
        ("FusedActivationFunction", "WeightsFormat", "KeepNumDims"),
    ),
    "AVERAGE_POOL_2D": (
        "Pool2DOptions",
        ("Padding", "StrideH", "StrideW", "FilterHeight", "FilterWidth", "FusedActivationFunction"),
    ),
    "MAX_POOL_2D": (
        "Pool2DOptions",
        ("Padding", "StrideH", "StrideW", "FilterHeight", "FilterWidth", "FusedActivationFunction"),
    ),
    "ADD": ("AddOptions", ("FusedActivationFunction",)),
    "RESHAPE": (None, ()),
    "SOFTMAX": ("SoftmaxOptions", ("Beta",)),
    "QUANTIZE": (None, ()),
    "DEQUANTIZE": (None, ()),
}

# Fused activations the kernels apply as an output clamp.
SUPPORTED_ACTIVATIONS = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6"}

_OPERATOR_NAMES = {
    value: name for name, value in vars(tflite.BuiltinOperator).items() if not name.startswith("_")
}
_TENSOR_TYPES = {
    value: name.lower()
    for name, value in vars(tflite.TensorType).items()
    if not name.startswith("_")
}
_NUMPY_TYPES = {
    "int8": np.int8,
    "uint8": np.uint8,
    "int16": np.int16,
    "int32": np.int32,
    "int64": np.int64,
    "float32": np.float32,
}


def _snake_case(name: str) -> str:
    out = []
    for i, char in enumerate(name):
        next_lower = i + 1 < len(name) and name[i + 1].islower()
        if char.isupper() and i > 0 and (name[i - 1].islower() or next_lower):
            out.append("_")
        out.append(char.lower())
    return "".join(out)


def load_tflite(path: str | os.PathLike[str]) -> Graph:
    """Read a `.tflite` file and import it; see `import_tflite`."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ToolkitError(f"{path}: file not found; give the path of a .tflite model")
    with open(path, "rb") as handle:
        data = handle.read()
    return import_tflite(data, source=path)


def import_tflite(data: bytes, source: str = "<bytes>") -> Graph:
    """Parse a TFLite flatbuffer into a `Graph`.

    Raises ToolkitError for a file that is not a TFLite model, a truncated or
    corrupt one, more than one subgraph, an unsupported op or activation, and
    float tensors between the model edges.
    """
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ToolkitError(
            f"{source}: not a TFLite flatbuffer (the file identifier at bytes 4..8 is "
            f"{data[4:8]!r}, expected b'TFL3'); give a .tflite file written by the TFLite "
            "converter"
        )
    try:
        graph = _read_graph(data, source)
    except ToolkitError:
        raise
    except Exception as exc:  # the generated reader raises many types on bad offsets
        raise ToolkitError(
            f"{source}: the TFLite flatbuffer is corrupt or truncated ({len(data)} bytes; "
            f"reading it failed with {type(exc).__name__}: {exc}); convert the model again"
        ) from exc
    _check_int8(graph)
    return graph


def _read_graph(data: bytes, source: str) -> Graph:
    model = tflite.Model.GetRootAs(data, 0)
    if model.SubgraphsLength() != 1:
        raise ToolkitError(
            f"{source}: the model has {model.SubgraphsLength()} subgraphs; the toolkit "
            "supports models with exactly one (no control flow ops)"
        )
    subgraph = model.Subgraphs(0)
    tensors = [
        _read_tensor(model, subgraph.Tensors(i), i, data, source)
        for i in range(subgraph.TensorsLength())
    ]
    ops = [
        _read_op(model, subgraph.Operators(i), i, tensors, source)
        for i in range(subgraph.OperatorsLength())
    ]
    description = model.Description()
    return Graph(
        tensors=tensors,
        ops=ops,
        inputs=[int(i) for i in subgraph.InputsAsNumpy()],
        outputs=[int(i) for i in subgraph.OutputsAsNumpy()],
        source=source,
        description=description.decode("utf-8", "replace") if description else "",
    )


def _read_tensor(model: Any, entry: Any, index: int, data: bytes, source: str) -> Tensor:
    name = entry.Name().decode("utf-8", "replace")
    dtype = _TENSOR_TYPES.get(entry.Type(), f"type {entry.Type()}")
    shape = tuple(int(d) for d in entry.ShapeAsNumpy()) if entry.ShapeLength() else ()
    if entry.ShapeSignatureLength():
        signature = [int(d) for d in entry.ShapeSignatureAsNumpy()]
        if any(d < 0 for d in signature[1:]):
            raise ToolkitError(
                f"{source}: tensor '{name}' has a dynamic shape {signature}; convert the "
                "model with fixed input sizes"
            )

    quantization = None
    params = entry.Quantization()
    if params is not None and params.ScaleLength() > 0:
        quantization = Quantization(
            scale=params.ScaleAsNumpy().astype(np.float32),
            zero_point=params.ZeroPointAsNumpy().astype(np.int64),
            axis=int(params.QuantizedDimension()),
        )

    constant = None
    buffer = model.Buffers(entry.Buffer())
    if buffer is not None:
        raw = _buffer_bytes(buffer, data)
        if raw is not None and len(raw) > 0:
            if dtype not in _NUMPY_TYPES:
                raise ToolkitError(
                    f"{source}: constant tensor '{name}' has type {dtype}; the toolkit reads "
                    f"constants of types {', '.join(_NUMPY_TYPES)}"
                )
            expected = int(np.prod(shape)) * np.dtype(_NUMPY_TYPES[dtype]).itemsize
            if len(raw) != expected:
                raise ToolkitError(
                    f"{source}: constant tensor '{name}' has {len(raw)} bytes but its shape "
                    f"{list(shape)} of {dtype} needs {expected}; the file is corrupt"
                )
            constant = np.frombuffer(raw, dtype=_NUMPY_TYPES[dtype]).reshape(shape).copy()
    return Tensor(index, name, shape, dtype, quantization, constant)


def _buffer_bytes(buffer: Any, data: bytes) -> bytes | None:
    # Models over 2 GB keep buffers after the flatbuffer, addressed by offset.
    offset = buffer.Offset()
    if offset > 1:
        size = buffer.Size()
        if offset + size > len(data):
            raise ToolkitError(
                f"buffer at offset {offset} of {size} bytes runs past the end of the "
                f"{len(data)}-byte file; the file is truncated"
            )
        return data[offset : offset + size]
    if buffer.DataLength() == 0:
        return None
    return buffer.DataAsNumpy().tobytes()


def _read_op(model: Any, entry: Any, index: int, tensors: list[Tensor], source: str) -> Op:
    code = model.OperatorCodes(entry.OpcodeIndex())
    builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
    kind = _OPERATOR_NAMES.get(builtin, f"builtin code {builtin}")
    if builtin == tflite.BuiltinOperator.CUSTOM:
        custom = code.CustomCode()
        kind = f"CUSTOM ({custom.decode() if custom else 'unnamed'})"
    outputs = [int(i) for i in entry.OutputsAsNumpy()] if entry.OutputsLength() else []
    inputs = [int(i) for i in entry.InputsAsNumpy()] if entry.InputsLength() else []
    layer = tensors[outputs[0]].name if outputs else f"op {index}"

    if kind not in SUPPORTED_OPS:
        raise ToolkitError(
            f"{source}: op {index} ({layer}) is {kind}, which the toolkit does not support; "
            f"supported ops: {', '.join(sorted(SUPPORTED_OPS))}. Replace the layer in the "
            "Keras model or remove it before conversion"
        )

    options: dict[str, Any] = {}
    class_name, fields = SUPPORTED_OPS[kind]
    table = entry.BuiltinOptions()
    if class_name is not None and table is not None:
        reader = getattr(tflite, class_name)()
        reader.Init(table.Bytes, table.Pos)
        for name in fields:
            options[_snake_case(name)] = getattr(reader, name)()
    if class_name == "SoftmaxOptions" and "beta" not in options:
        options["beta"] = 1.0

    activation = options.get("fused_activation_function", 0)
    if activation not in SUPPORTED_ACTIVATIONS:
        raise ToolkitError(
            f"{source}: op {index} ({layer}, {kind}) has fused activation code {activation}; "
            f"supported: {', '.join(SUPPORTED_ACTIVATIONS.values())}"
        )
    if kind == "FULLY_CONNECTED" and options.get("weights_format", 0) != 0:
        raise ToolkitError(
            f"{source}: op {index} ({layer}) uses shuffled FULLY_CONNECTED weights; convert "
            "the model with the default weight format"
        )
    return Op(index, kind, inputs, outputs, options, name=layer)


def _check_int8(graph: Graph) -> None:
    """Reject float activations anywhere but the input of QUANTIZE and the
    output of DEQUANTIZE."""
    for op in graph.ops:
        allowed_float = set()
        if op.kind == "QUANTIZE":
            allowed_float.add(op.inputs[0])
        if op.kind == "DEQUANTIZE":
            allowed_float.update(op.outputs)
        for index in [*op.inputs, *op.outputs]:
            if index < 0:
                continue
            tensor = graph.tensors[index]
            if tensor.is_constant and op.kind in (
                "FULLY_CONNECTED",
                "CONV_2D",
                "DEPTHWISE_CONV_2D",
            ):
                continue
            if tensor.dtype == "float32" and index not in allowed_float:
                raise ToolkitError(
                    f"{graph.source}: op {op.index} ({op.name}, {op.kind}) works on float32 "
                    f"tensor '{tensor.name}'; the toolkit deploys full-integer int8 models. "
                    "Convert the Keras model with `toolkit deploy MODEL.keras --calibration "
                    "DATA` (or toolkit.convert.to_int8_tflite) instead of a float .tflite"
                )
    for op in graph.ops:
        if op.kind in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            _check_weights(graph, op)


def _check_weights(graph: Graph, op: Op) -> None:
    weights = graph.tensors[op.inputs[1]]
    if not weights.is_constant or weights.dtype != "int8":
        raise ToolkitError(
            f"{graph.source}: op {op.index} ({op.name}, {op.kind}) has weights '{weights.name}' "
            f"of type {weights.dtype}{'' if weights.is_constant else ' computed at run time'}; "
            "the toolkit needs constant int8 weights (full-integer quantization)"
        )
    if weights.quantization is None:
        raise ToolkitError(
            f"{graph.source}: weights '{weights.name}' of op {op.index} have no quantization "
            "parameters; convert with full-integer int8 quantization"
        )
    if len(op.inputs) > 2 and op.inputs[2] >= 0:
        bias = graph.tensors[op.inputs[2]]
        if bias.dtype != "int32" or not bias.is_constant:
            raise ToolkitError(
                f"{graph.source}: bias '{bias.name}' of op {op.index} ({op.name}) has type "
                f"{bias.dtype}; int8 kernels need a constant int32 bias"
            )
