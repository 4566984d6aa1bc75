"""The ``streamproc`` command (:mod:`streamproc.cli.commands`) and its decision-log commands
(:mod:`streamproc.cli.decisions`)."""

from streamproc.cli.commands import build_parser, main

__all__ = ["build_parser", "main"]
