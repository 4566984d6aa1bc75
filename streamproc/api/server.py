"""``streamproc serve``: the HTTP API, one stateless process (run more of them to scale).

Routes (documented in ``docs/api.md``, described by :data:`streamproc.api.openapi.OPENAPI`):

- ``POST /v1/events``: events in; each valid one is in Kafka (``acks=all``) before the ``202``.
- ``GET|POST /v1/decide``: a decision for a slot within ``STREAMPROC_API_DEADLINE_MS``.
- ``GET /v1/decisions/{customer_id}``: the customer's latest decision per slot.
- ``POST /v1/feedback``: feedback on decisions, to the feedback topic.
- ``GET|DELETE /v1/customers/{customer_id}``: access and erasure (admin token).
- ``GET /livez``, ``GET /readyz``, ``GET /openapi.json``.
- ``GET /v1/streamproc.js`` (the JavaScript snippet) and ``GET /demo/`` (a demo shop using it):
  :mod:`streamproc.api.assets`.
- ``GET /dashboard/`` and the JSON behind its charts, ``GET /v1/kpis...`` (read token):
  :mod:`streamproc.api.dashboard`.

Why aiohttp: Faust already depends on it (no new dependency), it is asyncio-native like aiokafka
and redis-py's asyncio client, and its middlewares and ``client_max_size`` cover what the API
needs (keys, CORS, body limits) without a framework on top.

Errors: a client's mistake is a 4xx with a JSON body ``{"error": ..., "problems": [...]}``;
only a bug is a 500, logged with its traceback (never with headers: they carry keys).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import orjson
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from redis.exceptions import AuthenticationError

from streamproc.api.access import (
    OPEN_SITE,
    AdminToken,
    Origins,
    RateLimiter,
    ReadAccess,
    WriteKeys,
    check_open_access,
)
from streamproc.api.assets import Assets
from streamproc.api.clock import now_ms
from streamproc.api.dashboard import Dashboard
from streamproc.api.deciding import Decider, DecideRequest, DecideRequestError
from streamproc.api.exposures import Exposures
from streamproc.api.intake import BatchTooLargeError, Checked, Intake, Problem, parse_body
from streamproc.api.openapi import OPENAPI
from streamproc.decisions import exposure
from streamproc.decisions.bandit import ThompsonChooser
from streamproc.decisions.contextual import ContextualChooser
from streamproc.decisions.latest import RedisLatest
from streamproc.decisions.record import iso_ms
from streamproc.errors import StreamprocError, masked_url, redis_refusal
from streamproc.kafka_options import producer_options
from streamproc.learning.modelstore import RedisModelStore
from streamproc.learning.scorer import IntentScorer
from streamproc.processor import BatchResult, default_engine, erase_customer
from streamproc.redis_options import FAILURES as REDIS_FAILURES
from streamproc.redis_options import redis_client
from streamproc.settings import Settings
from streamproc.state.document import unpack_doc
from streamproc.state.identity import alias_target
from streamproc.state.keys import validate_customer_id
from streamproc.state.profile import Profile, upgrade_profile
from streamproc.state.readable import human
from streamproc.state.regions import RegionContexts
from streamproc.state.store import RedisStore, with_hiredis_packing
from streamproc.worker.emitter import batch_records
from streamproc.worker.metrics import CONTENT_TYPE

log = logging.getLogger(__name__)

# How long a request waits for Kafka to confirm its events before answering 503.
PRODUCE_TIMEOUT_S = 10.0
# How many aliases a decide follows to the customer (an identifier merged into an identifier
# merged into a customer is two: docs/identity.md).
ALIAS_HOPS = 4
# Paths a browser may call from a configured origin (CORS); the admin ones never.
BROWSER_PATHS = ("/v1/events", "/v1/decide", "/v1/feedback", "/v1/decisions/")
CORS_HEADERS = "Content-Type, X-API-Key"


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json",
                        headers=headers)


def _problem(status: int, error: str, problems: list[Problem] | None = None,
             **extra: Any) -> web.Response:
    body: dict[str, Any] = {"error": error}
    if problems is not None:
        body["problems"] = [p.as_dict() for p in problems]
    body.update(extra)
    return _json(body, status)


class AccessLogger(AbstractAccessLogger):
    """Method, path (never the query string: it may hold a key), status and time."""

    @property
    def enabled(self) -> bool:  # aiohttp skips timing and calling log() when False
        return self.logger.isEnabledFor(logging.INFO)

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info("%s %s %s %.1f ms", request.method, request.path, response.status,
                         time * 1000)


class Api:
    """The API's parts and its connections (made on startup, in the server's event loop)."""

    def __init__(self, settings: Settings, clock_ms: Callable[[], int] = now_ms) -> None:
        self.settings = settings
        self.clock_ms = clock_ms
        self.keys = WriteKeys(settings.api_write_keys())
        self.admin = AdminToken(settings.api_admin_token)
        self.origins = Origins(settings.api_origin_list())
        self.limiter = RateLimiter(settings.api_rate)
        self.intake = Intake(settings)
        self.engine = default_engine(settings)
        self.engine.chooser = self.bandit = ThompsonChooser.from_settings(settings)
        self.engine.contextual = ContextualChooser.from_settings(settings)
        self.scorer: IntentScorer | None = None
        # Read by _reload_regions every STREAMPROC_REGION_CONTEXT_SECONDS (0 here: each call
        # of its loop reads).
        self.decider = Decider(self.engine, self._model_versions, RegionContexts(0))
        self.dashboard = Dashboard(settings, ReadAccess(settings.api_read_token,
                                                        settings.api_admin_token,
                                                        settings.api_host))
        self.dashboard.bandit = self.bandit
        self.deadline_s = settings.api_deadline_ms / 1000
        self.exposure_wait_s = settings.api_exposure_wait_ms / 1000
        self.exposures = Exposures()
        self.redis: aioredis.Redis | None = None
        self.store: RedisStore | None = None
        self.producer: AIOKafkaProducer | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    def _model_versions(self) -> dict[str, str]:
        return self.scorer.model_versions() if self.scorer is not None else {}

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self, app: web.Application) -> None:
        self.redis = with_hiredis_packing(redis_client(
            self.settings, decode_responses=False, socket_connect_timeout=1,
            socket_timeout=2, health_check_interval=30))
        self.store = RedisStore(self.redis)
        self.scorer = IntentScorer(self.settings, RedisModelStore(self.redis, self.settings.app_id),
                                   bandit=self.bandit, recommender=self.engine.recommender,
                                   contextual=self.engine.contextual)
        self.dashboard.redis, self.dashboard.scorer = self.redis, self.scorer
        self._spawn(self._connect_kafka())
        self._spawn(self._reload_models())
        self._spawn(self._reload_regions())

    async def stop(self, app: web.Application) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self.producer is not None:
            with contextlib.suppress(Exception):
                await self.producer.stop()  # flushes what is still pending
        if self.redis is not None:
            await self.redis.aclose()

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect_kafka(self) -> None:
        """Start the producer, retrying with backoff while Kafka is unreachable (the API
        answers meanwhile: events 503, decisions neutral)."""
        delay = 0.5
        while True:
            producer = AIOKafkaProducer(**producer_options(self.settings),
                                        request_timeout_ms=int(PRODUCE_TIMEOUT_S * 1000))
            try:
                await producer.start()
            except Exception as exc:
                with contextlib.suppress(Exception):
                    await producer.stop()
                log.warning("Kafka at %s not reachable (%s); retrying in %.1f s",
                            self.settings.kafka_bootstrap, type(exc).__name__, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            self.producer = producer
            log.info("producing to Kafka at %s", self.settings.kafka_bootstrap)
            return

    async def _reload_models(self) -> None:
        """The served models and bandit: the newest snapshot, checked periodically off the
        request path."""
        while True:
            if self.scorer is not None:
                try:
                    await self.scorer.refresh()
                except Exception as exc:  # Redis away: keep serving the bandit we have
                    log.debug("model refresh failed: %s", exc)
            await asyncio.sleep(self.settings.model_reload_seconds)

    async def _reload_regions(self) -> None:
        """The regions' context (streamproc.state.regions), read periodically off the request
        path (a failed read keeps the copy: RegionContexts.refresh)."""
        while True:
            if self.store is not None:
                await self.decider.regions.refresh(self.store)
            await asyncio.sleep(max(1, self.settings.region_context_seconds))

    # -- access -------------------------------------------------------------------------------

    def write_site(self, request: web.Request) -> str:
        """The calling site; raises 401 (no key) or 403 (wrong key) or 429 (rate)."""
        given = request.headers.get("X-API-Key")
        site = self.keys.site(given)
        if site is None:
            if not given:
                raise _http(web.HTTPUnauthorized, "send your site's write key in X-API-Key")
            raise _http(web.HTTPForbidden, "unknown write key")
        bucket = site if site != OPEN_SITE else f"ip:{request.remote}"
        if not self.limiter.allow(bucket):
            wait = self.limiter.retry_after(bucket)
            raise _http(web.HTTPTooManyRequests, f"over {self.settings.api_rate} requests a "
                        f"second for {site}", headers={"Retry-After": str(max(1, round(wait)))})
        return site

    def require_admin(self, request: web.Request) -> None:
        if not self.admin.enabled:
            raise _http(web.HTTPForbidden, "the admin endpoints are off: set "
                                           "STREAMPROC_API_ADMIN_TOKEN")
        if not self.admin.allows(request.headers.get("Authorization")):
            raise _http(web.HTTPUnauthorized, "send the admin token as Authorization: Bearer "
                                              "<token>", headers={"WWW-Authenticate": "Bearer"})

    # -- producing ----------------------------------------------------------------------------

    async def produce(self, items: list[Checked]) -> tuple[list[Checked], list[Checked]]:
        """Send every item; (confirmed by Kafka, not confirmed). Nothing unconfirmed is
        reported as accepted: a client resends it, and the worker drops a duplicate id."""
        producer = self.producer
        if not items:
            return [], []
        if producer is None:
            return [], list(items)
        futures: dict[asyncio.Future[Any], Checked] = {}
        try:
            async with asyncio.timeout(PRODUCE_TIMEOUT_S):
                for item in items:
                    fut = await producer.send(item.topic, item.value,
                                              key=item.customer_id.encode())
                    futures[fut] = item
        except (TimeoutError, KafkaError) as exc:
            log.warning("could not send %d events: %s", len(items) - len(futures),
                        type(exc).__name__)
        if futures:
            await asyncio.wait(futures, timeout=PRODUCE_TIMEOUT_S)
        ok = [futures[f] for f in futures
              if f.done() and not f.cancelled() and f.exception() is None]
        confirmed = {id(i) for i in ok}
        return ok, [i for i in items if id(i) not in confirmed]

    def publish_later(self, topic: str, key: str, value: bytes) -> None:
        """Send a record without holding up the answer (fallback decisions); a failure is
        logged."""
        producer = self.producer
        if producer is None:
            log.warning("Kafka not connected: a fallback decision of %s was not published", key)
            return

        async def send() -> None:
            try:
                await (await producer.send(topic, value, key=key.encode()))
            except Exception as exc:
                log.warning("a fallback decision of %s was not published: %s", key, exc)

        self._spawn(send())

    # -- deciding -----------------------------------------------------------------------------

    async def decide(self, req: DecideRequest) -> tuple[dict[str, Any], str]:
        """(decision record, exposure state: recorded, pending, already or none)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.deadline_s
        budget = self.settings.api_deadline_ms

        def fallback(reason: str) -> tuple[dict[str, Any], str]:
            record = self.decider.neutral(req, reason, self.clock_ms())
            self.publish_later(self.settings.topics.decisions, req.customer_id,
                               orjson.dumps(record))
            return record, "none"

        assert self.store is not None
        p: Profile | None = None
        try:
            async with asyncio.timeout_at(deadline):
                # An identifier known as an alias is decided for with its customer's profile,
                # and the decision is the customer's (docs/identity.md); a chain of aliases is
                # followed a few hops.
                for _ in range(ALIAS_HOPS):
                    doc = await self.store.read_doc(req.customer_id)
                    if doc is None:
                        break
                    p = upgrade_profile(unpack_doc(doc))
                    target = alias_target(p)
                    if target is None:
                        break
                    req = replace(req, customer_id=target,
                                  data={**req.data, "customer_id": target})
                    p = None
        except TimeoutError:
            return fallback(f"deadline of {budget} ms passed while reading the profile")
        except REDIS_FAILURES as exc:
            return fallback(f"profile store unavailable ({type(exc).__name__})")
        if p is None:
            return fallback("unknown customer: no profile yet")
        did = self.decider.decision_id(req)
        if exposure.find(p, did) is not None:  # a retry of a decide already recorded
            try:
                async with asyncio.timeout_at(deadline):
                    latest = await RedisLatest(self.store.client).read(req.customer_id, 0)
            except REDIS_FAILURES:
                latest = {}
            if (latest.get(req.slot) or {}).get("decision_id") == did:
                return latest[req.slot], "already"
        decided = self.decider.decide(req, p, self.clock_ms())
        if decided is None:
            return fallback("the catalogue has no slot_request trigger for this customer")
        producer = self.producer
        if producer is None:
            return fallback("Kafka unavailable: the decision could not be recorded")
        if loop.time() >= deadline:
            return fallback(f"deadline of {budget} ms passed while deciding")
        try:
            async with asyncio.timeout_at(deadline):
                sent = await producer.send(self.settings.topics.browsing,
                                           orjson.dumps(decided.event),
                                           key=req.customer_id.encode())
        except (TimeoutError, KafkaError) as exc:
            return fallback(f"Kafka did not take the decision in time ({type(exc).__name__})")
        # Wait for Kafka's confirmation (acks=all) at most STREAMPROC_API_EXPOSURE_WAIT_MS and
        # never past the deadline; then answer `pending`: the idempotent producer keeps
        # sending, and Exposures logs and counts a failure (docs/api.md, "Exposure").
        wait = min(deadline, loop.time() + self.exposure_wait_s) - loop.time()
        if wait > 0:
            await asyncio.wait((sent,), timeout=wait)
        if not sent.done():
            self.exposures.track(sent, decided.record["decision_id"])
            return decided.record, "pending"
        if sent.cancelled() or sent.exception() is not None:
            error = "cancelled" if sent.cancelled() else type(sent.exception()).__name__
            return fallback(f"Kafka refused the decision ({error})")
        return decided.record, "recorded"


