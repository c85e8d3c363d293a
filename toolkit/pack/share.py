"""Post-training weight sharing on int8 weights.

For a `.tflite` model that was not clustered during training, each output
channel of the CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED weights is
clustered into K int8 values by one-dimensional k-means, with linear
initialisation over the channel's range as in Deep Compression. The weights
are then replaced by their centroids. The result is a valid int8 model that
TFLite Micro runs, and the codebook packer stores it in about log2(K) bits
per weight. Accuracy drops without fine-tuning, so cluster the Keras model
with `toolkit.compress.cluster` and fine-tune it to keep accuracy.

This k-means runs on int8 values with numpy only, because the `.tflite`
path must not import TensorFlow; `toolkit.compress.cluster` has its own
float k-means for Keras kernels.
"""

from __future__ import annotations

import numpy as np

from toolkit.errors import ToolkitError
from toolkit.ir import Graph
from toolkit.tflite_edit import replace_constants

WEIGHTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


def kmeans_1d(values: np.ndarray, clusters: int, iterations: int = 20) -> np.ndarray:
    """Cluster int8 values into at most `clusters` int8 centroids and return
    each value replaced by its centroid. Zeros (pruned weights) keep a
    centroid pinned at exactly 0, which counts within `clusters`."""
    values = values.astype(np.float64)
    shared = np.zeros(values.shape)
    nonzero = values != 0
    free = clusters - 1 if (~nonzero).any() else clusters
    if nonzero.any() and free >= 1:
        shared[nonzero] = _lloyd(values[nonzero], free, iterations)
    elif nonzero.any():
        # One cluster and some zeros: the zero centroid takes every value.
        shared[:] = 0
    return np.clip(shared, -127, 127).astype(np.int8)


def _lloyd(values: np.ndarray, clusters: int, iterations: int) -> np.ndarray:
    low, high = values.min(), values.max()
    centroids = np.linspace(low, high, clusters) if clusters > 1 else np.array([values.mean()])
    for _ in range(iterations):
        nearest = np.argmin(np.abs(values[:, None] - centroids[None, :]), axis=1)
        updated = centroids.copy()
        for k in range(clusters):
            members = values[nearest == k]
            if members.size:
                updated[k] = members.mean()
        if np.allclose(updated, centroids):
            break
        centroids = updated
    # Round after the last assignment, so two centroids that round to the
    # same int8 value merge and the count stays within `clusters`.
    nearest = np.argmin(np.abs(values[:, None] - centroids[None, :]), axis=1)
    return np.round(centroids)[nearest]


def share_int8_weights(
    flatbuffer: bytes, graph: Graph, clusters: int, layers: list[str] | None = None
) -> bytes:
    """Cluster each output channel of the weights of `graph` (the import of
    `flatbuffer`) to at most `clusters` values and return the edited model."""
    if not 1 <= clusters <= 256:
        raise ToolkitError(f"clusters must be in 1..256, got {clusters}")
    names = {op.name for op in graph.ops if op.kind in WEIGHTED_OPS}
    unknown = sorted(set(layers or []) - names)
    if unknown:
        raise ToolkitError(
            f"{graph.source}: layers {unknown} not found among the weighted layers; choose from "
            f"{sorted(names)}"
        )
    replacements = {}
    for op in graph.ops:
        if op.kind not in WEIGHTED_OPS or (layers is not None and op.name not in layers):
            continue
        weights = graph.tensors[op.inputs[1]]
        assert weights.data is not None
        if op.kind == "DEPTHWISE_CONV_2D":
            rows = weights.data.reshape(-1, weights.shape[3]).T
        else:
            rows = weights.data.reshape(weights.shape[0], -1)
        shared = np.stack([kmeans_1d(row, clusters) for row in rows])
        if op.kind == "DEPTHWISE_CONV_2D":
            shared = shared.T
        replacements[weights.index] = shared.reshape(weights.shape)
    return replace_constants(flatbuffer, replacements)
