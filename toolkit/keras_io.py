"""Load Keras models from .keras files, legacy Keras 2 .h5 files and SavedModel directories.

TensorFlow and Keras are imported inside the functions of this module and of
toolkit.convert only, so that the rest of the package runs without TensorFlow.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import json
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit.errors import ToolkitError

if TYPE_CHECKING:
    import keras

logger = logging.getLogger(__name__)

ACCEPTED_FORMATS = (
    "a Keras 3 .keras file, a legacy Keras 2 .h5/.hdf5 file or a TensorFlow SavedModel directory"
)
H5_SUFFIXES = (".h5", ".hdf5")

# Class names of layer configs that contain other layer configs under "layers".
_MODEL_CLASS_NAMES = frozenset({"Functional", "Model", "Sequential"})

# Config keys under which wrappers (TimeDistributed, Bidirectional) and RNN layers
# store the config of the layer or cell that they contain.
_NESTED_LAYER_KEYS = ("layer", "backward_layer", "cell")

# Keyword arguments that keras.layers.Layer.__init__ reads from **kwargs, so that
# they do not appear in any constructor signature.
_LAYER_KWARGS = frozenset({"input_shape", "input_dim"})

# Keras 2 layer classes that Keras 3 does not provide, with the fix for each.
_REMOVED_LAYER_FIXES = {
    "TFOpLambda": "replace the TensorFlow function called on Keras tensors with a Keras layer",
    "SlicingOpLambda": "replace the tensor slicing on Keras tensors with a Keras layer",
    "TensorFlowOpLayer": "replace the TensorFlow op called on Keras tensors with a Keras layer",
}


def import_tensorflow() -> Any:
    """Import TensorFlow with its C++ start-up messages sent to the debug log.

    TF_CPP_MIN_LOG_LEVEL is set to 3 (errors hidden too) unless the user has
    set it, because TensorFlow 2.21 otherwise logs a cuInit error line on
    machines without a GPU. Failures still reach the caller as Python exceptions.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" not in sys.modules:
        try:
            with native_stderr_to_debug_log():
                importlib.import_module("tensorflow")
        except ImportError as error:
            raise ToolkitError(
                f"TensorFlow is not installed ({error}). Loading and converting Keras "
                "models needs it: install it with `pip install toolkit[convert]`."
            ) from error
    return sys.modules["tensorflow"]


def import_keras() -> Any:
    """Import Keras after TensorFlow, with start-up messages sent to the debug log."""
    import_tensorflow()
    if "keras" not in sys.modules:
        try:
            with native_stderr_to_debug_log():
                importlib.import_module("keras")
        except ImportError as error:
            raise ToolkitError(
                f"Keras is not installed ({error}). Loading and converting Keras models "
                "needs it: install it with `pip install toolkit[convert]`."
            ) from error
    return sys.modules["keras"]


@contextlib.contextmanager
def native_stderr_to_debug_log() -> Iterator[None]:
    """Send everything written to file descriptor 2 inside the block to the debug log.

    TensorFlow's C++ code logs through absl, which writes straight to file
    descriptor 2 and ignores TF_CPP_MIN_LOG_LEVEL until absl::InitializeLog runs.
    In TensorFlow 2.21 that has not happened during import or conversion. Python
    writes to sys.stderr inside the block are captured too when sys.stderr is
    file descriptor 2.
    """
    try:
        saved_fd = os.dup(2)
    except OSError:
        # Some daemons run without file descriptor 2, so there is nothing to capture.
        yield
        return

    with tempfile.TemporaryFile() as capture:
        sys.stderr.flush()
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved_fd, 2)
            os.close(saved_fd)
            capture.seek(0)
            for line in capture.read().decode(errors="replace").splitlines():
                if line.strip():
                    logger.debug("TensorFlow: %s", line)


@contextlib.contextmanager
def quiet_python_logs() -> Iterator[None]:
    """Hide Python warnings and absl/TensorFlow log records below ERROR inside the block."""
    loggers = [logging.getLogger("absl"), logging.getLogger("tensorflow")]
    saved_levels = [named_logger.level for named_logger in loggers]
    for named_logger in loggers:
        named_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for named_logger, level in zip(loggers, saved_levels, strict=True):
            named_logger.setLevel(level)