def _http(cls: type[web.HTTPException], message: str,
          headers: dict[str, str] | None = None) -> web.HTTPException:
    return cls(text=orjson.dumps({"error": message}).decode(), content_type="application/json",
               headers=headers)


API: web.AppKey[Api] = web.AppKey("api", Api)


def _api(request: web.Request) -> Api:
    return request.app[API]


async def _body(request: web.Request) -> bytes:
    limit = _api(request).settings.api_max_body_bytes
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise web.HTTPRequestEntityTooLarge(limit, request.content_length or limit + 1,
                                            text=orjson.dumps({"error": f"the body is over "
                                                               f"{limit} bytes (STREAMPROC_API_"
                                                               "MAX_BODY_BYTES)"}).decode(),
                                            content_type="application/json") from None


def _customer_id(request: web.Request) -> str:
    cid = request.match_info["customer_id"]
    try:
        validate_customer_id(cid)
    except StreamprocError as exc:
        raise _http(web.HTTPBadRequest, str(exc)[:300]) from None
    return cid


# -- handlers ---------------------------------------------------------------------------------

async def post_events(request: web.Request, only_type: str | None = None) -> web.Response:
    api = _api(request)
    api.write_site(request)
    received = api.clock_ms()
    body = await _body(request)
    try:
        items = parse_body(body)
    except BatchTooLargeError as exc:
        return _problem(413, str(exc))
    except ValueError as exc:
        return _problem(400, str(exc))
    batch = api.intake.check(items, received, only_type)
    ok, failed = await api.produce(batch.valid)
    answer: dict[str, Any] = {
        "accepted": [c.event_id for c in ok],
        "received_at": iso_ms(received),
    }
    adjusted = [{"index": c.index, "event_id": c.event_id, "note": c.note}
                for c in batch.valid if c.note]
    if adjusted:
        answer["adjusted"] = adjusted
    if batch.problems:
        answer["rejected"] = [p.as_dict() for p in batch.problems]
    if failed:
        answer["failed"] = [{"index": c.index, "event_id": c.event_id} for c in failed]
        answer["error"] = "Kafka did not confirm every event: send the failed ones again"
        return _json(answer, 503, headers={"Retry-After": "1"})
    if batch.problems:
        answer["error"] = (f"{len(batch.rejected)} of {len(items)} events are invalid and were "
                           "not accepted; the others (accepted) were")
        return _json(answer, 400)
    return _json(answer, 202)


