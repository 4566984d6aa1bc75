"""The traffic simulator without Kafka: population, event generator, pacing and the producer loop.

The generator is the ground truth later stages are measured against, so besides "events are valid"
these tests check the behaviour is coherent (carts before purchases, amounts add up, time moves
forward per customer) and that personas leave a measurable trace in what customers browse.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import re
import statistics
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from streamproc.errors import ConfigError, StackError, StreamprocError
from streamproc.events.codec import parse_ts
from streamproc.events.schemas import load_event_schemas, load_product_schema
from streamproc.settings import Settings, Topics
from streamproc.simulator import (
    CATEGORIES,
    PERSONAS,
    KafkaUnavailableError,
    Population,
    SimEvent,
    SimulationError,
    generate_events,
    run_simulation,
)
from streamproc.simulator import producer as producer_module
from streamproc.simulator.producer import Pacer
from streamproc.simulator.sessions import PAGE_SLOTS

START = datetime(2025, 3, 1, 6, 0, tzinfo=UTC)
TS_FORMAT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def take(n: int, customers: int = 300, seed: int = 7, start: datetime = START) -> list[SimEvent]:
    population = Population.generate(customers, seed)
    return list(itertools.islice(generate_events(population, start, seed), n))


@pytest.fixture(scope="module")
def events() -> list[SimEvent]:
    return take(20_000)


@pytest.fixture(scope="module")
def population() -> Population:
    return Population.generate(300, 7)


# -- population ------------------------------------------------------------------------------------


def test_population_is_deterministic_and_extends() -> None:
    small, large = Population.generate(50, 3), Population.generate(100, 3)
    assert small == Population.generate(50, 3)
    assert large.customers[:50] == small.customers
    assert Population.generate(50, 4).customers != small.customers


def test_population_covers_personas_and_catalogue(population: Population) -> None:
    assert set(population.persona_counts()) == {p.name for p in PERSONAS}
    assert set(population.catalogue.products) == set(CATEGORIES)
    ids = [c.customer_id for c in population.customers]
    assert len(set(ids)) == len(ids)
    for customer in population.customers:
        assert abs(sum(customer.category_weights.values()) - 1) < 1e-9
        assert len(customer.hour_weights) == 24
    for items in population.catalogue.products.values():
        assert [p.price for p in items] == sorted(p.price for p in items)
        assert all(p.price > 0 and round(p.price, 2) == p.price for p in items)


def test_population_rejects_no_customers() -> None:
    with pytest.raises(ValueError):
        Population.generate(0)


# -- generated events ------------------------------------------------------------------------------


def test_generation_is_deterministic() -> None:
    first = take(3000, customers=100)
    assert first == take(3000, customers=100)
    assert first != take(3000, customers=100, seed=8)
    later = take(3000, customers=100, start=START + timedelta(hours=1))
    assert {e.event["event_id"] for e in first}.isdisjoint(e.event["event_id"] for e in later)


def test_start_must_be_timezone_aware() -> None:
    with pytest.raises(ValueError, match="timezone"):
        next(generate_events(Population.generate(5), datetime(2025, 1, 1)))


def test_every_event_validates(events: list[SimEvent]) -> None:
    schemas = load_event_schemas()
    for e in events:
        schema = schemas[e.event["type"]]
        schema.validate(e.event)
        assert e.topic == schema.topic
        assert e.key == e.event["customer_id"]
        assert TS_FORMAT.match(e.event["ts"]), e.event["ts"]
        assert len(orjson.dumps(e.event)) < Settings().max_event_bytes
    types = Counter(e.event["type"] for e in events)
    # Not simulated: feedback, surveys, erasure, the website's slot requests (requests for a
    # decision, not customer behaviour), the HTTP API's record of a decision it served, and
    # identity (the simulated personas are known customers from their first event).
    expected = set(schemas) - {"feedback", "survey", "erase", "slot_request", "decision_served",
                               "identify", "unlink", "profile_merge"}
    assert set(types) == expected, f"missing {expected - set(types)}"
    assert {e.topic for e in events} == {"browsing", "purchases", "profiles"}


def test_event_ids_are_unique(events: list[SimEvent]) -> None:
    ids = [e.event["event_id"] for e in events]
    assert len(set(ids)) == len(ids)
    orders = [e.event["order_id"] for e in events if e.event["type"] == "purchase"]
    assert len(set(orders)) == len(orders)


def test_event_time_moves_forward(events: list[SimEvent]) -> None:
    stamps = [e.event["ts"] for e in events]
    assert stamps == sorted(stamps), "events must come in event-time order"
    assert stamps[0] >= "2025-03-01T06:00:00.000Z"
    last: dict[str, str] = {}
    for e in events:
        previous = last.get(e.key)
        assert previous is None or e.event["ts"] > previous, f"{e.key} went back in time"
        last[e.key] = e.event["ts"]
    # sessions interleave: the customer changes often between consecutive events
    switches = sum(a.key != b.key for a, b in itertools.pairwise(events))
    assert switches > len(events) / 10


def test_carts_and_purchases_are_coherent(events: list[SimEvent]) -> None:
    carts: dict[str, dict[str, int]] = defaultdict(dict)
    viewed: dict[str, set[str]] = defaultdict(set)
    price: dict[str, float] = {}
    purchases = 0
    for e in events:
        ev, cart = e.event, carts[e.key]
        if ev["type"] == "product_view":
            viewed[e.key].add(ev["product"]["product_id"])
        elif ev["type"] == "cart_add":
            pid = ev["product"]["product_id"]
            assert pid in viewed[e.key], "added to the cart without viewing"
            cart[pid] = cart.get(pid, 0) + ev["quantity"]
            price[pid] = ev["product"]["price"]
        elif ev["type"] == "cart_remove":
            assert cart.get(ev["product_id"], 0) >= ev["quantity"], "removed more than in cart"
            cart[ev["product_id"]] -= ev["quantity"]
            if not cart[ev["product_id"]]:
                del cart[ev["product_id"]]
        elif ev["type"] == "checkout":
            assert ev["items"] == sum(cart.values()) > 0
        elif ev["type"] == "purchase":
            purchases += 1
            lines = {line["product_id"]: line["quantity"] for line in ev["lines"]}
            assert lines == cart, "a purchase buys exactly the cart"
            for line in ev["lines"]:
                assert line["unit_price"] == price[line["product_id"]]
            total = sum(line["quantity"] * line["unit_price"] for line in ev["lines"])
            assert ev["amount"] == round(total, 2)
            assert ev["currency"] == "EUR"
            cart.clear()
    assert purchases > 50


def test_consent_and_profile_updates_happen() -> None:
    events = take(60_000, customers=300)
    consents = [e.event for e in events if e.event["type"] == "consent_update"]
    assert any(not c["granted"] for c in consents), "some consent must be withdrawn"
    assert any(c["granted"] for c in consents)
    updates = [e.event for e in events if e.event["type"] == "profile_update"]
    # The customers edit their own accounts: what they declare.
    assert updates and all(u["source"] == "declared" for u in updates)


def test_each_customer_answers_the_consent_banner_on_their_first_visit() -> None:
    events = take(20_000, customers=300)
    first_page: dict[str, str] = {}
    banner: dict[str, dict[str, Any]] = {}
    for e in events:
        ev = e.event
        first_page.setdefault(ev["customer_id"], ev["ts"])
        if ev["type"] == "consent_update" and ev["source"] == "consent_banner":
            assert ev["customer_id"] not in banner, "the banner is answered once"
            banner[ev["customer_id"]] = ev
    # Everybody first seen over a minute before the end answered it, just after their first
    # page; most say yes.
    end = parse_ts(events[-1].event["ts"])
    assert {cid for cid, ts in first_page.items() if parse_ts(ts) < end - 60_000} <= set(
        banner) <= set(first_page)
    assert len(banner) > 200
    assert all(b["purpose"] == "personalisation" for b in banner.values())
    assert all(b["ts"] > first_page[cid] for cid, b in banner.items())
    granted = sum(b["granted"] for b in banner.values()) / len(banner)
    assert 0.8 < granted < 0.97


def test_personas_shape_browsing(events: list[SimEvent], population: Population) -> None:
    persona_of = population.personas()
    views: dict[str, Counter[str]] = defaultdict(Counter)
    for e in events:
        if e.event["type"] == "product_view":
            views[persona_of[e.key]][e.event["product"]["category"]] += 1
    overall: Counter[str] = sum(views.values(), Counter())
    # each persona's favourite declared category is over-represented at least 2x in its views,
    # compared with everybody else's (a persona that views a category most is most of "overall")
    for persona in PERSONAS:
        seen = views[persona.name]
        rest = overall - seen
        favourite = max(persona.categories, key=lambda c: persona.categories[c])
        share = seen[favourite] / sum(seen.values())
        assert share > 2 * rest[favourite] / sum(rest.values()), (persona.name, favourite, share)
    top = {name: seen.most_common(1)[0][0] for name, seen in views.items()}
    assert top["tech_enthusiast"] == "electronics"
    assert top["new_parent"] == "baby"
    assert top["bookworm"] == "books"
    assert top["home_gardener"] == "garden"


def test_price_sensitivity_shows_in_prices(events: list[SimEvent], population: Population) -> None:
    persona_of = population.personas()
    median = {c: items[len(items) // 2].price for c, items in population.catalogue.products.items()}
    relative: dict[str, list[float]] = defaultdict(list)
    for e in events:
        if e.event["type"] == "product_view":
            product = e.event["product"]
            relative[persona_of[e.key]].append(product["price"] / median[product["category"]])
    mean = {name: statistics.mean(values) for name, values in relative.items()}
    assert mean["bargain_hunter"] < mean["tech_enthusiast"]


# -- pacing ----------------------------------------------------------------------------------------


def test_pacer_has_no_drift() -> None:
    pacer = Pacer(rate=100.0, now=0.0)
    sent, now = 0, 0.0
    while now < 10.0:
        n = pacer.available(now)
        pacer.take(n)
        sent += n
        now += 0.0137  # an awkward tick that would accumulate rounding drift
    assert abs(sent - 100 * now) <= 2


def test_pacer_first_token_now_then_waits() -> None:
    pacer = Pacer(rate=10.0, now=5.0)
    assert pacer.available(5.0) == 1
    pacer.take(1)
    assert pacer.available(5.05) == 0
    assert pacer.delay(5.05) == pytest.approx(0.05)
    assert pacer.available(5.1) == 1


def test_pacer_does_not_burst_after_a_stall() -> None:
    pacer = Pacer(rate=100.0, now=0.0, burst_seconds=1.0)
    pacer.take(pacer.available(0.0))
    assert pacer.available(60.0) == 100  # one second of backlog, not sixty
    pacer.take(100)
    assert pacer.available(60.001) == 0
    assert pacer.available(60.5) == pytest.approx(50, abs=1)


def test_pacer_rejects_bad_rate() -> None:
    for rate in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError):
            Pacer(rate, 0.0)


# -- run_simulation with a fake producer ---------------------------------------------------------


class FakeProducer:
    """Stands in for AIOKafkaProducer: records sends, resolves futures at once (or fails them)."""

    def __init__(self, topics: Topics, existing: list[str] | None = None,
                 fail: Exception | None = None) -> None:
        names = list(topics.all()) if existing is None else existing
        self.client = SimpleNamespace(fetch_all_metadata=self._metadata)
        self._names = names
        self.fail = fail
        self.sent: list[tuple[str, bytes, bytes]] = []
        # the product feed's records apart, with how many events were sent before each
        self.feed: list[tuple[str, bytes, bytes, int]] = []
        self.started = self.stopped = False

    async def _metadata(self) -> Any:
        return SimpleNamespace(topics=lambda: set(self._names))

    async def start(self) -> None:
        self.started = True

    async def send(self, topic: str, value: bytes, key: bytes) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.fail is not None:
            future.set_exception(self.fail)
        else:
            future.set_result(None)
        if topic.endswith(".products"):
            self.feed.append((topic, key, value, len(self.sent)))
        else:
            self.sent.append((topic, key, value))
        return future

    async def flush(self) -> None:
        pass

    async def stop(self) -> None:
        self.stopped = True


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def settings() -> Settings:
    return Settings(topics=Topics.with_prefix("unit."))


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> FakeProducer:
    producer = FakeProducer(settings.topics)
    monkeypatch.setattr(producer_module, "_make_producer", lambda _settings: producer)
    return producer


async def test_run_simulation_sends_keyed_events(settings: Settings, fake: FakeProducer) -> None:
    out = io.StringIO()
    stats = await run_simulation(settings, customers=50, rate=20_000, duration=None,
                                 max_events=1_500, progress=out)
    assert stats.events == stats.delivered == len(fake.sent) == 1_500
    assert fake.started and fake.stopped
    by_topic: Counter[str] = Counter()
    for topic, key, value in fake.sent:
        event = orjson.loads(value)
        assert key == event["customer_id"].encode()
        assert topic == getattr(settings.topics, load_event_schemas()[event["type"]].topic)
        by_topic[topic.removeprefix("unit.")] += 1
    assert dict(by_topic) == stats.by_topic
    assert sum(stats.by_type.values()) == 1_500
    assert 0 < stats.active_customers <= 50
    assert stats.first_ts is not None and stats.first_ts <= str(stats.last_ts)
    assert "simulation done: 1,500 events" in out.getvalue()
    assert "\r" not in out.getvalue()
    # The shop's product feed went first, to the products topic: every product, keyed by its
    # id, valid, a few out of stock (recommendations skip them), and counted apart.
    validate = load_product_schema().validate
    assert {topic for topic, _, _, _ in fake.feed} == {settings.topics.products}
    assert all(before == 0 for _, _, _, before in fake.feed)
    feed = [orjson.loads(value) for _, _, value, _ in fake.feed]
    for (_, key, _, _), record in zip(fake.feed, feed, strict=True):
        validate(record)
        assert key == record["product_id"].encode()
    assert len({r["product_id"] for r in feed}) == len(feed) == stats.products == 360
    assert 0 < stats.out_of_stock == sum(not r["in_stock"] for r in feed) < 36
    assert f"product feed: 360 products ({stats.out_of_stock} out of stock)" in out.getvalue()


async def test_run_simulation_keeps_the_rate(settings: Settings, fake: FakeProducer) -> None:
    stats = await run_simulation(settings, customers=20, rate=400, duration=0.5, progress=None)
    # 0.5 s at 400/s: 200 events (+1 sent at once), give or take scheduling jitter
    assert 185 <= stats.events <= 202
    assert stats.seconds >= 0.5


async def test_run_simulation_max_events_is_paced(settings: Settings, fake: FakeProducer) -> None:
    stats = await run_simulation(settings, customers=20, rate=1_000, duration=None,
                                 max_events=301, progress=None)
    assert stats.events == 301
    assert stats.seconds >= 0.29


async def test_progress_on_a_terminal(settings: Settings, fake: FakeProducer,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(producer_module, "TTY_INTERVAL_S", 0.05)
    out = Tty()
    await run_simulation(settings, customers=20, rate=500, duration=0.4, progress=out)
    text = out.getvalue()
    assert text.count("\r") >= 3
    assert "events" in text and "browsing=" in text
    assert text.endswith("\n") and "simulation done" in text.splitlines()[-1]


async def test_progress_plain_lines(settings: Settings, fake: FakeProducer,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(producer_module, "PLAIN_INTERVAL_S", 0.1)
    out = io.StringIO()
    await run_simulation(settings, customers=20, rate=500, duration=0.45, progress=out)
    lines = out.getvalue().splitlines()
    assert len(lines) >= 4 and all(line.startswith("simulate") for line in lines[:-1])
    assert lines[-1].startswith("simulation done")


async def test_cancel_flushes_and_summarises(settings: Settings, fake: FakeProducer) -> None:
    out = io.StringIO()
    task = asyncio.create_task(
        run_simulation(settings, customers=20, rate=2_000, duration=None, progress=out))
    deadline = asyncio.get_running_loop().time() + 5
    while len(fake.sent) < 100:
        assert asyncio.get_running_loop().time() < deadline, "nothing was sent"
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert fake.stopped
    assert "simulation interrupted" in out.getvalue()


async def test_missing_topics_are_a_clear_error(settings: Settings,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    producer = FakeProducer(settings.topics, existing=[settings.topics.browsing])
    monkeypatch.setattr(producer_module, "_make_producer", lambda _settings: producer)
    with pytest.raises(KafkaUnavailableError, match=r"unit\.purchases.*stack up"):
        await run_simulation(settings, customers=5, rate=10, duration=1, progress=None)
    assert producer.stopped and not producer.sent


async def test_delivery_failure_is_an_error(settings: Settings,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    producer = FakeProducer(settings.topics, fail=RuntimeError("broker says no"))
    monkeypatch.setattr(producer_module, "_make_producer", lambda _settings: producer)
    with pytest.raises(SimulationError, match="broker says no"):
        await run_simulation(settings, customers=5, rate=1000, duration=None, max_events=10,
                             progress=None)
    assert issubclass(SimulationError, StreamprocError)


async def test_unreachable_kafka_is_a_clear_error() -> None:
    settings = Settings(kafka_bootstrap="127.0.0.1:1", topics=Topics.with_prefix("unit."))
    with pytest.raises(KafkaUnavailableError, match="streamproc stack up") as info:
        await run_simulation(settings, customers=5, rate=10, duration=1, progress=None)
    assert isinstance(info.value, StackError)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"customers": 0},
        {"rate": 0},
        {"rate": -5},
        {"rate": float("nan")},
        {"duration": 0},
        {"max_events": 0},
    ],
)
async def test_bad_arguments(settings: Settings, fake: FakeProducer,
                             kwargs: dict[str, Any]) -> None:
    args: dict[str, Any] = {"customers": 5, "rate": 10.0, "duration": 1.0, "max_events": None}
    with pytest.raises(ConfigError):
        await run_simulation(settings, progress=None, **(args | kwargs))
    assert not fake.started


# -- the two clocks, and the pages' slot requests -------------------------------------------------


async def test_run_simulation_stamps_events_with_the_wall_clock(settings: Settings,
                                                                 fake: FakeProducer) -> None:
    before = time.time_ns() // 1_000_000
    await run_simulation(settings, customers=50, rate=2_000, duration=None, max_events=300,
                         progress=None)
    after = time.time_ns() // 1_000_000
    stamps = [parse_ts(orjson.loads(value)["ts"]) for _, _, value in fake.sent]
    assert len(stamps) == 300
    # the generator's own clock would have run minutes or hours ahead in 300 events
    assert all(before <= ts <= after for ts in stamps), (before, min(stamps), max(stamps), after)
    assert stamps == sorted(stamps)


async def test_accelerated_keeps_event_time_and_uses_topics_of_its_own(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    accelerated = producer_module.accelerated_settings(settings)
    fake = FakeProducer(accelerated.topics)
    monkeypatch.setattr(producer_module, "_make_producer", lambda s: fake)
    created: list[Topics] = []

    async def ensure(s: Settings) -> list[str]:
        created.append(s.topics)
        return []

    monkeypatch.setattr("streamproc.stack.topics.ensure_topics", ensure)
    out = io.StringIO()
    await run_simulation(settings, customers=50, rate=5_000, duration=None, max_events=2_000,
                         progress=out, accelerated=True)
    assert created == [accelerated.topics]
    assert {topic for topic, _, _ in fake.sent} <= set(accelerated.topics.all())
    assert not {topic for topic, _, _ in fake.sent} & set(settings.topics.all())
    stamps = [parse_ts(orjson.loads(value)["ts"]) for _, _, value in fake.sent]
    assert stamps[-1] - stamps[0] > 60_000  # simulated time ran far ahead of the ~0.4 s taken
    assert "streamproc-accelerated.* topics, not the stack's" in out.getvalue()


def test_accelerated_refuses_the_stacks_topics(settings: Settings) -> None:
    prefix = settings.topics.browsing.removesuffix("browsing")
    with pytest.raises(ConfigError, match="push its event time hours ahead"):
        producer_module.accelerated_settings(settings, prefix)


def test_stamp_now_replaces_only_the_time() -> None:
    event = take(1)[0]
    stamped = producer_module.stamp_now(event, 1_700_000_000_123)
    assert stamped.event["ts"] == "2023-11-14T22:13:20.123Z"
    assert {k: v for k, v in stamped.event.items() if k != "ts"} == {
        k: v for k, v in event.event.items() if k != "ts"}
    assert stamped.key == event.key and stamped.topic == event.topic


def test_pages_ask_for_their_slots() -> None:
    population = Population.generate(200, 7)
    events = list(itertools.islice(generate_events(population, START, 7, slot_requests=True),
                                   4_000))
    schemas = load_event_schemas()
    for e in events:
        schemas[e.event["type"]].validate(e.event)
    requests = [e.event for e in events if e.event["type"] == "slot_request"]
    assert {r["slot"] for r in requests} == {"homepage_hero", "product_recs", "cart_drawer"}
    by_customer: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        by_customer[e.key].append(e.event)
    for request in requests:
        # every request follows its page (same session, page type of the slot) by 300 ms
        history = by_customer[request["customer_id"]]
        before = history[history.index(request) - 1]
        assert before["type"] in ("page_view", "product_view")
        assert before["context"]["session_id"] == request["context"]["session_id"]
        assert parse_ts(request["ts"]) - parse_ts(before["ts"]) == 300
        page_type = before.get("page_type", "product")
        assert request["page"]["page_type"] == page_type
        assert request["slot"] == PAGE_SLOTS[page_type][0]
    homes = [e.event for e in events if e.event.get("page_type") == "home"]
    assert sum(r["slot"] == "homepage_hero" for r in requests) == len(homes)


def test_without_slot_requests_the_events_are_unchanged() -> None:
    population = Population.generate(100, 7)
    plain = list(itertools.islice(generate_events(population, START, 7), 1_000))
    assert plain == take(1_000, customers=100)
    assert not any(e.event["type"] == "slot_request" for e in plain)
