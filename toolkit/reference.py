"""The reference: TensorFlow Lite Micro's interpreter from the `tflite-micro`
package, whose reference kernels define the int8 results that generated code
must reproduce bit for bit."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Sequence
from typing import Any

import numpy as np

from toolkit.errors import ToolkitError

# The recording allocator needs an arena at least as large as the model's
# tensors; this bound only sizes the interpreter's buffer, it is not reported.
_MIN_ARENA = 1 << 20


def _runtime() -> Any:
    try:
        from tflite_micro import runtime
    except ImportError as exc:
        raise ToolkitError(
            "the tflite-micro package is not installed; install it with "
            "`pip install tflite-micro` to compare against TFLite Micro"
        ) from exc
    return runtime


def make_interpreter(model: bytes, preserve_all_tensors: bool = False) -> Any:
    """Create a TFLM interpreter for `model`. With `preserve_all_tensors`,
    every intermediate tensor stays readable after invoke (no arena reuse)."""
    runtime = _runtime()
    config = (
        runtime.InterpreterConfig.kPreserveAllTensors
        if preserve_all_tensors
        else runtime.InterpreterConfig.kAllocationRecording
    )
    return runtime.Interpreter.from_bytes(
        model, arena_size=max(len(model) * 10, _MIN_ARENA), intrepreter_config=config
    )


def run_tflm(
    model: bytes, inputs: Sequence[np.ndarray], interpreter: Any = None
) -> list[np.ndarray]:
    """Run one inference; `inputs` are in the model's input order."""
    if interpreter is None:
        interpreter = make_interpreter(model)
    for index, value in enumerate(inputs):
        interpreter.set_input(np.ascontiguousarray(value), index)
    interpreter.invoke()
    return [np.array(interpreter.get_output(i)) for i in range(_output_count(model))]


def _output_count(model: bytes) -> int:
    import tflite

    return int(tflite.Model.GetRootAs(model, 0).Subgraphs(0).OutputsLength())


def tflm_arena_bytes(model: bytes, inputs: Sequence[np.ndarray]) -> dict[str, int]:
    """TFLM's arena use for `model` after one inference, as its recording
    allocator reports it: total, head (activations) and tail (persistent)."""
    interpreter = make_interpreter(model)
    run_tflm(model, inputs, interpreter)
    # print_allocations writes to the C stderr, so capture file descriptor 2.
    with tempfile.TemporaryFile(mode="w+b") as capture:
        saved = os.dup(2)
        try:
            os.dup2(capture.fileno(), 2)
            interpreter.print_allocations()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        capture.seek(0)
        text = capture.read().decode("utf-8", "replace")
    result = {}
    for key in ("total", "head", "tail"):
        match = re.search(rf"Arena allocation {key} (\d+) bytes", text)
        if match is None:
            raise ToolkitError(f"TFLM did not report its arena {key}; its output was: {text!r}")
        result[key] = int(match.group(1))
    return result
