"""The docstring examples run and print what they say, in every module of the package.

Modules are found by walking the installed package, so a module added or moved by a refactor
is picked up without editing this file. Examples that need data or a store are marked
``# doctest: +SKIP`` where they are written.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import tomllib
from pathlib import Path

import pytest

#: The packages ``pyproject.toml`` installs. Those mapped from other folders by ``package-dir``
#: are not listed under ``parcelzarr.__path__`` by an editable install: walk each one.
_ROOTS = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text(
    encoding="utf-8"))["tool"]["setuptools"]["packages"]


def _modules() -> list[str]:
    names: set[str] = set()
    for root in _ROOTS:
        package = importlib.import_module(root)
        names.add(root)
        names |= {m.name for m in pkgutil.walk_packages(package.__path__, f"{root}.")}
    return sorted(names)


def test_the_walk_finds_every_subpackage() -> None:
    names = _modules()
    for part in ("ingest", "query", "stores", "demo", "testing"):
        assert any(f"{part}." in n for n in names), part


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
                             verbose=False, report=True)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
