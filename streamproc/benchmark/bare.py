"""The benchmark's bare Faust app: the framework's ceiling for streamproc's worker.

It consumes the input topics exactly as a worker does (the worker's Faust options from
:func:`streamproc.app.app_options`, the same batches: :func:`streamproc.app.raw_batches`),
decodes every message with streamproc's
:class:`~streamproc.events.codec.Decoder` (JSON and schema validation) and acknowledges it. No
state, no models, no outputs: the difference to the full pipeline is what streamproc's own work
costs. Run by ``streamproc bench`` as a subprocess (settings from ``STREAMPROC_*``)::

    python -m streamproc.benchmark.bare
"""

from __future__ import annotations

import logging
from pathlib import Path

import faust

from streamproc.app import app_options, raw_batches, run_worker
from streamproc.errors import DecodeError
from streamproc.events.codec import Decoder
from streamproc.settings import Settings

log = logging.getLogger(__name__)


def create_bare_app(settings: Settings) -> faust.App:
    options = app_options(settings)
    Path(options["datadir"]).mkdir(parents=True, exist_ok=True)
    app = faust.App(settings.app_id, **options)
    inputs = app.topic(*settings.topics.inputs, key_type=bytes, value_type=bytes)
    decoder = Decoder(settings)

    async def decode_events(stream: faust.StreamT) -> None:  # type: ignore[type-arg]
        decoded = invalid = 0
        try:
            async for batch in raw_batches(stream, settings):
                for msg in batch:
                    try:
                        decoder.decode(msg)
                        decoded += 1
                    except DecodeError:
                        invalid += 1
        finally:
            log.info("bare app: %d messages decoded, %d invalid", decoded, invalid)

    app.agent(inputs, name="streamproc.bench.decode_events")(decode_events)
    return app


def main() -> None:
    settings = Settings.from_env()
    settings.validate()
    run_worker(create_bare_app(settings), settings)  # as the pipeline's worker runs


if __name__ == "__main__":
    main()
