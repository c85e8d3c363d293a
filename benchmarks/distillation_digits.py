"""Distillation against hard-label training of a small CNN on scikit-learn's digits.

For each seed, the script splits the digits and trains the teacher (the example
CNN, with a softmax output). It then trains two copies of the same student from
the same initial weights, for the same epochs with the same optimizer. One
learns from the hard labels only, the other by toolkit.compress.distill.distill
from the teacher. It prints the test accuracy of the teacher and of both
students per seed, their averages, and the parameter counts.

Usage: python benchmarks/distillation_digits.py [--seeds 0 1 2] [--epochs 20]
       [--temperature 4] [--alpha 0.1]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from toolkit.compress.distill import distill  # noqa: E402
from toolkit.examples.digits import (  # noqa: E402
    CLASSES,
    INPUT_SHAPE,
    DigitsData,
    load_digits_data,
    train_model,
)
from toolkit.keras_io import import_keras  # noqa: E402
from toolkit.report import format_table  # noqa: E402

TEACHER_EPOCHS = 30
LEARNING_RATE = 3e-3
BATCH_SIZE = 32


def build_student(keras: Any) -> Any:
    """Build the student: two narrow convolutions and a 16-unit hidden layer, logits out."""
    return keras.Sequential(
        [
            keras.Input(shape=INPUT_SHAPE),
            keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
            keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(CLASSES),
        ],
        name="digits_student",
    )


def accuracy(model: Any, data: DigitsData) -> float:
    predictions = np.argmax(model.predict(data.x_test, verbose=0), axis=1)
    return float(np.mean(predictions == data.y_test))


def run_seed(
    keras: Any, seed: int, epochs: int, temperature: float, alpha: float
) -> tuple[float, float, float, int, int]:
    """Return teacher, hard-label and distilled test accuracy and the two parameter counts."""
    data = load_digits_data(seed)
    teacher = train_model(data, epochs=TEACHER_EPOCHS, seed=seed)

    keras.utils.set_random_seed(seed)
    hard_student = build_student(keras)
    distilled_student = build_student(keras)
    distilled_student.set_weights(hard_student.get_weights())

    keras.utils.set_random_seed(seed)
    hard_student.compile(
        optimizer=keras.optimizers.Adam(learning_rate=LEARNING_RATE),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    hard_student.fit(
        data.x_train, data.y_train, epochs=epochs, batch_size=BATCH_SIZE, verbose=0, shuffle=True
    )

    keras.utils.set_random_seed(seed)
    distill(
        teacher,
        distilled_student,
        (data.x_train, data.y_train),
        temperature=temperature,
        alpha=alpha,
        epochs=epochs,
        batch_size=BATCH_SIZE,
        optimizer=keras.optimizers.Adam(learning_rate=LEARNING_RATE),
        verbose=0,
    )
    return (
        accuracy(teacher, data),
        accuracy(hard_student, data),
        accuracy(distilled_student, data),
        int(teacher.count_params()),
        int(hard_student.count_params()),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=20, help="student training epochs")
    parser.add_argument("--temperature", type=float, default=4.0, help="softmax temperature T")
    parser.add_argument("--alpha", type=float, default=0.1, help="weight of the hard-label loss")
    args = parser.parse_args()

    keras = import_keras()
    rows = []
    results = []
    teacher_parameters = student_parameters = 0
    for seed in args.seeds:
        teacher_accuracy, hard, distilled, teacher_parameters, student_parameters = run_seed(
            keras, seed, args.epochs, args.temperature, args.alpha
        )
        results.append((teacher_accuracy, hard, distilled))
        rows.append([str(seed), f"{teacher_accuracy:.2%}", f"{hard:.2%}", f"{distilled:.2%}"])
    means = np.mean(np.array(results), axis=0)
    rows.append(["mean", f"{means[0]:.2%}", f"{means[1]:.2%}", f"{means[2]:.2%}"])

    print(
        f"digits, {args.epochs} student epochs, T={args.temperature:g}, alpha={args.alpha:g}, "
        f"teacher trained {TEACHER_EPOCHS} epochs"
    )
    print(
        f"parameters: teacher {teacher_parameters:,}, student {student_parameters:,} "
        f"({student_parameters / teacher_parameters:.1%} of the teacher)"
    )
    print(
        format_table(
            ["seed", "teacher", "student (hard labels)", "student (distilled)"],
            rows,
            right={1, 2, 3},
        )
    )
    print(f"distillation minus hard labels, mean: {means[2] - means[1]:+.2%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
