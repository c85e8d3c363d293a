"""The `toolkit` command line."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from toolkit import __version__
from toolkit.errors import ToolkitError


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
    )
    print(result.summary())
    return 0 if result.ok else 2


def _example(args: argparse.Namespace) -> int:
    from toolkit.examples.digits import run_example

    result = run_example(args.out, epochs=args.epochs, seed=args.seed, clusters=args.cluster)
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
    deploy.add_argument("--target", default="host", help="build target; supported: host (default)")
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
        description="Build the generated C for the host, run it and TFLite Micro on the same "
        "inputs, and report the maximum absolute difference per output. Exit status 2 on any "
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
    validate.set_defaults(handler=_validate)

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
