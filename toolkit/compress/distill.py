"""Knowledge distillation: train a small student model on the softened outputs of a teacher.

The loss per sample is

    alpha * CE(y, softmax(s)) + (1 - alpha) * T^2 * KL(softmax(t / T) || softmax(s / T))

where s and t are the student and teacher logits, y the integer label, T the
temperature and CE the sparse categorical cross-entropy. The T^2 factor keeps
the gradient of the soft term at the same scale for any T (Hinton, Vinyals and
Dean, "Distilling the Knowledge in a Neural Network", 2015).

Training runs through keras.Model.fit on a `Distiller` model that wraps the
student, so callbacks such as EarlyStopping, the progress bar and validation
data work as in ordinary Keras training.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import numpy as np

from toolkit.errors import ToolkitError
from toolkit.keras_io import import_keras

if TYPE_CHECKING:
    import keras

OUTPUT_KINDS = ("auto", "logits", "probabilities")

# Probabilities are clipped to this floor before the logarithm that recovers logits,
# so that a probability of 0 gives a finite logit.
PROBABILITY_FLOOR = 1e-7


def distill(
    teacher: keras.Model,
    student: keras.Model,
    data: Any,
    temperature: float = 4.0,
    alpha: float = 0.1,
    epochs: int = 10,
    batch_size: int = 32,
    validation_data: Any = None,
    callbacks: list[Any] | None = None,
    teacher_outputs: str = "auto",
    optimizer: Any = "adam",
    verbose: Any = "auto",
    *,
    student_outputs: str = "auto",
    shuffle: bool = True,
) -> keras.Model:
    """Train `student` in place by distillation from `teacher` and return it.

    `data` is an (x, y) pair of arrays, with y integer class labels (one-hot rows
    are converted to labels), or a tf.data.Dataset of batched (x, y) pairs. When
    `data` is a dataset, `batch_size` and `shuffle` are not used.
    `validation_data` takes the same forms and is evaluated with the same loss.
    `alpha` weights the hard-label loss and 1 - alpha the soft teacher loss.

    `teacher_outputs` and `student_outputs` are "logits" or "probabilities" (softmax
    outputs). With "auto", a model whose output layer is Softmax
    or has a softmax activation outputs probabilities. Logits are recovered from
    probabilities as log(max(p, 1e-7)), which differs from the true logits by a
    constant per sample and so leaves softmax(logits / T) unchanged.

    The teacher is frozen during training (its `trainable` flag is restored
    afterwards). The returned student is a plain keras.Model, so it can be saved
    or passed to toolkit.deploy.deploy.
    """
    keras = import_keras()
    if not temperature > 0:
        raise ToolkitError(f"temperature is {temperature}, expected a positive number such as 4")
    if not 0 <= alpha <= 1:
        raise ToolkitError(f"alpha is {alpha}, expected the hard-label weight in [0, 1]")
    teacher_probabilities = _outputs_probabilities(teacher, teacher_outputs, "teacher_outputs")
    student_probabilities = _outputs_probabilities(student, student_outputs, "student_outputs")
    _check_class_counts(teacher, student)

    distiller_class = _distiller_class()
    distiller = distiller_class(
        student,
        teacher,
        temperature=temperature,
        alpha=alpha,
        student_probabilities=student_probabilities,
        teacher_probabilities=teacher_probabilities,
    )

    # Setting Model.trainable sets the flag of every sublayer, so each flag is saved.
    saved_flags = [(layer, layer.trainable) for layer in _all_layers(teacher)]
    teacher.trainable = False
    try:
        distiller.compile(
            optimizer=optimizer,
            metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        )
        fit_arguments: dict[str, Any] = {
            "epochs": epochs,
            "callbacks": callbacks,
            "verbose": verbose,
            "validation_data": _labelled(validation_data, "validation_data"),
        }
        if _is_dataset(data):
            # A dataset is shuffled by its own pipeline, and fit warns when asked to shuffle it.
            distiller.fit(data, shuffle=False, **fit_arguments)
        else:
            x, y = _labelled(data, "data")
            distiller.fit(x, y, batch_size=batch_size, shuffle=shuffle, **fit_arguments)
    finally:
        for layer, trainable in saved_flags:
            layer.trainable = trainable
    return student


def _all_layers(model: Any) -> list[Any]:
    """Return `model` and its layers, with the layers of nested models, outermost first."""
    layers = [model]
    for layer in getattr(model, "layers", []):
        layers.extend(_all_layers(layer))
    return layers


def __getattr__(name: str) -> Any:
    # Distiller subclasses keras.Model, so it is created on first use, which
    # keeps the import of this module free of TensorFlow.
    if name == "Distiller":
        return _distiller_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def _distiller_class() -> type:
    keras = import_keras()
    ops = keras.ops

    class Distiller(keras.Model):  # type: ignore[name-defined]
        """A keras.Model whose forward pass is the student and whose loss is the
        distillation loss, computed with the frozen teacher's outputs on the same batch."""

        def __init__(
            self,
            student: Any,
            teacher: Any,
            temperature: float,
            alpha: float,
            student_probabilities: bool,
            teacher_probabilities: bool,
            **kwargs: Any,
        ) -> None:
            super().__init__(**kwargs)
            self.student = student
            self.teacher = teacher
            self.temperature = float(temperature)
            self.alpha = float(alpha)
            self.student_probabilities = student_probabilities
            self.teacher_probabilities = teacher_probabilities

        def call(self, inputs: Any, training: bool = False) -> Any:
            return self.student(inputs, training=training)

        def compute_loss(
            self,
            x: Any = None,
            y: Any = None,
            y_pred: Any = None,
            sample_weight: Any = None,
            training: bool = True,
        ) -> Any:
            teacher_output = self.teacher(x, training=False)
            student_logits = _to_logits(ops, y_pred, self.student_probabilities)
            teacher_logits = ops.stop_gradient(
                _to_logits(ops, teacher_output, self.teacher_probabilities)
            )

            hard_loss = keras.losses.sparse_categorical_crossentropy(
                y, student_logits, from_logits=True
            )
            scale = self.temperature
            teacher_log_probabilities = ops.log_softmax(teacher_logits / scale, axis=-1)
            student_log_probabilities = ops.log_softmax(student_logits / scale, axis=-1)
            soft_loss = ops.sum(
                ops.exp(teacher_log_probabilities)
                * (teacher_log_probabilities - student_log_probabilities),
                axis=-1,
            )
            per_sample = self.alpha * hard_loss + (1 - self.alpha) * scale**2 * soft_loss
            if sample_weight is not None:
                weights = ops.cast(ops.reshape(sample_weight, (-1,)), per_sample.dtype)
                loss = ops.sum(per_sample * weights) / ops.maximum(ops.sum(weights), 1e-12)
            else:
                loss = ops.mean(per_sample)
            # Regularization losses of the student, as Keras adds them by default.
            for extra in self.student.losses:
                loss = loss + ops.cast(ops.sum(extra), loss.dtype)
            return loss

    return Distiller