def load_model(path: str | os.PathLike[str]) -> keras.Model:
    """Load a Keras model for conversion and return it uncompiled.

    Accepts a Keras 3 .keras file, a legacy Keras 2 .h5 or .hdf5 file (see
    `_upgrade_layer_config` for the Keras 2 config keys that are upgraded or dropped)
    and a TensorFlow SavedModel directory. A SavedModel becomes a functional
    model around a keras.layers.TFSMLayer that calls its serving_default
    signature. Raises ToolkitError for a missing or unreadable model.
    """
    model_path = Path(os.fspath(path))
    if model_path.is_dir():
        return _load_saved_model(model_path)
    if not model_path.exists():
        raise ToolkitError(f"Model not found: {model_path}. Pass {ACCEPTED_FORMATS}.")

    suffix = model_path.suffix.lower()
    if suffix == ".keras":
        return _load_keras_file(model_path)
    if suffix in H5_SUFFIXES:
        return _load_legacy_h5(model_path)
    raise ToolkitError(
        f"Unknown model format {model_path.suffix or '(no extension)'!r} of {model_path}. "
        f"Pass {ACCEPTED_FORMATS}."
    )


def _load_keras_file(path: Path) -> keras.Model:
    keras = import_keras()
    try:
        with quiet_python_logs():
            return keras.models.load_model(path, compile=False)
    except Exception as error:  # Keras raises many exception types for damaged files.
        raise ToolkitError(
            f"Cannot load the .keras file {path}: {error}. Check that the file is complete "
            f"and was saved by Keras 3, or pass {ACCEPTED_FORMATS}."
        ) from error


def _load_saved_model(path: Path) -> keras.Model:
    """Wrap the serving_default signature of a SavedModel in a functional model.

    The signature must have one input tensor of known rank. A signature with
    several outputs gives a model whose outputs are a list ordered by output name.
    """
    if not (path / "saved_model.pb").is_file() and not (path / "saved_model.pbtxt").is_file():
        raise ToolkitError(
            f"{path} is a directory without saved_model.pb, so it is not a TensorFlow "
            f"SavedModel. Pass {ACCEPTED_FORMATS}."
        )

    keras = import_keras()
    try:
        with quiet_python_logs():
            layer = keras.layers.TFSMLayer(os.fspath(path), call_endpoint="serving_default")
    except ValueError as error:
        # Keras lists the signatures that the SavedModel has in this message.
        raise ToolkitError(
            f"Cannot use the SavedModel {path}: {error}. Export it with a serving_default "
            "signature, for example with keras.Model.export or tf.saved_model.save(..., "
            "signatures=...)."
        ) from error
    except Exception as error:  # TensorFlow raises many exception types for damaged files.
        raise ToolkitError(
            f"Cannot load the SavedModel {path}: {error}. Check that the directory is "
            f"complete, or pass {ACCEPTED_FORMATS}."
        ) from error

    _, input_specs = layer.call_endpoint_fn.structured_input_signature
    if len(input_specs) != 1:
        raise ToolkitError(
            f"The serving_default signature of the SavedModel {path} has "
            f"{len(input_specs)} inputs {sorted(input_specs)}, but the toolkit supports "
            "models with exactly one input. Export a model with one input tensor."
        )
    ((input_name, spec),) = input_specs.items()
    if spec.shape.rank is None:
        raise ToolkitError(
            f"Input {input_name!r} of the SavedModel {path} has unknown rank. Export "
            "the model with an input signature that fixes the rank, such as [None, 32, 32, 3]."
        )

    inputs = keras.Input(batch_shape=tuple(spec.shape), dtype=spec.dtype.name, name=input_name)
    outputs = layer(inputs)
    if isinstance(outputs, dict):
        ordered = [outputs[key] for key in sorted(outputs)]
        outputs = ordered[0] if len(ordered) == 1 else ordered
    return keras.Model(inputs, outputs, name=path.name)


