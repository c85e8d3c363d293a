"""Build csrc/ into a shared library and call its kernels from numpy.

`build_kernel_library` compiles every csrc/src/*.c file into one shared
library and loads it with cffi in ABI mode. `KernelLibrary` wraps each
kernel: the `*_check` methods return the tk_status of the C check, and the
kernel methods run the check (raising KernelCheckError unless it returns
TK_OK), call the kernel and return its output as a numpy array.

Every input is copied into a malloc block of exactly its size, so that
AddressSanitizer (TOOLKIT_SANITIZE=1) reports any read outside it. Every
output buffer has GUARD_BYTES of a fixed pattern on each side, which must be
untouched after the call. Each kernel also runs twice, on output buffers
pre-filled with two different patterns. An output element that the kernel
never writes then shows up as a difference between the two runs.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from cffi import FFI

REPOSITORY = Path(__file__).resolve().parent.parent
SOURCE_DIR = REPOSITORY / "csrc" / "src"
INCLUDE_DIR = REPOSITORY / "csrc" / "include"

CFLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O1", "-fPIC", "-shared"]
SANITIZE_FLAGS = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-g"]

GUARD_BYTES = 64
GUARD_PATTERN = 0xA5
# Pre-fills of the output itself for the two runs that detect unwritten elements.
OUTPUT_FILLS = (0x5A, 0xC3)

TK_OK = 0


def header_declarations(header: Path = INCLUDE_DIR / "tk_kernels.h") -> str:
    """The declarations of the public header for cffi's cdef: the header
    without its preprocessor lines and the C++ guard, so that the tests
    always see the structs and functions the C code compiles against."""
    text = header.read_text()
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.DOTALL)
    lines = [
        line
        for line in text.splitlines()
        if not line.lstrip().startswith("#") and line.strip() not in ('extern "C" {', "}")
    ]
    return "\n".join(lines)


# The header's declarations, plus malloc and free from the C library for the
# input buffers.
CDEF = (
    header_declarations()
    + """