async def post_feedback(request: web.Request) -> web.Response:
    return await post_events(request, only_type="feedback")


async def decide(request: web.Request) -> web.Response:
    api = _api(request)
    api.write_site(request)
    received = api.clock_ms()
    if request.method == "POST":
        try:
            params = orjson.loads(await _body(request))
        except orjson.JSONDecodeError as exc:
            return _problem(400, f"the body is not valid JSON: {exc}")
        if not isinstance(params, dict):
            return _problem(400, "send a JSON object: customer_id, slot, page, context")
    else:
        params = dict(request.query)
        for name in ("page", "context"):
            if name in params:
                return _problem(400, f"{name} is taken by POST /v1/decide (a JSON body)")
    try:
        req = api.decider.request(params, received)
    except DecideRequestError as exc:
        return _problem(400, "invalid decide request", exc.problems)
    record, state = await api.decide(req)
    api.exposures.answered(state)
    return _json({"decision": record, "exposure": state})


async def latest_decisions(request: web.Request) -> web.Response:
    api = _api(request)
    api.write_site(request)
    cid = _customer_id(request)
    assert api.store is not None
    try:
        async with asyncio.timeout(2):
            found = await RedisLatest(api.store.client).read(cid, api.clock_ms())
    except REDIS_FAILURES as exc:
        return _problem(503, f"the decision store is unavailable ({type(exc).__name__})")
    return _json({"customer_id": cid, "decisions": found})


