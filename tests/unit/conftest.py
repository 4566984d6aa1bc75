"""Unit tests run in an empty working directory: the default STREAMPROC_STACK_DIR (``.stack``)
is then a directory of their own, so a developer's local stack (its model secret above all,
which the settings read when STREAMPROC_MODEL_SECRET is unset) never changes what they see."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _own_working_directory(tmp_path_factory: pytest.TempPathFactory,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))
