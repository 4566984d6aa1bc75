"""Hidden preferences over the decision catalogue, and feedback the way a persona would give it.

Why: a learning policy is judged by whether it finds, from feedback alone, which action works
for whom. Each persona gets, for every action id of the catalogue, a hidden conversion
probability; each customer a jittered copy of it. Nothing of it appears in an event: the
decision engine sees only segments and behaviour, the simulator answers decisions with it.

The structure (deterministic from the seed, the persona and the action id, so it works with
any catalogue):

* base conversion ``0.01 + 0.08 * persona.propensity`` (buying-mission personas convert more);
* a lift per (persona, action): log-normal, ``exp(0.8 * z)`` with ``z`` a standard normal drawn
  from a hash, so actions differ by about x2 to x5 within a persona and the best action differs
  between personas;
* an action whose id names a category (``running_shoes_10pct``, ``baby_essentials_15pct``) has
  its lift multiplied by ``1 + 3 * s``, ``s`` the persona's share of interest in that category
  (a new parent likes the baby offer);
* neutral, non-personalised actions (:data:`NEUTRAL_ACTIONS`) have a lift of 0.6 for everyone;
* each customer multiplies each probability by ``exp(0.25 * z)`` (individual taste);
* a delivery action (its id names ``delivery``: ``rainy_day_delivery``, ``free_delivery_nudge``)
  converts :data:`WET_DELIVERY_LIFT` times as often when the decision saw wet weather (its
  ``features`` say ``weather_wet``: a rain, snow or storm report, the customer's own or their
  region's); nobody wants to go out;
* a click happens with ``min(0.9, 3 * p_convert)``; a conversion only after a click, so
  ``P(conversion | click) = p_convert / p_click``; revenue is log-normal around the customer's
  budget times the median price of their favourite category.

>>> prefs = Preferences(["cart_reminder", "category_picks"], seed=7)
>>> from streamproc.simulator.population import Population
>>> customer = Population.generate(1, seed=7).customers[0]
>>> p = prefs.conversion(customer, "cart_reminder")
>>> 0 < p < 1 and p == prefs.conversion(customer, "cart_reminder")
True
>>> events = prefs.respond(customer, {"decision_id": "d-1", "ts_ms": 0,
...                                   "action_id": "cart_reminder"})
>>> at, event = events[0]
>>> at, event["outcome"], event["ts"]
(0, 'impression', '1970-01-01T00:00:00.000Z')
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Sequence
from statistics import NormalDist
from typing import Any

from streamproc.simulator.population import CATEGORIES, MEDIAN_PRICE, PERSONAS, Customer
from streamproc.simulator.sessions import format_ts

# The personalised actions of the shipped catalogue (schemas/examples/catalogue.yaml, on the
# decisions branch) but the call-centre one; any list of ids works.
DEFAULT_ACTIONS: tuple[str, ...] = (
    "cart_reminder", "free_delivery_nudge", "running_shoes_10pct", "baby_essentials_15pct",
    "hot_intent_bundle", "thank_you_cross_sell", "winback_20pct",
)
# Neutral, non-personalised actions (the catalogue's per-slot defaults, and rules-v0's).
NEUTRAL_ACTIONS: tuple[str, ...] = (
    "bestsellers_hero", "popular_products", "free_delivery_banner", "newsletter_digest",
    "default_content",
)
NEUTRAL_ACTION = "bestsellers_hero"  # the homepage_hero slot's
CATEGORY_BOOST = 3.0  # an action naming a category: lift x (1 + this x persona's interest share)
NEUTRAL_LIFT = 0.6
WET_DELIVERY_LIFT = 2.5  # a delivery action in wet weather
ACTION_SPREAD = 0.8  # sd of the log-lift between actions, per persona
CUSTOMER_SPREAD = 0.25  # sd of a customer's own log-lift per action
CLICK_DELAY_MS = 30_000
CONVERSION_DELAY_MS = 10 * 60_000
OPEN_RATE = 1 / 3  # messages opened without a click
SURVEY_RATE = 0.1  # decisions followed by an NPS answer
MESSAGE_CHANNELS = frozenset({"email", "push"})
SURVEY_CHANNELS = frozenset({"web", "app", "email", "sms"})  # the events' channels asked on
_NORMAL = NormalDist()


def _normal(*parts: object) -> float:
    """A standard normal number that depends only on ``parts`` (portable, unlike hash())."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    u = (int.from_bytes(digest, "big") + 0.5) / 2**64
    return _NORMAL.inv_cdf(u)


