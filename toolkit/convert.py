"""Convert Keras models to full-integer int8 TensorFlow Lite flatbuffers.

TensorFlow is imported inside the functions, so that importing this module
does not need it.
"""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from toolkit.errors import ToolkitError
from toolkit.keras_io import (
    import_keras,
    import_tensorflow,
    native_stderr_to_debug_log,
    quiet_python_logs,
)

if TYPE_CHECKING:
    import keras

IoType = Literal["int8", "float32"]
IO_TYPES: tuple[str, ...] = ("int8", "float32")

InputShape = Sequence[int | None]

# Characters that TensorFlow accepts in the name of a TensorSpec.
_TENSOR_NAME_PATTERN = re.compile(r"^[A-Za-z0-9.][A-Za-z0-9_.\-/]*$")


def load_calibration(
    data: np.ndarray | str | os.PathLike[str],
    input_shape: InputShape,
    name: str = "calibration data",
    *,
    input_name: str | None = None,
) -> np.ndarray:
    """Load calibration samples and return them as float32 with shape (N, *input_shape).

    `data` is an array or a path to a .npy or .npz file. From a .npz file the
    array named `input_name` is used if present, else the first array.
    `input_shape` excludes the batch dimension, and None in it matches any size.
    A single sample shaped `input_shape` becomes a batch of one. `name` names
    the data in error messages when `data` is an array.

    Raises ToolkitError for an unreadable file, a shape that matches neither
    form, an empty batch, a non-numeric dtype or NaN and infinite values.
    """
    if isinstance(data, str | os.PathLike):
        path = Path(os.fspath(data))
        samples = _read_array_file(path, input_name)
        source = f"{name} file {path}"
    else:
        samples = np.asarray(data)
        source = name

    expected = tuple(input_shape)
    if not (np.issubdtype(samples.dtype, np.integer) or np.issubdtype(samples.dtype, np.floating)):
        raise ToolkitError(
            f"{source} has dtype {samples.dtype}, expected integer or floating-point numbers. "
            "Save the samples as a numeric array, such as float32."
        )
    if _shape_matches(samples.shape, expected):
        samples = samples[np.newaxis]
    elif not (samples.ndim == len(expected) + 1 and _shape_matches(samples.shape[1:], expected)):
        raise ToolkitError(
            f"{source} has shape {samples.shape}, expected (N, {_format_dims(expected)}) for "
            f"N samples or ({_format_dims(expected)}) for one sample. Reshape the data to "
            "the model input shape."
        )
    if samples.shape[0] == 0:
        raise ToolkitError(
            f"{source} has shape {samples.shape}, which contains no samples. Pass at least "
            "one sample; a few hundred typical inputs give the best int8 ranges."
        )

    # Values beyond the float32 range become inf here and are rejected below.
    with np.errstate(over="ignore"):
        samples = samples.astype(np.float32)
    if not np.isfinite(samples).all():
        bad_count = int(np.count_nonzero(~np.isfinite(samples)))
        raise ToolkitError(
            f"{source} contains {bad_count} NaN or infinite values after conversion to "
            "float32. Remove or replace them, because they make the int8 ranges meaningless."
        )
    return samples


def random_calibration(input_shape: InputShape, count: int = 100, seed: int = 0) -> np.ndarray:
    """Return `count` standard normal float32 samples shaped (count, *input_shape).

    Use it for a float model deployed without calibration data. The int8 ranges
    then fit random data, not real inputs, so the caller should warn the user.
    """
    expected = tuple(input_shape)
    sizes = tuple(dim for dim in expected if dim is not None)
    if len(sizes) != len(expected):
        raise ToolkitError(
            f"Cannot make random calibration data for input shape ({_format_dims(expected)}) "
            "because some dimensions are unknown. Pass calibration data with the real shape."
        )
    if count < 1:
        raise ToolkitError(
            f"Random calibration sample count is {count}, expected at least 1. Pass a positive "
            "count."
        )
    generator = np.random.default_rng(seed)
    return generator.standard_normal((count, *sizes), dtype=np.float32)


