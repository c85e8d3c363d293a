"""The `toolkit` command line."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

from toolkit import __version__
from toolkit.errors import ToolkitError
from toolkit.targets import target_names


def _deploy(args: argparse.Namespace) -> int:
    from toolkit.deploy import FineTuning, deploy

    result = deploy(
        args.model,
        args.out,
        target=args.target,
        calibration=args.calibration,
        io_type=args.io_type,
        prefix=args.prefix,
        cluster=args.cluster,
        prune=args.prune,
        compression_config=args.compression_config,
        weight_format=args.weight_format,
        tuning=FineTuning(
            factorize=args.factorize, train=args.train, teacher=args.teacher, epochs=args.epochs
        ),
    )
    print(result.summary())
    return 0


def _validate(args: argparse.Namespace) -> int:
    from toolkit.validate import validate

    result = validate(
        args.directory,
        inputs=args.inputs,
        count=args.count,
        seed=args.seed,
        find_layer=args.find_layer,
        emulate=args.emulate,
        port=args.port,
    )
    print(result.summary())
    return 0 if result.ok else 2


def _build(args: argparse.Namespace) -> int:
    from toolkit.firmware import format_size, rebuild

    size = rebuild(args.directory)
    print(f"built {args.directory}/firmware.elf")
    print(format_size(size.as_dict()))
    return 0


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import numpy as np

    from toolkit.remote import connect, counts_unit, format_counts, layer_counts, run_samples
    from toolkit.validate import load_deployment, prepare_inputs, random_inputs

    if args.count < 1:
        raise ToolkitError(f"--count is {args.count}; give at least 1 input to run")
    directory = Path(args.directory)
    report, _, graph = load_deployment(directory)
    if args.inputs:
        samples = prepare_inputs(args.inputs, report["inputs"])
    else:
        samples = random_inputs(graph, args.count, args.seed)
    if not samples:
        raise ToolkitError(f"{args.inputs}: contains no samples")
    with connect(
        directory,
        emulate=args.emulate,
        port=args.port,
        baudrate=args.baud,
        timeout=args.timeout,
        invoke_timeout=args.invoke_timeout,
    ) as device:
        results = run_samples(device, report, samples)
        info = device.info()
        unit, scale = counts_unit(args.emulate, info.counter_hz)
        name = device.name
        stats = device.stats
    for number, result in enumerate(results):
        parts = []
        for spec, output in zip(report["outputs"], result.outputs, strict=True):
            flat = output.reshape(-1)
            parts.append(f"'{spec['name']}' argmax {int(np.argmax(flat))}")
        print(f"input {number}: {', '.join(parts)}; {round(result.ticks * scale):,} {unit}")
    rows = layer_counts(report, results[0].layer_ticks, scale)
    print(
        f"stack: at most {max(r.stack_used for r in results):,} of {info.stack_bytes:,} bytes "
        "used (stack_bytes in firmware/target.toml, then toolkit build)"
    )
    print()
    print(f"per-layer {unit} of input 0 on {name}:")
    print(format_counts(rows, unit))
    if stats.retries or stats.resets:
        print(
            f"the link recovered from {stats.retries} retries, {stats.damaged_frames} damaged "
            f"frames and {stats.resets} resets"
        )
    if args.save:
        arrays: dict[str, Any] = {
            f"output{i}": np.stack([r.outputs[i] for r in results])
            for i in range(len(report["outputs"]))
        }
        arrays["ticks"] = np.array([r.ticks for r in results], dtype=np.int64)
        arrays["layer_ticks"] = np.array([r.layer_ticks for r in results], dtype=np.int64)
        _save_npz(Path(args.save), arrays)
        print(f"saved outputs and counts to {args.save}")
    return 0


def _save_npz(path: Any, arrays: dict[str, Any]) -> None:
    """Write arrays to a .npz file through a temporary name, so a failed
    write leaves no partial file."""
    import numpy as np

    partial = path.with_name(f".{path.name}.partial")
    with open(partial, "wb") as file:
        np.savez(file, **arrays)
    partial.replace(path)


def _flash(args: argparse.Namespace) -> int:
    from toolkit.flash import flash

    output = flash(args.path, target_name=args.target, tool=args.tool, probe=args.probe)
    print(output)
    print(f"flashed {args.path}")
    return 0


def _add_device_arguments(parser: argparse.ArgumentParser, required: bool) -> None:
    where = parser.add_mutually_exclusive_group(required=required)
    where.add_argument(
        "--emulate",
        action="store_true",
        help="run the directory's firmware.elf in QEMU (emulated Cortex-M targets)",
    )
    where.add_argument(
        "--port",
        help="run on a board on this serial port (/dev/ttyACM0) or pyserial URL "
        "(socket://127.0.0.1:PORT)",
    )


def _example(args: argparse.Namespace) -> int:
    from toolkit.examples.digits import run_example

    result = run_example(
        args.out, epochs=args.epochs, seed=args.seed, clusters=args.cluster, target=args.target
    )
    print(result.summary())
    return 0 if result.agree else 2


def _profile(args: argparse.Namespace) -> int:
    import tempfile
    from pathlib import Path

    from toolkit.deploy import deploy

    model = args.model
    is_tflite = str(args.model).lower().endswith(".tflite")
    if is_tflite:
        hint = "" if args.arena else "; pass --arena for its memory figures"
        print(
            f"{args.model} is a .tflite file, so the per-layer table of the Keras model is "
            f"skipped (`toolkit deploy` reports its layers){hint}"
        )
    else:
        from toolkit.design import profile
        from toolkit.keras_io import load_model

        model = load_model(args.model)
        print(profile(model).table())
    if not args.arena:
        return 0

    with tempfile.TemporaryDirectory(prefix="toolkit-profile-") as directory:
        report = deploy(model, Path(directory) / "model", build=False).report
    tflm = report.get("tflm_arena") or {}
    print()
    print(f"peak live activation bytes: {report['peak_live_bytes']:,} (lower bound on any arena)")
    print(f"arena bytes:                {report['arena_bytes']:,} (memory planner)")
    if tflm:
        print(f"TFLM arena bytes:           {tflm['total']:,} ({tflm['head']:,} for activations)")
    if not is_tflite:
        print(
            "note: the model was converted with random calibration inputs; the arena depends "
            "only on tensor shapes, so real calibration data would not change it"
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="toolkit",
        description="Deploy Keras and TFLite models as int8 C code that matches "
        "TensorFlow Lite Micro bit for bit.",
    )
    parser.add_argument("--version", action="version", version=f"toolkit {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    commands = parser.add_subparsers(dest="command", required=True)

    deploy = commands.add_parser(
        "deploy",
        help="generate C sources, a Makefile and report.json for a model",
        description="Convert a model to int8 if needed, generate C code and kernels, build it "
        "once to check it, and print the size report.",
    )
    deploy.add_argument("model", help=".tflite (int8), .keras or .h5 file, or SavedModel directory")
    deploy.add_argument(
        "--out", required=True, help="output directory (replaced if it contains an earlier deploy)"
    )
    deploy.add_argument(
        "--target",
        default="host",
        help="host (default: a shared library for this machine) or a Cortex-M target of "
        f"targets/ ({', '.join(target_names())}), built into DIR/firmware.elf",
    )
    deploy.add_argument(
        "--calibration",
        help="representative inputs for a float model: .npy or "
        ".npz of samples shaped like the model input",
    )
    deploy.add_argument(
        "--io-type",
        choices=("int8", "float32"),
        default="int8",
        help="element type of the model inputs and outputs when converting a "
        "Keras model (default: int8)",
    )
    deploy.add_argument(
        "--prefix",
        default="model",
        help="C identifier prefix of the generated API (default: model)",
    )
    deploy.add_argument(
        "--cluster",
        type=int,
        metavar="K",
        help="share K values per output channel in every Dense/Conv2D/DepthwiseConv2D layer "
        "(Deep Compression weight sharing, no fine-tuning); weights are stored as "
        "log2(K)-bit indices",
    )
    deploy.add_argument(
        "--prune",
        metavar="SPEC",
        help="magnitude pruning of every Dense/Conv2D/DepthwiseConv2D layer: 0.8 "
        "(unstructured), 2:4 (n:m), block:1x4:0.5, filter:0.5 or channel:0.5; one-shot, "
        "fine-tuned when --train is given",
    )
    deploy.add_argument(
        "--compression-config",
        metavar="FILE",
        help="JSON file with per-layer settings, e.g. "
        '{"cluster": 16, "layers": {"dense_1": {"cluster": 4}}}',
    )
    deploy.add_argument(
        "--weight-format",
        choices=("auto", "int8", "codebook", "sparse"),
        default="auto",
        help="weight storage: the smallest format per layer (auto, default), int8 only, or "
        "codebook or block-sparse wherever it applies",
    )
    deploy.add_argument(
        "--factorize",
        type=float,
        metavar="ENERGY",
        help="replace Dense and Conv2D layers by low-rank factors keeping this fraction of "
        "the squared singular values, e.g. 0.9 (Keras models)",
    )
    deploy.add_argument(
        "--train",
        metavar="DATA",
        help=".npz with arrays x and y: fine-tune the compressed Keras model on it by distillation",
    )
    deploy.add_argument(
        "--teacher",
        metavar="MODEL",
        help="teacher for distillation (default: the model before compression)",
    )
    deploy.add_argument(
        "--epochs", type=int, default=5, help="fine-tuning epochs with --train (default: 5)"
    )
    deploy.set_defaults(handler=_deploy)

    validate = commands.add_parser(
        "validate",
        help="compare a deployed model's C code with TFLite Micro",
        description="Run the generated C and TFLite Micro on the same inputs and report the "
        "maximum absolute difference per output. The C runs on the host, or with --emulate or "
        "--port as the Cortex-M firmware in QEMU or on a board. Exit status 2 on any "
        "difference.",
    )
    validate.add_argument("directory", help="directory written by toolkit deploy")
    validate.add_argument(
        "--inputs",
        help=".npy or .npz of input samples (float data is "
        "quantized for int8 inputs); random inputs when omitted",
    )
    validate.add_argument(
        "--count", type=int, default=20, help="number of random inputs (default: 20)"
    )
    validate.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    validate.add_argument(
        "--find-layer",
        action="store_true",
        help="on a mismatch, run layer by layer and name the first layer whose output differs",
    )
    _add_device_arguments(validate, required=False)
    validate.set_defaults(handler=_validate)

    build = commands.add_parser(
        "build",
        help="rebuild DIR/firmware.elf after editing a Cortex-M deployment",
        description="Cross-compile the model, kernels and firmware of a directory deployed for "
        "a Cortex-M target, check its flash and RAM against the part, and update report.json.",
    )
    build.add_argument("directory", help="directory written by toolkit deploy --target")
    build.set_defaults(handler=_build)

    run = commands.add_parser(
        "run",
        help="run a Cortex-M deployment in QEMU or on a board and print per-layer counts",
        description="Send inputs to the firmware's serial server, invoke, and print the outputs "
        "and the instructions (QEMU, -icount shift=0) or cycles (board) of each layer.",
    )
    run.add_argument("directory", help="directory written by toolkit deploy --target")
    _add_device_arguments(run, required=True)
    run.add_argument("--inputs", help=".npy or .npz of input samples; random when omitted")
    run.add_argument("--count", type=int, default=1, help="random inputs to run (default: 1)")
    run.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    run.add_argument("--baud", type=int, default=115200, help="baud rate of --port")
    run.add_argument(
        "--timeout", type=float, default=2.0, help="seconds to wait for a reply (default: 2)"
    )
    run.add_argument(
        "--invoke-timeout",
        type=float,
        default=120.0,
        help="seconds one invoke may take (default: 120)",
    )
    run.add_argument("--save", metavar="FILE.npz", help="save the outputs and counts")
    run.set_defaults(handler=_run)

    flash = commands.add_parser(
        "flash",
        help="write DIR/firmware.elf to a board with pyOCD or OpenOCD",
        description="Flash the firmware of a deployed directory (or an ELF with --target) "
        "through a debug probe, with pyOCD or OpenOCD, whichever is installed.",
    )
    flash.add_argument("path", help="directory written by toolkit deploy --target, or an ELF")
    flash.add_argument("--target", help="target name, needed for a bare ELF")
    flash.add_argument("--tool", choices=("pyocd", "openocd"), help="flashing tool")
    flash.add_argument("--probe", help="debug probe serial number, when several are attached")
    flash.set_defaults(handler=_flash)

    example = commands.add_parser(
        "example",
        help="train, deploy and check the built-in handwritten-digits CNN",
        description="Train a small CNN on scikit-learn's 8x8 handwritten digits, deploy it, and "
        "print the test accuracy of the float Keras model, the int8 TFLite model and the "
        "generated C code.",
    )
    example.add_argument(
        "--out", default="digits_model", help="output directory (default: digits_model)"
    )
    example.add_argument("--epochs", type=int, default=30, help="training epochs (default: 30)")
    example.add_argument("--seed", type=int, default=0, help="seed for data split and training")
    example.add_argument(
        "--cluster",
        type=int,
        metavar="K",
        help="share K values per output channel and fine-tune them before deploying",
    )
    example.add_argument(
        "--target",
        default="host",
        help="host (default), or an emulated Cortex-M target such as cortex-m4: the test "
        "digits then run on its firmware in QEMU",
    )
    example.set_defaults(handler=_example)

    profile = commands.add_parser(
        "profile",
        help="print parameters, MACs, int8 weight bytes and live activation bytes per layer",
        description="Load a Keras model and print its per-layer design table. With --arena, "
        "also deploy it to a temporary directory and print the peak of live activation bytes "
        "beside the arena that the memory planner computes. For a .tflite file only the "
        "--arena figures are available.",
    )
    profile.add_argument("model", help=".keras or .h5 file, SavedModel directory, or .tflite")
    profile.add_argument(
        "--arena",
        action="store_true",
        help="deploy the model (random calibration for a float model) and print the arena "
        "size in bytes",
    )
    profile.set_defaults(handler=_profile)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s: %(message)s",
    )
    try:
        return int(args.handler(args))
    except ToolkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