def _load_legacy_h5(path: Path) -> keras.Model:
    """Rebuild a Keras 2 HDF5 model from its config and load its weights from the file.

    Keras 3 rejects many Keras 2 configs, so each layer config is upgraded first
    (`_upgrade_layer_config`). Weights are then loaded in layer order by
    keras.Model.load_weights, which checks the count and shape of every weight.
    """
    keras = import_keras()
    config = _read_h5_model_config(path)
    class_name = config.get("class_name")
    if class_name not in _MODEL_CLASS_NAMES or not isinstance(config.get("config"), dict):
        raise ToolkitError(
            f"The model config in {path} has class {class_name!r}, but only Functional and "
            "Sequential models can be rebuilt from a config. Save the model as a SavedModel "
            f"or .keras file instead, or pass {ACCEPTED_FORMATS}."
        )
    _upgrade_model_config(config["config"], path)

    model_class = keras.Sequential if class_name == "Sequential" else keras.Model
    try:
        with quiet_python_logs():
            model = model_class.from_config(config["config"])
    except Exception as error:  # Keras raises many exception types for configs it rejects.
        raise ToolkitError(
            f"Cannot rebuild the Keras 2 model in {path} with Keras {keras.__version__}: "
            f"{error}. Load it with Keras 2 and save it again as a SavedModel, or pass "
            f"{ACCEPTED_FORMATS}."
        ) from error

    try:
        with quiet_python_logs():
            model.load_weights(os.fspath(path))
    except Exception as error:  # Keras raises ValueError, KeyError or OSError here.
        raise ToolkitError(
            f"Cannot load the weights in {path} into the rebuilt model: {error}. Check that "
            "the file is complete, or load it with Keras 2 and save it again as a SavedModel."
        ) from error
    return model


def _read_h5_model_config(path: Path) -> dict[str, Any]:
    import h5py

    try:
        with h5py.File(path, "r") as h5_file:
            raw_config = h5_file.attrs.get("model_config")
    except OSError as error:
        raise ToolkitError(
            f"Cannot read {path} as an HDF5 file ({error}). The file is damaged or not an "
            f"HDF5 file: pass {ACCEPTED_FORMATS}."
        ) from error

    if raw_config is None:
        raise ToolkitError(
            f"{path} contains no model config (attribute model_config), so it probably contains "
            "weights only. Build the model in code and call model.load_weights, or pass "
            f"{ACCEPTED_FORMATS}."
        )
    if isinstance(raw_config, bytes):
        raw_config = raw_config.decode("utf-8")
    try:
        config = json.loads(raw_config)
    except json.JSONDecodeError as error:
        raise ToolkitError(
            f"The model config in {path} is not valid JSON ({error}). The file is damaged: "
            f"save the model again, or pass {ACCEPTED_FORMATS}."
        ) from error
    if not isinstance(config, dict):
        raise ToolkitError(
            f"The model config in {path} is a JSON {type(config).__name__}, expected an "
            f"object. The file is damaged: save the model again, or pass {ACCEPTED_FORMATS}."
        )
    return config


def _upgrade_model_config(model_config: dict[str, Any], path: Path) -> None:
    """Upgrade, in place, every layer config of a Functional or Sequential model config."""
    layers = model_config.get("layers")
    if not isinstance(layers, list):
        raise ToolkitError(
            f"The model config in {path} has no list of layers. The file is damaged: save "
            f"the model again, or pass {ACCEPTED_FORMATS}."
        )
    for entry in layers:
        _upgrade_layer_config(entry, path)