def to_int8_tflite(
    model: keras.Model,
    calibration: np.ndarray,
    io_type: IoType = "int8",
    per_channel_dense: bool = True,
) -> bytes:
    """Convert a single-input Keras model to a full-integer int8 TFLite flatbuffer.

    With `per_channel_dense` False, Dense weights get one scale per tensor
    instead of one per output channel: weights shared per tensor then keep a
    single table of int8 values, which packs smaller.

    Each calibration sample is fed to the converter as a batch of one. With
    io_type "int8" the model inputs and outputs are int8. With "float32" they
    stay float32, and the converter adds QUANTIZE and DEQUANTIZE ops at the
    edges. The TFLite input has batch size 1, and an input dimension that the
    model leaves unknown takes its size from `calibration`.

    Raises ToolkitError for an unknown io_type, a model with several inputs,
    calibration data of the wrong shape and a failed conversion.
    """
    if io_type not in IO_TYPES:
        raise ToolkitError(
            f"io_type is {io_type!r}, expected one of {', '.join(IO_TYPES)}. Use int8 for "
            "int8 model inputs and outputs, or float32 to keep a float interface."
        )
    input_shape, input_name = _model_input(model)
    samples = load_calibration(calibration, input_shape)

    tf = import_tensorflow()
    spec = tf.TensorSpec([1, *samples.shape[1:]], tf.float32, name=input_name)
    serving_fn = tf.function(lambda inputs: model(inputs, training=False), input_signature=[spec])
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [serving_fn.get_concrete_function()], model
    )
    # In TF 2.21 the default lowering through a SavedModel keeps Keras 3 weights as
    # resource variables, and calibration then fails in READ_VARIABLE. Freezing the
    # concrete function turns them into constants.
    converter.experimental_lower_to_saved_model = False
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    # NOTE: an experimental converter attribute (TF 2.21); it may change.
    converter._experimental_disable_per_channel_quantization_for_dense_layers = (
        not per_channel_dense
    )
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.representative_dataset = lambda: _single_sample_batches(samples)
    if io_type == "int8":
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8

    try:
        with quiet_python_logs(), native_stderr_to_debug_log():
            flatbuffer: bytes = converter.convert()
    except Exception as error:  # The converter raises ConverterError, RuntimeError and others.
        raise ToolkitError(
            f"TFLite int8 conversion of model {getattr(model, 'name', '?')!r} failed: {error}. "
            "Every layer must map to a TFLite builtin op with an int8 kernel. Replace the "
            "layers named in the message."
        ) from error
    return flatbuffer


def _model_input(model: Any) -> tuple[tuple[int | None, ...], str]:
    """Return the input shape without the batch dimension and a TensorSpec name for it."""
    keras = import_keras()
    if not isinstance(model, keras.Model):
        raise ToolkitError(
            f"Expected a keras.Model to convert, received {type(model).__name__}. Load the "
            "model with toolkit.keras_io.load_model."
        )
    try:
        inputs = model.inputs
    except (AttributeError, ValueError) as error:
        raise ToolkitError(
            f"Model {model.name!r} has no defined inputs ({error}). Build it with "
            "keras.Input, or call it once on data, before converting."
        ) from error
    if not inputs or len(inputs) != 1:
        raise ToolkitError(
            f"Model {model.name!r} has {len(inputs or [])} inputs, but the toolkit converts "
            "models with exactly one input. Wrap the model so that it takes one tensor."
        )

    tensor = inputs[0]
    if not np.issubdtype(np.dtype(tensor.dtype), np.floating):
        raise ToolkitError(
            f"Input {tensor.name!r} of model {model.name!r} has dtype {tensor.dtype}, expected "
            "a floating-point input. Feed the model float inputs and cast inside it."
        )
    name = tensor.name if _TENSOR_NAME_PATTERN.match(tensor.name or "") else "input"
    return tuple(tensor.shape[1:]), name


def _single_sample_batches(samples: np.ndarray) -> Iterator[list[np.ndarray]]:
    for sample in samples:
        yield [sample[np.newaxis]]


def _read_array_file(path: Path, input_name: str | None) -> np.ndarray:
    if not path.is_file():
        raise ToolkitError(
            f"Calibration data file not found: {path}. Pass an existing .npy or .npz file."
        )
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".npz"):
        raise ToolkitError(
            f"Calibration data file {path} has extension {path.suffix or '(none)'!r}, expected "
            ".npy or .npz. Save the samples with numpy.save or numpy.savez."
        )

    try:
        # allow_pickle=False rejects object arrays, which could run code when loaded.
        loaded = np.load(path, allow_pickle=False)
        if suffix == ".npy":
            return np.asarray(loaded)
        with loaded:
            if not loaded.files:
                raise ToolkitError(
                    f"Calibration data file {path} contains no arrays. Save the samples "
                    "with numpy.savez."
                )
            key = input_name if input_name in loaded.files else loaded.files[0]
            return np.asarray(loaded[key])
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise ToolkitError(
            f"Cannot read calibration data file {path}: {error}. Save the samples as a "
            "numeric array with numpy.save (.npy) or numpy.savez (.npz)."
        ) from error


def _shape_matches(shape: tuple[int, ...], expected: tuple[int | None, ...]) -> bool:
    if len(shape) != len(expected):
        return False
    return all(want is None or want == got for got, want in zip(shape, expected, strict=True))


def _format_dims(dims: tuple[int | None, ...]) -> str:
    return ", ".join("?" if dim is None else str(dim) for dim in dims)
