"""The built-in example: a small CNN on scikit-learn's handwritten digits.

The data set (1,797 real 8x8 grey-level images of the digits 0..9, from the
UCI optical recognition data) ships inside scikit-learn, so the example runs
offline. It trains the CNN in Keras and deploys it as int8 C code. It then
reports the test accuracy of the float Keras model, of the int8 TFLite model
run by TensorFlow Lite Micro, and of the generated C code run on the host.
The last two must give identical outputs on every test sample.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from typing import Any

import numpy as np

from toolkit.deploy import DeployResult, deploy

INPUT_SHAPE = (8, 8, 1)
CLASSES = 10


@dataclass
class DigitsData:
    """Train and test splits: images scaled to [0, 1], NHWC, integer labels."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


@dataclass
class ExampleResult:
    deployment: DeployResult
    float_accuracy: float
    tflite_accuracy: float
    c_accuracy: float
    test_samples: int
    mismatched_samples: int
    clusters: int | None = None
    clustered_accuracy: float | None = None

    @property
    def where(self) -> str:
        """Where the generated C ran: the host, or a Cortex-M target in QEMU."""
        target = self.deployment.report["target"]
        return "host build" if target == "host" else f"{target} in QEMU"

    @property
    def agree(self) -> bool:
        """True when the C code and TFLM gave the same outputs on every sample."""
        return self.mismatched_samples == 0

    def summary(self) -> str:
        c_label = f"generated C ({self.where}):"
        width = max(len(c_label), len("int8 TFLite (TFLM):"))
        lines = [
            self.deployment.summary(),
            "",
            f"test accuracy on {self.test_samples} held-out digits:",
            f"  {'float Keras model:':{width}} {self.float_accuracy:.2%}",
        ]
        if self.clusters is not None and self.clustered_accuracy is not None:
            lines.append(
                f"  float, {self.clusters} shared values per channel, fine-tuned: "
                f"{self.clustered_accuracy:.2%}"
            )
        lines += [
            f"  {'int8 TFLite (TFLM):':{width}} {self.tflite_accuracy:.2%}",
            f"  {c_label:{width}} {self.c_accuracy:.2%}",
            (
                "  C and TFLM outputs are identical on every sample"
                if self.agree
                else f"  C and TFLM outputs DIFFER on {self.mismatched_samples} samples"
            ),
        ]
        return "\n".join(lines)