class Preferences:
    """Hidden conversion probabilities per persona and customer over the given action ids."""

    def __init__(self, actions: Sequence[str] = DEFAULT_ACTIONS, seed: int = 7,
                 neutral: Sequence[str] = NEUTRAL_ACTIONS, *,
                 click_delay_ms: int = CLICK_DELAY_MS,
                 conversion_delay_ms: int = CONVERSION_DELAY_MS) -> None:
        self.actions = tuple(actions)
        self.neutral = frozenset(neutral)
        self.seed = seed
        self.click_delay_ms = click_delay_ms
        self.conversion_delay_ms = conversion_delay_ms
        self.persona_rates: dict[str, dict[str, float]] = {p.name: {} for p in PERSONAS}
        for action in (*self.actions, *neutral):
            self._learn_action(action)

    def _learn_action(self, action_id: str) -> None:
        """Each persona's rate for an action: a pure function of the seed and the ids, so an
        action first met in a live decision gets the same rate as one listed up front."""
        for persona in PERSONAS:
            base = 0.01 + 0.08 * persona.propensity
            if action_id in self.neutral:
                rate = base * NEUTRAL_LIFT
            else:
                interest = sum(persona.categories.values())
                rate = base * math.exp(ACTION_SPREAD * _normal(self.seed, persona.name, action_id))
                for category in CATEGORIES:
                    if category in action_id:
                        rate *= 1 + CATEGORY_BOOST * persona.categories.get(category, 0) / interest
            self.persona_rates[persona.name][action_id] = rate

    def add_neutral(self, action_id: str) -> None:
        """Treat ``action_id`` as a neutral action from now on (a live decision said so)."""
        if action_id not in self.neutral:
            self.neutral = self.neutral | {action_id}
            self._learn_action(action_id)

    def conversion(self, customer: Customer, action_id: str) -> float:
        """The customer's hidden probability of converting when shown ``action_id`` (any id:
        one not listed at construction gets its rates on first use)."""
        rates = self.persona_rates[customer.persona]
        if action_id not in rates:
            self._learn_action(action_id)
        if action_id in self.neutral:
            return rates[action_id]
        own = math.exp(CUSTOMER_SPREAD * _normal(self.seed, customer.customer_id, action_id))
        return min(0.95, rates[action_id] * own)

    def best_action(self, customer: Customer) -> str:
        return max(self.actions, key=lambda a: self.conversion(customer, a))

    def respond(self, customer: Customer,
                decision: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
        """``(event time ms, feedback event)`` for a decision (``decision_id``, ``action_id``,
        ``ts_ms``, and ``wet``: whether it saw wet weather): an impression, then maybe a click,
        then maybe a conversion with revenue. Deterministic in the decision id; the events
        follow ``schemas/events/feedback``."""
        rng = random.Random(f"feedback:{self.seed}:{decision['decision_id']}")
        action, ts = decision["action_id"], int(decision["ts_ms"])
        p_convert = self.conversion(customer, action)
        if decision.get("wet") and "delivery" in action and action not in self.neutral:
            p_convert = min(0.95, p_convert * WET_DELIVERY_LIFT)
        p_click = min(0.9, 3.0 * p_convert)
        events = [self._event(customer, decision, "impression", ts)]
        if rng.random() < p_click:
            events.append(self._event(customer, decision, "click", ts + self.click_delay_ms))
            if rng.random() < p_convert / p_click:
                top = customer.top_categories(1)[0]
                revenue = MEDIAN_PRICE[top] * customer.budget * rng.lognormvariate(0.0, 0.4)
                at, event = self._event(customer, decision, "conversion",
                                        ts + self.conversion_delay_ms)
                event["revenue"] = round(revenue, 2)
                events.append((at, event))
        return events

    def after(self, customer: Customer, decision: dict[str, Any], channel: str,
              events: list[tuple[int, dict[str, Any]]]) -> list[tuple[int, dict[str, Any]]]:
        """What a message and a shop visit lead to beyond :meth:`respond`'s events: an ``open``
        of a message (email, push: always before a click, else 1 in 3), and now and then an NPS
        ``survey`` answer (1 in 10 decisions; 9-10 likelier after a conversion). Their own
        random streams: ``respond``'s events are the same with or without them."""
        rng = random.Random(f"after:{self.seed}:{decision['decision_id']}")
        ts = int(decision["ts_ms"])
        outcomes = {e["outcome"] for _, e in events}
        more: list[tuple[int, dict[str, Any]]] = []
        opened = rng.random() < OPEN_RATE
        if channel in MESSAGE_CHANNELS and ("click" in outcomes or opened):
            more.append(self._event(customer, decision, "open", ts + self.click_delay_ms // 2))
        if rng.random() < SURVEY_RATE:
            happy = "conversion" in outcomes
            score = round(rng.gauss(8.5 if happy else 7.0, 1.6))
            at = ts + self.conversion_delay_ms + self.click_delay_ms
            more.append((at, {
                "event_id": f"{decision['decision_id']}:survey", "type": "survey",
                "customer_id": customer.customer_id, "ts": format_ts(at),
                "channel": channel if channel in SURVEY_CHANNELS else "web",
                "score": min(10, max(0, score)), "survey_id": "nps-sim"}))
        return more

    @staticmethod
    def _event(customer: Customer, decision: dict[str, Any], outcome: str,
               ts_ms: int) -> tuple[int, dict[str, Any]]:
        return ts_ms, {"event_id": f"{decision['decision_id']}:{outcome}", "type": "feedback",
                       "customer_id": customer.customer_id, "ts": format_ts(ts_ms),
                       "decision_id": decision["decision_id"], "outcome": outcome,
                       "action_id": decision["action_id"]}