def _upgrade_layer_config(entry: dict[str, Any], path: Path) -> None:
    """Turn, in place, a Keras 2 layer config into one that Keras 3 accepts.

    - batch_input_shape becomes batch_shape on an InputLayer and input_shape
      (without the batch dimension) on other layers.
    - A mixed precision "Policy" dtype becomes its policy name.
    - An axis given as a one-element list becomes an int.
    - Keys that the Keras 3 constructor does not accept are dropped and logged.

    NOTE: dropping a key assumes that it does not change inference. That holds for
    `groups` of DepthwiseConv2D, which Keras 2 always writes as 1 because its
    DepthwiseConv2D has no groups argument. Another dropped key with a non-default
    value may change the model.
    """
    class_name = entry.get("class_name")
    config = entry.get("config")
    if not isinstance(class_name, str) or not isinstance(config, dict):
        raise ToolkitError(
            f"A layer config in {path} has no class_name or config: {str(entry)[:200]}. "
            f"The file is damaged: save the model again, or pass {ACCEPTED_FORMATS}."
        )
    layer_name = config.get("name", entry.get("name", "?"))

    if class_name in _MODEL_CLASS_NAMES:
        _upgrade_model_config(config, path)
        return
    layer_class = _find_layer_class(class_name, layer_name, path)

    _upgrade_batch_input_shape(config, class_name, layer_name)
    dtype = config.get("dtype")
    if isinstance(dtype, dict) and dtype.get("class_name") == "Policy":
        config["dtype"] = dtype.get("config", {}).get("name", "float32")
        logger.info("layer %s: Keras 2 dtype policy became %r", layer_name, config["dtype"])
    axis = config.get("axis")
    if isinstance(axis, list) and len(axis) == 1:
        config["axis"] = int(axis[0])

    for key in _NESTED_LAYER_KEYS:
        nested = config.get(key)
        if isinstance(nested, dict) and "class_name" in nested:
            _upgrade_layer_config(nested, path)
    cells = config.get("cells")
    if isinstance(cells, list):
        for cell in cells:
            if isinstance(cell, dict) and "class_name" in cell:
                _upgrade_layer_config(cell, path)

    accepted = _constructor_keywords(layer_class)
    for key in sorted(set(config) - accepted):
        value = config.pop(key)
        logger.info(
            "layer %s: dropped Keras 2 config key %s=%r, which the %s constructor does not accept",
            layer_name,
            key,
            value,
            class_name,
        )


def _upgrade_batch_input_shape(config: dict[str, Any], class_name: str, layer_name: str) -> None:
    batch_input_shape = config.pop("batch_input_shape", None)
    if batch_input_shape is None:
        return
    if class_name == "InputLayer":
        config.setdefault("batch_shape", batch_input_shape)
        return
    # Keras 3 turns input_shape on the first layer of a Sequential model into an
    # InputLayer of that shape, so the batch dimension must go.
    config.setdefault("input_shape", batch_input_shape[1:])
    if batch_input_shape[0] is not None:
        logger.info(
            "layer %s: dropped the fixed batch size %s of batch_input_shape",
            layer_name,
            batch_input_shape[0],
        )


def _find_layer_class(class_name: str, layer_name: str, path: Path) -> type:
    keras = import_keras()
    candidate = keras.saving.get_custom_objects().get(class_name)
    if candidate is None:
        candidate = getattr(keras.layers, class_name, None)
    if isinstance(candidate, type) and issubclass(candidate, keras.layers.Layer):
        if class_name == "Lambda":
            raise ToolkitError(
                f"Layer {layer_name!r} in {path} is a Lambda layer, whose Python bytecode "
                "this loader does not run. Replace it with a built-in or registered custom "
                "layer and save the model again."
            )
        return candidate

    fix = _REMOVED_LAYER_FIXES.get(
        class_name,
        "register the custom layer class with keras.saving.register_keras_serializable "
        "before loading, or replace the layer",
    )
    raise ToolkitError(
        f"Layer {layer_name!r} in {path} has class {class_name!r}, which Keras "
        f"{keras.__version__} does not provide. To load the model, {fix}, then save it again."
    )


def _constructor_keywords(layer_class: type) -> set[str]:
    """Return the keyword arguments that constructing `layer_class` accepts.

    Follows the base classes while each __init__ passes **kwargs on to its parent.
    """
    keywords = set(_LAYER_KWARGS)
    for klass in layer_class.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        parameters = inspect.signature(init).parameters.values()
        keywords.update(
            parameter.name
            for parameter in parameters
            if parameter.name != "self"
            and parameter.kind
            in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        )
        if not any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters):
            break
    return keywords
