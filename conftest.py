"""Doctests of the installed modules, each collected once under its ``debond.*`` name.

``pipeline/``, ``storage/`` and ``model/`` are ``debond.pipeline``,
``debond.storage`` and ``debond.model`` through the links ``debond/pipeline`` →
``../pipeline`` and so on. Imported by path, as pytest's ``--doctest-modules``
does, ``pipeline/blocks.py`` would become a second module ``pipeline.blocks``
beside the real ``debond.pipeline.blocks``. Here every doctest module of the
packages is imported by its installed name instead, and a file reached twice
(through the link and through the top-level folder) is collected once.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest
from _pytest.doctest import DoctestModule

PACKAGES = ("debond", "debond.pipeline", "debond.storage", "debond.model")


def _installed_name(path: Path) -> str | None:
    """``debond.…`` name of the module in ``path``, None outside the packages or
    when ``path`` is not where the import system finds that module (a second way
    to the same file, such as a folder linked into ``debond/``)."""
    resolved = path.resolve()
    for package in sorted(PACKAGES, key=len, reverse=True):
        for folder in importlib.import_module(package).__path__:
            try:
                relative = resolved.relative_to(Path(folder).resolve())
            except ValueError:
                continue
            parts = [*package.split("."), *relative.with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            name = ".".join(parts)
            spec = importlib.util.find_spec(name)
            if spec is None or spec.origin is None or Path(spec.origin) != path.absolute():
                return None
            return name
    return None


class InstalledDoctestModule(DoctestModule):
    """The doctests of a module imported by its installed name, not by its path."""

    module_name: str

    def _getobj(self) -> object:
        return importlib.import_module(self.module_name)


@pytest.hookimpl(wrapper=True)
def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> Iterator[object]:
    collected = yield
    if file_path.suffix != ".py" or not any(type(c) is DoctestModule for c in collected):
        return collected
    name = _installed_name(file_path)
    kept = [c for c in collected if type(c) is not DoctestModule]
    if name is not None:
        module = InstalledDoctestModule.from_parent(parent, path=file_path)
        module.module_name = name
        kept.append(module)
    return kept
