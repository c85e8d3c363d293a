"""Instructions per MAC on Cortex-M4, and firmware RAM against TFLM's arena.

Deploys the reference models for the cortex-m4 target (QEMU mps2-an386),
runs one input of each in QEMU with -icount shift=0, and prints:

1. instructions per MAC for each layer type and weight format, summed over
   the layers of that kind in all models (the layers' instructions divided
   by their MACs, so large layers weigh more);
2. the firmware's RAM (from the ELF: .data + .bss, then with the stack it
   reserves) beside TFLM's arena for the same model, and the deepest the
   stack went (the firmware paints it at reset). TFLM's arena is a lower bound on a TFLM
   firmware's RAM: its interpreter, op resolver and stack come on top.

Counts are instructions, not cycles: QEMU does not model the pipeline.

Usage: python benchmarks/cortex_m4.py [--models DIR] [--epochs N]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from toolkit.deploy import deploy  # noqa: E402
from toolkit.remote import connect, counts_unit, layer_counts, run_samples  # noqa: E402
from toolkit.report import format_table  # noqa: E402
from toolkit.validate import load_deployment, random_inputs  # noqa: E402

TARGET = "cortex-m4"


def _jobs(models: Path, digits: Path) -> list[tuple[str, Path, dict[str, object]]]:
    resnet8 = models / "resnet8_cifar10_int8.tflite"
    return [
        ("resnet8", resnet8, {}),
        ("resnet8, 16 shared values", resnet8, {"cluster": 16}),
        ("resnet8, 2:4 pruned", resnet8, {"prune": "2:4"}),
        ("resnet8, 1x4 blocks, half pruned", resnet8, {"prune": "block:1x4:0.5"}),
        ("dscnn", models / "dscnn_kws_int8.tflite", {}),
        ("autoencoder", models / "autoencoder_toyadmos_int8.tflite", {}),
        ("digits", digits, {}),
    ]


def _digits(directory: Path, epochs: int) -> Path:
    from toolkit.examples.digits import load_digits_data, train_model

    data = load_digits_data(seed=0)
    model = train_model(data, epochs=epochs, seed=0)
    deploy(model, directory / "digits-host", calibration=data.x_train[:200], build=False)
    return directory / "digits-host" / "model.tflite"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models",
        type=Path,
        default=ROOT.parent / "shared" / "models",
        help="folder of the reference models (default: ../shared/models)",
    )
    parser.add_argument("--epochs", type=int, default=10, help="digits training epochs")
    args = parser.parse_args()
    if not args.models.is_dir():
        print(f"error: {args.models} not found; pass --models DIR", file=sys.stderr)
        return 1

    per_kind: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    memory_rows = []
    with tempfile.TemporaryDirectory(prefix="toolkit-bench-m4-") as scratch:
        root = Path(scratch)
        digits = _digits(root, args.epochs)
        for name, model, options in _jobs(args.models, digits):
            out = root / "".join(c if c.isalnum() else "_" for c in name)
            deploy(model, out, target=TARGET, **options)  # type: ignore[arg-type]
            report, _, graph = load_deployment(out)
            with connect(out, emulate=True) as device:
                result = run_samples(device, report, random_inputs(graph, 1, seed=0))[0]
                unit, scale = counts_unit(True, device.info().counter_hz)
            for row in layer_counts(report, result.layer_ticks, scale):
                if row["macs"]:
                    kind = per_kind[row["op"], row["format"]]
                    kind[0] += row["count"]
                    kind[1] += row["macs"]
                    kind[2] += 1
            if options:
                continue
            firmware = report["firmware"]
            tflm = report["tflm_arena"]["total"]
            memory_rows.append(
                [
                    name,
                    f"{report['arena_bytes']:,}",
                    f"{firmware['static_ram']:,}",
                    f"{firmware['ram_bytes']:,}",
                    f"{tflm:,}",
                    f"{firmware['static_ram'] / tflm:.3f}",
                    f"{firmware['ram_bytes'] / tflm:.3f}",
                    f"{result.stack_used:,}",
                    f"{round(result.ticks * scale):,}",
                ]
            )

    print(f"{unit} per MAC on {TARGET} (QEMU mps2-an386, -icount shift=0), by layer kind:")
    rows = [
        [op, weight_format, str(layers), f"{macs:,}", f"{count:,}", f"{count / macs:.2f}"]
        for (op, weight_format), (count, macs, layers) in sorted(per_kind.items())
    ]
    print(format_table(["op", "format", "layers", "MACs", unit, "per MAC"], rows, {2, 3, 4, 5}))
    print()
    print(f"firmware RAM on {TARGET} against TFLM's arena (bytes; ratio < 1: less than TFLM):")
    headers = [
        "model",
        "arena",
        "static RAM",
        "with stack",
        "TFLM arena",
        "static/TFLM",
        "with stack/TFLM",
        "stack used",
        f"{unit} per inference",
    ]
    print(format_table(headers, memory_rows, {1, 2, 3, 4, 5, 6, 7, 8}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
