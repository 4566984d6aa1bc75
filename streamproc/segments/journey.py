"""Journey stage: how far along the path from first visit to loyal customer someone is.

The first matching line wins (thresholds of
:class:`~streamproc.segments.config.SegmentConfig`, defaults in brackets):

1. ``loyal``: at least ``journey_loyal_orders`` (5) orders;
2. ``repeat_buyer``: 2 or more orders;
3. ``first_time_buyer``: exactly 1 order;
4. ``cart_builder``: never bought, and the cart holds at least one item now (a customer who
   empties the cart goes back to browsing);
5. ``engaged_browser``: never bought, empty cart, and at least ``journey_engaged_product_views``
   (3) product views or ``journey_engaged_sessions`` (2) sessions in total (``counts``);
6. ``anonymous_visitor``: none of the above: a visitor who has not shown interest yet.

Orders are ``purchases.orders``: the stage never goes back once a customer has bought.

>>> from streamproc.segments.config import SegmentConfig
>>> assign_journey({"counts": {"product_view": 3, "sessions": 1}}, SegmentConfig())
Assignment(segment='engaged_browser', reason='never bought; 3 product views, 1 session')
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from streamproc.days import plural
from streamproc.segments.assignment import Assignment, Deferred
from streamproc.segments.config import SegmentConfig

SEGMENTS = (
    "anonymous_visitor", "engaged_browser", "cart_builder", "first_time_buyer", "repeat_buyer",
    "loyal",
)


def assign_journey(profile: Mapping[str, Any], config: SegmentConfig) -> Assignment:
    return journey_deferred(profile, config).assignment()


def journey_deferred(profile: Mapping[str, Any], config: SegmentConfig) -> Deferred:
    """:func:`assign_journey` with the reason built only when it is read."""
    orders = (profile.get("purchases") or {}).get("orders") or 0
    if orders >= config.journey_loyal_orders:
        return Deferred("loyal", lambda: f"{plural(orders, 'order')}, "
                                         f"at least {config.journey_loyal_orders}")
    if orders >= 2:
        return Deferred("repeat_buyer", lambda: f"{plural(orders, 'order')}")
    if orders == 1:
        return Deferred("first_time_buyer", lambda: "1 order")
    items = ((profile.get("cart") or {}).get("items")) or {}
    if items:
        n = len(items)
        return Deferred("cart_builder", lambda: f"never bought; {plural(n, 'product')} "
                                                "in the cart")
    counts = profile.get("counts") or {}
    views, sessions = counts.get("product_view", 0), counts.get("sessions", 0)

    def seen() -> str:
        return f"{plural(views, 'product view')}, {plural(sessions, 'session')}"

    if (views >= config.journey_engaged_product_views
            or sessions >= config.journey_engaged_sessions):
        return Deferred("engaged_browser", lambda: f"never bought; {seen()}")
    return Deferred("anonymous_visitor", lambda: f"never bought, empty cart; {seen()}")
