"""Lower each IR op to a kernel call: its constant parameters, the call, the
check, the weight arrays it reads, and a row for the report."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from toolkit import quantization as q
from toolkit.codegen.c_writer import c_type, comment_text, dims_initializer, int_list
from toolkit.errors import ToolkitError
from toolkit.ir import Graph, Op, Tensor
from toolkit.pack import CodebookTensor, find_codebook
from toolkit.pack.n_m import NMTensor, find_n_m
from toolkit.pack.sparse import BlockSparseTensor, find_block_sparse
from toolkit.pack.sparse_codebook import SparseCodebookTensor, find_sparse_codebook

PADDING_SAME = 0


@dataclass
class WeightArray:
    """A constant array written to weights.c."""

    symbol: str
    dtype: str
    values: np.ndarray

    @property
    def nbytes(self) -> int:
        return int(self.values.size) * np.dtype(self.values.dtype).itemsize


@dataclass
class LayerInfo:
    """One row of the per-layer report."""

    index: int
    op: str
    name: str
    input_shapes: list[list[int]]
    output_shape: list[int]
    parameters: int = 0
    macs: int = 0
    weight_bytes: int = 0
    weight_format: str = "-"
    int8_weight_bytes: int = 0
    sparsity: float = 0.0
    bits_per_weight: float = 0.0
    value_bytes: int = 0
    codebook_bytes: int = 0
    index_bytes: int = 0


@dataclass
class LayerCode:
    """The generated pieces for one op."""

    declarations: list[str]
    call: str
    checks: list[str]
    weights: list[WeightArray] = field(default_factory=list)
    info: LayerInfo | None = None


class LayerContext:
    """Inputs of every lowering function: the graph, the tensor pointers and
    the symbol prefix."""

    def __init__(
        self,
        graph: Graph,
        tensor_pointer: Callable[[int, str], str],
        prefix: str,
        weight_format: str = "auto",
    ):
        self.graph = graph
        self.tensor_pointer = tensor_pointer
        self.prefix = prefix
        self.weight_format = weight_format

    def symbol(self, op: Op, name: str) -> str:
        return f"{self.prefix}_l{op.index}_{name}"

    def pointer(self, index: int) -> str:
        tensor = self.graph.tensors[index]
        return self.tensor_pointer(index, c_type(tensor.dtype))


def _error(graph: Graph, op: Op, problem: str) -> ToolkitError:
    return ToolkitError(f"{graph.source}: op {op.index} ({op.name}, {op.kind}): {problem}")


def _quant_arrays(
    ctx: LayerContext, op: Op, multipliers: list[int], shifts: list[int]
) -> tuple[list[str], str]:
    mult = ctx.symbol(op, "multiplier")
    shift = ctx.symbol(op, "shift")
    quant = ctx.symbol(op, "quant")
    declarations = [
        f"static const int32_t {mult}[{len(multipliers)}] = "
        f"{{\n    {int_list(multipliers, 8)}\n}};\n",
        f"static const int32_t {shift}[{len(shifts)}] = {{\n    {int_list(shifts)}\n}};\n",
        f"static const tk_quant_per_channel {quant} = {{{mult}, {shift}, {len(multipliers)}}};\n",
    ]
    return declarations, quant


def _clamp(op: Op, output: Tensor) -> str:
    low, high = q.activation_range(
        op.options.get("fused_activation_function", 0), output.scale(), output.zero_point()
    )
    return f"{{{low}, {high}}}"


def _same_padding(in_size: int, filter_size: int, stride: int, dilation: int, out_size: int) -> int:
    effective = (filter_size - 1) * dilation + 1
    total = max((out_size - 1) * stride + effective - in_size, 0)
    return total // 2


def _padding(
    op: Op,
    input_shape: tuple[int, ...],
    output_shape: tuple[int, ...],
    kernel: tuple[int, int],
    dilation: tuple[int, int],
) -> tuple[int, int]:
    if op.options.get("padding", PADDING_SAME) != PADDING_SAME:
        return 0, 0
    pad_h = _same_padding(
        input_shape[1], kernel[0], op.options["stride_h"], dilation[0], output_shape[1]
    )
    pad_w = _same_padding(
        input_shape[2], kernel[1], op.options["stride_w"], dilation[1], output_shape[2]
    )
    return pad_h, pad_w


WEIGHT_FORMATS = ("auto", "int8", "codebook", "sparse")


@dataclass
class PackedWeights:
    """The weight and bias arrays of one layer and how the kernel reads them."""

    weights: Tensor
    bias: Tensor | None
    arrays: list[WeightArray]
    filter_argument: str
    kernel_suffix: str
    declarations: list[str]
    checks: list[str]
    stats: dict[str, Any]

    @property
    def nbytes(self) -> int:
        return sum(array.nbytes for array in self.arrays)


def _pack_weights(ctx: LayerContext, op: Op, rows: np.ndarray) -> PackedWeights:
    """Choose the storage of the weights, viewed as one row of int8 values
    per output channel, and add the int32 bias.

    "auto" takes the smallest of int8, codebook, and (for CONV_2D and
    FULLY_CONNECTED with weight zero points of 0) block-sparse, N:M and
    sparse codebook. "codebook" and "sparse" force those formats where they
    apply, and "int8" never packs.
    """
    weights = ctx.graph.tensors[op.inputs[1]]
    assert weights.data is not None and weights.quantization is not None
    bias = None
    bias_arrays = []
    if len(op.inputs) > 2 and op.inputs[2] >= 0:
        bias = ctx.graph.tensors[op.inputs[2]]
        assert bias.data is not None
        bias_arrays.append(WeightArray(ctx.symbol(op, "bias"), "int32", bias.data.astype(np.int32)))

    candidates = [_int8_weights(ctx, op, weights, rows)]
    if ctx.weight_format in ("auto", "codebook"):
        codebook = find_codebook(rows)
        if codebook is not None:
            candidates.append(_codebook_weights(ctx, op, weights, rows, codebook))
    symmetric = not weights.quantization.zero_point.any()
    if ctx.weight_format in ("auto", "sparse") and symmetric and op.kind in SPARSE_OPS:
        sparse = find_block_sparse(rows)
        if sparse is not None:
            candidates.append(_sparse_weights(ctx, op, weights, rows, sparse))
    if ctx.weight_format in ("auto", "sparse") and symmetric and op.kind in SPARSE_OPS:
        n_m = find_n_m(rows)
        if n_m is not None:
            candidates.append(_n_m_weights(ctx, op, weights, rows, n_m))
    if ctx.weight_format == "auto" and symmetric and op.kind in SPARSE_OPS and not rows.all():
        combined = find_sparse_codebook(rows)
        if combined is not None:
            candidates.append(_sparse_codebook_weights(ctx, op, weights, rows, combined))

    if ctx.weight_format == "auto":
        chosen = min(candidates, key=lambda packed: packed.nbytes)
    else:
        # The requested format where it applies, int8 elsewhere.
        # "sparse" takes the smaller of the block-sparse and N:M encodings.
        kinds = {"int8": ("int8",), "codebook": ("codebook",), "sparse": ("block-sparse", ":")}
        matching = [
            c
            for c in candidates
            if any(kind in c.stats["format"] for kind in kinds[ctx.weight_format])
            and not c.stats["format"].startswith("sparse codebook")
        ]
        chosen = min(matching, key=lambda packed: packed.nbytes) if matching else candidates[0]
    chosen.bias = bias
    chosen.arrays += bias_arrays
    return chosen


SPARSE_OPS = ("CONV_2D", "FULLY_CONNECTED")


def _stats(fmt: str, rows: np.ndarray, values: int, table: int, index: int) -> dict[str, Any]:
    return {
        "format": fmt,
        "bits": 8.0 * (values + table + index) / rows.size,
        "sparsity": float(np.mean(rows == 0)),
        "int8_bytes": int(rows.size),
        "value_bytes": values,
        "codebook_bytes": table,
        "index_bytes": index,
    }


def _int8_weights(ctx: LayerContext, op: Op, weights: Tensor, rows: np.ndarray) -> PackedWeights:
    assert weights.data is not None
    symbol = ctx.symbol(op, "weights")
    return PackedWeights(
        weights,
        None,
        [WeightArray(symbol, "int8", weights.data.astype(np.int8))],
        symbol,
        "s8",
        [],
        [],
        _stats("int8", rows, int(rows.size), 0, 0),
    )


def _codebook_weights(
    ctx: LayerContext, op: Op, weights: Tensor, rows: np.ndarray, codebook: CodebookTensor
) -> PackedWeights:
    table = ctx.symbol(op, "table")
    indices = ctx.symbol(op, "indices")
    descriptor = ctx.symbol(op, "codebook")
    stride = 0 if codebook.shared_table else codebook.table_size
    declaration = (
        f"static const tk_codebook {descriptor} = {{{table}, {indices}, {codebook.bits}, "
        f"{codebook.table_size}, {stride}, {codebook.row_bytes}, {rows.shape[0]}}};\n"
    )
    return PackedWeights(
        weights,
        None,
        [
            WeightArray(table, "int8", codebook.tables),
            WeightArray(indices, "uint8", codebook.indices),
        ],
        f"&{descriptor}",
        "codebook_s8",
        [declaration],
        [f"tk_codebook_check(&{descriptor}, {rows.shape[0]}, {rows.shape[1]})"],
        _stats(
            f"codebook {codebook.bits}-bit", rows, 0, codebook.table_bytes, codebook.index_bytes
        ),
    )


def _n_m_weights(
    ctx: LayerContext, op: Op, weights: Tensor, rows: np.ndarray, packed: NMTensor
) -> PackedWeights:
    values = ctx.symbol(op, "n_m_values")
    positions = ctx.symbol(op, "n_m_positions")
    descriptor = ctx.symbol(op, "n_m")
    declaration = (
        f"static const tk_n_m {descriptor} = {{{values}, {positions}, {packed.n}, {packed.m}, "
        f"{packed.position_bits}, {packed.positions.shape[1]}, {rows.shape[0]}}};\n"
    )
    return PackedWeights(
        weights,
        None,
        [
            WeightArray(values, "int8", packed.values),
            WeightArray(positions, "uint8", packed.positions),
        ],
        f"&{descriptor}",
        "n_m_s8",
        [declaration],
        [f"tk_n_m_check(&{descriptor}, {rows.shape[0]}, {rows.shape[1]})"],
        _stats(f"{packed.n}:{packed.m}", rows, packed.value_bytes, 0, packed.index_bytes),
    )


def _sparse_codebook_weights(
    ctx: LayerContext, op: Op, weights: Tensor, rows: np.ndarray, packed: SparseCodebookTensor
) -> PackedWeights:
    table = ctx.symbol(op, "table")
    entries = ctx.symbol(op, "entries")
    starts = ctx.symbol(op, "row_starts")
    descriptor = ctx.symbol(op, "sparse_codebook")
    stride = 0 if packed.shared_table else 16
    declaration = (
        f"static const tk_sparse_codebook {descriptor} = {{{table}, {entries}, {starts}, "
        f"{stride}, {rows.shape[0]}, {packed.entries.size}}};\n"
    )
    return PackedWeights(
        weights,
        None,
        [
            WeightArray(table, "int8", packed.tables),
            WeightArray(entries, "uint8", packed.entries),
            WeightArray(starts, "uint16", packed.row_starts),
        ],
        f"&{descriptor}",
        "sparse_codebook_s8",
        [declaration],
        [f"tk_sparse_codebook_check(&{descriptor}, {rows.shape[0]}, {rows.shape[1]})"],
        _stats("sparse codebook 4-bit", rows, 0, packed.table_bytes, packed.index_bytes),
    )


def _sparse_weights(
    ctx: LayerContext, op: Op, weights: Tensor, rows: np.ndarray, sparse: BlockSparseTensor
) -> PackedWeights:
    values = ctx.symbol(op, "block_values")
    starts = ctx.symbol(op, "row_starts")
    columns = ctx.symbol(op, "block_columns")
    descriptor = ctx.symbol(op, "sparse")
    r, c = sparse.block
    declaration = (
        f"static const tk_block_sparse {descriptor} = {{{values}, {starts}, {columns}, {r}, {c}, "
        f"{sparse.row_starts.size - 1}, {sparse.block_count}}};\n"
    )
    return PackedWeights(
        weights,
        None,
        [
            WeightArray(values, "int8", sparse.values),
            WeightArray(starts, "uint16", sparse.row_starts),
            WeightArray(columns, "uint16", sparse.block_columns),
        ],
        f"&{descriptor}",
        "block_sparse_s8",
        [declaration],
        [f"tk_block_sparse_check(&{descriptor}, {rows.shape[0]}, {rows.shape[1]})"],
        _stats(
            f"block-sparse {r}x{c}",
            rows,
            int(sparse.values.size),
            0,
            2 * int(sparse.row_starts.size + sparse.block_columns.size),
        ),
    )


def _check_activation_quantization(ctx: LayerContext, op: Op) -> None:
    for index in [*op.inputs, *op.outputs]:
        if index < 0:
            continue
        tensor = ctx.graph.tensors[index]
        if tensor.is_constant:
            continue
        if tensor.dtype != "int8":
            raise _error(
                ctx.graph,
                op,
                f"tensor '{tensor.name}' has type {tensor.dtype}; the kernels take int8 "
                "activations (int16 activations and uint8 models are not supported), so "
                "convert with full-integer int8 quantization",
            )
        if tensor.dtype == "int8" and (
            tensor.quantization is None or tensor.quantization.per_channel
        ):
            raise _error(
                ctx.graph,
                op,
                f"int8 tensor '{tensor.name}' needs one scale and zero point per tensor",
            )


def _info(
    ctx: LayerContext,
    op: Op,
    macs: int,
    packed: PackedWeights | None = None,
    constants: list[WeightArray] | None = None,
) -> LayerInfo:
    graph = ctx.graph
    inputs = [
        list(graph.tensors[i].shape)
        for i in op.inputs
        if i >= 0 and not graph.tensors[i].is_constant
    ]
    info = LayerInfo(
        index=op.index,
        op=op.kind,
        name=op.name,
        input_shapes=inputs,
        output_shape=list(graph.tensors[op.outputs[0]].shape),
        macs=macs,
    )
    if constants:
        info.parameters = sum(int(a.values.size) for a in constants)
        info.weight_bytes = sum(a.nbytes for a in constants)
        info.weight_format = "int8"
    if packed is not None:
        info.parameters = packed.weights.size + (packed.bias.size if packed.bias else 0)
        info.weight_bytes = sum(a.nbytes for a in packed.arrays)
        info.weight_format = str(packed.stats["format"])
        info.int8_weight_bytes = int(packed.stats["int8_bytes"])
        info.sparsity = float(packed.stats["sparsity"])
        info.bits_per_weight = float(packed.stats["bits"])
        info.value_bytes = int(packed.stats["value_bytes"])
        info.codebook_bytes = int(packed.stats["codebook_bytes"])
        info.index_bytes = int(packed.stats["index_bytes"])
    return info


def _lower_conv(ctx: LayerContext, op: Op) -> LayerCode:
    graph = ctx.graph
    x, out = graph.tensors[op.inputs[0]], graph.tensors[op.outputs[0]]
    weights = graph.tensors[op.inputs[1]]
    assert weights.data is not None
    depthwise = op.kind == "DEPTHWISE_CONV_2D"
    if depthwise:
        # Depthwise filters are 1HWC: one row per output channel is a column.
        rows = weights.data.reshape(-1, weights.shape[3]).T
    else:
        rows = weights.data.reshape(weights.shape[0], -1)
    packed = _pack_weights(ctx, op, np.ascontiguousarray(rows))
    if len(x.shape) != 4 or len(out.shape) != 4:
        raise _error(
            graph, op, f"expected 4-D input and output, got {list(x.shape)} and {list(out.shape)}"
        )
    if not depthwise and weights.shape[3] != x.shape[3]:
        raise _error(
            graph,
            op,
            f"grouped convolution (filter depth {weights.shape[3]}, input "
            f"depth {x.shape[3]}) is not supported",
        )
    dilation = (op.options.get("dilation_h_factor", 1), op.options.get("dilation_w_factor", 1))
    pad_h, pad_w = _padding(op, x.shape, out.shape, (weights.shape[1], weights.shape[2]), dilation)
    assert weights.quantization is not None
    scales = weights.quantization.scale
    if scales.size == 1:
        scales = np.repeat(scales, out.shape[3])
    multipliers, shifts = q.conv_multipliers(x.scale(), scales, out.scale())
    declarations, quant = _quant_arrays(ctx, op, multipliers, shifts)
    declarations += packed.declarations

    params = ctx.symbol(op, "params")
    fields = (
        f"{-x.zero_point()}, {out.zero_point()}, {op.options['stride_h']}, "
        f"{op.options['stride_w']}, {dilation[0]}, {dilation[1]}, {pad_h}, {pad_w}"
    )
    if depthwise:
        multiplier = op.options.get("depth_multiplier") or out.shape[3] // x.shape[3]
        declarations.append(
            f"static const tk_depthwise_conv_params {params} = "
            f"{{{fields}, {multiplier}, {_clamp(op, out)}}};\n"
        )
    else:
        declarations.append(
            f"static const tk_conv_params {params} = {{{fields}, {_clamp(op, out)}}};\n"
        )
    dims = {}
    for role, shape in (("input", x.shape), ("filter", weights.shape), ("output", out.shape)):
        dims[role] = ctx.symbol(op, f"{role}_dims")
        declarations.append(f"static const tk_dims {dims[role]} = {dims_initializer(shape)};\n")

    name = "tk_depthwise_conv2d" if depthwise else "tk_conv2d"
    bias_arg = ctx.symbol(op, "bias") if packed.bias is not None else "NULL"
    call = (
        f"{name}_{packed.kernel_suffix}(&{params}, &{quant}, &{dims['input']}, "
        f"{ctx.pointer(op.inputs[0])}, &{dims['filter']}, {packed.filter_argument}, {bias_arg}, "
        f"&{dims['output']}, {ctx.pointer(op.outputs[0])});"
    )
    check = (
        f"{name}_s8_check(&{params}, &{quant}, &{dims['input']}, &{dims['filter']}, "
        f"&{dims['output']})"
    )
    taps = weights.shape[1] * weights.shape[2] * (1 if depthwise else weights.shape[3])
    return LayerCode(
        declarations,
        call,
        [check, *packed.checks],
        packed.arrays,
        _info(ctx, op, out.size * taps, packed),
    )


def _lower_fully_connected(ctx: LayerContext, op: Op) -> LayerCode:
    graph = ctx.graph
    x, out = graph.tensors[op.inputs[0]], graph.tensors[op.outputs[0]]
    weights = graph.tensors[op.inputs[1]]
    assert weights.data is not None
    packed = _pack_weights(ctx, op, weights.data)

    units, depth = weights.shape
    if x.size % depth != 0:
        raise _error(
            graph, op, f"input of {x.size} values is not a multiple of the weight depth {depth}"
        )
    batches = x.size // depth

    assert weights.quantization is not None
    scales = weights.quantization.scale
    if scales.size == 1:
        scales = np.repeat(scales, units)
    multipliers, shifts = q.fully_connected_multipliers(x.scale(), scales, out.scale())
    declarations, quant = _quant_arrays(ctx, op, multipliers, shifts)
    declarations += packed.declarations
    weight_zero_point = int(weights.quantization.zero_point[0])
    params = ctx.symbol(op, "params")
    declarations.append(
        f"static const tk_fully_connected_params {params} = {{{-x.zero_point()}, "
        f"{-weight_zero_point}, {out.zero_point()}, {_clamp(op, out)}}};\n"
    )

    bias_arg = ctx.symbol(op, "bias") if packed.bias is not None else "NULL"
    call = (
        f"tk_fully_connected_{packed.kernel_suffix}(&{params}, &{quant}, {batches}, {depth}, "
        f"{units}, {ctx.pointer(op.inputs[0])}, {packed.filter_argument}, {bias_arg}, "
        f"{ctx.pointer(op.outputs[0])});"
    )
    check = f"tk_fully_connected_s8_check(&{params}, &{quant}, {batches}, {depth}, {units})"
    return LayerCode(
        declarations,
        call,
        [check, *packed.checks],
        packed.arrays,
        _info(ctx, op, batches * units * depth, packed),
    )


def _lower_pool(ctx: LayerContext, op: Op) -> LayerCode:
    graph = ctx.graph
    x, out = graph.tensors[op.inputs[0]], graph.tensors[op.outputs[0]]
    if x.scale() != out.scale() or x.zero_point() != out.zero_point():
        raise _error(
            graph,
            op,
            "input and output quantization differ, which TFLM's int8 pooling does not allow",
        )
    kernel = (op.options["filter_height"], op.options["filter_width"])
    pad_h, pad_w = _padding(op, x.shape, out.shape, kernel, (1, 1))
    params = ctx.symbol(op, "params")
    declarations = [
        f"static const tk_pool_params {params} = {{{op.options['stride_h']}, "
        f"{op.options['stride_w']}, {kernel[0]}, {kernel[1]}, {pad_h}, {pad_w}, "
        f"{_clamp(op, out)}}};\n"
    ]
    dims = {}
    for role, shape in (("input", x.shape), ("output", out.shape)):
        dims[role] = ctx.symbol(op, f"{role}_dims")
        declarations.append(f"static const tk_dims {dims[role]} = {dims_initializer(shape)};\n")
    name = "tk_avg_pool_s8" if op.kind == "AVERAGE_POOL_2D" else "tk_max_pool_s8"
    call = (
        f"{name}(&{params}, &{dims['input']}, {ctx.pointer(op.inputs[0])}, "
        f"&{dims['output']}, {ctx.pointer(op.outputs[0])});"
    )
    check = f"tk_pool_s8_check(&{params}, &{dims['input']}, &{dims['output']})"
    return LayerCode(declarations, call, [check], [], _info(ctx, op, 0))


def _broadcast_strides(shape: tuple[int, ...], out_shape: list[int]) -> list[int]:
    padded = [1] * (4 - len(shape)) + list(shape)
    strides = [0, 0, 0, 0]
    step = 1
    for axis in range(3, -1, -1):
        strides[axis] = 0 if padded[axis] == 1 and out_shape[axis] != 1 else step
        step *= padded[axis]
    return strides


def _lower_add(ctx: LayerContext, op: Op) -> LayerCode:
    graph = ctx.graph
    a, b = graph.tensors[op.inputs[0]], graph.tensors[op.inputs[1]]
    out = graph.tensors[op.outputs[0]]
    if len(out.shape) > 4:
        raise _error(graph, op, f"output shape {list(out.shape)} has more than 4 dimensions")
    out4 = [1] * (4 - len(out.shape)) + list(out.shape)

    arrays = []
    pointers = []
    for role, tensor in (("input1", a), ("input2", b)):
        if tensor.is_constant:
            assert tensor.data is not None
            arrays.append(WeightArray(ctx.symbol(op, role), "int8", tensor.data.astype(np.int8)))
            pointers.append(ctx.symbol(op, role))
        else:
            pointers.append(ctx.pointer(tensor.index))

    factors = q.add_parameters(a.scale(), b.scale(), out.scale())
    params = ctx.symbol(op, "params")
    declarations = [
        f"static const tk_add_params {params} = {{{-a.zero_point()}, {-b.zero_point()}, "
        f"{out.zero_point()}, {factors['left_shift']}, "
        f"{{{factors['input1_multiplier']}, {factors['input1_shift']}}}, "
        f"{{{factors['input2_multiplier']}, {factors['input2_shift']}}}, "
        f"{{{factors['output_multiplier']}, {factors['output_shift']}}}, {_clamp(op, out)}}};\n"
    ]

    strides = {}
    for role, tensor in (("input1", a), ("input2", b)):
        strides[role] = ctx.symbol(op, f"{role}_strides")
        values = _broadcast_strides(tensor.shape, out4)
        declarations.append(f"static const int32_t {strides[role]}[4] = {{{int_list(values)}}};\n")
    dims = ctx.symbol(op, "output_dims")
    declarations.append(f"static const tk_dims {dims} = {dims_initializer(out4)};\n")

    call = (
        f"tk_add_s8(&{params}, &{dims}, {strides['input1']}, {pointers[0]}, "
        f"{strides['input2']}, {pointers[1]}, {ctx.pointer(op.outputs[0])});"
    )
    check = f"tk_add_s8_check(&{params}, &{dims}, {strides['input1']}, {strides['input2']})"
    return LayerCode(declarations, call, [check], arrays, _info(ctx, op, 0, constants=arrays))


def _lower_softmax(ctx: LayerContext, op: Op) -> LayerCode:
    graph = ctx.graph
    x, out = graph.tensors[op.inputs[0]], graph.tensors[op.outputs[0]]
    if out.dtype != "int8" or out.zero_point() != -128 or out.scale() != np.float32(1.0 / 256):
        raise _error(
            graph,
            op,
            f"int8 softmax output must have scale 1/256 and zero point -128, "
            f"got scale {out.quantization and out.scale()} and zero point "
            f"{out.quantization and out.zero_point()}",
        )
    depth = x.shape[-1]
    rows = x.size // depth
    try:
        p = q.softmax_parameters(op.options.get("beta", 1.0), x.scale())
    except ValueError as exc:
        raise _error(graph, op, str(exc)) from exc
    params = ctx.symbol(op, "params")
    declarations = [
        f"static const tk_softmax_params {params} = {{{p['input_multiplier']}, "
        f"{p['input_left_shift']}, {p['diff_min']}}};\n"
    ]
    call = (
        f"tk_softmax_s8(&{params}, {rows}, {depth}, {ctx.pointer(op.inputs[0])}, "
        f"{ctx.pointer(op.outputs[0])});"
    )
    check = f"tk_softmax_s8_check(&{params}, {rows}, {depth})"
    return LayerCode(declarations, call, [check], [], _info(ctx, op, 0))


def _lower_reshape(ctx: LayerContext, op: Op) -> LayerCode:
    graph = ctx.graph
    x, out = graph.tensors[op.inputs[0]], graph.tensors[op.outputs[0]]
    if x.nbytes != out.nbytes:
        raise _error(
            graph, op, f"input of {x.nbytes} bytes and output of {out.nbytes} bytes differ"
        )
    call = f"memmove({ctx.pointer(op.outputs[0])}, {ctx.pointer(op.inputs[0])}, {x.nbytes});"
    return LayerCode([], call, [], [], _info(ctx, op, 0))


def _affine(ctx: LayerContext, op: Op, tensor: Tensor) -> tuple[list[str], str]:
    symbol = ctx.symbol(op, "affine")
    scale = np.float32(tensor.scale())
    # repr of a float32 widened to float64 is exact; the f suffix rounds it
    # back to the same float32.
    return [
        f"static const tk_affine {symbol} = {{{float(scale)!r}f, {tensor.zero_point()}}};\n"
    ], symbol


def _lower_quantize(ctx: LayerContext, op: Op) -> LayerCode:
    graph = ctx.graph
    x, out = graph.tensors[op.inputs[0]], graph.tensors[op.outputs[0]]
    if out.dtype != "int8" or x.dtype not in ("float32", "int8"):
        raise _error(
            graph,
            op,
            f"QUANTIZE from {x.dtype} to {out.dtype} is not supported; "
            "supported: float32 -> int8 and int8 -> int8",
        )
    if x.dtype == "float32":
        declarations, symbol = _affine(ctx, op, out)
        call = (
            f"tk_quantize_f32_s8(&{symbol}, {x.size}, {ctx.pointer(x.index)}, "
            f"{ctx.pointer(out.index)});"
        )
        return LayerCode(declarations, call, [], [], _info(ctx, op, 0))
    multiplier, shift = q.requantize_multiplier(x.scale(), out.scale())
    symbol = ctx.symbol(op, "quant")
    declarations = [f"static const tk_quant {symbol} = {{{multiplier}, {shift}}};\n"]
    call = (
        f"tk_requantize_s8({x.zero_point()}, &{symbol}, {out.zero_point()}, {x.size}, "
        f"{ctx.pointer(x.index)}, {ctx.pointer(out.index)});"
    )
    return LayerCode(declarations, call, [], [], _info(ctx, op, 0))


def _lower_dequantize(ctx: LayerContext, op: Op) -> LayerCode:
    graph = ctx.graph
    x, out = graph.tensors[op.inputs[0]], graph.tensors[op.outputs[0]]
    if x.dtype != "int8" or out.dtype != "float32":
        raise _error(
            graph,
            op,
            f"DEQUANTIZE from {x.dtype} to {out.dtype} is not supported; "
            "supported: int8 -> float32",
        )
    declarations, symbol = _affine(ctx, op, x)
    call = (
        f"tk_dequantize_s8_f32(&{symbol}, {x.size}, {ctx.pointer(x.index)}, "
        f"{ctx.pointer(out.index)});"
    )
    return LayerCode(declarations, call, [], [], _info(ctx, op, 0))


LOWERINGS: dict[str, Callable[[LayerContext, Op], LayerCode]] = {
    "CONV_2D": _lower_conv,
    "DEPTHWISE_CONV_2D": _lower_conv,
    "FULLY_CONNECTED": _lower_fully_connected,
    "AVERAGE_POOL_2D": _lower_pool,
    "MAX_POOL_2D": _lower_pool,
    "ADD": _lower_add,
    "SOFTMAX": _lower_softmax,
    "RESHAPE": _lower_reshape,
    "QUANTIZE": _lower_quantize,
    "DEQUANTIZE": _lower_dequantize,
}


def lower(ctx: LayerContext, op: Op) -> LayerCode:
    """Lower one op; raises ToolkitError for an op or setting without a kernel."""
    if op.kind not in LOWERINGS:
        raise _error(ctx.graph, op, f"no kernel; supported ops: {', '.join(sorted(LOWERINGS))}")
    if op.kind not in ("QUANTIZE", "DEQUANTIZE"):
        _check_activation_quantization(ctx, op)
    code = LOWERINGS[op.kind](ctx, op)
    code.declarations.insert(0, f"/* layer {op.index}: {op.kind} -> '{comment_text(op.name)}' */\n")
    return code