async def customer_export(request: web.Request) -> web.Response:
    api = _api(request)
    api.require_admin(request)
    cid = _customer_id(request)
    assert api.store is not None
    try:
        found = await api.store.read_profile(cid)
        if found is not None:  # everything stored: expired latest decisions too
            found["latest_decisions"] = await RedisLatest(api.store.client).read(cid, 0)
    except REDIS_FAILURES as exc:
        return _problem(503, f"the profile store is unavailable ({type(exc).__name__})")
    if found is None:
        return _problem(404, f"no profile stored for customer {cid!r}")
    shown = {"customer_id": cid, **found}
    # As `streamproc profile --human`: the stored numbers by default (what programs read).
    if request.query.get("human", "").lower() in {"1", "true", "yes"}:
        shown = human(shown, api.clock_ms())
    return _json(shown)


async def customer_erase(request: web.Request) -> web.Response:
    """As ``streamproc forget``, through the same erasure as a worker's ``erase`` event
    (:func:`streamproc.processor.erase_customer`): the customer's keys go, tombstones go to the
    compacted topics, and the learner is told to forget the customer's pending moments."""
    api = _api(request)
    api.require_admin(request)
    cid = _customer_id(request)
    assert api.store is not None
    erasure = BatchResult()
    now = api.clock_ms()
    try:
        deleted = await erase_customer(
            api.store, cid, f"forget-{now}-{time.monotonic_ns()}", now, None, erasure,
            suppress_ms=api.settings.erasure_suppress_days * 86_400_000)
    except REDIS_FAILURES as exc:
        return _problem(503, f"the profile store is unavailable ({type(exc).__name__}): "
                             "nothing was erased")
    producer = api.producer
    topics = api.settings.topics
    try:
        if producer is None:
            raise KafkaError("not connected")
        async with asyncio.timeout(PRODUCE_TIMEOUT_S):
            for topic, key, value in batch_records(erasure, api.settings):
                await producer.send_and_wait(topic, value, key=key)
    except (TimeoutError, KafkaError) as exc:
        return _problem(503, f"erased from Redis ({deleted} keys), but the tombstones could "
                             f"not be sent ({type(exc).__name__}): send DELETE again",
                        deleted_keys=deleted)
    return _json({"customer_id": cid, "deleted_keys": deleted, "tombstones": [
        topics.decisions, topics.segments, topics.deadletter], "learner_told": topics.learning})


