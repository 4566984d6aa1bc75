"""A first, rule-based next-best-action policy, gated by consent.

Which events call for a decision, and what it is:

- ``product_view``: the third product viewed in one category within a session earns a
  ``category_picks`` content block for that category on the product page;
- ``cart_add``: a ``cart_reminder`` in the cart drawer, with the cart's value;
- ``purchase``: a ``thank_you_cross_sell`` email when the customer consented to email,
  otherwise the same on the website;
- every other event: no decision.

Without personalisation consent (explicitly withdrawn) the decision is the neutral, non
personalised default of the slot, with that reason. The decisions issue replaces this with a
catalogue, eligibility, caps, experiments and a bandit; the contract (``decide`` on plain dicts,
no I/O) stays.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from streamproc.state.profile import Profile

POLICY_NAME = "rules-v0"
CATEGORY_VIEWS_FOR_PICKS = 3

NEUTRAL_ACTION = {"id": "default_content", "kind": "content", "title": "Our most popular items"}


@dataclass(frozen=True)
class Choice:
    """What the policy chose, before it becomes a decision record."""

    action: dict[str, Any]
    slot: str | None
    channel: str
    personalised: bool
    reasons: list[str] = field(default_factory=list)
    propensity: float = 1.0


def consented(profile: Profile, purpose: str) -> bool | None:
    """True or False when the customer said so, None when they never did."""
    entry = profile["consent"].get(purpose)
    return None if entry is None else bool(entry["granted"])


def _choose(profile: Profile, type_: str, data: dict[str, Any]) -> Choice | None:
    if type_ == "product_view":
        category = data["product"]["category"]
        session = profile["session"] or {}
        views = session.get("categories", {}).get(category, 0)
        if views == CATEGORY_VIEWS_FOR_PICKS:
            return Choice(
                {"id": "category_picks", "kind": "content", "title": f"More {category} for you",
                 "params": {"category": category}},
                slot="product_recs", channel="web", personalised=True,
                reasons=[f"viewed {views} {category} products in this session"],
            )
        return None
    if type_ == "cart_add":
        cart = profile["cart"]
        return Choice(
            {"id": "cart_reminder", "kind": "message", "title": "Your basket is waiting",
             "params": {"cart_value": cart["value"], "items": len(cart["items"])}},
            slot="cart_drawer", channel="web", personalised=True,
            reasons=[f"added to cart; cart holds {len(cart['items'])} products worth "
                     f"{cart['value']:.2f}"],
        )
    if type_ == "purchase":
        categories = profile["categories"]
        top = max(categories, key=categories.__getitem__) if categories else None
        by_email = consented(profile, "email") is True
        reasons = [f"purchase {data['order_id']} of {data['amount']:.2f} {data['currency']}"]
        reasons.append("email consent given" if by_email else "no email consent: shown on web")
        return Choice(
            {"id": "thank_you_cross_sell", "kind": "offer", "title": "Thank you: picked for you",
             "params": {"category": top or "bestsellers"}},
            slot=None if by_email else "order_confirmation",
            channel="email" if by_email else "web", personalised=True, reasons=reasons,
        )
    return None


def decide(profile: Profile, type_: str, data: dict[str, Any]) -> Choice | None:
    """The next best action for the event just applied to ``profile``, or None."""
    choice = _choose(profile, type_, data)
    if choice is None:
        return None
    if consented(profile, "personalisation") is False:
        return Choice(
            NEUTRAL_ACTION, slot=choice.slot or "order_confirmation", channel="web",
            personalised=False,
            reasons=["personalisation consent withdrawn: neutral default shown"],
        )
    return choice
