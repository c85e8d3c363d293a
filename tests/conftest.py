"""Shared test helpers for the reference models in <project root>/../shared/models."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.helpers import shared_model


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
