"""The benchmark's bare Faust app: the framework's ceiling for streamproc's worker.

It consumes the input topics exactly as a worker does (the worker's Faust options from
:func:`streamproc.worker.app.app_options`, the same batches:
:func:`streamproc.worker.app.raw_batches`), decodes every message with streamproc's
:class:`~streamproc.events.codec.Decoder` (JSON and schema validation) and acknowledges it. No
state, no models, no outputs: the difference to the full pipeline is what streamproc's own work
costs. Run by ``streamproc bench`` as a subprocess (settings from ``STREAMPROC_*``)::

    python -m streamproc.benchmark.bare [--arrivals FILE]

With ``--arrivals``, the bench's latency floor (stage 4): the wall-clock time at which every
message was handed to the agent in a batch, written to FILE as JSON (``[[topic, partition,
offset, epoch seconds], ...]``) when the app stops.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import faust
import orjson

from streamproc.errors import DecodeError
from streamproc.events.codec import Decoder
from streamproc.settings import Settings
from streamproc.worker.app import app_options, raw_batches, run_worker
from streamproc.worker.delivery import attach

log = logging.getLogger(__name__)


def create_bare_app(settings: Settings, arrivals: Path | None = None) -> faust.App:
    options = app_options(settings)
    Path(options["datadir"]).mkdir(parents=True, exist_ok=True)
    app = faust.App(settings.app_id, **options)
    buffer = attach(app, settings.topics.inputs, settings.batch_size,
                    settings.fetch_max_wait_ms)
    inputs = app.topic(*settings.topics.inputs, key_type=bytes, value_type=bytes)
    decoder = Decoder(settings)
    seen: list[tuple[str, int, int, float]] = []

    async def decode_events(stream: faust.StreamT) -> None:  # type: ignore[type-arg]
        decoded = invalid = 0
        try:
            async for batch in raw_batches(stream, buffer, settings):
                if arrivals is not None:
                    now = time.time()
                    seen.extend((m.topic, m.partition, m.offset, now) for m in batch)
                for msg in batch:
                    try:
                        decoder.decode(msg)
                        decoded += 1
                    except DecodeError:
                        invalid += 1
        finally:
            log.info("bare app: %d messages decoded, %d invalid", decoded, invalid)
            if arrivals is not None:
                arrivals.write_bytes(orjson.dumps(seen))

    app.agent(inputs, name="streamproc.bench.decode_events")(decode_events)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m streamproc.benchmark.bare",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--arrivals", type=Path, metavar="FILE",
                        help="write when each message reached the agent to FILE (JSON) on exit")
    args = parser.parse_args()
    del sys.argv[1:]  # Faust's worker reads the command line too
    settings = Settings.from_env()
    settings.validate()
    run_worker(create_bare_app(settings, args.arrivals), settings)  # as the pipeline's runs


if __name__ == "__main__":
    main()
