"""Regions' context: a ``context_update`` for everyone in a region, and whose region is whose.

A ``context_update`` whose ``customer_id`` (and message key) is ``region:<region id>`` reports
the weather, temperature and place of a whole region, e.g. a city's weather from the shop's
weather service (:data:`REGION_PREFIX`: such ids are not customers; any other event type with
one is dead-lettered).
It is kept in Redis as the region's current context, one small hash per region
(:func:`streamproc.state.keys.region_key`), where only a newer report changes it; the workers and
the HTTP API read every region's context into a :class:`RegionContexts` cache at most every
``STREAMPROC_REGION_CONTEXT_SECONDS`` (the worker that applied a report sees it at once).

**Whose region.** A customer's region is ``attributes.region`` (from a ``profile_update``: the
CRM's or the app's), else ``city:<city>`` of their home city (``attributes.city``), else of the
city their events' ``context`` names (``location.city``), as :func:`city_region` spells it;
region ids are compared in lower case (:func:`region_id`).

**Which context wins.** A decision sees the fresher of the customer's own ``surroundings``
(their last ``context_update``) and their region's, by event time (:func:`effective`); the
profile keeps only the customer's own (:func:`region_surroundings` puts the region's in its
place for the engine, and takes it out again). On Redis Cluster the region's key is in another
slot than the customer's: it is never touched by the customer's atomic write.

>>> p = {"attributes": {"region": "City:London"}, "surroundings": {"weather": "clear",
...      "ts_ms": 1_000}}
>>> region_of(p)
'city:london'
>>> london = {"weather": "rain", "temperature_c": 9.5, "ts_ms": 2_000}
>>> with region_surroundings(p, {"city:london": london}) as region:
...     region, p["surroundings"]["weather"], p["surroundings"]["region"]
('city:london', 'rain', 'city:london')
>>> p["surroundings"]["weather"]
'clear'
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Protocol

from streamproc.errors import StreamprocError
from streamproc.state.profile import Profile

log = logging.getLogger(__name__)

# The customer id prefix of a region's context_update.
REGION_PREFIX = "region:"
# A customer id's characters in lower case (no braces: a Redis Cluster hash tag; no spaces, glob
# characters or line breaks), bounded.
REGION_ID = re.compile(r"[a-z0-9._:@-]{1,64}")
# What a region's report may set (as a customer's: streamproc.state.profile.SURROUNDINGS).
REGION_FIELDS = ("weather", "temperature_c", "place")
# A region's key expires this long after its last report: a region nobody reports on any more
# leaves Redis (and the workers' caches) by itself.
REGION_TTL_MS = 7 * 86_400_000


class InvalidRegionError(StreamprocError):
    """A region id that is not safe to use in a Redis key."""


def region_id(text: Any) -> str | None:
    """``text`` as a region id (lower case), or None when it is not one.

    >>> region_id("City:London"), region_id("fr-idf"), region_id("a{b}"), region_id("")
    ('city:london', 'fr-idf', None, None)
    """
    if not isinstance(text, str):
        return None
    region = text.strip().lower()
    return region if REGION_ID.fullmatch(region) else None


def validate_region(text: Any) -> str:
    """:func:`region_id`, or InvalidRegionError saying what a region id may hold."""
    region = region_id(text)
    if region is None:
        raise InvalidRegionError(
            f"invalid region id {str(text)[:80]!r}: use 1 to 64 letters, digits or . _ : @ - "
            f"after {REGION_PREFIX!r} (e.g. {REGION_PREFIX}city:london)")
    return region


def city_region(city: Any) -> str | None:
    """The region id of a city name: ``city:`` and the name in lower case, spaces as ``-``,
    without the other characters a region id cannot hold.

    >>> city_region("São Paulo"), city_region("New York")
    ('city:so-paulo', 'city:new-york')
    """
    if not isinstance(city, str):
        return None
    name = "-".join("".join(ch for ch in city.lower() if ch.isascii() and (
        ch.isalnum() or ch in " .-")).split())
    return region_id(f"city:{name}"[:64]) if name else None


def reported_region(customer_id: str) -> str | None:
    """The region a context_update's ``customer_id`` names (None: a customer's), or
    InvalidRegionError.

    >>> reported_region("region:City:London"), reported_region("cust-42")
    ('city:london', None)
    """
    if not customer_id.startswith(REGION_PREFIX):
        return None
    return validate_region(customer_id[len(REGION_PREFIX):])


def region_of(p: Mapping[str, Any]) -> str | None:
    """The customer's region (see the module docstring), or None."""
    attributes = p.get("attributes") or {}
    return (region_id(attributes.get("region")) or city_region(attributes.get("city"))
            or city_region((p.get("location") or {}).get("city")))


