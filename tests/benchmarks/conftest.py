"""Shared fixtures of the benchmark-script tests."""

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def load_script():
    """Import a script of the repository by its path, e.g. ``load_script("benchmarks/sweep.py")``.

    The module is registered in ``sys.modules`` under its file's stem while the test module runs
    (dataclasses resolve their annotations through it) and removed afterwards.
    """
    loaded = {}

    def load(relative: str):
        if relative not in loaded:
            path = REPO / relative
            spec = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module
            spec.loader.exec_module(module)
            loaded[relative] = module
        return loaded[relative]

    yield load
    for module in loaded.values():
        sys.modules.pop(module.__name__, None)
