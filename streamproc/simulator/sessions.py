"""A pure, deterministic generator of customer events: browsing sessions, carts and purchases.

:func:`generate_events` runs a simulated clock (event time), not the wall clock: it yields events
in event-time order, as fast as it is iterated, and knows nothing about Kafka. Pacing and
producing are :mod:`streamproc.simulator.producer`'s job, so this part is testable in isolation
and replayable: the same population, start and seed give the same events, ids included.

How a customer behaves comes from their :class:`~streamproc.simulator.population.Customer`:
sessions start at the customer's active hours (a Poisson process thinned by hour-of-day weights),
browse mostly the preferred categories, favour preferred brands and affordable products. Each
session is a buying mission or not (with the customer's propensity), and it shows: missions stay
in one category, fill the cart and mostly end in a purchase; the other sessions wander, add
little and rarely buy. The cart outlives the session (like a real shop's),
so a purchase may include items added sessions earlier; every purchase line was added to the cart
first, and the amount is exactly the sum of the lines.

Event time is independent of the wall clock: at a high send rate the simulated clock runs faster
than real time (a simulated day per minute or so); the events stay internally consistent.
:mod:`streamproc.simulator.producer` re-stamps them with the wall clock by default.

With ``slot_requests`` the visitors' pages also ask for their slots, as a website would
(:data:`PAGE_SLOTS`): the home page for ``homepage_hero``, category and product pages for
``product_recs``, the cart page for ``cart_drawer``; the answers are decisions. Visitors then
also go back to the home page now and then (:data:`BACK_HOME`), so its hero can follow what they
browse.

App sessions report the weather where the customer is now and then (:data:`WEATHER_SHARE`): a
``context_update`` with the day's weather and temperature of the customer's city (the same for
everyone there that day), from a generator of its own, so the rest of the stream is unchanged.
"""

from __future__ import annotations

import heapq
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from streamproc.events.schemas import load_event_schemas
from streamproc.simulator.population import Customer, Population, Product, weighted_choice

CURRENCY = "EUR"
# Logical topics the simulator writes to (it sends no feedback: there are no decisions to rate).
SIMULATED_TOPICS: tuple[str, ...] = ("browsing", "purchases", "profiles")
WEB = "https://shop.example.com"
APP = "app://shop"
MAX_CART_LINES = 12
RECENT_VIEWS = 8
MIN_SESSION_GAP_MS = 10 * 60 * 1000
# P(purchase | the session ends with a non-empty cart), on a buying mission or not
BUY_ON_MISSION = 0.9
BUY_WHILE_BROWSING = 0.03
# Hidden item-level tastes (generate_events(item_tastes=True)): styles, liked per customer, and
# how much more readily a liked product is picked.
STYLES, LIKED_STYLES, TASTE_BOOST = 8, 2, 6.0
# With item tastes, how a product view is steered (ItemTastes): right after a cart add, the
# share of views that go to a complement of the product added; the share that go back to a
# product of the session's category considered in an earlier session (of the CONSIDERED latest
# viewed); the share that follow "similar products" (the last viewed product's style).
COMPLEMENT, REVISIT, RELATED, CONSIDERED = 0.5, 0.5, 0.4, 12
# Each category's companions: where a product's complements are (shoes -> sports socks, ...).
COMPANIONS: dict[str, tuple[str, str]] = {
    "shoes": ("sports", "dresses"), "dresses": ("jewellery", "shoes"),
    "electronics": ("electronics", "books"), "books": ("books", "home"),
    "home": ("garden", "home"), "beauty": ("beauty", "jewellery"),
    "sports": ("shoes", "grocery"), "toys": ("baby", "books"), "baby": ("toys", "grocery"),
    "grocery": ("grocery", "home"), "garden": ("home", "garden"),
    "jewellery": ("dresses", "beauty"),
}

USER_AGENTS: dict[tuple[str, bool], str] = {
    ("desktop", False): "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
                        "(KHTML, like Gecko) Chrome/124.0 Safari/537.36",
    ("mobile", False): "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) "
                       "AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 "
                       "Safari/604.1",
    ("tablet", False): "Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
                       "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    ("mobile", True): "ShopApp/5.12.0 (Android 14; Pixel 8)",
    ("tablet", True): "ShopApp/5.12.0 (iPadOS 17.4; iPad13,1)",
}
REFERRERS = ("https://www.google.com/", "https://www.bing.com/", "https://www.instagram.com/",
             f"{WEB}/newsletter?utm_source=email")