def load_digits_data(seed: int = 0, test_fraction: float = 0.25) -> DigitsData:
    """Load the digits and split them, stratified by class."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[..., np.newaxis]
    labels = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=test_fraction, random_state=seed, stratify=labels
    )
    return DigitsData(x_train, y_train, x_test, y_test)


def build_model(filters: int = 16) -> Any:
    """Build the example CNN: two 3x3 convolutions, a max pool and a dense classifier.

    Every layer maps to an op that the toolkit has a kernel for.
    """
    from toolkit.keras_io import import_keras

    keras = import_keras()
    return keras.Sequential(
        [
            keras.Input(shape=INPUT_SHAPE),
            keras.layers.Conv2D(filters, 3, padding="same", activation="relu"),
            keras.layers.Conv2D(2 * filters, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(CLASSES, activation="softmax"),
        ],
        name="digits_cnn",
    )


def train_model(data: DigitsData, epochs: int = 30, seed: int = 0, filters: int = 16) -> Any:
    """Train the example CNN with a fixed seed and return it."""
    from toolkit.keras_io import import_keras

    keras = import_keras()
    keras.utils.set_random_seed(seed)
    model = build_model(filters)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=3e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(data.x_train, data.y_train, epochs=epochs, batch_size=32, verbose=0, shuffle=True)
    return model


def _quantize_inputs(images: np.ndarray, spec: dict[str, Any]) -> np.ndarray:
    from toolkit.validate import prepare_inputs

    return np.stack([sample[0] for sample in prepare_inputs(images, [spec])])


def _accuracy(model: Any, data: DigitsData) -> float:
    predictions = np.argmax(model.predict(data.x_test, verbose=0), axis=1)
    return float(np.mean(predictions == data.y_test))


def cluster_and_fine_tune(
    model: Any, data: DigitsData, clusters: int, epochs: int = 10, seed: int = 0
) -> Any:
    """Share `clusters` values per output channel in every layer, fine-tune
    the shared values with the indices fixed, and return a plain Keras model."""
    from toolkit.compress import cluster, strip_clustering
    from toolkit.keras_io import import_keras

    keras = import_keras()
    keras.utils.set_random_seed(seed)
    clustered = cluster(model, clusters=clusters)
    clustered.compile(
        optimizer=keras.optimizers.Adam(learning_rate=1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    clustered.fit(data.x_train, data.y_train, epochs=epochs, batch_size=32, verbose=0)
    return strip_clustering(clustered)


def _c_outputs_on_host(
    out: str | os.PathLike[str], report: dict[str, Any], inputs: np.ndarray
) -> list[np.ndarray]:
    from toolkit.build import HostModel, TensorSpec, build_host_library

    specs = [
        [TensorSpec(e["name"], tuple(e["shape"]), e["dtype"]) for e in report[role]]
        for role in ("inputs", "outputs")
    ]
    library = build_host_library(out)
    try:
        c_model = HostModel(library, specs[0], specs[1], len(report["layers"]))
        return [c_model.run([sample])[0] for sample in inputs]
    finally:
        shutil.rmtree(library.parent, ignore_errors=True)


def _c_outputs_in_qemu(
    out: str | os.PathLike[str], report: dict[str, Any], inputs: np.ndarray
) -> list[np.ndarray]:
    from toolkit.remote import connect, run_samples

    with connect(out, emulate=True) as device:
        return [r.outputs[0] for r in run_samples(device, report, [[x] for x in inputs])]


def evaluate_deployment(
    out: str | os.PathLike[str], data: DigitsData, emulate: bool = False
) -> tuple[float, float, int]:
    """Test accuracy of the deployed int8 model run by TFLM and of its
    generated C, and the count of test samples on which their outputs
    differ. The C runs on the host, or with `emulate` as the Cortex-M
    firmware in QEMU."""
    from toolkit.reference import make_interpreter, run_tflm
    from toolkit.validate import load_deployment

    report, flatbuffer, _ = load_deployment(out)
    inputs = _quantize_inputs(data.x_test, report["inputs"][0])
    run = _c_outputs_in_qemu if emulate else _c_outputs_on_host
    c_outputs = run(out, report, inputs)
    interpreter = make_interpreter(flatbuffer)
    c_labels, tflm_labels, mismatched = [], [], 0
    for sample, ours in zip(inputs, c_outputs, strict=True):
        theirs = run_tflm(flatbuffer, [sample], interpreter)[0]
        mismatched += int(not np.array_equal(ours, np.asarray(theirs).reshape(ours.shape)))
        c_labels.append(int(np.argmax(ours)))
        tflm_labels.append(int(np.argmax(theirs)))
    return (
        float(np.mean(np.array(tflm_labels) == data.y_test)),
        float(np.mean(np.array(c_labels) == data.y_test)),
        mismatched,
    )


def run_example(
    out: str | os.PathLike[str] = "digits_model",
    epochs: int = 30,
    seed: int = 0,
    clusters: int | None = None,
    fine_tune_epochs: int = 10,
    target: str = "host",
) -> ExampleResult:
    """Train, deploy and evaluate the digits CNN; the C code goes to `out`.

    With `clusters`, the trained model's weights are shared (Deep
    Compression) and fine-tuned before deployment, and the generated code
    stores them as codebook indices. With an emulated Cortex-M `target`,
    the C is evaluated as that target's firmware in QEMU.
    """
    data = load_digits_data(seed)
    model = train_model(data, epochs=epochs, seed=seed)
    float_accuracy = _accuracy(model, data)
    clustered_accuracy = None
    if clusters is not None:
        model = cluster_and_fine_tune(model, data, clusters, fine_tune_epochs, seed)
        clustered_accuracy = _accuracy(model, data)

    deployment = deploy(model, out, calibration=data.x_train, target=target)
    emulate = target != "host"
    tflite_accuracy, c_accuracy, mismatched = evaluate_deployment(out, data, emulate)

    return ExampleResult(
        deployment=deployment,
        float_accuracy=float_accuracy,
        tflite_accuracy=tflite_accuracy,
        c_accuracy=c_accuracy,
        test_samples=len(data.y_test),
        mismatched_samples=mismatched,
        clusters=clusters,
        clustered_accuracy=clustered_accuracy,
    )
