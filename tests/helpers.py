"""Helpers shared by the test modules that are not fixtures."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest


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
