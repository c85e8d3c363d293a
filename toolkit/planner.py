"""Memory planning: place every activation tensor at an offset in one arena.

Algorithm: compute each tensor's lifetime, from the op that writes it to the
last op that reads it. Model inputs live from the start and outputs to the
end. Then place buffers in order of decreasing size, each at the lowest
aligned offset that does not overlap a placed buffer whose lifetime
intersects its own.
This greedy first-fit is also the strategy of TFLM's GreedyMemoryPlanner.
It costs O(n^2) in the tensor count and is not optimal in general. On five
of the six MLPerf Tiny reference models it reaches the peak of live bytes,
the lower bound, as `toolkit profile --arena` shows.

A RESHAPE whose input dies at the reshape shares the input's buffer, so it
costs neither RAM nor a copy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from toolkit.ir import Graph

ALIGNMENT = 16


@dataclass
class Buffer:
    """One arena region shared by tensors that alias it (a reshape chain)."""

    tensors: list[int]
    size: int
    first_op: int
    last_op: int
    offset: int = -1


@dataclass
class MemoryPlan:
    """Offsets of every activation tensor and the arena size they need."""

    offsets: dict[int, int]
    arena_size: int
    buffers: list[Buffer] = field(default_factory=list)
    aliased_reshapes: set[int] = field(default_factory=set)

    def peak_live_bytes(self) -> int:
        """Compute the maximum, over ops, of the bytes live at that op: a lower
        bound on any arena for this graph."""
        if not self.buffers:
            return 0
        last = max(buffer.last_op for buffer in self.buffers)
        peak = 0
        for step in range(last + 1):
            live = sum(b.size for b in self.buffers if b.first_op <= step <= b.last_op)
            peak = max(peak, live)
        return peak


def _align(value: int) -> int:
    return (value + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT


def plan_memory(graph: Graph, alias_reshapes: bool = True) -> MemoryPlan:
    """Compute arena offsets for all non-constant tensors of `graph`."""
    activations = {t.index: t for t in graph.activation_tensors()}
    last_step = len(graph.ops)

    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for index in graph.inputs:
        first[index] = 0
    for op in graph.ops:
        for index in op.outputs:
            first.setdefault(index, op.index)
            last.setdefault(index, op.index)
        for index in op.inputs:
            if index in activations:
                first.setdefault(index, op.index)
                last[index] = max(last.get(index, op.index), op.index)
    for index in graph.outputs:
        last[index] = last_step

    # Group each aliased reshape output with its input.
    group_of = {index: index for index in activations}
    aliased: set[int] = set()
    if alias_reshapes:
        for op in graph.ops:
            if op.kind != "RESHAPE":
                continue
            source, target = op.inputs[0], op.outputs[0]
            if source not in activations or last.get(source) != op.index:
                continue
            if source in graph.outputs or source in graph.inputs:
                continue
            group_of[target] = group_of[source]
            aliased.add(op.index)

    members: dict[int, list[int]] = {}
    for index, root in group_of.items():
        members.setdefault(root, []).append(index)
    buffers = [
        Buffer(
            tensors=sorted(group),
            size=max(activations[i].nbytes for i in group),
            first_op=min(first.get(i, 0) for i in group),
            last_op=max(last.get(i, last_step) for i in group),
        )
        for group in members.values()
    ]

    placed: list[Buffer] = []
    for buffer in sorted(buffers, key=lambda b: (-b.size, b.first_op, b.tensors[0])):
        conflicts = sorted(
            (b for b in placed if b.first_op <= buffer.last_op and buffer.first_op <= b.last_op),
            key=lambda b: b.offset,
        )
        offset = 0
        for other in conflicts:
            if offset + buffer.size <= other.offset:
                break
            offset = max(offset, _align(other.offset + other.size))
        buffer.offset = offset
        placed.append(buffer)

    offsets = {index: buffer.offset for buffer in placed for index in buffer.tensors}
    arena = max((_align(b.offset + b.size) for b in placed), default=0)
    return MemoryPlan(offsets, arena, sorted(placed, key=lambda b: b.tensors[0]), aliased)