void *malloc(size_t size);
void free(void *pointer);
"""
)

Pair = tuple[int, int]
Shape = Sequence[int]


class KernelCheckError(AssertionError):
    """A `tk_*_check` function rejected arguments that a test expected it to accept."""


def build_kernel_library(directory: Path, *, sanitize: bool = False) -> KernelLibrary:
    """Compile csrc/src/*.c into `directory`/libtk_kernels.so and load it.

    With `sanitize`, the library is built with AddressSanitizer and
    UndefinedBehaviorSanitizer, which abort on the first error. The process
    must then have libasan preloaded (LD_PRELOAD), because the Python
    interpreter itself is not instrumented.
    """
    compiler = shutil.which("gcc")
    if compiler is None:
        raise RuntimeError("gcc was not found on PATH: install gcc to build the kernels")
    if sanitize and "libasan" not in os.environ.get("LD_PRELOAD", ""):
        raise RuntimeError(
            "TOOLKIT_SANITIZE=1 needs LD_PRELOAD set to the path printed by "
            "`gcc -print-file-name=libasan.so`"
        )

    library = directory / "libtk_kernels.so"
    sources = sorted(str(path) for path in SOURCE_DIR.glob("*.c"))
    command = [compiler, *CFLAGS]
    if sanitize:
        command += SANITIZE_FLAGS
    command += ["-I", str(INCLUDE_DIR), "-o", str(library), *sources, "-lm"]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(
            f"compiling the kernels failed ({' '.join(command)}):\n{result.stdout}{result.stderr}"
        )
    return KernelLibrary(library)


def _dims(shape: Shape) -> dict[str, int]:
    if len(shape) != 4:
        raise ValueError(f"expected a 4-D shape, got {tuple(shape)}")
    n, h, w, c = (int(size) for size in shape)
    return {"n": n, "h": h, "w": w, "c": c}


def _clamp(clamp: Pair) -> dict[str, int]:
    return {"min": int(clamp[0]), "max": int(clamp[1])}


def _quant(quant: Pair) -> dict[str, int]:
    return {"multiplier": int(quant[0]), "shift": int(quant[1])}


class KernelLibrary:
    """Thin numpy wrappers around the kernels of one loaded library."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.ffi = FFI()
        self.ffi.cdef(CDEF)
        self.lib: Any = self.ffi.dlopen(str(path))
        # dlopen(None) resolves malloc and free in the process, which under
        # AddressSanitizer are its instrumented versions.
        self._libc: Any = self.ffi.dlopen(None)
        self._malloc = self.ffi.new_allocator(
            alloc=self._libc.malloc, free=self._libc.free, should_clear_after_alloc=False
        )

    # Buffers.

    def _input(self, ctype: str, array: np.ndarray, dtype: type) -> Any:
        """Copy `array` into a malloc block of exactly its size."""
        values: np.ndarray = np.ascontiguousarray(array, dtype=dtype)
        buffer = self._malloc(f"{ctype}[]", max(values.size, 1))
        self.ffi.memmove(buffer, values, values.nbytes)
        return buffer

    def _optional_bias(self, bias: np.ndarray | None) -> Any:
        if bias is None:
            return self.ffi.NULL
        return self._input("int32_t", bias, np.int32)

    def _per_channel(self, multipliers: Sequence[int], shifts: Sequence[int]) -> tuple[Any, ...]:
        """Build a tk_quant_per_channel and return it with the arrays it points to."""
        multiplier_array = self._input("int32_t", np.asarray(multipliers), np.int32)
        shift_array = self._input("int32_t", np.asarray(shifts), np.int32)
        quant = self.ffi.new(
            "tk_quant_per_channel *",
            {"multiplier": multiplier_array, "shift": shift_array, "count": len(multipliers)},
        )
        return quant, multiplier_array, shift_array

    def _run_guarded(
        self, call: Callable[[Any], None], ctype: str, dtype: type, shape: Shape
    ) -> np.ndarray:
        """Call `call(output_pointer)` on a guarded output buffer and return the output.

        Runs twice with different pre-fills of the output and raises
        AssertionError when a guard byte changed or the two outputs differ.
        """
        count = int(np.prod(shape))
        nbytes = count * np.dtype(dtype).itemsize
        outputs: list[np.ndarray] = []
        for fill in OUTPUT_FILLS:
            raw = self._malloc("uint8_t[]", nbytes + 2 * GUARD_BYTES)
            view = np.frombuffer(self.ffi.buffer(raw), dtype=np.uint8)
            view[:] = GUARD_PATTERN
            view[GUARD_BYTES : GUARD_BYTES + nbytes] = fill

            call(self.ffi.cast(f"{ctype} *", raw + GUARD_BYTES))

            before = view[:GUARD_BYTES]
            after = view[GUARD_BYTES + nbytes :]
            if (before != GUARD_PATTERN).any():
                first = int(np.flatnonzero(before != GUARD_PATTERN)[0])
                raise AssertionError(
                    f"the kernel wrote {GUARD_BYTES - first} bytes before its output buffer"
                )
            if (after != GUARD_PATTERN).any():
                last = int(np.flatnonzero(after != GUARD_PATTERN)[-1])
                raise AssertionError(
                    f"the kernel wrote {last + 1} bytes past the end of its output buffer"
                )
            output: np.ndarray = view[GUARD_BYTES : GUARD_BYTES + nbytes].copy().view(dtype)
            outputs.append(output.reshape(tuple(shape)))

        if outputs[0].tobytes() != outputs[1].tobytes():
            unwritten = np.flatnonzero(outputs[0].view(np.uint8) != outputs[1].view(np.uint8))
            raise AssertionError(
                f"the kernel left output bytes unwritten, first at byte {int(unwritten[0])}"
            )
        return outputs[0]

    @staticmethod
    def _require_ok(status: int, kernel: str) -> None:
        if status != TK_OK:
            raise KernelCheckError(f"{kernel} returned status {status}, expected TK_OK")

    # tk_requantize.

    def requantize_scalar(self, x: int, multiplier: int, shift: int) -> int:
        """Call tk_requantize(x, multiplier, shift)."""
        return int(self.lib.tk_requantize(x, multiplier, shift))

    # CONV_2D.

    def _conv_arguments(
        self,
        *,
        multipliers: Sequence[int],
        shifts: Sequence[int],
        input_offset: int,
        output_offset: int,
        stride: Pair,
        dilation: Pair,
        pad: Pair,
        clamp: Pair,
    ) -> tuple[Any, tuple[Any, ...]]:
        params = self.ffi.new(
            "tk_conv_params *",
            {
                "input_offset": input_offset,
                "output_offset": output_offset,
                "stride_h": stride[0],
                "stride_w": stride[1],
                "dilation_h": dilation[0],
                "dilation_w": dilation[1],
                "pad_h": pad[0],
                "pad_w": pad[1],
                "clamp": _clamp(clamp),
            },
        )
        return params, self._per_channel(multipliers, shifts)

    def conv2d_check(
        self, *, input_shape: Shape, filter_shape: Shape, output_shape: Shape, **params: Any
    ) -> int:
        """Return the status of tk_conv2d_s8_check; the keyword `params` are those of conv2d."""
        conv_params, (quant, *_) = self._conv_arguments(**params)
        return int(
            self.lib.tk_conv2d_s8_check(
                conv_params,
                quant,
                self.ffi.new("tk_dims *", _dims(input_shape)),
                self.ffi.new("tk_dims *", _dims(filter_shape)),
                self.ffi.new("tk_dims *", _dims(output_shape)),
            )
        )

    def conv2d(
        self,
        input: np.ndarray,
        filter: np.ndarray,
        bias: np.ndarray | None,
        *,
        output_size: Pair,
        **params: Any,
    ) -> np.ndarray:
        """Run tk_conv2d_s8. input [n, h, w, c_in], filter [c_out, kh, kw, c_in].
        params: multipliers, shifts, input_offset, output_offset, stride,
        dilation, pad, clamp. Returns [n, oh, ow, c_out]."""
        output_shape = (input.shape[0], *output_size, filter.shape[0])
        conv_params, (quant, *_) = self._conv_arguments(**params)
        input_dims = self.ffi.new("tk_dims *", _dims(input.shape))
        filter_dims = self.ffi.new("tk_dims *", _dims(filter.shape))
        output_dims = self.ffi.new("tk_dims *", _dims(output_shape))
        status = self.lib.tk_conv2d_s8_check(
            conv_params, quant, input_dims, filter_dims, output_dims
        )
        self._require_ok(status, "tk_conv2d_s8_check")

        input_buffer = self._input("int8_t", input, np.int8)
        filter_buffer = self._input("int8_t", filter, np.int8)
        bias_buffer = self._optional_bias(bias)
        return self._run_guarded(
            lambda output: self.lib.tk_conv2d_s8(
                conv_params,
                quant,
                input_dims,
                input_buffer,
                filter_dims,
                filter_buffer,
                bias_buffer,
                output_dims,
                output,
            ),
            "int8_t",
            np.int8,
            output_shape,
        )

    # DEPTHWISE_CONV_2D.

    def _depthwise_arguments(
        self,
        *,
        multipliers: Sequence[int],
        shifts: Sequence[int],
        input_offset: int,
        output_offset: int,
        stride: Pair,
        dilation: Pair,
        pad: Pair,
        depth_multiplier: int,
        clamp: Pair,
    ) -> tuple[Any, tuple[Any, ...]]:
        params = self.ffi.new(
            "tk_depthwise_conv_params *",
            {
                "input_offset": input_offset,
                "output_offset": output_offset,
                "stride_h": stride[0],
                "stride_w": stride[1],
                "dilation_h": dilation[0],
                "dilation_w": dilation[1],
                "pad_h": pad[0],
                "pad_w": pad[1],
                "depth_multiplier": depth_multiplier,
                "clamp": _clamp(clamp),
            },
        )
        return params, self._per_channel(multipliers, shifts)

    def depthwise_conv2d_check(
        self, *, input_shape: Shape, filter_shape: Shape, output_shape: Shape, **params: Any
    ) -> int:
        """Return the status of tk_depthwise_conv2d_s8_check; the keyword
        `params` are those of depthwise_conv2d."""
        conv_params, (quant, *_) = self._depthwise_arguments(**params)
        return int(
            self.lib.tk_depthwise_conv2d_s8_check(
                conv_params,
                quant,
                self.ffi.new("tk_dims *", _dims(input_shape)),
                self.ffi.new("tk_dims *", _dims(filter_shape)),
                self.ffi.new("tk_dims *", _dims(output_shape)),
            )
        )

    def depthwise_conv2d(
        self,
        input: np.ndarray,
        filter: np.ndarray,
        bias: np.ndarray | None,
        *,
        output_size: Pair,
        **params: Any,
    ) -> np.ndarray:
        """Run tk_depthwise_conv2d_s8. input [n, h, w, c_in], filter
        [1, kh, kw, c_out]. params: multipliers, shifts, input_offset,
        output_offset, stride, dilation, pad, depth_multiplier, clamp.
        Returns [n, oh, ow, c_out]."""
        output_shape = (input.shape[0], *output_size, filter.shape[3])
        conv_params, (quant, *_) = self._depthwise_arguments(**params)
        input_dims = self.ffi.new("tk_dims *", _dims(input.shape))
        filter_dims = self.ffi.new("tk_dims *", _dims(filter.shape))
        output_dims = self.ffi.new("tk_dims *", _dims(output_shape))
        status = self.lib.tk_depthwise_conv2d_s8_check(
            conv_params, quant, input_dims, filter_dims, output_dims
        )
        self._require_ok(status, "tk_depthwise_conv2d_s8_check")

        input_buffer = self._input("int8_t", input, np.int8)
        filter_buffer = self._input("int8_t", filter, np.int8)
        bias_buffer = self._optional_bias(bias)
        return self._run_guarded(
            lambda output: self.lib.tk_depthwise_conv2d_s8(
                conv_params,
                quant,
                input_dims,
                input_buffer,
                filter_dims,
                filter_buffer,
                bias_buffer,
                output_dims,
                output,
            ),
            "int8_t",
            np.int8,
            output_shape,
        )

    # FULLY_CONNECTED.

    def _fully_connected_arguments(
        self,
        *,
        multipliers: Sequence[int],
        shifts: Sequence[int],
        input_offset: int,
        filter_offset: int,
        output_offset: int,
        clamp: Pair,
    ) -> tuple[Any, tuple[Any, ...]]:
        params = self.ffi.new(
            "tk_fully_connected_params *",
            {
                "input_offset": input_offset,
                "filter_offset": filter_offset,
                "output_offset": output_offset,
                "clamp": _clamp(clamp),
            },
        )
        return params, self._per_channel(multipliers, shifts)

    def fully_connected_check(self, *, batches: int, depth: int, units: int, **params: Any) -> int:
        """Return the status of tk_fully_connected_s8_check; the keyword
        `params` are those of fully_connected."""
        fc_params, (quant, *_) = self._fully_connected_arguments(**params)
        return int(self.lib.tk_fully_connected_s8_check(fc_params, quant, batches, depth, units))

    def fully_connected(
        self, input: np.ndarray, filter: np.ndarray, bias: np.ndarray | None, **params: Any
    ) -> np.ndarray:
        """Run tk_fully_connected_s8. input [batches, depth], filter [units,
        depth]. params: multipliers, shifts, input_offset, filter_offset,
        output_offset, clamp. Returns [batches, units]."""
        batches, depth = input.shape
        units = filter.shape[0]
        fc_params, (quant, *_) = self._fully_connected_arguments(**params)
        status = self.lib.tk_fully_connected_s8_check(fc_params, quant, batches, depth, units)
        self._require_ok(status, "tk_fully_connected_s8_check")

        input_buffer = self._input("int8_t", input, np.int8)
        filter_buffer = self._input("int8_t", filter, np.int8)
        bias_buffer = self._optional_bias(bias)
        return self._run_guarded(
            lambda output: self.lib.tk_fully_connected_s8(
                fc_params,
                quant,
                batches,
                depth,
                units,
                input_buffer,
                filter_buffer,
                bias_buffer,
                output,
            ),
            "int8_t",
            np.int8,
            (batches, units),
        )

    # AVERAGE_POOL_2D and MAX_POOL_2D.

    def _pool_params(self, *, filter_size: Pair, stride: Pair, pad: Pair, clamp: Pair) -> Any:
        return self.ffi.new(
            "tk_pool_params *",
            {
                "stride_h": stride[0],
                "stride_w": stride[1],
                "filter_h": filter_size[0],
                "filter_w": filter_size[1],
                "pad_h": pad[0],
                "pad_w": pad[1],
                "clamp": _clamp(clamp),
            },
        )

    def pool_check(self, *, input_shape: Shape, output_shape: Shape, **params: Any) -> int:
        """Return the status of tk_pool_s8_check; `params`: filter_size,
        stride, pad, clamp."""
        return int(
            self.lib.tk_pool_s8_check(
                self._pool_params(**params),
                self.ffi.new("tk_dims *", _dims(input_shape)),
                self.ffi.new("tk_dims *", _dims(output_shape)),
            )
        )

    def _pool(self, kernel: str, input: np.ndarray, output_size: Pair, **params: Any) -> np.ndarray:
        output_shape = (input.shape[0], *output_size, input.shape[3])
        pool_params = self._pool_params(**params)
        input_dims = self.ffi.new("tk_dims *", _dims(input.shape))
        output_dims = self.ffi.new("tk_dims *", _dims(output_shape))
        status = self.lib.tk_pool_s8_check(pool_params, input_dims, output_dims)
        self._require_ok(status, "tk_pool_s8_check")

        input_buffer = self._input("int8_t", input, np.int8)
        function = getattr(self.lib, kernel)
        return self._run_guarded(
            lambda output: function(pool_params, input_dims, input_buffer, output_dims, output),
            "int8_t",
            np.int8,
            output_shape,
        )

    def avg_pool(self, input: np.ndarray, *, output_size: Pair, **params: Any) -> np.ndarray:
        """Run tk_avg_pool_s8 on input [n, h, w, c]. params: filter_size,
        stride, pad, clamp. Returns [n, oh, ow, c]."""
        return self._pool("tk_avg_pool_s8", input, output_size, **params)

    def max_pool(self, input: np.ndarray, *, output_size: Pair, **params: Any) -> np.ndarray:
        """Run tk_max_pool_s8 on input [n, h, w, c]. params: filter_size,
        stride, pad, clamp. Returns [n, oh, ow, c]."""
        return self._pool("tk_max_pool_s8", input, output_size, **params)

    # ADD.

    def _add_params(
        self,
        *,
        input1_offset: int,
        input2_offset: int,
        output_offset: int,
        left_shift: int,
        input1_quant: Pair,
        input2_quant: Pair,
        output_quant: Pair,
        clamp: Pair,
    ) -> Any:
        return self.ffi.new(
            "tk_add_params *",
            {
                "input1_offset": input1_offset,
                "input2_offset": input2_offset,
                "output_offset": output_offset,
                "left_shift": left_shift,
                "input1": _quant(input1_quant),
                "input2": _quant(input2_quant),
                "output": _quant(output_quant),
                "clamp": _clamp(clamp),
            },
        )

    def add_check(
        self,
        *,
        output_shape: Shape,
        input1_strides: Sequence[int],
        input2_strides: Sequence[int],
        **params: Any,
    ) -> int:
        """Return the status of tk_add_s8_check; the keyword `params` are those of add."""
        return int(
            self.lib.tk_add_s8_check(
                self._add_params(**params),
                self.ffi.new("tk_dims *", _dims(output_shape)),
                self.ffi.new("int32_t[4]", list(input1_strides)),
                self.ffi.new("int32_t[4]", list(input2_strides)),
            )
        )

    @staticmethod
    def broadcast_strides(shape: Shape) -> list[int]:
        """Element steps of a C-contiguous 4-D array, 0 along dimensions of size 1."""
        strides = []
        step = 1
        for size in reversed(shape):
            strides.append(0 if size == 1 else step)
            step *= size
        return strides[::-1]

    def add(self, input1: np.ndarray, input2: np.ndarray, **params: Any) -> np.ndarray:
        """Run tk_add_s8 on two 4-D inputs that broadcast against each other
        with numpy's rules. params: input1_offset, input2_offset,
        output_offset, left_shift, input1_quant, input2_quant, output_quant
        (each a (multiplier, shift) pair) and clamp."""
        output_shape = np.broadcast_shapes(input1.shape, input2.shape)
        add_params = self._add_params(**params)
        output_dims = self.ffi.new("tk_dims *", _dims(output_shape))
        strides1 = self.ffi.new("int32_t[4]", self.broadcast_strides(input1.shape))
        strides2 = self.ffi.new("int32_t[4]", self.broadcast_strides(input2.shape))
        status = self.lib.tk_add_s8_check(add_params, output_dims, strides1, strides2)
        self._require_ok(status, "tk_add_s8_check")

        input1_buffer = self._input("int8_t", input1, np.int8)
        input2_buffer = self._input("int8_t", input2, np.int8)
        return self._run_guarded(
            lambda output: self.lib.tk_add_s8(
                add_params, output_dims, strides1, input1_buffer, strides2, input2_buffer, output
            ),
            "int8_t",
            np.int8,
            output_shape,
        )

    # SOFTMAX.

    def _softmax_params(
        self, *, input_multiplier: int, input_left_shift: int, diff_min: int
    ) -> Any:
        return self.ffi.new(
            "tk_softmax_params *",
            {
                "input_multiplier": input_multiplier,
                "input_left_shift": input_left_shift,
                "diff_min": diff_min,
            },
        )

    def softmax_check(self, *, rows: int, depth: int, **params: Any) -> int:
        """Return the status of tk_softmax_s8_check; the keyword `params` are those of softmax."""
        return int(self.lib.tk_softmax_s8_check(self._softmax_params(**params), rows, depth))

    def softmax(self, input: np.ndarray, **params: Any) -> np.ndarray:
        """Run tk_softmax_s8 over the last axis of `input`. params:
        input_multiplier, input_left_shift, diff_min."""
        depth = input.shape[-1]
        rows = input.size // depth
        softmax_params = self._softmax_params(**params)
        status = self.lib.tk_softmax_s8_check(softmax_params, rows, depth)
        self._require_ok(status, "tk_softmax_s8_check")

        input_buffer = self._input("int8_t", input, np.int8)
        return self._run_guarded(
            lambda output: self.lib.tk_softmax_s8(
                softmax_params, rows, depth, input_buffer, output
            ),
            "int8_t",
            np.int8,
            input.shape,
        )

    # QUANTIZE and DEQUANTIZE.

    def quantize(self, input: np.ndarray, *, scale: float, zero_point: int) -> np.ndarray:
        """Run tk_quantize_f32_s8 on float32 values."""
        affine = self.ffi.new("tk_affine *", {"scale": scale, "zero_point": zero_point})
        input_buffer = self._input("float", input, np.float32)
        return self._run_guarded(
            lambda output: self.lib.tk_quantize_f32_s8(affine, input.size, input_buffer, output),
            "int8_t",
            np.int8,
            input.shape,
        )

    def requantize(
        self,
        input: np.ndarray,
        *,
        input_zero_point: int,
        multiplier: int,
        shift: int,
        output_zero_point: int,
    ) -> np.ndarray:
        """Run tk_requantize_s8 on int8 values."""
        quant = self.ffi.new("tk_quant *", {"multiplier": multiplier, "shift": shift})
        input_buffer = self._input("int8_t", input, np.int8)
        return self._run_guarded(
            lambda output: self.lib.tk_requantize_s8(
                input_zero_point, quant, output_zero_point, input.size, input_buffer, output
            ),
            "int8_t",
            np.int8,
            input.shape,
        )

    def dequantize(self, input: np.ndarray, *, scale: float, zero_point: int) -> np.ndarray:
        """Run tk_dequantize_s8_f32 on int8 values and return float32 values."""
        affine = self.ffi.new("tk_affine *", {"scale": scale, "zero_point": zero_point})
        input_buffer = self._input("int8_t", input, np.int8)
        return self._run_guarded(
            lambda output: self.lib.tk_dequantize_s8_f32(affine, input.size, input_buffer, output),
            "float",
            np.float32,
            input.shape,
        )

    # Packed weight formats: shared runners, then one builder per format.

    def _run_packed_conv2d(
        self,
        kind: str,
        descriptor: Any,
        input: np.ndarray,
        filter_shape: Shape,
        bias: np.ndarray | None,
        output_size: Pair,
        params: dict[str, Any],
    ) -> np.ndarray:
        """Check and run tk_conv2d_<kind>_s8 with a packed filter descriptor of
        the [c_out, kh*kw*c_in] matrix; parameters as conv2d."""
        output_shape = (input.shape[0], *output_size, filter_shape[0])
        conv_params, (quant, *_) = self._conv_arguments(**params)
        input_dims = self.ffi.new("tk_dims *", _dims(input.shape))
        filter_dims = self.ffi.new("tk_dims *", _dims(filter_shape))
        output_dims = self.ffi.new("tk_dims *", _dims(output_shape))
        status = self.lib.tk_conv2d_s8_check(
            conv_params, quant, input_dims, filter_dims, output_dims
        )
        self._require_ok(status, "tk_conv2d_s8_check")
        row_length = int(np.prod(filter_shape[1:]))
        status = getattr(self.lib, f"tk_{kind}_check")(descriptor, filter_shape[0], row_length)
        self._require_ok(status, f"tk_{kind}_check")

        input_buffer = self._input("int8_t", input, np.int8)
        bias_buffer = self._optional_bias(bias)
        kernel = getattr(self.lib, f"tk_conv2d_{kind}_s8")
        return self._run_guarded(
            lambda output: kernel(
                conv_params,
                quant,
                input_dims,
                input_buffer,
                filter_dims,
                descriptor,
                bias_buffer,
                output_dims,
                output,
            ),
            "int8_t",
            np.int8,
            output_shape,
        )

    def _run_packed_fully_connected(
        self,
        kind: str,
        descriptor: Any,
        input: np.ndarray,
        units: int,
        bias: np.ndarray | None,
        params: dict[str, Any],
    ) -> np.ndarray:
        """Check and run tk_fully_connected_<kind>_s8 with a packed weight
        descriptor of the [units, depth] matrix; parameters as fully_connected."""
        batches, depth = input.shape
        fc_params, (quant, *_) = self._fully_connected_arguments(**params)
        status = self.lib.tk_fully_connected_s8_check(fc_params, quant, batches, depth, units)
        self._require_ok(status, "tk_fully_connected_s8_check")
        status = getattr(self.lib, f"tk_{kind}_check")(descriptor, units, depth)
        self._require_ok(status, f"tk_{kind}_check")

        input_buffer = self._input("int8_t", input, np.int8)
        bias_buffer = self._optional_bias(bias)
        kernel = getattr(self.lib, f"tk_fully_connected_{kind}_s8")
        return self._run_guarded(
            lambda output: kernel(
                fc_params,
                quant,
                batches,
                depth,
                units,
                input_buffer,
                descriptor,
                bias_buffer,
                output,
            ),
            "int8_t",
            np.int8,
            (batches, units),
        )

    # Codebook variants (weights as b-bit indices into int8 tables).

    def codebook(self, packed: Any) -> tuple[Any, ...]:
        """Build a tk_codebook from a toolkit.pack.CodebookTensor, with its
        table and index arrays in malloc blocks of exactly their size."""
        table = self._input("int8_t", packed.tables, np.int8)
        indices = self._input("uint8_t", packed.indices, np.uint8)
        descriptor = self.ffi.new(
            "tk_codebook *",
            {
                "table": table,
                "indices": indices,
                "bits": packed.bits,
                "table_size": packed.table_size,
                "table_stride": 0 if packed.shared_table else packed.table_size,
                "row_bytes": packed.row_bytes,
                "row_count": packed.indices.shape[0],
            },
        )
        return descriptor, table, indices

    def codebook_check(self, packed: Any, rows: int, row_length: int) -> int:
        descriptor, *_ = self.codebook(packed)
        return int(self.lib.tk_codebook_check(descriptor, rows, row_length))

    def conv2d_codebook(
        self,
        input: np.ndarray,
        packed: Any,
        filter_shape: Shape,
        bias: np.ndarray | None,
        *,
        output_size: Pair,
        **params: Any,
    ) -> np.ndarray:
        """Run tk_conv2d_codebook_s8 with `packed` as the [c_out, kh*kw*c_in]
        view of the filter; parameters as conv2d."""
        descriptor, *_arrays = self.codebook(packed)
        return self._run_packed_conv2d(
            "codebook", descriptor, input, filter_shape, bias, output_size, params
        )

    def depthwise_conv2d_codebook(
        self,
        input: np.ndarray,
        packed: Any,
        filter_shape: Shape,
        bias: np.ndarray | None,
        *,
        output_size: Pair,
        **params: Any,
    ) -> np.ndarray:
        """Run tk_depthwise_conv2d_codebook_s8 with one row of `packed` per
        output channel (kh*kw indices); parameters as depthwise_conv2d."""
        output_shape = (input.shape[0], *output_size, filter_shape[3])
        dw_params, (quant, *_) = self._depthwise_arguments(**params)
        input_dims = self.ffi.new("tk_dims *", _dims(input.shape))
        filter_dims = self.ffi.new("tk_dims *", _dims(filter_shape))
        output_dims = self.ffi.new("tk_dims *", _dims(output_shape))
        descriptor, *_arrays = self.codebook(packed)
        status = self.lib.tk_depthwise_conv2d_s8_check(
            dw_params, quant, input_dims, filter_dims, output_dims
        )
        self._require_ok(status, "tk_depthwise_conv2d_s8_check")
        status = self.lib.tk_codebook_check(
            descriptor, filter_shape[3], filter_shape[1] * filter_shape[2]
        )
        self._require_ok(status, "tk_codebook_check")

        input_buffer = self._input("int8_t", input, np.int8)
        bias_buffer = self._optional_bias(bias)
        return self._run_guarded(
            lambda output: self.lib.tk_depthwise_conv2d_codebook_s8(
                dw_params,
                quant,
                input_dims,
                input_buffer,
                filter_dims,
                descriptor,
                bias_buffer,
                output_dims,
                output,
            ),
            "int8_t",
            np.int8,
            output_shape,
        )

    def fully_connected_codebook(
        self, input: np.ndarray, packed: Any, bias: np.ndarray | None, **params: Any
    ) -> np.ndarray:
        """Run tk_fully_connected_codebook_s8 with `packed` as the weights
        [units, depth]; parameters as fully_connected."""
        descriptor, *_arrays = self.codebook(packed)
        return self._run_packed_fully_connected(
            "codebook", descriptor, input, packed.indices.shape[0], bias, params
        )

    # Block-sparse variants (only blocks with a nonzero weight are stored).

    def block_sparse(self, packed: Any) -> tuple[Any, ...]:
        """Build a tk_block_sparse from a toolkit.pack.sparse.BlockSparseTensor,
        with its arrays in malloc blocks of exactly their size."""
        values = self._input("int8_t", packed.values, np.int8)
        starts = self._input("uint16_t", packed.row_starts, np.uint16)
        columns = self._input("uint16_t", packed.block_columns, np.uint16)
        descriptor = self.ffi.new(
            "tk_block_sparse *",
            {
                "values": values,
                "row_starts": starts,
                "block_columns": columns,
                "block_rows": packed.block[0],
                "block_cols": packed.block[1],
                "block_row_count": packed.row_starts.size - 1,
                "block_count": packed.block_count,
            },
        )
        return descriptor, values, starts, columns

    def block_sparse_check(self, packed: Any, rows: int, row_length: int) -> int:
        descriptor, *_ = self.block_sparse(packed)
        return int(self.lib.tk_block_sparse_check(descriptor, rows, row_length))

    def conv2d_block_sparse(
        self,
        input: np.ndarray,
        packed: Any,
        filter_shape: Shape,
        bias: np.ndarray | None,
        *,
        output_size: Pair,
        **params: Any,
    ) -> np.ndarray:
        """Run tk_conv2d_block_sparse_s8 with `packed` as the [c_out, kh*kw*c_in]
        view of the filter; parameters as conv2d."""
        descriptor, *_arrays = self.block_sparse(packed)
        return self._run_packed_conv2d(
            "block_sparse", descriptor, input, filter_shape, bias, output_size, params
        )

    def fully_connected_block_sparse(
        self, input: np.ndarray, packed: Any, bias: np.ndarray | None, **params: Any
    ) -> np.ndarray:
        """Run tk_fully_connected_block_sparse_s8 with `packed` as the weights
        [units, depth]; parameters as fully_connected."""
        descriptor, *_arrays = self.block_sparse(packed)
        return self._run_packed_fully_connected(
            "block_sparse", descriptor, input, packed.shape[0], bias, params
        )

    # Sparse-codebook variants (one byte per stored weight: gap and index).

    def sparse_codebook(self, packed: Any) -> tuple[Any, ...]:
        """Build a tk_sparse_codebook from a SparseCodebookTensor, with its
        arrays in malloc blocks of exactly their size."""
        table = self._input("int8_t", packed.tables, np.int8)
        entries = self._input("uint8_t", packed.entries, np.uint8)
        starts = self._input("uint16_t", packed.row_starts, np.uint16)
        descriptor = self.ffi.new(
            "tk_sparse_codebook *",
            {
                "table": table,
                "entries": entries,
                "row_starts": starts,
                "table_stride": 0 if packed.shared_table else 16,
                "row_count": packed.shape[0],
                "entry_count": packed.entries.size,
            },
        )
        return descriptor, table, entries, starts

    def sparse_codebook_check(self, packed: Any, rows: int, row_length: int) -> int:
        descriptor, *_ = self.sparse_codebook(packed)
        return int(self.lib.tk_sparse_codebook_check(descriptor, rows, row_length))

    def conv2d_sparse_codebook(
        self,
        input: np.ndarray,
        packed: Any,
        filter_shape: Shape,
        bias: np.ndarray | None,
        *,
        output_size: Pair,
        **params: Any,
    ) -> np.ndarray:
        """Run tk_conv2d_sparse_codebook_s8 with `packed` as the [c_out, kh*kw*c_in]
        view of the filter; parameters as conv2d."""
        descriptor, *_arrays = self.sparse_codebook(packed)
        return self._run_packed_conv2d(
            "sparse_codebook", descriptor, input, filter_shape, bias, output_size, params
        )

    def fully_connected_sparse_codebook(
        self, input: np.ndarray, packed: Any, bias: np.ndarray | None, **params: Any
    ) -> np.ndarray:
        """Run tk_fully_connected_sparse_codebook_s8 with `packed` as the weights
        [units, depth]; parameters as fully_connected."""
        descriptor, *_arrays = self.sparse_codebook(packed)
        return self._run_packed_fully_connected(
            "sparse_codebook", descriptor, input, packed.shape[0], bias, params
        )

    # N:M variants (n values and positions per group of m weights).

    def n_m(self, packed: Any) -> tuple[Any, ...]:
        """Build a tk_n_m from a toolkit.pack.n_m.NMTensor, with its arrays in
        malloc blocks of exactly their size."""
        values = self._input("int8_t", packed.values, np.int8)
        positions = self._input("uint8_t", packed.positions, np.uint8)
        descriptor = self.ffi.new(
            "tk_n_m *",
            {
                "values": values,
                "positions": positions,
                "n": packed.n,
                "m": packed.m,
                "position_bits": packed.position_bits,
                "row_bytes": packed.positions.shape[1],
                "row_count": packed.shape[0],
            },
        )
        return descriptor, values, positions

    def n_m_check(self, packed: Any, rows: int, row_length: int) -> int:
        descriptor, *_ = self.n_m(packed)
        return int(self.lib.tk_n_m_check(descriptor, rows, row_length))

    def conv2d_n_m(
        self,
        input: np.ndarray,
        packed: Any,
        filter_shape: Shape,
        bias: np.ndarray | None,
        *,
        output_size: Pair,
        **params: Any,
    ) -> np.ndarray:
        """Run tk_conv2d_n_m_s8 with `packed` as the [c_out, kh*kw*c_in]
        view of the filter; parameters as conv2d."""
        descriptor, *_arrays = self.n_m(packed)
        return self._run_packed_conv2d(
            "n_m", descriptor, input, filter_shape, bias, output_size, params
        )

    def fully_connected_n_m(
        self, input: np.ndarray, packed: Any, bias: np.ndarray | None, **params: Any
    ) -> np.ndarray:
        """Run tk_fully_connected_n_m_s8 with `packed` as the weights
        [units, depth]; parameters as fully_connected."""
        descriptor, *_arrays = self.n_m(packed)
        return self._run_packed_fully_connected(
            "n_m", descriptor, input, packed.shape[0], bias, params
        )