async def livez(request: web.Request) -> web.Response:
    return _json({"live": True})


async def readyz(request: web.Request) -> web.Response:
    api = _api(request)
    problems = []
    if api.producer is None:
        problems.append("Kafka: producer not connected")
    try:
        assert api.redis is not None
        async with asyncio.timeout(1):
            await api.redis.ping()
    except AuthenticationError:
        problems.append("Redis: credentials refused (check STREAMPROC_REDIS_URL or "
                        "STREAMPROC_REDIS_URL_FILE)")
    except Exception as exc:
        problems.append(f"Redis: {type(exc).__name__}")
    return _json({"ready": not problems, "problems": problems}, 503 if problems else 200)


async def metrics(request: web.Request) -> web.Response:
    """The API's counters (:mod:`streamproc.api.exposures`), for Prometheus: admin token."""
    api = _api(request)
    api.require_admin(request)
    return web.Response(body=api.exposures.render(), headers={"Content-Type": CONTENT_TYPE})


async def openapi(request: web.Request) -> web.Response:
    return _json(OPENAPI)


# -- middlewares ------------------------------------------------------------------------------

@web.middleware
async def cors(request: web.Request,
               handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
               ) -> web.StreamResponse:
    api = _api(request)
    origin = request.headers.get("Origin")
    browser = request.path.startswith(BROWSER_PATHS)
    allowed = browser and api.origins.allows(origin)
    headers = {"Access-Control-Allow-Origin": origin or "", "Vary": "Origin"} if allowed else {}
    if request.method == "OPTIONS":
        if not allowed:
            return _problem(403, "origin not allowed (STREAMPROC_API_ORIGINS)")
        return web.Response(status=204, headers={
            **headers, "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
            "Access-Control-Allow-Headers": CORS_HEADERS, "Access-Control-Max-Age": "600"})
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        exc.headers.update(headers)
        raise
    response.headers.update(headers)
    return response


