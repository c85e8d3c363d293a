"""Shared test helpers for the reference models in <project root>/../shared/models."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest

from tests.helpers import shared_model
from tests.kernel_library import KernelLibrary, build_kernel_library


@pytest.fixture(scope="session")
def kernels(tmp_path_factory: pytest.TempPathFactory) -> KernelLibrary:
    """The kernel library from csrc/, built once per session (with ASan and
    UBSan when TOOLKIT_SANITIZE=1) and loaded through CFFI."""
    sanitize = os.environ.get("TOOLKIT_SANITIZE") == "1"
    return build_kernel_library(tmp_path_factory.mktemp("tk_kernels"), sanitize=sanitize)


@pytest.fixture(scope="session")
def shared_keras_model() -> Callable[[str], Any]:
    """Return a function that loads a shared model with toolkit.keras_io, once per session.

    Tests share the returned model objects, so they must not change them.
    """
    from toolkit.keras_io import load_model

    loaded: dict[str, Any] = {}

    def load(name: str) -> Any:
        if name not in loaded:
            loaded[name] = load_model(shared_model(name))
        return loaded[name]

    return load
