from __future__ import annotations

from streamproc.decisions.policy import decide
from streamproc.state.profile import SESSION_GAP_MS, apply_event, new_profile

from .helpers import event

SHOE = {"product_id": "p1", "category": "shoes", "price": 20.0}


def apply(p, body, ts_ms=0):
    apply_event(p, body["type"], ts_ms, body)


def test_a_long_gap_of_event_time_starts_a_new_session():
    p = new_profile("c1")
    apply(p, event("page_view"), 0)
    apply(p, event("page_view"), SESSION_GAP_MS)  # exactly the gap: same session
    apply(p, event("page_view"), 2 * SESSION_GAP_MS + 1)
    assert p["counts"]["sessions"] == 2 and p["session"]["views"] == 1


def test_cart_lines_add_up_remove_and_leave_on_purchase():
    p = new_profile("c1")
    apply(p, event("cart_add", product=SHOE, quantity=2))
    apply(p, event("cart_add", product={**SHOE, "product_id": "p2"}, quantity=1))
    assert p["cart"]["value"] == 60.0
    apply(p, event("cart_remove", product_id="p1", quantity=5))
    assert list(p["cart"]["items"]) == ["p2"] and p["cart"]["value"] == 20.0
    apply(p, event("purchase", amount=20.0, lines=[
        {"product_id": "p2", "category": "shoes", "quantity": 1, "unit_price": 20.0}]))
    assert p["cart"]["items"] == {} and p["purchases"]["orders"] == 1


def test_removing_what_is_not_in_the_cart_changes_nothing():
    p = new_profile("c1")
    apply(p, event("cart_remove", product_id="ghost", quantity=1))
    assert p["cart"]["items"] == {} and p["cart"]["value"] == 0.0


def test_out_of_order_events_keep_first_and_last_seen_right():
    p = new_profile("c1")
    apply(p, event("search"), 5_000)
    apply(p, event("search"), 1_000)
    assert (p["first_seen_ms"], p["last_seen_ms"]) == (1_000, 5_000)


def test_category_picks_on_the_third_view_of_a_category_only():
    p = new_profile("c1")
    choices = []
    for _ in range(4):
        body = event("product_view", product=SHOE)
        apply(p, body)
        choices.append(decide(p, body["type"], body))
    assert [c.action["id"] if c else None for c in choices] == [None, None, "category_picks",
                                                                None]


def test_purchase_thanks_by_email_only_with_email_consent():
    p = new_profile("c1")
    body = event("purchase")
    apply(p, body)
    assert decide(p, "purchase", body).channel == "web"
    apply(p, event("consent_update", purpose="email", granted=True))
    choice = decide(p, "purchase", body)
    assert choice.channel == "email" and choice.slot is None


def test_no_personalisation_without_consent_and_no_email_either():
    p = new_profile("c1")
    apply(p, event("consent_update", purpose="email", granted=True))
    apply(p, event("consent_update", purpose="personalisation", granted=False))
    body = event("purchase")
    apply(p, body)
    choice = decide(p, "purchase", body)
    assert choice.personalised is False and choice.channel == "web"
    assert choice.action["id"] == "default_content"


def test_events_that_call_for_nothing_get_no_decision():
    p = new_profile("c1")
    for type_ in ("page_view", "search", "checkout", "profile_update", "feedback"):
        body = event(type_)
        apply(p, body)
        assert decide(p, type_, body) is None