@web.middleware
async def errors(request: web.Request,
                 handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                 ) -> web.StreamResponse:
    """Every answer is JSON; a bug is a logged 500 that says nothing about the internals."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.content_type != "application/json" and exc.status >= 400:
            return _json({"error": exc.reason}, exc.status, headers={
                k: v for k, v in exc.headers.items() if k.lower() in {
                    "allow", "retry-after", "access-control-allow-origin", "vary"}})
        raise
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return _json({"error": "internal error; logged"}, 500)


def build_app(settings: Settings, clock_ms: Callable[[], int] = now_ms) -> web.Application:
    check_open_access(settings.api_host, settings.api_write_keys())
    app = web.Application(middlewares=[errors, cors], client_max_size=settings.api_max_body_bytes)
    api = Api(settings, clock_ms)
    app[API] = api
    app.on_startup.append(api.start)
    app.on_cleanup.append(api.stop)
    app.router.add_post("/v1/events", post_events)
    app.router.add_post("/v1/feedback", post_feedback)
    app.router.add_get("/v1/decide", decide)
    app.router.add_post("/v1/decide", decide)
    app.router.add_get("/v1/decisions/{customer_id}", latest_decisions)
    app.router.add_get("/v1/customers/{customer_id}", customer_export)
    app.router.add_delete("/v1/customers/{customer_id}", customer_erase)
    app.router.add_get("/livez", livez)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/openapi.json", openapi)
    app.router.add_get("/metrics", metrics)
    Assets.load(settings).add_routes(app.router)
    api.dashboard.add_routes(app.router)
    return app


async def check_redis_login(settings: Settings, timeout_s: float = 2.0) -> None:
    """Raise StreamprocError, with what to check, when Redis refuses the credentials or the
    TLS handshake: the API would answer neutral decisions for ever without a word. A Redis
    that does not answer is no error here: the API starts and serves neutral decisions until
    it does (/readyz says so)."""
    client = redis_client(settings, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    try:
        await client.ping()
    except REDIS_FAILURES as exc:
        refused = redis_refusal(settings.redis_url, exc)
        if refused is not None:
            raise StreamprocError(refused) from None
        log.warning("Redis at %s does not answer (%s): decisions are neutral until it does",
                    masked_url(settings.redis_url), exc)
    finally:
        await client.aclose()


def run(settings: Settings) -> None:
    """Serve until interrupted (SIGINT or SIGTERM)."""
    asyncio.run(check_redis_login(settings))
    app = build_app(settings)
    log.info("streamproc API on http://%s:%d (deadline %d ms, %s)", settings.api_host,
             settings.api_port, settings.api_deadline_ms,
             "open: no write keys" if not settings.api_write_keys() else
             f"{len(settings.api_write_keys())} write key(s)")
    web.run_app(app, host=settings.api_host, port=settings.api_port, print=None,
                access_log_class=AccessLogger, shutdown_timeout=5)
