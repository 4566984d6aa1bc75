"""The examples in the segments package's docstrings run."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import streamproc.segments

MODULES = sorted(m.name for m in pkgutil.iter_modules(streamproc.segments.__path__))


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name: str) -> None:
    module = importlib.import_module(f"streamproc.segments.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
