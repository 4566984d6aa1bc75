"""Customers whose response to an action depends on who they are and on the moment.

Why: a contextual policy earns its keep only when the best action differs between customers of
one segment. Here each visit is a *situation*: a customer (value tier, usual device, city) at a
moment (local hour, weekday, the day's weather in their city, reported as a region's
``context_update`` would be), with a purchase intent and maybe a basket; the hidden response to
each of :data:`ACTIONS` depends on those features, and only partly on the value tier (what a
bucketed bandit keyed by the value tier can see):

* ``app_discount`` (10% off in the app): converts on mobile (+6 points), hardly on a desktop;
* ``premium_bundle``: for the very profitable and profitable tiers (+4 points), large orders;
* ``free_delivery``: with a small basket (under 60), +7 points, revenue about the basket; in
  wet weather (rain, snow, storm) +6 points more: nobody wants to go out;
* ``lunch_deal``: at lunchtime (11:00 to 14:00 local), +8 points, small orders;

each on a base of 1 point, multiplied by ``0.5 + intent``. Revenue is log-normal around the
action's typical order (a long tail: one order in a few hundred is ten times the typical one).
Deterministic from the seed.

>>> world = Situations(seed=7)
>>> s = world.visit(0)
>>> set(s.profile) >= {"device", "segments", "scores", "cart", "purchases"}
True
>>> 0 < world.conversion(s, "lunch_deal") < 1
True
>>> mobile = Situation(world.visit(1).profile | {"device": "mobile"}, 0)
>>> desktop = Situation(world.visit(1).profile | {"device": "desktop"}, 0)
>>> world.conversion(mobile, "app_discount") > 3 * world.conversion(desktop, "app_discount")
True
>>> wet = Situation(mobile.profile | {"surroundings": {"weather": "rain"}}, 0)
>>> world.conversion(wet, "free_delivery") > world.conversion(mobile, "free_delivery")
True
"""

from __future__ import annotations

import math
import random
from typing import Any, NamedTuple

ACTIONS = ("app_discount", "premium_bundle", "free_delivery", "lunch_deal")
VALUE_TIERS = ("very_profitable", "profitable", "emerging", "unprofitable")
TIER_SHARES = (0.1, 0.25, 0.35, 0.3)
DEVICES = ("mobile", "desktop", "tablet")
CITIES = 12
# The day's weather of a city, and its odds (wet: rain, snow, storm; see
# streamproc.decisions.contextual.WET).
WEATHERS = ("clear", "cloudy", "rain", "snow", "storm", "fog")
WEATHER_ODDS = (0.35, 0.3, 0.22, 0.05, 0.03, 0.05)
WET = frozenset({"rain", "snow", "storm"})
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
# Typical order per action (the median of its log-normal revenue).
TYPICAL_ORDER = {"app_discount": 35.0, "premium_bundle": 140.0, "free_delivery": 45.0,
                 "lunch_deal": 18.0}


class Situation(NamedTuple):
    profile: dict[str, Any]  # what the decision engine would see of the customer
    ts_ms: int  # the moment (UTC; the profiles have no timezone)
    customer: int = 0  # the customer's index in the population


class Customer(NamedTuple):
    tier: str
    device: str
    last_order_days: float | None


class Situations:
    """A population of ``customers`` and their visits (see the module docstring)."""

    def __init__(self, customers: int = 5000, seed: int = 7) -> None:
        rng = random.Random(seed)
        self.rng = random.Random(seed + 1)
        self.seed = seed
        self.customers = [
            Customer(rng.choices(VALUE_TIERS, TIER_SHARES)[0],
                     rng.choices(DEVICES, (0.55, 0.35, 0.1))[0],
                     rng.expovariate(1 / 40) if rng.random() < 0.6 else None)
            for _ in range(customers)]
        # Drawn apart, so that the customers and their visits stay those of earlier versions.
        cities = random.Random(seed + 2)
        self.cities = [cities.randrange(CITIES) for _ in range(customers)]

    def weather(self, city: int, at_ms: int) -> dict[str, Any]:
        """The day's weather of ``city``: the same for everyone there, reported every hour (the
        report of the hour of ``at_ms``)."""
        today = random.Random(f"{self.seed}:{city}:{at_ms // DAY_MS}")
        return {"weather": today.choices(WEATHERS, WEATHER_ODDS)[0],
                "temperature_c": round(today.gauss(12.0, 8.0), 1),
                "place": f"city:sim-{city}", "ts_ms": at_ms - at_ms % HOUR_MS}

    def visit(self, ts_ms: int) -> Situation:
        """A random customer's visit at about ``ts_ms``: its hour follows a day's traffic."""
        rng = self.rng
        index = rng.randrange(len(self.customers))
        c = self.customers[index]
        hour = min(23, max(0, int(rng.gauss(14, 4.5))))
        day = ts_ms // DAY_MS
        at = day * DAY_MS + hour * HOUR_MS + rng.randrange(HOUR_MS)
        device = c.device if rng.random() < 0.85 else rng.choice(DEVICES)
        intent = rng.random() ** 2
        basket = round(rng.uniform(8, 150), 2) if rng.random() < 0.4 else 0.0
        profile: dict[str, Any] = {
            "device": device,
            "segments": {"value_tier": c.tier,
                         "intent": "hot" if intent > 0.6 else "warm" if intent > 0.25
                         else "cold"},
            "scores": {"intent": round(intent, 3)},
            "cart": {"value": basket, "items": {"p1": {}} if basket else {}},
            "purchases": {"last_ms": None if c.last_order_days is None
                          else at - int(c.last_order_days * DAY_MS)},
        }
        profile["surroundings"] = self.weather(self.cities[index], at)
        return Situation(profile, at, index)

    @staticmethod
    def conversion(s: Situation, action: str) -> float:
        """The hidden probability that ``action`` converts in situation ``s``."""
        p = s.profile
        lift = 0.0
        if action == "app_discount" and p["device"] == "mobile":
            lift = 0.06
        elif action == "premium_bundle" and p["segments"]["value_tier"] in VALUE_TIERS[:2]:
            lift = 0.04
        elif action == "free_delivery":
            lift = (0.07 if 0 < p["cart"]["value"] < 60 else 0.0) + (
                0.06 if (p.get("surroundings") or {}).get("weather") in WET else 0.0)
        elif action == "lunch_deal" and 11 <= (s.ts_ms % DAY_MS) // HOUR_MS < 14:
            lift = 0.08
        return min(0.95, (0.01 + lift) * (0.5 + float(p["scores"]["intent"])))

    def respond(self, s: Situation, action: str) -> float:
        """The revenue of the visit after ``action``: 0 without a conversion."""
        if self.rng.random() >= self.conversion(s, action):
            return 0.0
        typical = TYPICAL_ORDER[action]
        if action == "free_delivery":
            typical = max(typical, s.profile["cart"]["value"] + 15)
        return round(typical * math.exp(0.6 * self.rng.gauss(0, 1)), 2)
