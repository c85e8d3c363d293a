"""Low-rank factorization of the MLPerf Tiny ToyADMOS autoencoder.

Factorizes every Dense layer of autoencoder_toyadmos.h5 by truncated SVD at
the given energy. Prints the parameter counts before and after, and the
reconstruction error (mean squared error between input and output) of both
float models on the 40 real input windows. Then deploys the factorized model
as int8 C code calibrated on those windows, and prints whether its outputs
equal those of TFLite Micro on them.

Usage: python benchmarks/factorize_autoencoder.py [--models DIR] [--energy 0.9]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from toolkit.compress.factorize import factorize  # noqa: E402
from toolkit.deploy import deploy  # noqa: E402
from toolkit.keras_io import load_model  # noqa: E402
from toolkit.validate import validate  # noqa: E402

MODEL = "autoencoder_toyadmos.h5"
WINDOWS = "autoencoder_toyadmos_input.bin"


def reconstruction_error(model: Any, windows: np.ndarray) -> float:
    outputs = np.asarray(model.predict(windows, verbose=0))
    return float(np.mean((outputs - windows) ** 2))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models",
        type=Path,
        default=ROOT.parent / "shared" / "models",
        help="folder with the MLPerf Tiny reference models (default: ../shared/models)",
    )
    parser.add_argument(
        "--energy",
        type=float,
        default=0.9,
        help="fraction of the squared singular values kept per layer (default: 0.9)",
    )
    args = parser.parse_args()

    for name in (MODEL, WINDOWS):
        if not (args.models / name).is_file():
            print(f"error: {args.models / name} not found; pass --models DIR", file=sys.stderr)
            return 1
    original = load_model(args.models / MODEL)
    # 40 real windows: raw little-endian float32, shape (40, 640).
    windows = np.fromfile(args.models / WINDOWS, dtype="<f4").reshape(40, 640)

    result = factorize(original, energy=args.energy)
    print(result.summary())
    print()
    print(
        f"parameters:           {original.count_params():,} before, "
        f"{result.model.count_params():,} after"
    )
    print(
        f"reconstruction MSE:   {reconstruction_error(original, windows):.4f} before, "
        f"{reconstruction_error(result.model, windows):.4f} after (float models, 40 windows)"
    )

    with tempfile.TemporaryDirectory(prefix="factorized-autoencoder-") as directory:
        out = Path(directory) / "model"
        deployment = deploy(result.model, out, calibration=windows)
        validation = validate(out, inputs=windows)
        print(
            f"deployed int8 model:  {deployment.report['weight_bytes']:,} weight bytes, "
            f"{deployment.report['arena_bytes']:,} arena bytes"
        )
        max_difference = max(output.max_abs_diff for output in validation.outputs)
        verdict = "matches" if validation.ok else "DIFFERS FROM"
        print(
            f"generated C {verdict} TFLite Micro on {validation.samples} windows "
            f"(max abs diff {max_difference:g})"
        )
    return 0 if validation.ok else 2


if __name__ == "__main__":
    sys.exit(main())
