"""What became of each decide's exposure: counted by state, and tracked until Kafka confirms it.

A personalised decide produces a ``decision_served`` event (the exposure the worker records) and
answers with its state (``docs/api.md``): ``recorded`` when Kafka confirmed the event before the
answer, ``pending`` when the answer went first (``STREAMPROC_API_EXPOSURE_WAIT_MS``, or the
deadline came), ``already`` for a retry of a recorded decide, ``none`` for a neutral fallback.
A ``pending`` event is tracked here until Kafka confirms or refuses it (the idempotent producer
retries a broker that is away for as long as the process lives: only an error it does not retry
ends it): a refusal is logged and counted (the decision was shown, its exposure is not
recorded), so an operator can alert on it.
Served at ``GET /metrics`` (admin token) in Prometheus's text format, one registry per API.

>>> import asyncio
>>> async def demo():
...     exposures = Exposures()
...     ok, lost = asyncio.get_running_loop().create_future(), asyncio.Future()
...     exposures.track(ok, "d-1")
...     exposures.track(lost, "d-2")
...     ok.set_result(None)
...     lost.set_exception(TimeoutError("no broker"))
...     await asyncio.sleep(0)
...     return (exposures.value("streamproc_api_exposures_total", outcome="confirmed"),
...             exposures.value("streamproc_api_exposures_total", outcome="failed"),
...             exposures.value("streamproc_api_exposures_unconfirmed"))
>>> asyncio.run(demo())
(1.0, 1.0, 0.0)
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

log = logging.getLogger(__name__)

# The answer's ``exposure`` field: what happened to the decision_served event before it.
STATES = ("recorded", "pending", "already", "none")


class Exposures:
    """The API's counters (decides by exposure state, pending exposures' outcomes)."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.decides = Counter("streamproc_api_decides", "decides answered, by the answer's "
                               "exposure state (recorded, pending, already, none)", ["exposure"],
                               registry=r)
        self.outcomes = Counter("streamproc_api_exposures", "decision_served events answered "
                                "as pending, by what Kafka said afterwards (confirmed, failed: "
                                "shown but not recorded)", ["outcome"], registry=r)
        self.unconfirmed = Gauge("streamproc_api_exposures_unconfirmed", "decision_served "
                                 "events answered as pending and not yet confirmed", registry=r)
        # Label children looked up once: a decide pays an increment, not a label lookup.
        self._by_state = {s: self.decides.labels(s) for s in STATES}
        self._confirmed = self.outcomes.labels("confirmed")
        self._failed = self.outcomes.labels("failed")

    def answered(self, state: str) -> None:
        self._by_state[state].inc()

    def track(self, sent: asyncio.Future[Any], decision_id: str) -> None:
        """Follow an exposure answered as ``pending`` until Kafka confirms or refuses it."""
        self.unconfirmed.inc()

        def done(f: asyncio.Future[Any]) -> None:
            self.unconfirmed.dec()
            error = None if not f.cancelled() else "cancelled (the API stopped)"
            if error is None and f.exception() is not None:
                error = repr(f.exception())
            if error is None:
                self._confirmed.inc()
                return
            self._failed.inc()
            log.error("decision %s was served but its exposure was not recorded: %s",
                      decision_id, error)

        sent.add_done_callback(done)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def value(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)