SEARCH_WORDS: dict[str, tuple[str, ...]] = {
    "shoes": ("running shoes", "trainers", "boots", "sandals", "heels"),
    "dresses": ("summer dress", "maxi dress", "party dress", "linen dress"),
    "electronics": ("headphones", "laptop", "smartwatch", "4k tv", "usb-c charger"),
    "books": ("crime novel", "cookbook", "bestsellers", "fantasy trilogy"),
    "home": ("bedding", "lamp", "storage boxes", "cushions"),
    "beauty": ("moisturiser", "lipstick", "sunscreen", "shampoo"),
    "sports": ("yoga mat", "dumbbells", "cycling jersey", "tennis racket"),
    "toys": ("lego", "puzzle", "board game", "plush"),
    "baby": ("nappies", "pram", "baby monitor", "bottles"),
    "grocery": ("coffee", "olive oil", "pasta", "snacks"),
    "garden": ("hose", "seeds", "lawn mower", "planter"),
    "jewellery": ("necklace", "earrings", "silver ring", "bracelet"),
}
CONSENT_PURPOSES = ("personalisation", "email", "sms", "push", "call_centre")
INITIAL_CONSENT = {"personalisation": 0.9, "email": 0.7, "sms": 0.3, "push": 0.5,
                   "call_centre": 0.2}
LOYALTY_TIERS = ("bronze", "silver", "gold")
WEATHER_SHARE = 0.3  # app sessions that start with a context_update
WEATHERS = ("clear", "cloudy", "rain", "wind", "fog", "snow")
WEATHER_ODDS = (0.35, 0.3, 0.2, 0.08, 0.05, 0.02)
# How long after landing a new customer answers the consent banner.
BANNER_DELAY_MS = 3_000
# The slot a page of each type asks for (slots of schemas/examples/catalogue.yaml), and the share
# of those pages that ask (a product page's recommendations are not requested on every view).
PAGE_SLOTS: dict[str, tuple[str, float]] = {
    "home": ("homepage_hero", 1.0),
    "category": ("product_recs", 0.5),
    "product": ("product_recs", 0.25),
    "cart": ("cart_drawer", 1.0),
}
SLOT_REQUEST_DELAY_MS = 300  # the page's script asks for its slot just after the page view
# With slot requests, the share of steps after which a visitor who viewed products goes back to
# the home page: its hero then reflects what they just browsed.
BACK_HOME = 0.12


class SimEvent(NamedTuple):
    """One generated event: ``topic`` is the logical name (an attribute of ``Topics``)."""

    topic: str
    key: str
    event: dict[str, Any]


def format_ts(ms: int) -> str:
    """ISO-8601 UTC with milliseconds and ``Z``, the form the simulator sends."""
    seconds, millis = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def _to_ms(start: datetime) -> int:
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware (e.g. datetime.now(timezone.utc))")
    return int(start.astimezone(UTC).timestamp() * 1000)


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if not n:
            return out


@dataclass
class _State:
    """What the simulator remembers about a customer between sessions (not ground truth)."""

    cart: dict[str, int] = field(default_factory=dict)  # product_id -> units, insertion-ordered
    consents: dict[str, bool] = field(default_factory=dict)
    # Whether the shop's consent banner has recorded the personalisation answer yet.
    banner_answered: bool = False
    # With item tastes: the latest products viewed, across sessions (the latest last).
    considered: list[Product] = field(default_factory=list)


