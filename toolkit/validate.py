"""Check a deployed directory against TensorFlow Lite Micro.

Builds the generated C for the host, runs it and TFLM's interpreter on the
same inputs, and reports the maximum absolute difference per output. The bar
is exact equality: any difference is a failure. On request it also runs the
C model layer by layer and names the first layer whose output differs.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from toolkit.build import HostModel, TensorSpec, build_host_library
from toolkit.errors import ToolkitError
from toolkit.ir import Graph
from toolkit.reference import make_interpreter, run_tflm
from toolkit.tflite_import import import_tflite

if TYPE_CHECKING:
    from toolkit.device import Device


@dataclass
class OutputComparison:
    """Differences on one model output over all samples."""

    index: int
    name: str
    max_abs_diff: float
    mismatched_samples: int


@dataclass
class LayerMismatch:
    """The first layer whose output differs from TFLM's, on one sample."""

    sample: int
    layer: int
    op: str
    name: str
    max_abs_diff: float


@dataclass
class ValidationResult:
    samples: int
    outputs: list[OutputComparison]
    first_mismatch: LayerMismatch | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(o.mismatched_samples == 0 for o in self.outputs)

    def summary(self) -> str:
        lines = [f"compared generated C with TFLite Micro on {self.samples} inputs"]
        lines.extend(f"  {note}" for note in self.notes)
        for output in self.outputs:
            verdict = (
                "equal"
                if output.mismatched_samples == 0
                else (f"DIFFERENT on {output.mismatched_samples} inputs")
            )
            lines.append(
                f"  output {output.index} '{output.name}': max abs diff "
                f"{output.max_abs_diff:g} ({verdict})"
            )
        if self.first_mismatch is not None:
            m = self.first_mismatch
            lines.append(
                f"  first differing layer: {m.layer} ({m.op}, '{m.name}') on input {m.sample}, "
                f"max abs diff {m.max_abs_diff:g}"
            )
        lines.append("PASS" if self.ok else "FAIL")
        return "\n".join(lines)


def load_deployment(directory: str | os.PathLike[str]) -> tuple[dict[str, Any], bytes, Graph]:
    """Read report.json and model.tflite of a deployed directory."""
    directory = Path(directory)
    report_path = directory / "report.json"
    model_path = directory / "model.tflite"
    for path in (report_path, model_path):
        if not path.is_file():
            raise ToolkitError(
                f"{directory}: {path.name} not found; give a directory written by `toolkit deploy`"
            )
    try:
        report = json.loads(report_path.read_text())
    except json.JSONDecodeError as exc:
        raise ToolkitError(f"{report_path}: invalid JSON ({exc}); deploy the model again") from exc
    flatbuffer = model_path.read_bytes()
    return report, flatbuffer, import_tflite(flatbuffer, source=str(model_path))


