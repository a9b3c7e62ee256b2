"""The public surface of each package is exactly what its ``__init__`` exports."""

from __future__ import annotations

import importlib

import pytest


@pytest.mark.parametrize(
    "name", ["engine", "fsm", "hardware", "engine.testing", "engine.book", "engine.models"]
)
def test_all_is_the_public_surface(name):
    module = importlib.import_module(name)
    public = {
        n
        for n, v in vars(module).items()
        if not n.startswith("_") and not (hasattr(v, "__file__") or type(v).__name__ == "module")
    }
    assert set(module.__all__) == public
    for n in module.__all__:
        assert getattr(module, n) is not None
