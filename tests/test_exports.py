"""Each package's public names are importable, and importing them does not pull in torch."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

PACKAGES = [
    "kdstream.student",
    "kdstream.online",
    "kdstream.stream",
    "kdstream.replay",
    "kdstream.teacher",
]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_names_exist(name):
    mod = importlib.import_module(name)
    assert mod.__all__, name
    for attr in mod.__all__:
        assert getattr(mod, attr) is not None, f"{name}.{attr}"


@pytest.mark.parametrize("name", ["kdstream.student", "kdstream.stream", "kdstream.online"])
def test_light_imports_do_not_load_torch(name):
    code = f"import sys, {name}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