def _quantize_like_tflm(values: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    quotient = (values.astype(np.float32) / np.float32(scale)).astype(np.float32)
    rounded = np.sign(quotient) * np.floor(np.abs(quotient) + np.float32(0.5))
    return np.clip(rounded + zero_point, -128, 127).astype(np.int8)


def prepare_inputs(
    data: Any, specs: Sequence[dict[str, Any]], source: str = "inputs"
) -> list[list[np.ndarray]]:
    """Turn user data into per-sample input lists.

    `data` is an array, a `.npy` path, or a `.npz` path (one array per model
    input, in order). Each array contains N samples shaped like the input, with
    or without its batch dimension of 1. Float data for an int8 input is
    quantized with the input's scale and zero point.
    """
    if isinstance(data, (str, os.PathLike)):
        path = os.fspath(data)
        if not os.path.isfile(path):
            raise ToolkitError(f"{path}: file not found; give a .npy or .npz file of inputs")
        try:
            loaded = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise ToolkitError(f"{path}: not a readable .npy or .npz file ({exc})") from exc
        arrays = [loaded[k] for k in loaded.files] if hasattr(loaded, "files") else [loaded]
        source = path
    elif isinstance(data, (list, tuple)):
        arrays = [np.asarray(a) for a in data]
    else:
        arrays = [np.asarray(data)]
    if len(arrays) != len(specs):
        raise ToolkitError(f"{source}: the model has {len(specs)} inputs, got {len(arrays)} arrays")

    per_input = []
    for array, spec in zip(arrays, specs, strict=True):
        shape = tuple(spec["shape"])
        if array.shape[1:] == shape[1:] and shape[0] == 1:
            samples = array
        elif array.shape == shape[1:] or array.shape == shape:
            samples = array.reshape((1, *shape[1:]))
        else:
            raise ToolkitError(
                f"{source}: input '{spec['name']}' needs samples shaped {list(shape[1:])} "
                f"(array shape [N, {', '.join(map(str, shape[1:]))}]), got {list(array.shape)}"
            )
        if spec["dtype"] == "int8" and samples.dtype != np.int8:
            if not np.issubdtype(samples.dtype, np.floating):
                raise ToolkitError(
                    f"{source}: input '{spec['name']}' is int8; give int8 or float "
                    f"data, got {samples.dtype}"
                )
            samples = _quantize_like_tflm(samples, spec["scale"], spec["zero_point"])
        per_input.append(samples.astype(spec["dtype"]).reshape((-1, *shape)))
    counts = {len(s) for s in per_input}
    if len(counts) != 1:
        raise ToolkitError(f"{source}: inputs hold different sample counts {sorted(counts)}")
    return [[s[i] for s in per_input] for i in range(counts.pop())]


def random_inputs(graph: Graph, count: int, seed: int = 0) -> list[list[np.ndarray]]:
    """Inputs that cover each input's int8 range. A float input that feeds a
    QUANTIZE op gets values spread over that op's quantized range."""
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(count):
        sample = []
        for index in graph.inputs:
            tensor = graph.tensors[index]
            if tensor.dtype == "int8":
                sample.append(rng.integers(-128, 128, size=tensor.shape, dtype=np.int8))
                continue
            quantize = next((op for op in graph.consumers(index) if op.kind == "QUANTIZE"), None)
            if quantize is None:
                sample.append(rng.standard_normal(tensor.shape).astype(np.float32))
                continue
            target = graph.tensors[quantize.outputs[0]]
            levels = rng.integers(-128, 128, size=tensor.shape) - target.zero_point()
            noise = rng.uniform(-0.5, 0.5, size=tensor.shape)
            sample.append(((levels + noise) * target.scale()).astype(np.float32))
        samples.append(sample)
    return samples


def _specs(entries: Sequence[dict[str, Any]]) -> list[TensorSpec]:
    return [TensorSpec(e["name"], tuple(e["shape"]), e["dtype"]) for e in entries]


def _max_diff(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape:
        a = a.reshape(b.shape)
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)), initial=0.0))


def _first_mismatch(
    report: dict[str, Any],
    flatbuffer: bytes,
    sample: list[np.ndarray],
    sample_index: int,
    run_layer: Callable[[dict[str, Any]], np.ndarray],
) -> LayerMismatch | None:
    """Run TFLM keeping every tensor, then `run_layer` on each layer of the
    report in order (the inputs already set), and return the first layer
    whose output differs."""
    interpreter = make_interpreter(flatbuffer, preserve_all_tensors=True)
    run_tflm(flatbuffer, sample, interpreter)
    for layer in report["layers"]:
        spec = layer["output"]
        ours = run_layer(layer)
        theirs = np.asarray(interpreter.GetTensor(spec["tensor_index"], 0)["tensor_data"])
        difference = _max_diff(ours, theirs)
        if difference != 0:
            return LayerMismatch(
                sample_index, layer["index"], layer["op"], layer["name"], difference
            )
    return None


