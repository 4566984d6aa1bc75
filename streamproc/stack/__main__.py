"""``python -m streamproc.stack --write-lock``: regenerate the Kafka jar lock file.

Fetches the jars of :mod:`streamproc.stack.jars`' pinned versions with Maven into a temporary
directory and rewrites ``kafka-<version>.lock`` from their sha256; review the diff before
committing. A separate entry point (not the CLI) because it changes a file of the package.
"""

from __future__ import annotations

import argparse
import sys

from streamproc.errors import StackError
from streamproc.stack import jars


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streamproc.stack",
                                     description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--write-lock", action="store_true",
                        help=f"fetch the jars with Maven and rewrite {jars.LOCK_FILE.name}")
    args = parser.parse_args(argv)
    if not args.write_lock:
        parser.print_help()
        return 2
    try:
        jars.write_lock(sys.stderr)
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
