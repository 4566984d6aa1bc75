"""A deterministic synthetic population: customers with hidden personas, and a product catalogue.

Why synthetic customers carry a *persona*: later stages (segmentation, intent, next best action)
are judged by whether they rediscover structure that was put there on purpose. Each customer is
drawn from one of a handful of archetypes (:data:`PERSONAS`) with individual jitter, and keeps the
archetype's name as hidden ground truth: it never appears in an event.

Everything is derived from ``random.Random`` instances seeded with strings (deterministic across
processes, unlike ``hash()``), one per customer, so ``Population.generate(2000, seed)`` extends
``Population.generate(1000, seed)`` instead of reshuffling it.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

CATEGORIES: tuple[str, ...] = (
    "shoes", "dresses", "electronics", "books", "home", "beauty",
    "sports", "toys", "baby", "grocery", "garden", "jewellery",
)

# Brands per category, and the category's median price in EUR (prices are log-normal around it).
BRANDS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "shoes": ("Stride", "Kicko", "Solea", "Trailborn"),
    "dresses": ("Maison Lune", "Verano", "Atelier Nine", "Bloomwear"),
    "electronics": ("Voltix", "Nexon", "Pixelform", "Auralink"),
    "books": ("Penwood Press", "Northlight", "Inkwell", "Foliant"),
    "home": ("Hearthly", "Casa Nova", "Nordhem", "Loom & Co"),
    "beauty": ("Glowe", "Purelle", "Lumiere", "Skinwise"),
    "sports": ("Apexfit", "Kinetic", "Trailborn", "Summit"),
    "toys": ("Tinkertots", "Brickly", "Playnest", "Wonderbox"),
    "baby": ("Cuddle", "Tinysteps", "Babybloom", "Nestling"),
    "grocery": ("FreshFarm", "Daily Basket", "Green Valley", "Pantry Co"),
    "garden": ("Greenthumb", "Terrafina", "Rootwell", "Bloomfield"),
    "jewellery": ("Aurelia", "Silverleaf", "Maison Lune", "Gemora"),
})
MEDIAN_PRICE: Mapping[str, float] = MappingProxyType({
    "shoes": 80.0, "dresses": 65.0, "electronics": 220.0, "books": 15.0, "home": 45.0,
    "beauty": 25.0, "sports": 40.0, "toys": 30.0, "baby": 35.0, "grocery": 6.0,
    "garden": 35.0, "jewellery": 120.0,
})
PRODUCTS_PER_CATEGORY = 30

# (locale, country, city, IANA time zone): where customers live.
PLACES: tuple[tuple[str, str, str, str], ...] = (
    ("en-GB", "GB", "London", "Europe/London"),
    ("en-GB", "GB", "Manchester", "Europe/London"),
    ("en-IE", "IE", "Dublin", "Europe/Dublin"),
    ("de-DE", "DE", "Berlin", "Europe/Berlin"),
    ("de-DE", "DE", "Munich", "Europe/Berlin"),
    ("fr-FR", "FR", "Paris", "Europe/Paris"),
    ("fr-FR", "FR", "Lyon", "Europe/Paris"),
    ("es-ES", "ES", "Madrid", "Europe/Madrid"),
    ("it-IT", "IT", "Milan", "Europe/Rome"),
    ("nl-NL", "NL", "Amsterdam", "Europe/Amsterdam"),
    ("pl-PL", "PL", "Warsaw", "Europe/Warsaw"),
    ("pt-PT", "PT", "Lisbon", "Europe/Lisbon"),
)
AGE_BANDS: tuple[str, ...] = ("18-24", "25-34", "35-44", "45-54", "55-64", "65+")
GENDERS: tuple[str, ...] = ("female", "male", "non_binary", "undisclosed")


@dataclass(frozen=True)
class Persona:
    """An archetype: the template customers are drawn from (with jitter).

    ``categories`` are relative interest weights (unlisted categories get a small floor), ``hours``
    the hours of day (UTC) the archetype is most active, ``price_sensitivity`` 0 (price-blind) to
    1 (buys the cheapest), ``brand_loyalty`` 0 (any brand) to 1 (one or two brands only),
    ``propensity`` the share of sessions that are buying missions (which end in a purchase
    when the cart is not empty; other sessions rarely do).
    """

    name: str
    categories: Mapping[str, float]
    price_sensitivity: float
    brand_loyalty: float
    propensity: float
    sessions_per_day: float
    session_length: float  # mean number of browsing steps in a session
    devices: Mapping[str, float]  # desktop / mobile / tablet
    app_share: float  # share of sessions in the app rather than on the web
    hours: tuple[int, ...]
    age_bands: tuple[str, ...]


PERSONAS: tuple[Persona, ...] = (
    Persona("bargain_hunter", {"grocery": 3, "home": 2, "electronics": 2, "toys": 1.5, "shoes": 1},
            0.9, 0.1, 0.35, 4.0, 9, {"desktop": 0.3, "mobile": 0.6, "tablet": 0.1}, 0.3,
            (12, 13, 19, 20, 21), ("25-34", "35-44", "45-54")),
    Persona("loyal_fashion", {"dresses": 4, "shoes": 3, "jewellery": 2, "beauty": 2},
            0.3, 0.85, 0.55, 3.0, 7, {"desktop": 0.15, "mobile": 0.75, "tablet": 0.1}, 0.6,
            (8, 12, 20, 21, 22), ("18-24", "25-34", "35-44")),
    Persona("tech_enthusiast", {"electronics": 6, "books": 1.5, "sports": 1},
            0.2, 0.5, 0.45, 3.0, 8, {"desktop": 0.7, "mobile": 0.25, "tablet": 0.05}, 0.2,
            (21, 22, 23, 0), ("18-24", "25-34", "35-44")),
    Persona("window_shopper", {"dresses": 2, "jewellery": 2, "home": 2, "beauty": 1.5, "shoes": 1},
            0.6, 0.3, 0.04, 5.0, 11, {"desktop": 0.2, "mobile": 0.5, "tablet": 0.3}, 0.4,
            (10, 14, 15, 21, 22), ("18-24", "25-34", "45-54", "55-64")),
    Persona("new_parent", {"baby": 6, "toys": 2, "grocery": 2, "home": 1},
            0.5, 0.6, 0.6, 4.0, 6, {"desktop": 0.2, "mobile": 0.75, "tablet": 0.05}, 0.5,
            (5, 6, 13, 22, 23), ("25-34", "35-44")),
    Persona("home_gardener", {"garden": 5, "home": 3, "books": 1},
            0.5, 0.4, 0.4, 2.0, 7, {"desktop": 0.6, "mobile": 0.2, "tablet": 0.2}, 0.1,
            (9, 10, 11, 16, 17), ("45-54", "55-64", "65+")),
    Persona("active_lifestyle", {"sports": 5, "shoes": 3, "grocery": 1, "electronics": 1},
            0.4, 0.6, 0.45, 3.0, 7, {"desktop": 0.3, "mobile": 0.65, "tablet": 0.05}, 0.5,
            (6, 7, 18, 19), ("18-24", "25-34", "35-44", "45-54")),
    Persona("bookworm", {"books": 6, "home": 1, "grocery": 1},
            0.6, 0.2, 0.5, 2.0, 6, {"desktop": 0.4, "mobile": 0.2, "tablet": 0.4}, 0.2,
            (7, 19, 20, 21, 22), ("35-44", "45-54", "55-64", "65+")),
)
PERSONA_WEIGHTS: tuple[float, ...] = (0.18, 0.14, 0.12, 0.16, 0.1, 0.1, 0.1, 0.1)
CATEGORY_FLOOR = 0.15  # interest in categories the persona does not list


@dataclass(frozen=True)
class Product:
    product_id: str
    category: str
    brand: str
    price: float  # EUR, two decimals

    @property
    def price_cents(self) -> int:
        return round(self.price * 100)

    def as_event(self) -> dict[str, object]:
        """The ``product`` object of product_view / cart_add events."""
        return {"product_id": self.product_id, "category": self.category,
                "brand": self.brand, "price": self.price}


@dataclass(frozen=True)
class ProductCatalogue:
    """Products by category, sorted by price (so a budget is a prefix)."""

    products: Mapping[str, tuple[Product, ...]]

    @classmethod
    def generate(cls, seed: int) -> ProductCatalogue:
        rng = random.Random(f"catalogue:{seed}")
        out: dict[str, tuple[Product, ...]] = {}
        for category in CATEGORIES:
            items = []
            for i in range(PRODUCTS_PER_CATEGORY):
                raw = MEDIAN_PRICE[category] * rng.lognormvariate(0.0, 0.6)
                # shop prices: whole euros minus a cent above 10 EUR, cents below
                cents = round(raw) * 100 - 1 if raw > 10 else max(99, round(raw * 100))
                items.append(Product(
                    product_id=f"{category}-{i:04d}",
                    category=category,
                    brand=rng.choice(BRANDS[category]),
                    price=cents / 100,
                ))
            out[category] = tuple(sorted(items, key=lambda p: (p.price, p.product_id)))
        return cls(MappingProxyType(out))

    def by_id(self) -> dict[str, Product]:
        return {p.product_id: p for items in self.products.values() for p in items}


@dataclass(frozen=True)
class Customer:
    """One synthetic customer. ``persona`` is hidden ground truth, never sent in events."""

    customer_id: str
    persona: str
    category_weights: Mapping[str, float]  # normalised to sum 1, over every category
    brand_weights: Mapping[str, float]  # relative preference per brand (1.0 = neutral)
    price_sensitivity: float  # 0..1
    budget: float  # typical upper price per item relative to the category median (0.5..3)
    propensity: float  # P(a session is a buying mission)
    sessions_per_day: float
    session_length: float
    devices: Mapping[str, float]
    app_share: float
    hour_weights: tuple[float, ...]  # 24 relative weights, UTC hour of day
    locale: str
    country: str
    city: str
    timezone: str
    age_band: str
    gender: str

    def top_categories(self, n: int = 3) -> list[str]:
        return sorted(self.category_weights, key=lambda c: -self.category_weights[c])[:n]


def _make_customer(index: int, seed: int) -> Customer:
    rng = random.Random(f"customer:{seed}:{index}")
    persona = rng.choices(PERSONAS, weights=PERSONA_WEIGHTS)[0]
    raw = {c: persona.categories.get(c, CATEGORY_FLOOR) * rng.uniform(0.6, 1.4) for c in CATEGORIES}
    total = sum(raw.values())
    category_weights = {c: w / total for c, w in raw.items()}

    # Loyal customers strongly favour one or two brands in each category they care about.
    brand_weights: dict[str, float] = {}
    for category in persona.categories:
        favourites = rng.sample(BRANDS[category], k=rng.choice((1, 2)))
        for brand in favourites:
            brand_weights[brand] = 1.0 + 12.0 * persona.brand_loyalty * rng.uniform(0.7, 1.3)

    hour_weights = [0.05] * 24
    for peak in persona.hours:
        for offset, weight in ((-1, 0.5), (0, 1.0), (1, 0.5)):
            hour_weights[(peak + offset + rng.choice((-1, 0, 0, 1))) % 24] += weight

    jitter_devices = {d: w * rng.uniform(0.7, 1.3) for d, w in persona.devices.items()}
    locale, country, city, timezone = rng.choice(PLACES)
    sensitivity = min(1.0, max(0.0, persona.price_sensitivity + rng.gauss(0, 0.1)))
    return Customer(
        customer_id=f"sim{seed}-c{index:06d}",
        persona=persona.name,
        category_weights=MappingProxyType(category_weights),
        brand_weights=MappingProxyType(brand_weights),
        price_sensitivity=sensitivity,
        budget=max(0.5, 3.0 - 2.5 * sensitivity + rng.gauss(0, 0.2)),
        propensity=min(0.95, max(0.01, persona.propensity * rng.uniform(0.6, 1.4))),
        sessions_per_day=persona.sessions_per_day * rng.uniform(0.5, 1.5),
        session_length=persona.session_length * rng.uniform(0.7, 1.3),
        devices=MappingProxyType(jitter_devices),
        app_share=min(0.95, max(0.0, persona.app_share + rng.gauss(0, 0.1))),
        hour_weights=tuple(hour_weights),
        locale=locale,
        country=country,
        city=city,
        timezone=timezone,
        age_band=rng.choice(persona.age_bands),
        gender=rng.choices(GENDERS, weights=(0.48, 0.46, 0.02, 0.04))[0],
    )


@dataclass(frozen=True)
class Population:
    seed: int
    customers: tuple[Customer, ...]
    catalogue: ProductCatalogue

    @classmethod
    def generate(cls, customers: int, seed: int = 7) -> Population:
        """``customers`` customers and the catalogue, identical for identical arguments."""
        if customers < 1:
            raise ValueError(f"customers must be at least 1, got {customers}")
        return cls(
            seed=seed,
            customers=tuple(_make_customer(i, seed) for i in range(customers)),
            catalogue=ProductCatalogue.generate(seed),
        )

    def personas(self) -> dict[str, str]:
        """Ground truth: persona name by customer id."""
        return {c.customer_id: c.persona for c in self.customers}

    def persona_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for c in self.customers:
            counts[c.persona] = counts.get(c.persona, 0) + 1
        return counts


def weighted_choice(rng: random.Random, items: Sequence[str], weights: Mapping[str, float]) -> str:
    """One of ``items`` with probability proportional to ``weights[item]`` (default 1)."""
    return rng.choices(items, weights=[weights.get(i, 1.0) for i in items])[0]
