"""Create streamproc's topics on the compose stack's Kafka, then exit (the `topics` service).

Runs inside the streamproc image (copied to /opt/streamproc/share/create_topics.py) with the same
STREAMPROC_* settings as the workers, so the topic names, the partition count
(STREAMPROC_PARTITIONS) and the replication factor are the ones the workers expect. The broker
never auto-creates topics. Idempotent: existing topics with the configured partition count are
fine; a different count is an error (see streamproc.stack.topics). The decisions, segments and
dead-letter topics are created compacted, and made so when they exist without it. Kafka that
cannot be reached yet (healthy but not ready for admin requests) is retried a few times; a
refusal is not.

Exit status: 0 when every topic exists, 1 when they could not be created, 2 on a settings error.
(`streamproc topics` would be the natural home of this; the CLI has no such command yet.)
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable, Sequence

from streamproc.errors import ConfigError, StreamprocError
from streamproc.settings import Settings
from streamproc.stack import ensure_topics


def main(argv: Sequence[str] | None = None, sleep: Callable[[float], None] = time.sleep) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attempts", type=int, default=10, help="tries before giving up")
    parser.add_argument("--delay", type=float, default=3.0, help="seconds between tries")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"topics: error: {exc}", file=sys.stderr)
        return 2
    fixed: list[str] = []
    for attempt in range(1, max(args.attempts, 1) + 1):
        try:
            created = asyncio.run(ensure_topics(settings, fix_configs=True, out=fixed))
        except StreamprocError as exc:
            print(f"topics: attempt {attempt}/{args.attempts}: {exc}", file=sys.stderr, flush=True)
            if exc.__cause__ is None:  # a refusal or a partition mismatch: retrying won't help
                return 1
            if attempt < args.attempts:
                sleep(args.delay)
            continue
        names = ", ".join(settings.topics.all())
        if fixed:
            print(f"topics: made compacted (erasure tombstones need it): {', '.join(fixed)}",
                  flush=True)
        if created:
            print(f"topics: created {len(created)} with {settings.partitions} partitions: "
                  f"{', '.join(created)}", flush=True)
        print(f"topics: ready on {settings.kafka_bootstrap}: {names}", flush=True)
        return 0
    print("topics: giving up", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