def _compare(
    samples: Sequence[list[np.ndarray]],
    outputs: Sequence[Sequence[np.ndarray]],
    report: dict[str, Any],
    flatbuffer: bytes,
) -> tuple[ValidationResult, int | None]:
    interpreter = make_interpreter(flatbuffer)
    comparisons = [
        OutputComparison(i, spec["name"], 0.0, 0) for i, spec in enumerate(report["outputs"])
    ]
    first_bad = None
    for number, (sample, ours) in enumerate(zip(samples, outputs, strict=True)):
        theirs = run_tflm(flatbuffer, sample, interpreter)
        for comparison, a, b in zip(comparisons, ours, theirs, strict=True):
            difference = _max_diff(a, b)
            comparison.max_abs_diff = max(comparison.max_abs_diff, difference)
            if difference != 0:
                comparison.mismatched_samples += 1
                first_bad = number if first_bad is None else first_bad
    return ValidationResult(len(samples), comparisons), first_bad


def _first_mismatch_on_device(
    device: Device,
    report: dict[str, Any],
    flatbuffer: bytes,
    sample: list[np.ndarray],
    sample_index: int,
) -> LayerMismatch | None:
    from toolkit.remote import input_bytes

    for index, data in enumerate(input_bytes(report, sample)):
        device.write_input(index, data)

    def run_layer(layer: dict[str, Any]) -> np.ndarray:
        spec = layer["output"]
        size = int(np.prod(spec["shape"])) * np.dtype(spec["dtype"]).itemsize
        device.invoke_layer(layer["index"])
        data = device.read_layer_output(layer["index"], size)
        return np.frombuffer(data, dtype=spec["dtype"]).reshape(spec["shape"])

    return _first_mismatch(report, flatbuffer, sample, sample_index, run_layer)


def validate(
    directory: str | os.PathLike[str],
    inputs: Any = None,
    count: int = 20,
    seed: int = 0,
    find_layer: bool = False,
    emulate: bool = False,
    port: str | None = None,
) -> ValidationResult:
    """Compare the generated C of `directory` with TFLM on `inputs`, or on
    `count` random inputs when none are given.

    By default the C runs on the host. With `emulate` the directory's
    Cortex-M firmware runs in QEMU, with `port` on a board on that serial
    port, and the outputs come back over the serial protocol.
    """
    report, flatbuffer, graph = load_deployment(directory)
    if inputs is None:
        samples = random_inputs(graph, count, seed)
    else:
        samples = prepare_inputs(inputs, report["inputs"])
    if emulate or port is not None:
        from toolkit.remote import connect, run_samples

        with connect(directory, emulate=emulate, port=port) as device:
            results = run_samples(device, report, samples)
            result, first_bad = _compare(samples, [r.outputs for r in results], report, flatbuffer)
            result.notes.append(f"the generated C ran on {device.name}")
            if find_layer and first_bad is not None:
                result.first_mismatch = _first_mismatch_on_device(
                    device, report, flatbuffer, samples[first_bad], first_bad
                )
        return result
    prefix = report.get("prefix", "model")
    library = build_host_library(directory, prefix=prefix)
    try:
        model = HostModel(
            library,
            _specs(report["inputs"]),
            _specs(report["outputs"]),
            len(report["layers"]),
            prefix=prefix,
        )
        outputs = [model.run(sample) for sample in samples]
        result, first_bad = _compare(samples, outputs, report, flatbuffer)
        if find_layer and first_bad is not None:
            model.set_inputs(samples[first_bad])

            def run_layer(layer: dict[str, Any]) -> np.ndarray:
                model.invoke_layer(layer["index"])
                return model.layer_output(layer["index"], _specs([layer["output"]])[0])

            result.first_mismatch = _first_mismatch(
                report, flatbuffer, samples[first_bad], first_bad, run_layer
            )
        return result
    finally:
        shutil.rmtree(library.parent, ignore_errors=True)
