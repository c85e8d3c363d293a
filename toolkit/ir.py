"""The toolkit's intermediate representation: a graph of ops over tensors.

The TFLite importer builds it, and the packer, memory planner and code
generator read it. It is plain data and imports neither TensorFlow nor the
flatbuffer schema.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Element size in bytes of each tensor type the toolkit handles.
DTYPE_SIZES = {"int8": 1, "uint8": 1, "int16": 2, "int32": 4, "int64": 8, "float32": 4}


@dataclass
class Quantization:
    """Affine quantization of a tensor: real = scale * (q - zero_point).

    `scale` and `zero_point` hold one entry per tensor or one per slice along
    `axis` (per-channel weights). Scales stay float32, as in the flatbuffer,
    because the fixed-point multipliers must be derived from the same values
    TFLite Micro reads.
    """

    scale: np.ndarray
    zero_point: np.ndarray
    axis: int = 0

    @property
    def per_channel(self) -> bool:
        return self.scale.size > 1


@dataclass
class Tensor:
    """A tensor of the graph: an activation, or a constant when `data` is set."""

    index: int
    name: str
    shape: tuple[int, ...]
    dtype: str
    quantization: Quantization | None = None
    data: np.ndarray | None = None

    @property
    def is_constant(self) -> bool:
        return self.data is not None

    @property
    def size(self) -> int:
        """Element count."""
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.size * DTYPE_SIZES[self.dtype]

    def scale(self) -> float:
        """Return the per-tensor scale; raise ValueError if the tensor has none."""
        if self.quantization is None:
            raise ValueError(f"tensor '{self.name}' has no quantization parameters")
        return float(self.quantization.scale[0])

    def zero_point(self) -> int:
        """Return the per-tensor zero point; raise ValueError if the tensor has none."""
        if self.quantization is None:
            raise ValueError(f"tensor '{self.name}' has no quantization parameters")
        return int(self.quantization.zero_point[0])


@dataclass
class Op:
    """One operator: its TFLite builtin name, tensor indices and options.

    An input index of -1 marks an optional input that is absent (a missing
    bias). `options` contains the builtin options by their schema names in
    snake case, for example `stride_h` or `fused_activation_function`.
    """

    index: int
    kind: str
    inputs: list[int]
    outputs: list[int]
    options: dict[str, Any] = field(default_factory=dict)
    name: str = ""


@dataclass
class Graph:
    """A whole model: tensors, ops in execution order, and the model edges."""

    tensors: list[Tensor]
    ops: list[Op]
    inputs: list[int]
    outputs: list[int]
    source: str = ""
    description: str = ""

    def tensor(self, index: int) -> Tensor:
        return self.tensors[index]

    def consumers(self, tensor_index: int) -> list[Op]:
        return [op for op in self.ops if tensor_index in op.inputs]

    def activation_tensors(self) -> list[Tensor]:
        """Tensors that need RAM: every non-constant tensor the ops touch."""
        used: set[int] = set(self.inputs) | set(self.outputs)
        for op in self.ops:
            used.update(i for i in op.inputs if i >= 0)
            used.update(op.outputs)
        return [self.tensors[i] for i in sorted(used) if not self.tensors[i].is_constant]
