"""The deploy pipeline pieces: planner, report, CLI, float edges, the example."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import shared_model
from toolkit.cli import main
from toolkit.deploy import deploy
from toolkit.planner import plan_memory
from toolkit.tflite_import import load_tflite
from toolkit.validate import validate


@pytest.mark.parametrize(
    "name", ["resnet8_cifar10_int8", "dscnn_kws_int8", "autoencoder_toyadmos_int8"]
)
def test_plan_has_no_overlap(name: str) -> None:
    graph = load_tflite(shared_model(f"{name}.tflite"))
    plan = plan_memory(graph)
    buffers = plan.buffers
    for i, a in enumerate(buffers):
        assert a.offset % 16 == 0
        assert a.offset + a.size <= plan.arena_size
        for b in buffers[i + 1 :]:
            lifetimes_meet = a.first_op <= b.last_op and b.first_op <= a.last_op
            if lifetimes_meet:
                disjoint = a.offset + a.size <= b.offset or b.offset + b.size <= a.offset
                assert disjoint, f"tensors {a.tensors} and {b.tensors} overlap"
    assert plan.arena_size >= plan.peak_live_bytes()


def test_plan_aliases_reshape() -> None:
    graph = load_tflite(shared_model("resnet8_cifar10_int8.tflite"))
    plan = plan_memory(graph)
    reshape = next(op for op in graph.ops if op.kind == "RESHAPE")
    assert reshape.index in plan.aliased_reshapes
    assert plan.offsets[reshape.inputs[0]] == plan.offsets[reshape.outputs[0]]


def test_cli_deploy_prints_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "kws"
    status = main(["deploy", str(shared_model("dscnn_kws_int8.tflite")), "--out", str(out)])
    printed = capsys.readouterr().out
    assert status == 0
    for heading in ("weights:", "code:", "arena:", "MACs", "weight bytes", "format"):
        assert heading in printed
    assert "DEPTHWISE_CONV_2D" in printed
    for name in ("model.c", "model.h", "model_weights.c", "Makefile", "report.json"):
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text())
    assert report["code_bytes"] > 0
    assert report["tflm_arena"]["total"] > report["arena_bytes"]


def test_cli_validate_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ae"
    assert (
        main(["deploy", str(shared_model("autoencoder_toyadmos_int8.tflite")), "--out", str(out)])
        == 0
    )
    inputs = tmp_path / "inputs.npy"
    windows = np.fromfile(shared_model("autoencoder_toyadmos_input.bin"), "<f4").reshape(40, 640)
    np.save(inputs, windows[:5])
    capsys.readouterr()
    assert main(["validate", str(out), "--inputs", str(inputs)]) == 0
    printed = capsys.readouterr().out
    assert "on 5 inputs" in printed
    assert "max abs diff 0" in printed


@pytest.fixture(scope="session")
def small_cnn():  # type: ignore[no-untyped-def]
    from toolkit.examples.digits import build_model, load_digits_data
    from toolkit.keras_io import import_keras

    import_keras().utils.set_random_seed(0)
    return build_model(filters=4), load_digits_data()


def test_float_edges_match_tflm(small_cnn, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model, data = small_cnn
    result = deploy(model, tmp_path / "float_io", calibration=data.x_train[:64], io_type="float32")
    ops = [layer["op"] for layer in result.report["layers"]]
    assert ops[0] == "QUANTIZE"
    assert ops[-1] == "DEQUANTIZE"
    assert result.report["inputs"][0]["dtype"] == "float32"
    checked = validate(result.out_dir, inputs=data.x_test[:30])
    assert checked.outputs[0].max_abs_diff == 0, checked.summary()
    random = validate(result.out_dir, count=10)
    assert random.ok, random.summary()


def test_random_calibration_warns(
    small_cnn,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,  # type: ignore[no-untyped-def]
) -> None:
    model, _ = small_cnn
    with caplog.at_level(logging.WARNING):
        result = deploy(model, tmp_path / "random", build=False)
    assert "accuracy will suffer" in caplog.text
    assert "accuracy will suffer" in result.report["warnings"][0]


def test_digits_example_agrees(tmp_path: Path) -> None:
    from toolkit.examples.digits import run_example

    result = run_example(tmp_path / "digits", epochs=3)
    assert result.agree
    assert result.tflite_accuracy == result.c_accuracy
    assert result.float_accuracy > 0.8
    assert abs(result.float_accuracy - result.c_accuracy) < 0.05
    assert "generated C (host build)" in result.summary()


def test_digits_clustered_keeps_accuracy(tmp_path: Path) -> None:
    """16 shared values per channel, fine-tuned: within 1 point of the float
    model, and packed weights at most 0.55x of their int8 size."""
    from toolkit.examples.digits import run_example

    result = run_example(tmp_path / "digits16", clusters=16)
    report = result.deployment.report
    print(result.summary())
    assert result.agree
    assert result.clustered_accuracy is not None
    assert result.float_accuracy - result.c_accuracy <= 0.01
    assert report["packed_weight_bytes"] <= 0.55 * report["int8_weight_bytes"]
    assert any(layer["format"] == "codebook 4-bit" for layer in report["layers"])


def test_deploy_factorize_and_distill(small_cnn, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from toolkit.deploy import FineTuning

    model, data = small_cnn
    # The fixture model is untrained, so its weights need a low energy to
    # have a rank that saves parameters.
    tuning = FineTuning(factorize=0.5, train=(data.x_train, data.y_train), epochs=1)
    result = deploy(model, tmp_path / "factorized", calibration=data.x_train[:64], tuning=tuning)
    parameters = sum(layer["parameters"] for layer in result.report["layers"])
    assert parameters < model.count_params()
    checked = validate(result.out_dir, inputs=data.x_test[:20])
    assert checked.outputs[0].max_abs_diff == 0, checked.summary()


def test_factorize_needs_keras_model(tmp_path: Path) -> None:
    from toolkit.deploy import FineTuning
    from toolkit.errors import ToolkitError

    with pytest.raises(ToolkitError, match="need a Keras model"):
        deploy(
            shared_model("dscnn_kws_int8.tflite"),
            tmp_path / "out",
            tuning=FineTuning(factorize=0.9),
        )
    assert not (tmp_path / "out").exists()


def test_training_data_needs_x_and_y(small_cnn, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from toolkit.deploy import FineTuning
    from toolkit.errors import ToolkitError

    model, data = small_cnn
    bad = tmp_path / "train.npz"
    np.savez(bad, inputs=data.x_train[:8])
    with pytest.raises(ToolkitError, match="arrays named x and y"):
        deploy(model, tmp_path / "out", calibration=data.x_train[:8], tuning=FineTuning(train=bad))


def test_tflite_path_never_imports_tensorflow(tmp_path: Path) -> None:
    """Deploying and validating an int8 .tflite (with pruning and sharing)
    must not import TensorFlow or Keras, so devices without them can run it."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from toolkit.deploy import deploy\n"
        "from toolkit.validate import validate\n"
        f"deploy({str(shared_model('dscnn_kws_int8.tflite'))!r}, {str(tmp_path / 'out')!r},"
        " cluster=4, prune='2:4')\n"
        f"assert validate({str(tmp_path / 'out')!r}, count=2).ok\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
