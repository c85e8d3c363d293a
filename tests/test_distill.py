"""Knowledge distillation: the loss formula, Keras training features, and a deployable student."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from toolkit.compress.distill import distill
from toolkit.deploy import deploy
from toolkit.errors import ToolkitError
from toolkit.examples.digits import DigitsData, load_digits_data, train_model
from toolkit.keras_io import import_keras, import_tensorflow
from toolkit.validate import validate


@pytest.fixture(scope="session")
def keras() -> Any:
    return import_keras()


@pytest.fixture(scope="session")
def digits() -> DigitsData:
    return load_digits_data(seed=0)


@pytest.fixture(scope="session")
def teacher(digits: DigitsData) -> Any:
    """The example CNN, trained briefly. Its output layer is a softmax, so it outputs
    probabilities."""
    return train_model(digits, epochs=8, seed=0)


def _student(keras: Any, seed: int, softmax: bool = False) -> Any:
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax" if softmax else None),
        ]
    )


def _accuracy(model: Any, data: DigitsData) -> float:
    predictions = np.argmax(model.predict(data.x_test, verbose=0), axis=1)
    return float(np.mean(predictions == data.y_test))


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _expected_loss(
    student_logits: np.ndarray,
    teacher_logits: np.ndarray,
    labels: np.ndarray,
    temperature: float,
    alpha: float,
) -> float:
    hard = -_log_softmax(student_logits)[np.arange(len(labels)), labels]
    teacher_log = _log_softmax(teacher_logits / temperature)
    student_log = _log_softmax(student_logits / temperature)
    soft = np.sum(np.exp(teacher_log) * (teacher_log - student_log), axis=-1)
    return float(np.mean(alpha * hard + (1 - alpha) * temperature**2 * soft))


@pytest.mark.parametrize("teacher_kind", ["logits", "probabilities"])
def test_loss_matches_formula(keras: Any, teacher_kind: str) -> None:
    from toolkit.compress.distill import Distiller

    rng = np.random.default_rng(0)
    student_logits = rng.standard_normal((6, 5)).astype(np.float32)
    teacher_logits = 3 * rng.standard_normal((6, 5)).astype(np.float32)
    labels = rng.integers(0, 5, size=6)
    teacher_output = teacher_logits
    if teacher_kind == "probabilities":
        teacher_output = np.exp(_log_softmax(teacher_logits)).astype(np.float32)

    # A teacher model that returns fixed outputs, whatever its input.
    inputs = keras.Input((1,))
    constant_teacher = keras.Model(
        inputs, keras.layers.Lambda(lambda x, out=teacher_output: x * 0 + out)(inputs)
    )
    distiller = Distiller(
        student=_student(keras, seed=0),
        teacher=constant_teacher,
        temperature=3.0,
        alpha=0.25,
        student_probabilities=False,
        teacher_probabilities=teacher_kind == "probabilities",
    )

    loss = distiller.compute_loss(
        x=np.zeros((6, 1), np.float32), y=labels, y_pred=student_logits, training=False
    )

    expected = _expected_loss(student_logits, teacher_logits, labels, 3.0, 0.25)
    assert float(loss) == pytest.approx(expected, rel=1e-4)


def test_early_stopping_with_probability_teacher(
    keras: Any, digits: DigitsData, teacher: Any
) -> None:
    teacher_weights = [w.copy() for w in teacher.get_weights()]
    history = keras.callbacks.History()
    # No epoch improves the training loss by 100, so training stops after patience + 1 epochs.
    stopper = keras.callbacks.EarlyStopping(monitor="loss", min_delta=100.0, patience=1)

    student = distill(
        teacher,
        _student(keras, seed=1),
        (digits.x_train, digits.y_train),
        epochs=20,
        validation_data=(digits.x_test, digits.y_test),
        callbacks=[stopper, history],
        verbose=0,
    )

    assert len(history.epoch) == 2
    assert stopper.stopped_epoch == 1
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(history.history)
    assert isinstance(student, keras.Model)
    assert teacher.trainable
    for old, new in zip(teacher_weights, teacher.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)


def test_distilled_student_learns(keras: Any, digits: DigitsData, teacher: Any) -> None:
    student = distill(
        teacher,
        _student(keras, seed=2),
        (digits.x_train, digits.y_train),
        epochs=8,
        optimizer=keras.optimizers.Adam(learning_rate=3e-3),
        verbose=0,
    )

    assert _accuracy(student, digits) > 0.85


def test_dataset_and_softmax_student(keras: Any, digits: DigitsData, teacher: Any) -> None:
    tf = import_tensorflow()
    dataset = tf.data.Dataset.from_tensor_slices((digits.x_train, digits.y_train)).batch(32)
    student = _student(keras, seed=3, softmax=True)

    distill(
        teacher,
        student,
        dataset,
        epochs=4,
        optimizer=keras.optimizers.Adam(learning_rate=3e-3),
        teacher_outputs="probabilities",
        verbose=0,
    )

    probabilities = student.predict(digits.x_test[:10], verbose=0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert _accuracy(student, digits) > 0.7


def test_one_hot_labels_accepted(keras: Any, digits: DigitsData, teacher: Any) -> None:
    one_hot = np.eye(10, dtype=np.float32)[digits.y_train]
    history = keras.callbacks.History()

    distill(
        teacher,
        _student(keras, seed=4),
        (digits.x_train, one_hot),
        epochs=1,
        callbacks=[history],
        verbose=0,
    )

    assert np.isfinite(history.history["loss"][0])


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"temperature": 0.0}, "temperature"),
        ({"alpha": 1.5}, "alpha"),
        ({"teacher_outputs": "scores"}, "teacher_outputs"),
    ],
)
def test_invalid_arguments_rejected(
    keras: Any, digits: DigitsData, teacher: Any, arguments: dict[str, Any], message: str
) -> None:
    with pytest.raises(ToolkitError, match=message):
        distill(teacher, _student(keras, seed=5), (digits.x_train, digits.y_train), **arguments)


def test_class_count_mismatch_rejected(keras: Any, digits: DigitsData, teacher: Any) -> None:
    student = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(3)]
    )
    with pytest.raises(ToolkitError, match="classes"):
        distill(teacher, student, (digits.x_train, digits.y_train), epochs=1, verbose=0)


def test_distilled_student_deploys(
    keras: Any, digits: DigitsData, teacher: Any, tmp_path: Path
) -> None:
    student = distill(
        teacher,
        _student(keras, seed=6),
        (digits.x_train, digits.y_train),
        epochs=2,
        verbose=0,
    )

    deploy(student, tmp_path / "student", calibration=digits.x_train[:100])
    result = validate(tmp_path / "student", inputs=digits.x_test[:20])

    assert result.ok, result.summary()