def _to_logits(ops: Any, outputs: Any, probabilities: bool) -> Any:
    outputs = ops.cast(outputs, "float32")
    if not probabilities:
        return outputs
    return ops.log(ops.clip(outputs, PROBABILITY_FLOOR, 1.0))


def _outputs_probabilities(model: Any, kind: str, argument: str) -> bool:
    if kind not in OUTPUT_KINDS:
        raise ToolkitError(
            f"{argument} is {kind!r}, expected one of {', '.join(OUTPUT_KINDS)}. Pass "
            "probabilities for a model with a softmax output, else logits"
        )
    if kind != "auto":
        return kind == "probabilities"
    layer = _output_layer(model)
    if type(layer).__name__ == "Softmax":
        return True
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", "") == "softmax"


def _output_layer(model: Any) -> Any:
    try:
        outputs = model.outputs
    except (AttributeError, ValueError):
        outputs = None
    if not outputs:
        return model.layers[-1] if model.layers else None
    if len(outputs) != 1:
        raise ToolkitError(
            f"model {model.name!r} has {len(outputs)} outputs, but distillation needs exactly "
            "one output of class scores"
        )
    return outputs[0]._keras_history.operation


def _check_class_counts(teacher: Any, student: Any) -> None:
    try:
        teacher_classes = teacher.outputs[0].shape[-1]
        student_classes = student.outputs[0].shape[-1]
    except (AttributeError, ValueError, IndexError, TypeError):
        return
    if teacher_classes != student_classes:
        raise ToolkitError(
            f"the teacher {teacher.name!r} outputs {teacher_classes} classes but the student "
            f"{student.name!r} outputs {student_classes}; both must score the same classes"
        )


def _is_dataset(data: Any) -> bool:
    if data is None or isinstance(data, (tuple, list)):
        return False
    from toolkit.keras_io import import_tensorflow

    tf = import_tensorflow()
    return isinstance(data, tf.data.Dataset)


def _labelled(data: Any, argument: str) -> Any:
    """Return an (x, labels) pair with integer labels, or a dataset or None unchanged."""
    if data is None or _is_dataset(data):
        return data
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise ToolkitError(
            f"{argument} must be an (x, y) pair of arrays or a tf.data.Dataset, got "
            f"{type(data).__name__}"
        )
    x, y = data
    labels = np.asarray(y)
    if labels.ndim == 2 and labels.shape[1] > 1:
        labels = np.argmax(labels, axis=1)
    labels = labels.reshape(-1)
    if len(labels) != len(x):
        raise ToolkitError(
            f"{argument} has {len(x)} inputs but {len(labels)} labels; give one label per input"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.all(np.equal(np.mod(labels, 1), 0)):
            raise ToolkitError(
                f"{argument} labels have dtype {labels.dtype} with fractional values; give "
                "integer class labels or one-hot rows"
            )
        labels = labels.astype(np.int64)
    return x, labels
