"""Build generated code for the host and call it through CFFI.

`build_host_library` compiles a deployed directory into a shared library
with the host C compiler. `HostModel` loads that library with CFFI in ABI
mode and runs it from Python with numpy arrays.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.errors import ToolkitError

WARNING_FLAGS = ("-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic")
SANITIZER_FLAGS = ("-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-g")


def csrc_dir() -> Path:
    """Return the kernel library sources (`csrc/`) beside the package."""
    candidate = Path(__file__).resolve().parent.parent / "csrc"
    if not (candidate / "include" / "tk_kernels.h").is_file():
        # NOTE: csrc/ is found only in a source checkout or an editable
        # install; a wheel does not carry it yet.
        raise ToolkitError(
            f"the kernel sources were not found at {candidate}; install the toolkit from a "
            "source checkout with `pip install -e .`"
        )
    return candidate


def find_program(variable: str, default: str, description: str, install: str) -> str:
    """Return $`variable`, else `default`, when it is on the PATH. Otherwise
    raise an error that names the missing program and how to `install` it."""
    name = os.environ.get(variable, default)
    if shutil.which(name):
        return name
    raise ToolkitError(
        f"{description} {name} was not found; install it with {install} or set ${variable}"
    )


def compiler() -> str:
    """Find the host C compiler: $CC, else cc or gcc on the PATH."""
    for name in (os.environ.get("CC"), "cc", "gcc"):
        if name and shutil.which(name):
            return name
    raise ToolkitError(
        "no C compiler found (tried $CC, cc, gcc); install gcc, e.g. `apt-get install gcc`"
    )


def source_files(project: Path, prefix: str = "model") -> list[Path]:
    """List the C files of a deployed directory: the model and its kernels."""
    files = [project / f"{prefix}.c", project / f"{prefix}_weights.c"]
    files += sorted((project / "kernels" / "src").glob("*.c"))
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise ToolkitError(
            f"{project}: missing generated sources {missing}; run toolkit deploy again"
        )
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
    if output is None:
        output = Path(tempfile.mkdtemp(prefix="toolkit-host-")) / f"lib{prefix}.so"
    return _compile(
        Path(project), Path(output), prefix, ["-fPIC", "-shared"], [], sanitize, optimize
    )


def example_runner_source() -> Path:
    """Return the path of the Linux example program that runs a model on input files."""
    return Path(__file__).resolve().parent.parent / "firmware_examples" / "linux" / "main.c"


def build_host_executable(
    project: str | os.PathLike[str],
    output: str | os.PathLike[str],
    prefix: str = "model",
    sanitize: bool = False,
    optimize: str = "-O2",
) -> Path:
    """Compile a deployed directory with the Linux example runner
    (firmware_examples/linux/main.c) into an executable."""
    main = example_runner_source()
    if not main.is_file():
        raise ToolkitError(f"the example runner {main} was not found; use a source checkout")
    return _compile(Path(project), Path(output), prefix, [], [main], sanitize, optimize)


def _compile(
    project: Path,
    output: Path,
    prefix: str,
    link_flags: list[str],
    extra_sources: list[Path],
    sanitize: bool,
    optimize: str,
) -> Path:
    sources = [*extra_sources, *source_files(project, prefix)]
    command = [
        compiler(),
        *WARNING_FLAGS,
        optimize,
        *link_flags,
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
            raise ToolkitError(
                f"{library}: the generated model's parameter check failed with "
                f"status {status}; deploy the model again"
            )

    def _call(self, name: str, *args: int) -> Any:
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
                raise ToolkitError(
                    f"input {index} ('{spec.name}') has {size} bytes, got {array.nbytes}"
                )
            self._ffi.memmove(self._call("input", index), array.tobytes(), size)

    def _read(self, pointer: Any, size: int, spec: TensorSpec) -> np.ndarray:
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


def object_sizes(
    project: Path,
    prefix: str = "model",
    optimize: str = "-O2",
    cc: str | None = None,
    target_flags: Sequence[str] = (),
) -> dict[str, int]:
    """Bytes of machine code (.text) per source file of a deployed directory,
    compiled with `optimize` by the host compiler, or by `cc` with
    `target_flags` (a cross compiler and its CPU flags)."""
    sizes: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="toolkit-size-") as scratch:
        for source in source_files(project, prefix):
            obj = Path(scratch) / f"{source.stem}.o"
            command = [
                cc or compiler(),
                *target_flags,
                *WARNING_FLAGS,
                optimize,
                f"-I{project}",
                f"-I{project / 'kernels' / 'include'}",
                "-c",
                "-o",
                str(obj),
                str(source),
            ]
            result = subprocess.run(command, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                raise ToolkitError(f"{source}: compiling failed:\n{result.stderr.strip()}")
            sizes[source.name] = elf_section_bytes(obj, ".text")
    return sizes


def elf_section_bytes(path: Path, prefix: str) -> int:
    """Total size of the sections of an ELF file whose names start with
    `prefix` (so ".text" also counts ".text.startup" and similar)."""
    import struct

    data = path.read_bytes()
    if data[:4] != b"\x7fELF":
        raise ToolkitError(f"{path}: not an ELF file")
    is64 = data[4] == 2
    endian = "<" if data[5] == 1 else ">"
    if is64:
        (shoff,) = struct.unpack_from(endian + "Q", data, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from(endian + "HHH", data, 0x3A)
    else:
        (shoff,) = struct.unpack_from(endian + "I", data, 0x20)
        shentsize, shnum, shstrndx = struct.unpack_from(endian + "HHH", data, 0x2E)

    def section(index: int) -> tuple[int, int, int]:
        base = shoff + index * shentsize
        if is64:
            name, _, _, _, offset, size = struct.unpack_from(endian + "IIQQQQ", data, base)
        else:
            name, _, _, _, offset, size = struct.unpack_from(endian + "IIIIII", data, base)
        return name, offset, size

    _, names_offset, _ = section(shstrndx)
    total = 0
    for index in range(shnum):
        name_index, _, size = section(index)
        end = data.index(b"\0", names_offset + name_index)
        name = data[names_offset + name_index : end].decode("ascii", "replace")
        if name == prefix or name.startswith(prefix + "."):
            total += size
    return total
