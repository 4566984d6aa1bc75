"""Shared test set-up."""

from __future__ import annotations

# Imported up front: when hypothesis's pytest plugin first imports it at the end of a session
# that ran Faust's test context, CPython 3.11 can fail with "AST constructor recursion depth
# mismatch" while rewriting it.
import hypothesis  # noqa: F401
