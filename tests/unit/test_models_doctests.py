"""The examples in the models package's docstrings run."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import streamproc.models

MODULES = sorted(m.name for m in pkgutil.iter_modules(streamproc.models.__path__))


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name: str) -> None:
    module = importlib.import_module(f"streamproc.models.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