class _Session:
    """Builds the events of one session; ``t`` is the session's clock in epoch milliseconds."""

    def __init__(self, sim: _Simulator, index: int, t: int) -> None:
        self.sim, self.rng = sim, sim.rng
        self.index = index
        self.customer: Customer = sim.population.customers[index]
        self.state: _State = sim.states[index]
        self.t = t
        self.out: list[tuple[int, str, dict[str, Any]]] = []
        self.viewed: list[Product] = []
        self.carted: Product | None = None  # added to the cart by the step before
        c, rng = self.customer, self.rng
        self.app = rng.random() < c.app_share
        self.channel = "app" if self.app else "web"
        device = weighted_choice(rng, list(c.devices), c.devices)
        if self.app and device == "desktop":
            device = "mobile"
        sim.sessions += 1
        self.context = {
            "session_id": f"{sim.prefix}s{sim.sessions}",
            "device": device,
            "locale": c.locale,
            "country": c.country,
            "city": c.city,
            "user_agent": USER_AGENTS[(device, self.app)],
        }
        self.category = weighted_choice(rng, list(c.category_weights), c.category_weights)
        # Purchase intent is decided when the session starts and shows in what the customer does
        # (as in real shops): on a buying mission they stay in one category, add to the cart and
        # check out; otherwise they wander and rarely buy. The customer's propensity sets how
        # often a session is a mission, so history still predicts the next session.
        self.mission = rng.random() < c.propensity

    # -- helpers --------------------------------------------------------------------------------

    def emit(self, type_: str, channel: str | None = None, in_session: bool = True,
             **fields: Any) -> None:
        event: dict[str, Any] = {"type": type_, "customer_id": self.customer.customer_id,
                                 "channel": channel or self.channel}
        if in_session:
            event["context"] = dict(self.context)
        event.update(fields)
        self.out.append((self.t, self.sim.topic_of[type_], event))
        if self.sim.slot_requests and in_session:
            if type_ == "page_view":
                self.request_slot(fields["page_type"], fields["url"], fields.get("category"))
            elif type_ == "product_view":
                product = fields["product"]
                self.request_slot("product", self.url(f"/p/{product['product_id']}"),
                                  product["category"], product["product_id"])

    def request_slot(self, page_type: str, url: str, category: str | None = None,
                     product_id: str | None = None) -> None:
        """The page's slot request (:data:`PAGE_SLOTS`), if it has a slot and asks this time."""
        slot, share = PAGE_SLOTS.get(page_type, ("", 0.0))
        if not slot or (share < 1.0 and self.rng.random() >= share):
            return
        page: dict[str, Any] = {"url": url, "page_type": page_type}
        if category is not None:
            page["category"] = category
        if product_id is not None:
            page["product_id"] = product_id
        self.t += SLOT_REQUEST_DELAY_MS
        event = {"type": "slot_request", "customer_id": self.customer.customer_id,
                 "channel": self.channel, "context": dict(self.context), "slot": slot,
                 "page": page}
        self.out.append((self.t, self.sim.topic_of["slot_request"], event))

    def wait(self, low_s: float, high_s: float) -> None:
        self.t += self.rng.randint(int(low_s * 1000), int(high_s * 1000))

    def url(self, path: str) -> str:
        return (APP if self.app else WEB) + path

    def pick_product(self, category: str) -> Product:
        """A product of ``category``: affordable for this customer, preferred brands favoured."""
        items = self.sim.population.catalogue.products[category]
        return self.rng.choices(items, weights=self.sim.choice_weights(self.index, category))[0]

    # -- steps ----------------------------------------------------------------------------------

    def land(self) -> None:
        if self.rng.random() < (0.8 if self.mission else 0.25):
            extra: dict[str, Any] = {} if self.app else {"referrer": self.rng.choice(REFERRERS)}
            self.emit("page_view", url=self.url(f"/c/{self.category}"), page_type="category",
                      category=self.category, **extra)
        else:
            self.emit("page_view", url=self.url("/"), page_type="home")

    def browse_category(self) -> None:
        c = self.customer
        self.category = weighted_choice(self.rng, list(c.category_weights), c.category_weights)
        self.emit("page_view", url=self.url(f"/c/{self.category}"), page_type="category",
                  category=self.category)

    def search(self) -> None:
        rng = self.rng
        category = weighted_choice(rng, list(self.customer.category_weights),
                                   self.customer.category_weights)
        words = rng.choice(SEARCH_WORDS[category])
        if rng.random() < 0.3:
            words = f"{self.pick_product(category).brand.lower()} {words}"
        self.category = category
        results = 0 if rng.random() < 0.05 else rng.randint(1, 240)
        self.emit("search", query=words, results_count=results)

    def view_product(self) -> None:
        product = self.pick_product(self.category)  # drawn always: the sessions' draws stay
        if self.sim.tastes is not None:
            product = self.steer(product)
        self.viewed = [*[p for p in self.viewed if p != product][-RECENT_VIEWS + 1:], product]
        self.emit("product_view", product=product.as_event())

    def steer(self, picked: Product) -> Product:
        """With item tastes, the product actually viewed instead of ``picked`` (the tastes' own
        random stream): a complement of what was just carted, a product considered in an
        earlier session, or one similar to the last viewed (:data:`COMPLEMENT`, ...)."""
        tastes, carted = self.sim.tastes, self.carted
        assert tastes is not None
        rng, self.carted = tastes.rng, None
        considered = self.state.considered
        if carted is not None and rng.random() < COMPLEMENT:
            product = self.liked_most(tastes.complements[carted.product_id])
        elif rng.random() < REVISIT and (earlier := [
                p for p in considered if p.category == self.category and p not in self.viewed]):
            product = rng.choice(earlier)
        elif self.viewed and rng.random() < RELATED:
            last = self.viewed[-1]
            product = self.liked_most([p for p in tastes.similar(last) if p != last] or [last],
                                      rng.random())
        else:
            product = picked
        self.state.considered = [*[p for p in considered if p != product][1 - CONSIDERED:],
                                 product]
        return product

    def liked_most(self, products: list[Product], draw: float | None = None) -> Product:
        """One of ``products`` by this customer's choice weights (``draw`` in [0, 1)), or with
        none given, the one they pick most readily."""
        weights = [self.sim.weight_of(self.index, p) for p in products]
        if draw is None:
            return products[weights.index(max(weights))]
        at, total = draw * sum(weights), 0.0
        for product, weight in zip(products, weights, strict=True):
            total += weight
            if at < total:
                return product
        return products[-1]

    def add_to_cart(self) -> None:
        rng = self.rng
        product = self.viewed[-1] if rng.random() < 0.7 else rng.choice(self.viewed)
        self.carted = product
        bulk = product.category in {"grocery", "baby"}
        quantity = rng.choice((1, 1, 2, 3, 4)) if bulk else rng.choice((1, 1, 1, 1, 2))
        cart = self.state.cart
        cart[product.product_id] = cart.get(product.product_id, 0) + quantity
        self.emit("cart_add", product=product.as_event(), quantity=quantity)

    def remove_from_cart(self) -> None:
        cart = self.state.cart
        product_id = self.rng.choice(list(cart))
        units = cart[product_id]
        quantity = units if self.rng.random() < 0.8 else self.rng.randint(1, units)
        cart[product_id] -= quantity
        if not cart[product_id]:
            del cart[product_id]
        self.emit("cart_remove", product_id=product_id, quantity=quantity)

    def update_profile(self) -> None:
        c, rng = self.customer, self.rng
        self.emit("page_view", url=self.url("/account"), page_type="account")
        self.wait(20, 120)
        everything: dict[str, Any] = {
            "age_band": c.age_band,
            "gender": c.gender,
            "postcode": f"{random.Random(c.customer_id).randint(10000, 99999)}",
            "city": c.city,
            "country": c.country,
            "timezone": c.timezone,
            "preferred_language": c.locale,
            "extra": {"newsletter": rng.random() < 0.5,
                      "loyalty_tier": rng.choice(LOYALTY_TIERS)}
            | ({"children": rng.randint(1, 3)} if c.persona == "new_parent" else {}),
        }
        keys = rng.sample(sorted(everything), k=rng.randint(1, 4))
        # The customer edits their own account: declared data (the most trusted source).
        self.emit("profile_update", source="declared",
                  attributes={k: everything[k] for k in sorted(keys)})

    def report_weather(self) -> None:
        c = self.customer
        own = random.Random(f"{self.context['session_id']}:weather")
        if own.random() >= WEATHER_SHARE:
            return
        self.t += own.randint(500, 3000)  # a moment after landing (each event of a customer later)
        day = self.t // 86_400_000
        today = random.Random(f"{c.city}:{day}")
        weather = today.choices(WEATHERS, WEATHER_ODDS)[0]
        place = "".join(ch for ch in c.city.lower() if ch.isascii() and (ch.isalnum() or ch in
                                                                           " .-"))
        self.emit("context_update", weather=weather,
                  temperature_c=round(today.gauss(12.0, 8.0), 1),
                  place=f"city:{place or 'unknown'}"[:64])

    def change_consent(self) -> None:
        rng, consents = self.rng, self.state.consents
        purpose = rng.choice(CONSENT_PURPOSES)
        granted = (not consents[purpose]) if rng.random() < 0.7 else consents[purpose]
        consents[purpose] = granted
        if purpose == "email" and not granted and rng.random() < 0.6:
            # an unsubscribe link in an email: outside any web or app session
            self.emit("consent_update", channel="email", in_session=False, purpose=purpose,
                      granted=False, source="unsubscribe_link")
            return
        source = "app_settings" if self.app else rng.choice(("web_form", "preference_centre"))
        self.emit("consent_update", purpose=purpose, granted=granted, source=source)

    def checkout(self) -> None:
        """Checkout steps, then a purchase of the whole cart (most missions, few other sessions)."""
        rng, cart = self.rng, self.state.cart
        buys = rng.random() < (BUY_ON_MISSION if self.mission else BUY_WHILE_BROWSING)
        if not buys and rng.random() < 0.6:
            return  # leaves with the cart full
        prices = {pid: self.sim.products[pid] for pid in cart}
        value_cents = sum(prices[pid].price_cents * q for pid, q in cart.items())
        items = sum(cart.values())
        self.emit("page_view", url=self.url("/cart"), page_type="cart")
        steps = ("start", "shipping", "payment", "review")
        last = len(steps) if buys else rng.randint(1, len(steps))
        for step in steps[:last]:
            self.wait(10, 90)
            self.emit("checkout", cart_value=value_cents / 100, items=items, step=step)
        if not buys:
            return
        self.wait(5, 60)
        self.sim.orders += 1
        lines = [
            {"product_id": pid, "category": prices[pid].category, "brand": prices[pid].brand,
             "quantity": quantity, "unit_price": prices[pid].price}
            for pid, quantity in cart.items()
        ]
        self.emit("purchase", order_id=f"{self.sim.prefix}o{self.sim.orders}", lines=lines,
                  amount=value_cents / 100, currency=CURRENCY)
        cart.clear()

    def answer_banner(self) -> None:
        """A customer's first visit: on the page they landed on, the consent banner records
        their personalisation answer (the workers profile nobody without it:
        STREAMPROC_CONSENT_DEFAULTS). Channel consents (email, sms, ...) are given later, one at
        a time (:meth:`change_consent`). A fixed delay, not a random one: the random draws,
        and so every other event, stay those of the versions before the banner."""
        self.state.banner_answered = True
        self.t += BANNER_DELAY_MS
        self.emit("consent_update", purpose="personalisation",
                  granted=self.state.consents["personalisation"], source="consent_banner")

    def run(self) -> None:
        rng, c, cart = self.rng, self.customer, self.state.cart
        self.land()
        if self.app:
            self.report_weather()
        if not self.state.banner_answered:
            self.answer_banner()
        if rng.random() < 0.03:
            self.wait(5, 60)
            self.update_profile()
        if rng.random() < 0.025:
            self.wait(5, 60)
            self.change_consent()
        steps = 1 + int(rng.expovariate(1.0 / c.session_length))
        # (switch category, search, add to cart): cumulative thresholds of the step roll
        switch, search, add = (0.03, 0.13, 0.38) if self.mission else (0.15, 0.25, 0.29)
        for _ in range(steps):
            self.wait(4, 75)
            roll = rng.random()
            if roll < switch:
                self.browse_category()
            elif roll < search:
                self.search()
            elif roll < add and self.viewed and len(cart) < MAX_CART_LINES:
                self.add_to_cart()
            elif roll < add + 0.04 + 0.02 * len(cart) and cart:
                self.remove_from_cart()
            else:
                self.view_product()
            if self.sim.slot_requests and self.viewed and rng.random() < BACK_HOME:
                self.wait(3, 20)
                self.emit("page_view", url=self.url("/"), page_type="home")
        if cart:
            self.wait(10, 60)
            self.checkout()


