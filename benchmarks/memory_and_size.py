"""Arena and weight size of each reference model against TFLite Micro.

Deploy every MLPerf Tiny reference model: the three int8 .tflite files, and
the three float .h5 files converted by the toolkit. For each, print the
toolkit's arena beside TFLM's arena (its total, and the activation part that
TFLM calls the head), and the packed weight bytes beside the .tflite file
size. Ratios below 1 mean the toolkit needs less.

Usage: python benchmarks/memory_and_size.py [--models DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from toolkit.deploy import deploy  # noqa: E402
from toolkit.report import format_table  # noqa: E402

INT8_MODELS = ["resnet8_cifar10_int8", "dscnn_kws_int8", "autoencoder_toyadmos_int8"]
KERAS_MODELS = ["resnet8_cifar10", "autoencoder_toyadmos", "mobilenet_vww96"]


def _ratio(a: int, b: int) -> str:
    return f"{a / b:.3f}" if b else "-"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models",
        type=Path,
        default=ROOT.parent / "shared" / "models",
        help="folder of the reference models (default: ../shared/models)",
    )
    args = parser.parse_args()
    if not args.models.is_dir():
        print(f"error: {args.models} not found; pass --models DIR", file=sys.stderr)
        return 1

    windows = np.fromfile(args.models / "autoencoder_toyadmos_input.bin", "<f4").reshape(40, 640)
    jobs = [(name, args.models / f"{name}.tflite", None) for name in INT8_MODELS]
    jobs += [
        (
            f"{name}.h5 (converted)",
            args.models / f"{name}.h5",
            windows if name == "autoencoder_toyadmos" else None,
        )
        for name in KERAS_MODELS
    ]

    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for number, (label, path, calibration) in enumerate(jobs):
            report = deploy(path, Path(scratch) / str(number), calibration=calibration).report
            tflm = report["tflm_arena"]
            rows.append(
                [
                    label,
                    f"{report['arena_bytes']:,}",
                    f"{tflm['total']:,}",
                    _ratio(report["arena_bytes"], tflm["total"]),
                    f"{tflm['head']:,}",
                    _ratio(report["arena_bytes"], tflm["head"]),
                    f"{report['weight_bytes']:,}",
                    f"{report['tflite_bytes']:,}",
                    _ratio(report["weight_bytes"], report["tflite_bytes"]),
                ]
            )
    headers = [
        "model",
        "arena",
        "TFLM arena",
        "ratio",
        "TFLM head",
        "ratio",
        "packed weights",
        ".tflite bytes",
        "ratio",
    ]
    print(format_table(headers, rows, right=set(range(1, 9))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
