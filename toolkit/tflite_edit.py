"""Edit constant tensors of a `.tflite` flatbuffer in place.

Used by post-training compression steps that change int8 weight values but
not their shapes, so the edited file is still a valid model that TFLite
Micro runs, byte for byte the same apart from those values.
"""

from __future__ import annotations

import numpy as np
import tflite
from flatbuffers.number_types import UOffsetTFlags

from toolkit.errors import ToolkitError


def _buffer_position(model: tflite.Model, buffer_index: int) -> tuple[int, int]:
    """(start, length) of a buffer's data vector inside the flatbuffer."""
    buffer = model.Buffers(buffer_index)
    table = buffer._tab
    offset = UOffsetTFlags.py_type(table.Offset(4))
    if offset == 0:
        raise ToolkitError(
            f"buffer {buffer_index} has no inline data; models over 2 GB cannot be edited"
        )
    return table.Vector(offset), table.VectorLen(offset)


def replace_constants(flatbuffer: bytes, values: dict[int, np.ndarray]) -> bytes:
    """Return a copy of `flatbuffer` whose constant tensors (by tensor index
    in the first subgraph) hold `values`, which keep each tensor's shape
    and dtype."""
    model = tflite.Model.GetRootAs(flatbuffer, 0)
    subgraph = model.Subgraphs(0)
    edited = bytearray(flatbuffer)
    for index, array in values.items():
        tensor = subgraph.Tensors(index)
        start, length = _buffer_position(model, tensor.Buffer())
        data = np.ascontiguousarray(array).tobytes()
        if len(data) != length:
            raise ToolkitError(
                f"tensor {index} ('{tensor.Name().decode()}') has {length} bytes of data, the "
                f"replacement {len(data)}; shapes and types must stay the same"
            )
        edited[start : start + length] = data
    return bytes(edited)
