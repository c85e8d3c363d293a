"""Helpers shared by the test modules that are not fixtures."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHARED_MODELS = PROJECT_ROOT.parent / "shared" / "models"


def shared_model(name: str) -> Path:
    """Return the path of a file in the shared models folder, or skip the test without it.

    The folder is not part of the repository. When the CI environment variable
    is set, a missing file fails the test instead, because CI always has the folder.
    """
    path = SHARED_MODELS / name
    if path.is_file():
        return path

    reason = f"shared model file {name} not found in {SHARED_MODELS}"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}, but CI must have it")
    pytest.skip(reason)


def require_tool(name: str) -> str:
    """Return the path of an executable, or skip the test without it.

    When the CI environment variable is set a missing tool fails the test,
    because .ci/run installs every tool the tests use.
    """
    path = shutil.which(name)
    if path:
        return path
    reason = f"{name} is not installed"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}, but CI must have it (.ci/run installs it)")
    pytest.skip(reason)


def read_toyadmos_windows(path: os.PathLike[str]) -> np.ndarray:
    """The 40 real autoencoder input windows: raw little-endian float32, (40, 640)."""
    return np.fromfile(path, dtype="<f4").reshape(40, 640)