class _Simulator:
    def __init__(self, population: Population, start_ms: int, seed: int,
                 slot_requests: bool = False, item_tastes: bool = False) -> None:
        self.population = population
        self.slot_requests = slot_requests
        self.tastes = ItemTastes(population, seed) if item_tastes else None
        self.rng = random.Random(f"sessions:{population.seed}:{seed}")
        self.prefix = f"sim{seed}-{_base36(start_ms)}-"
        self.topic_of = {name: s.topic for name, s in load_event_schemas().items()}
        self.products = population.catalogue.by_id()
        self._weights: dict[tuple[int, str], list[float]] = {}
        self.sessions = 0
        self.orders = 0
        self.states = []
        for _ in population.customers:
            consents = {p: self.rng.random() < share for p, share in INITIAL_CONSENT.items()}
            self.states.append(_State(consents=consents))

    def choice_weights(self, index: int, category: str) -> list[float]:
        """How readily customer ``index`` picks each product of ``category`` (catalogue order)."""
        key = (index, category)
        weights = self._weights.get(key)
        if weights is None:
            weights = self._weights[key] = product_weights(self.population, index, category,
                                                           self.tastes)
        return weights

    def weight_of(self, index: int, product: Product) -> float:
        """How readily customer ``index`` picks ``product`` (:meth:`choice_weights`)."""
        assert self.tastes is not None
        return self.choice_weights(index, product.category)[self.tastes.position[
            product.product_id]]

    def next_session(self, customer: Customer, after_ms: int) -> int:
        """Start of the customer's next session: a Poisson process thinned by hour of day."""
        weights = customer.hour_weights
        peak, mean = max(weights), sum(weights) / 24
        per_ms = customer.sessions_per_day / 86_400_000 * peak / mean
        t = float(after_ms)
        while True:
            t += self.rng.expovariate(per_ms)
            hour = int(t // 3_600_000) % 24
            if self.rng.random() * peak < weights[hour]:
                return int(t)

    def run(self, start_ms: int) -> Iterator[SimEvent]:
        # heap of (event time, sequence, customer index, event or None for "session starts")
        heap: list[tuple[int, int, int, tuple[str, dict[str, Any]] | None]] = []
        seq = 0
        for index, customer in enumerate(self.population.customers):
            heap.append((self.next_session(customer, start_ms), seq, index, None))
            seq += 1
        heapq.heapify(heap)
        emitted = 0
        while heap:
            t, _, index, item = heapq.heappop(heap)
            if item is None:
                session = _Session(self, index, t)
                session.run()
                for ts, topic, event in session.out:
                    heapq.heappush(heap, (ts, seq, index, (topic, event)))
                    seq += 1
                customer = self.population.customers[index]
                gap_from = session.t + MIN_SESSION_GAP_MS
                heapq.heappush(heap, (self.next_session(customer, gap_from), seq, index, None))
                seq += 1
                continue
            topic, event = item
            emitted += 1
            # envelope first, in the schema's order, for readable messages
            head = {"event_id": f"{self.prefix}e{emitted}", "type": "", "customer_id": "",
                    "ts": format_ts(t)}
            event = head | event
            yield SimEvent(topic, event["customer_id"], event)


# Share of the catalogue the simulated shop's product feed says is out of stock.
OUT_OF_STOCK = 0.05


def product_feed(population: Population, start: datetime, seed: int = 7) -> list[SimEvent]:
    """The shop's product feed at ``start``: one ``product`` event per catalogue product
    (topic ``products``, keyed by the product id), :data:`OUT_OF_STOCK` of them out of stock,
    with a margin. Deterministic, like :func:`generate_events` (its own random stream); event
    ids are unique per (seed, start).

    >>> from streamproc.simulator.population import Population
    >>> feed = product_feed(Population.generate(2, seed=1), datetime(2026, 3, 1, tzinfo=UTC))
    >>> len(feed), feed[0].topic, feed[0].key == feed[0].event["product_id"]
    (360, 'products', True)
    >>> 0 < sum(not e.event["in_stock"] for e in feed) < 36
    True
    """
    start_ms = _to_ms(start)
    rng = random.Random(f"stock:{population.seed}:{seed}")
    prefix = f"sim{seed}-{_base36(start_ms)}-feed-"
    out = []
    for items in population.catalogue.products.values():
        for p in items:
            event = {"event_id": prefix + p.product_id, "type": "product",
                     "ts": format_ts(start_ms), **p.as_event(),
                     "in_stock": rng.random() >= OUT_OF_STOCK,
                     "margin": round(rng.uniform(0.1, 0.5), 2)}
            out.append(SimEvent("products", p.product_id, event))
    return out


def generate_events(population: Population, start: datetime, seed: int = 7, *,
                    slot_requests: bool = False,
                    item_tastes: bool = False) -> Iterator[SimEvent]:
    """Endless events of ``population`` from event time ``start`` on, in event-time order.

    With ``slot_requests``, pages also ask for their slots (:data:`PAGE_SLOTS`); without, the
    events are exactly those of earlier versions (the benchmark's stay comparable). With
    ``item_tastes``, customers also have hidden item-level tastes (:class:`ItemTastes`, for
    the recommendations' benchmark); without, their choices are those of earlier versions.

    Deterministic: the same population, ``start`` and ``seed`` give the same events. Event ids
    (``sim<seed>-<start in base 36>-e<n>``) are unique per (seed, start), so a second run from
    another start never collides with the first in the workers' duplicate filter.
    """
    start_ms = _to_ms(start)
    return _Simulator(population, start_ms, seed, slot_requests, item_tastes).run(start_ms)


def product_weights(population: Population, index: int, category: str,
                    tastes: ItemTastes | None = None) -> list[float]:
    """The weights customer ``index`` picks a product of ``category`` with, in the catalogue's
    order: affordability for their budget, cheapness for their price sensitivity, their brand
    preferences and, with ``tastes``, their hidden item-level tastes. Ground truth the events
    only show through what is picked (the recommendations' benchmark ranks by it as a ceiling).
    """
    c = population.customers[index]
    items = population.catalogue.products[category]
    median = items[len(items) // 2].price
    weights = []
    for p in items:
        relative = p.price / median
        affordability = 1.0 if relative <= c.budget else (c.budget / relative) ** (
            1 + 4 * c.price_sensitivity)
        cheapness = (1.0 / relative) ** (2 * c.price_sensitivity)
        weight = affordability * cheapness * c.brand_weights.get(p.brand, 1.0)
        if tastes is not None:
            weight *= tastes.weight(index, p.product_id)
        weights.append(weight)
    return weights


class ItemTastes:
    """Hidden item-level tastes, what item relations can learn and category popularity cannot.
    Neither styles, likes nor complements are ever sent in events.

    * **Styles**: every product has one of :data:`STYLES` (across categories: an outdoorsy tent
      and an outdoorsy jacket), every customer likes :data:`LIKED_STYLES` of them and picks a
      liked product ``TASTE_BOOST`` times as readily (:func:`product_weights`).
    * **Complements**: every product has two, one in each of its category's
      :data:`COMPANIONS` (of its style when there is one): right after a cart add, a view goes
      to the complement the customer likes more with :data:`COMPLEMENT` (bought together).
    * **Consideration**: a view goes back to a product of the session's category that the
      customer viewed in an earlier session (of their :data:`CONSIDERED` latest) with
      :data:`REVISIT`; shoppers come back to what they looked at before they buy.
    * **Similar products**: else a view follows the last viewed product's style in its
      category with :data:`RELATED` (a "similar products" strip), by the customer's weights.

    Drawn from their own random streams (``styles:``, ``tastes:``, ``picks:``), so the sessions'
    stream draws as without them: the same sessions, event types and times, other products.

    >>> from streamproc.simulator.population import Population
    >>> t = ItemTastes(Population.generate(2, seed=1))
    >>> sorted({t.weight(0, p) for p in t.style})
    [1.0, 6.0]
    >>> [p.category for p in t.complements["shoes-0000"]]
    ['sports', 'dresses']
    """

    def __init__(self, population: Population, seed: int = 7) -> None:
        rng = random.Random(f"styles:{population.seed}")
        catalogue = population.catalogue.products
        self.style = {p.product_id: rng.randrange(STYLES)
                      for items in catalogue.values() for p in items}
        self.liked = [frozenset(random.Random(f"tastes:{population.seed}:{i}").sample(
            range(STYLES), LIKED_STYLES)) for i in range(len(population.customers))]
        self.position = {p.product_id: i for items in catalogue.values()
                         for i, p in enumerate(items)}
        self._by_style: dict[tuple[str, int], list[Product]] = {}
        for category, items in catalogue.items():
            for p in items:
                self._by_style.setdefault((category, self.style[p.product_id]), []).append(p)
        self.complements: dict[str, list[Product]] = {}
        for category, items in catalogue.items():
            for p in items:
                self.complements[p.product_id] = [
                    rng.choice(self._by_style.get((companion, self.style[p.product_id]))
                               or [q for q in catalogue[companion] if q != p])
                    for companion in COMPANIONS[category]]
        self.rng = random.Random(f"picks:{population.seed}:{seed}")

    def weight(self, index: int, product_id: str) -> float:
        return TASTE_BOOST if self.style.get(product_id) in self.liked[index] else 1.0

    def similar(self, product: Product) -> list[Product]:
        """The products of ``product``'s category and style (itself included)."""
        return self._by_style[(product.category, self.style[product.product_id])]
