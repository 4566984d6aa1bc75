"""The HTTP front door: ``streamproc serve`` (events in, decisions out); see docs/api.md."""

from streamproc.api.server import build_app, run

__all__ = ["build_app", "run"]