def effective(own: Mapping[str, Any] | None, region: Mapping[str, Any] | None
              ) -> Mapping[str, Any] | None:
    """The fresher report of the two by event time (``ts_ms``); the customer's own on a tie.

    >>> effective({"weather": "rain", "ts_ms": 5}, {"weather": "clear", "ts_ms": 5})["weather"]
    'rain'
    >>> effective(None, {"weather": "clear", "ts_ms": 5})["weather"]
    'clear'
    """
    own_ts = (own or {}).get("ts_ms")
    region_ts = (region or {}).get("ts_ms")
    if not isinstance(region_ts, int):
        return own
    if isinstance(own_ts, int) and own_ts >= region_ts:
        return own
    return region


@contextmanager
def region_surroundings(p: Profile, contexts: Mapping[str, Mapping[str, Any]]
                        ) -> Iterator[str | None]:
    """While inside: ``p["surroundings"]`` is the region's report (with ``region`` naming it)
    when it is fresher than the customer's own; yields that region (None: the customer's own,
    or nothing, is used). The customer's own is back afterwards, whatever happened inside."""
    region = region_of(p) if contexts else None
    found = contexts.get(region) if region is not None else None
    own = p.get("surroundings")
    if found is None or effective(own, found) is not found:
        yield None
        return
    p["surroundings"] = {**found, "region": region}
    try:
        yield region
    finally:
        if own is None:
            p.pop("surroundings", None)
        else:
            p["surroundings"] = own


def parse_context(row: Mapping[bytes | str, bytes | str]) -> dict[str, Any] | None:
    """A region's hash from Redis as surroundings (None: no usable report).

    >>> parse_context({b"ts_ms": b"1000", b"weather": b"rain", b"temperature_c": b"9.5"})
    {'ts_ms': 1000, 'weather': 'rain', 'temperature_c': 9.5}
    """
    out: dict[str, Any] = {}
    for key, value in row.items():
        name = key.decode() if isinstance(key, bytes) else key
        text = value.decode() if isinstance(value, bytes) else value
        try:
            if name == "ts_ms":
                out[name] = int(text)
            elif name == "temperature_c":
                out[name] = float(text)
            elif name in REGION_FIELDS:
                out[name] = text
        except ValueError:
            continue
    return out if isinstance(out.get("ts_ms"), int) else None


class RegionReader(Protocol):
    """What :class:`RegionContexts` reads (the Store has it)."""

    async def region_contexts(self) -> dict[str, dict[str, Any]]: ...


class RegionContexts:
    """Every region's context, read from the store at most every ``max_age_s`` seconds.

    A decision sees a report within ``max_age_s`` of its write (plus the batch in progress);
    the worker that applied it (:meth:`put`) at once. 0: read before every batch.
    """

    def __init__(self, max_age_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_age_s = max_age_s
        self.clock = clock
        self.contexts: dict[str, dict[str, Any]] = {}
        self._read_at = float("-inf")
        self.reads = 0

    async def refresh(self, store: RegionReader) -> None:
        """Read every region's context when the copy is older than ``max_age_s``; a read that
        fails keeps the copy (stale a little longer) and is tried again next time."""
        now = self.clock()
        if now - self._read_at < self.max_age_s:
            return
        try:
            found = await store.region_contexts()
        except Exception as exc:  # the decisions go on with what was read before
            log.warning("could not read the regions' context (%s: %s); using the copy read "
                        "%.0f s ago", type(exc).__name__, exc, now - self._read_at)
            return
        self._read_at = now
        self.reads += 1
        for region, context in self.contexts.items():  # a newer one put here since the read
            stored = found.get(region)
            if stored is not None and context["ts_ms"] > stored["ts_ms"]:
                found[region] = context
        self.contexts = found

    def put(self, region: str, report: Mapping[str, Any]) -> None:
        """A report this process wrote: seen at once (fields merged, newer only, as in Redis)."""
        known = self.contexts.get(region)
        ts_ms = report["ts_ms"]
        if known is not None and known["ts_ms"] > ts_ms:
            return
        self.contexts[region] = {**(known or {}), **report}
