"""Every docstring example in the package runs and prints what it shows."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

# the subpackages map to top-level folders (pyproject package-dir), so each is walked itself
PACKAGES = ("kdstream", "kdstream.api", "kdstream.student", "kdstream.teacher", "kdstream.online",
            "kdstream.stream", "kdstream.replay")


def _modules() -> list[str]:
    names = set(PACKAGES)
    for package in PACKAGES:
        path = importlib.import_module(package).__path__
        names.update(m.name for m in pkgutil.iter_modules(path, package + "."))
    names.discard("kdstream.__main__")  # importing it runs the CLI
    return sorted(names)


def test_the_walk_finds_every_package_and_examples() -> None:
    names = _modules()
    assert {"kdstream.student._model", "kdstream.stream._log", "kdstream.replay._synthetic"} <= set(
        names
    )
    finder = doctest.DocTestFinder()
    with_examples = [
        n for n in names if any(t.examples for t in finder.find(importlib.import_module(n)))
    ]
    assert len(with_examples) >= 20, with_examples


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, report=False)
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} examples failed"
