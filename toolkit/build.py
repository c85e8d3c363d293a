"""Build generated code for the host and call it through CFFI.

`build_host_library` compiles a deployed directory into a shared library
with the host C compiler; `HostModel` loads it with CFFI in ABI mode and
runs it from Python with numpy arrays.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from toolkit.errors import ToolkitError

WARNING_FLAGS = ("-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic")
SANITIZER_FLAGS = ("-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-g")


def csrc_dir() -> Path:
    """The kernel library sources (`csrc/`) beside the package."""
    candidate = Path(__file__).resolve().parent.parent / "csrc"
    if not (candidate / "include" / "tk_kernels.h").is_file():
        # NOTE: csrc/ is found only in a source checkout or an editable
        # install; a wheel does not carry it yet.
        raise ToolkitError(
            f"the kernel sources were not found at {candidate}; install the toolkit from a "
            "source checkout with `pip install -e .`"
        )
    return candidate


def compiler() -> str:
    """The host C compiler: $CC, else cc or gcc on the PATH."""
    for name in (os.environ.get("CC"), "cc", "gcc"):
        if name and shutil.which(name):
            return name
    raise ToolkitError("no C compiler found (tried $CC, cc, gcc); install gcc, e.g. "
                       "`apt-get install gcc`")


def source_files(project: Path, prefix: str = "model") -> list[Path]:
    """The C files of a deployed directory: the model and its kernels."""
    files = [project / f"{prefix}.c", project / f"{prefix}_weights.c"]
    files += sorted((project / "kernels" / "src").glob("*.c"))
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise ToolkitError(f"{project}: missing generated sources {missing}; run toolkit "
                           "deploy again")
    return files


def build_host_library(
    project: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    prefix: str = "model",
    sanitize: bool = False,
    optimize: str = "-O2",
) -> Path:
    """Compile a deployed directory into a shared library and return its path.

    Without `output`, the library goes to a fresh temporary directory, so
    that each build loads as a separate library with its own arena.
    """
    project = Path(project)
    sources = source_files(project, prefix)
    if output is None:
        output = Path(tempfile.mkdtemp(prefix="toolkit-host-")) / f"lib{prefix}.so"
    output = Path(output)
    command = [
        compiler(),
        *WARNING_FLAGS,
        optimize,
        "-fPIC",
        "-shared",
        *(SANITIZER_FLAGS if sanitize else ()),
        f"-I{project}",
        f"-I{project / 'kernels' / 'include'}",
        "-o",
        str(output),
        *map(str, sources),
        "-lm",
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ToolkitError(
            f"{project}: the host build failed:\n{' '.join(command)}\n{result.stderr.strip()}"
        )
    return output


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape and element type of a model input or output."""

    name: str
    shape: tuple[int, ...]
    dtype: str


_CDEF = """
int {p}_check(void);
void {p}_invoke(void);
void {p}_invoke_layer(int32_t layer);
void *{p}_input(int32_t index);
size_t {p}_input_bytes(int32_t index);
const void *{p}_output(int32_t index);
size_t {p}_output_bytes(int32_t index);
const void *{p}_layer_output(int32_t layer);
size_t {p}_layer_output_bytes(int32_t layer);
"""


class HostModel:
    """A generated model built for the host, called through CFFI."""

    def __init__(
        self,
        library: str | os.PathLike[str],
        inputs: Sequence[TensorSpec],
        outputs: Sequence[TensorSpec],
        layer_count: int,
        prefix: str = "model",
    ):
        import cffi

        self._ffi = cffi.FFI()
        self._ffi.cdef(_CDEF.format(p=prefix))
        self._lib = self._ffi.dlopen(str(library))
        self._prefix = prefix
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.layer_count = layer_count
        status = self._call("check")
        if status != 0:
            raise ToolkitError(f"{library}: the generated model's parameter check failed with "
                               f"status {status}; deploy the model again")

    def _call(self, name: str, *args: int):  # type: ignore[no-untyped-def]
        return getattr(self._lib, f"{self._prefix}_{name}")(*args)

    def set_inputs(self, values: Sequence[np.ndarray]) -> None:
        if len(values) != len(self.inputs):
            raise ToolkitError(f"the model has {len(self.inputs)} inputs, got {len(values)} arrays")
        for index, (spec, value) in enumerate(zip(self.inputs, values, strict=True)):
            array = np.ascontiguousarray(value, dtype=spec.dtype)
            if array.size != int(np.prod(spec.shape)):
                raise ToolkitError(
                    f"input {index} ('{spec.name}') needs shape {list(spec.shape)}, got "
                    f"{list(np.shape(value))}"
                )
            size = self._call("input_bytes", index)
            if size != array.nbytes:
                raise ToolkitError(f"input {index} ('{spec.name}') holds {size} bytes, got "
                                   f"{array.nbytes}")
            self._ffi.memmove(self._call("input", index), array.tobytes(), size)

    def _read(self, pointer, size: int, spec: TensorSpec) -> np.ndarray:  # type: ignore[no-untyped-def]
        data = bytes(self._ffi.buffer(pointer, size))
        return np.frombuffer(data, dtype=spec.dtype).reshape(spec.shape).copy()

    def get_outputs(self) -> list[np.ndarray]:
        return [
            self._read(self._call("output", i), self._call("output_bytes", i), spec)
            for i, spec in enumerate(self.outputs)
        ]

    def run(self, values: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Set the inputs, invoke, and return copies of the outputs."""
        self.set_inputs(values)
        self._call("invoke")
        return self.get_outputs()

    def invoke_layer(self, layer: int) -> None:
        self._call("invoke_layer", layer)

    def layer_output(self, layer: int, spec: TensorSpec) -> np.ndarray:
        return self._read(
            self._call("layer_output", layer), self._call("layer_output_bytes", layer), spec
        )
