"""Post-training magnitude pruning of int8 weights, and the pruning spec.

For a `.tflite` model, the CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED
weights are pruned in place on the int8 values. The granularities zero the
smallest weights (unstructured), the r x c blocks, the output channels
(filter) or the input channels (channel) of smallest mean magnitude, or all
but the n largest of every m consecutive weights (n:m). The result is a
valid model that TFLite Micro runs, and the packer stores it in a sparse
format where that is smaller. Accuracy drops without fine-tuning, so prune
the Keras model and fine-tune it to keep accuracy.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from toolkit.errors import ToolkitError
from toolkit.ir import Graph, Op
from toolkit.pack.share import WEIGHTED_OPS
from toolkit.tflite_edit import replace_constants

SPEC_HELP = (
    "a pruning spec is SPARSITY (unstructured, e.g. 0.8), N:M (e.g. 2:4), "
    "block:RxC:SPARSITY (e.g. block:1x4:0.5), filter:SPARSITY or channel:SPARSITY"
)


@dataclass(frozen=True)
class PruningSpec:
    """One pruning setting: granularity, sparsity, block shape and n:m."""

    granularity: str
    sparsity: float = 0.5
    block: tuple[int, int] = (1, 4)
    n_m: tuple[int, int] = (2, 4)


def _sparsity(text: str, spec: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ToolkitError(
            f"invalid pruning spec '{spec}': '{text}' is not a number; {SPEC_HELP}"
        ) from None
    if not 0.0 <= value < 1.0:
        raise ToolkitError(
            f"invalid pruning spec '{spec}': sparsity {value} is outside [0, 1); {SPEC_HELP}"
        )
    return value


def parse_spec(spec: str) -> PruningSpec:
    """Parse a pruning spec such as "0.8", "2:4", "block:1x4:0.5" or "filter:0.5"."""
    text = spec.strip().lower()
    if match := re.fullmatch(r"(\d+):(\d+)", text):
        n, m = int(match.group(1)), int(match.group(2))
        if not 1 <= n < m <= 64:
            raise ToolkitError(f"invalid pruning spec '{spec}': need 1 <= N < M <= 64")
        return PruningSpec("n:m", 1.0 - n / m, n_m=(n, m))
    if match := re.fullmatch(r"block:(\d+)x(\d+):([0-9.]+)", text):
        r, c = int(match.group(1)), int(match.group(2))
        if r < 1 or c < 1:
            raise ToolkitError(f"invalid pruning spec '{spec}': block sides must be at least 1")
        return PruningSpec("block", _sparsity(match.group(3), spec), block=(r, c))
    if match := re.fullmatch(r"(filter|channel|unstructured):([0-9.]+)", text):
        return PruningSpec(match.group(1), _sparsity(match.group(2), spec))
    if re.fullmatch(r"[0-9.]+", text):
        return PruningSpec("unstructured", _sparsity(text, spec))
    raise ToolkitError(f"invalid pruning spec '{spec}'; {SPEC_HELP}")


def _prune_groups(magnitude: np.ndarray, labels: np.ndarray, sparsity: float) -> np.ndarray:
    """Keep-mask that zeros the groups of smallest mean magnitude until about
    `sparsity` of the weights are zero."""
    count = int(labels.max()) + 1
    sums = np.bincount(labels.ravel(), weights=magnitude.ravel(), minlength=count)
    sizes = np.bincount(labels.ravel(), minlength=count)
    order = np.argsort(sums / np.maximum(sizes, 1), kind="stable")
    removed = np.cumsum(sizes[order])
    target = sparsity * magnitude.size
    cut = int(np.argmin(np.abs(np.concatenate([[0], removed]) - target)))
    keep_group = np.ones(count, dtype=bool)
    keep_group[order[:cut]] = False
    return keep_group[labels]


def prune_rows(rows: np.ndarray, spec: PruningSpec, input_channels: int) -> np.ndarray:
    """Prune an int8 [out, in*kh*kw] matrix (HWI order within a row)."""
    magnitude = np.abs(rows.astype(np.int64))
    out, length = rows.shape
    if spec.granularity == "n:m":
        n, m = spec.n_m
        groups = math.ceil(length / m)
        padded = np.zeros((out, groups * m), dtype=np.int64)
        padded[:, :length] = magnitude
        # Rank within each group of m; keep the n largest (ties by position).
        order = np.argsort(-padded.reshape(out, groups, m), axis=2, kind="stable")
        keep = np.zeros((out, groups, m), dtype=bool)
        np.put_along_axis(keep, order[:, :, :n], True, axis=2)
        mask = keep.reshape(out, -1)[:, :length]
    elif spec.granularity == "unstructured":
        labels = np.arange(rows.size).reshape(rows.shape)
        mask = _prune_groups(magnitude, labels, spec.sparsity)
    elif spec.granularity == "block":
        r, c = spec.block
        labels = (np.arange(out)[:, None] // r) * math.ceil(length / c) + np.arange(length) // c
        mask = _prune_groups(magnitude, labels, spec.sparsity)
    elif spec.granularity == "filter":
        labels = np.repeat(np.arange(out)[:, None], length, axis=1)
        mask = _prune_groups(magnitude, labels, spec.sparsity)
    else:
        labels = np.tile(np.arange(length) % input_channels, (out, 1))
        mask = _prune_groups(magnitude, labels, spec.sparsity)
    return np.where(mask, rows, 0).astype(np.int8)


def _rows_of(op: Op, weights: np.ndarray) -> tuple[np.ndarray, int]:
    if op.kind == "DEPTHWISE_CONV_2D":
        return weights.reshape(-1, weights.shape[3]).T, 1
    input_channels = weights.shape[3] if op.kind == "CONV_2D" else weights.shape[1]
    return weights.reshape(weights.shape[0], -1), input_channels


def prune_int8_weights(
    flatbuffer: bytes, graph: Graph, spec: PruningSpec, layers: list[str] | None = None
) -> bytes:
    """Prune the weights of `graph` (the import of `flatbuffer`) and return
    the edited model; `layers` limits it to those output tensor names."""
    replacements = {}
    for op in graph.ops:
        if op.kind not in WEIGHTED_OPS or (layers is not None and op.name not in layers):
            continue
        weights = graph.tensors[op.inputs[1]]
        assert weights.data is not None
        rows, input_channels = _rows_of(op, weights.data)
        pruned = prune_rows(np.ascontiguousarray(rows), spec, input_channels)
        if op.kind == "DEPTHWISE_CONV_2D":
            pruned = pruned.T
        replacements[weights.index] = pruned.reshape(weights.shape)
    return replace_constants(flatbuffer, replacements)
