"""The demo shop in a real headless Chromium, on the real stack: a visitor browses, searches and
adds to the basket; the cart-drawer slot shows a personalised decision; the page's events and
the feedback on the decision are in Kafka. Signing in carries the anonymous cart over to the
member (docs/identity.md). And when the API fails, the pages keep their own content.

Chromium is Debian's ``chromium`` package (``deploy/local/test.sh`` installs it when missing
and run as root), driven by Playwright for Python; no browser is ever downloaded. The cart's
screenshot is kept in ``test-artefacts/`` (a copy is in docs/ for the README).
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import REPO, Env
from .polling import until
from .test_api import profile_of, start_api

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
DEMO_KEY = "it-demo-key-1"
ARTEFACTS = REPO / "test-artefacts"
FILLED = "[data-streamproc-slot={slot}][data-streamproc-state=filled]"


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.fail("Playwright is missing: .venv/bin/pip install -e '.[test]'", pytrace=False)
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        pytest.fail("Chromium is missing: `sudo apt-get update && sudo apt-get install -y "
                    "chromium` (make test does it when run as root)", pytrace=False)
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(
            executable_path=CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium"),
            args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


async def open_page(browser: Any) -> tuple[Any, Any, list[str]]:
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return context, page, errors


async def test_a_visitor_browses_adds_to_cart_and_the_drawer_is_personalised(
        stack_env: Env, browser: Any) -> None:
    stack_env.start_worker()
    url, _ = await start_api(stack_env, STREAMPROC_API_KEYS=f"demo={DEMO_KEY}")
    context, page, errors = await open_page(browser)

    await page.goto(f"{url}/demo/")
    await page.wait_for_selector(FILLED.format(slot="homepage_hero"))
    hero = page.locator("[data-streamproc-slot=homepage_hero]")
    # A first visit: no profile yet, so the neutral hero (never an empty slot).
    assert await hero.get_attribute("data-streamproc-action") == "bestsellers_hero"
    cookies = {c["name"]: c["value"] for c in await context.cookies()}
    cid = cookies["streamproc_id"]
    assert cid.startswith("anon-")
    await page.click(".consent button[data-answer=yes]")  # the consent banner, asked once
    assert await page.locator(".consent").count() == 0

    await page.fill("input[name=q]", "boot")
    await page.press("input[name=q]", "Enter")
    await page.wait_for_selector("#results .card")
    assert "Ridge Hiking Boot" in await page.inner_text("#results")
    await page.click("nav a[data-c=shoes]")
    await page.wait_for_selector("#results .card")
    assert await page.locator("#results .card").count() == 4
    await page.click("#results .card[data-product=shoes-7]")
    await page.wait_for_selector("#add")
    async with page.expect_response(lambda r: r.url.endswith("/v1/events")
                                    and "cart_add" in (r.request.post_data or "")) as answer:
        await page.click("#add")
    assert (await answer.value).status == 202
    await page.wait_for_selector("#added", state="visible")

    # The cart drawer is personalised once the worker has the cart in the profile.
    async def cart_in_profile() -> dict[str, Any] | None:
        p = await profile_of(stack_env, cid)
        return p if p and p["cart"]["value"] > 0 else None

    await until("the worker applies the cart_add", cart_in_profile)
    await page.goto(f"{url}/demo/cart.html")
    await page.wait_for_selector(FILLED.format(slot="cart_drawer"))
    drawer = page.locator("[data-streamproc-slot=cart_drawer]")
    assert await drawer.get_attribute("data-streamproc-personalised") == "true"
    assert await drawer.get_attribute("data-streamproc-action") in {
        "cart_reminder", "free_delivery_nudge"}
    assert "just for your basket" in (await drawer.inner_text()).lower()
    decision_id = await drawer.get_attribute("data-streamproc-decision")
    ARTEFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTEFACTS / "shop-cart.png"), full_page=True)

    # A click on the drawer's suggestion: click feedback, sent as the page is left.
    await drawer.locator("a").first.click()
    await page.wait_for_selector("#add")
    assert errors == []

    topics = stack_env.settings.topics
    wanted = {("page_view", "home"), ("page_view", "search"), ("page_view", "category"),
              ("page_view", "product"), ("page_view", "cart"), ("search", None),
              ("product_view", None), ("cart_add", None), ("decision_served", None)}

    def page_events(records: list[dict[str, Any]]) -> set[tuple[str, str | None]]:
        return {(v["type"], v.get("page_type")) for r in records
                if (v := r["value"]) and v.get("customer_id") == cid}

    browsing = await stack_env.consume_until(topics.browsing,
                                             lambda rs: wanted <= page_events(rs))
    ours = [r for r in browsing if r["value"] and r["value"]["customer_id"] == cid]
    assert all(r["key"] == cid.encode() for r in ours)
    cart_add = next(r["value"] for r in ours if r["value"]["type"] == "cart_add")
    assert cart_add["product"] == {"product_id": "shoes-7", "category": "shoes",
                                   "brand": "Stride", "price": 89.95}
    assert next(r["value"] for r in ours if r["value"]["type"] == "search")["query"] == "boot"

    def outcomes(records: list[dict[str, Any]]) -> set[str]:
        return {r["value"]["outcome"] for r in records
                if r["value"] and r["value"]["decision_id"] == decision_id}

    feedback = await stack_env.consume_until(topics.feedback,
                                             lambda rs: {"impression", "click"} <= outcomes(rs))
    assert sum(1 for r in feedback if r["value"]["decision_id"] == decision_id) == 2
    await context.close()


async def test_the_consent_banner_decides_whether_the_visitor_is_profiled(
        stack_env: Env, browser: Any) -> None:
    denied = {"STREAMPROC_CONSENT_DEFAULTS": "personalisation=denied"}  # the shipped default
    stack_env.start_worker(settings=denied)
    # A deadline no busy test machine misses: a late decide is neutral whatever the consent.
    url, _ = await start_api(stack_env, STREAMPROC_API_KEYS=f"demo={DEMO_KEY}",
                             STREAMPROC_API_DEADLINE_MS="5000", **denied)
    drawers = {}
    for answer in ("no", "yes"):
        context, page, errors = await open_page(browser)
        await page.goto(f"{url}/demo/product.html?p=shoes-7")
        cid = {c["name"]: c["value"] for c in await context.cookies()}["streamproc_id"]
        await page.click(f".consent button[data-answer={answer}]")

        async def answered(cid: str = cid) -> dict[str, Any] | None:
            p = await profile_of(stack_env, cid)
            return p if p and "personalisation" in p["consent"] else None

        # The answer is applied before the basket changes: topics are not read in step.
        p = await until("the worker records the banner's answer", answered)
        assert p["consent"]["personalisation"]["granted"] is (answer == "yes")
        await page.click("#add")
        await page.wait_for_selector("#added", state="visible")

        async def carted(cid: str = cid) -> dict[str, Any] | None:
            p = await profile_of(stack_env, cid)  # four events: page, product, answer, cart
            return p if p and len(p["recent_event_ids"]) >= 4 else None

        profile = await until("the worker applies the cart_add", carted)
        assert (profile["cart"]["value"] > 0) is (answer == "yes")
        await page.goto(f"{url}/demo/cart.html")
        await page.wait_for_selector(FILLED.format(slot="cart_drawer"))
        assert await page.locator(".consent").count() == 0  # asked once
        drawers[answer] = await page.locator("[data-streamproc-slot=cart_drawer]").get_attribute(
            "data-streamproc-personalised")
        assert errors == []
        await context.close()
    assert drawers == {"no": "false", "yes": "true"}


async def test_when_the_api_fails_the_pages_keep_their_own_content(
        stack_env: Env, browser: Any) -> None:
    url, _ = await start_api(stack_env, STREAMPROC_API_KEYS=f"demo={DEMO_KEY}")
    context, page, errors = await open_page(browser)
    await page.route("**/v1/decide", lambda route: route.abort("connectionrefused"))
    await page.route("**/v1/events", lambda route: route.fulfill(
        status=503, content_type="application/json", body='{"error": "down"}'))
    await page.goto(f"{url}/demo/")
    await page.wait_for_selector("[data-streamproc-slot=homepage_hero]"
                                 "[data-streamproc-state=kept]")
    assert "Made for the trail" in await page.inner_text("[data-streamproc-slot=homepage_hero]")
    assert await page.locator("#featured .card").count() == 8

    # A decide slower than the snippet's timeout: the same.
    await page.unroute("**/v1/decide")
    await page.route("**/v1/decide", lambda route: None)  # never answered
    await page.goto(f"{url}/demo/cart.html")
    await page.wait_for_selector("[data-streamproc-slot=cart_drawer][data-streamproc-state=kept]",
                                 timeout=5000)
    assert "Free delivery from" in await page.inner_text("[data-streamproc-slot=cart_drawer]")
    assert errors == []
    await context.close()


async def test_signing_in_carries_the_anonymous_cart_over(stack_env: Env, browser: Any) -> None:
    # Two workers: the anonymous id and the member id may be owned by different ones. The
    # decide deadline is generous: this is about whose profile decides, on a busy machine.
    stack_env.start_worker()
    stack_env.start_worker()
    url, _ = await start_api(stack_env, STREAMPROC_API_KEYS=f"demo={DEMO_KEY}",
                             STREAMPROC_API_DEADLINE_MS="2000")
    context, page, errors = await open_page(browser)
    await page.goto(f"{url}/demo/product.html?p=shoes-7")
    await page.click(".consent button[data-answer=yes]")
    await page.click("#add")
    await page.wait_for_selector("#added", state="visible")
    anon = {c["name"]: c["value"] for c in await context.cookies()}["streamproc_id"]
    assert anon.startswith("anon-")

    async def carted() -> dict[str, Any] | None:
        p = await profile_of(stack_env, anon)
        return p if p and p["cart"]["value"] > 0 else None

    await until("the worker applies the anonymous cart_add", carted)
    await page.click("#signin")
    await page.wait_for_url("**/demo/cart.html")
    member = {c["name"]: c["value"] for c in await context.cookies()}["streamproc_id"]
    assert member == "member-" + anon[5:17]

    async def merged() -> dict[str, Any] | None:
        p = await profile_of(stack_env, member)
        return p if p and anon in p.get("aliases", []) else None

    p = await until("the anonymous profile is merged into the member's", merged)
    assert "shoes-7" in p["cart"]["items"] and p["counts"]["consent_update"] == 1
    assert p["consent"]["personalisation"]["granted"] is True
    # The member's next page: the basket's drawer is decided from the cart carried over. The
    # sign-in's own cart page must have its answer first, or that answer, still in flight, is
    # the response caught below and its body is gone once the page navigates away.
    await page.wait_for_selector("[data-streamproc-slot=cart_drawer][data-streamproc-state=filled],"
                                 " [data-streamproc-slot=cart_drawer][data-streamproc-state=kept]")
    async with page.expect_response(lambda r: r.url.endswith("/v1/decide") and "cart_drawer"
                                    in (r.request.post_data or "")) as answer:
        await page.goto(f"{url}/demo/cart.html")
    decision = (await (await answer.value).json())["decision"]
    assert decision["customer_id"] == member and decision["personalised"], decision["reasons"]
    assert decision["scores"]["cart_value"] == 89.95
    await page.wait_for_selector(FILLED.format(slot="cart_drawer"))
    drawer = page.locator("[data-streamproc-slot=cart_drawer]")
    assert await drawer.get_attribute("data-streamproc-personalised") == "true"
    assert await drawer.get_attribute("data-streamproc-action") in {
        "cart_reminder", "free_delivery_nudge"}
    assert await page.inner_text("#signin") == "Signed in"
    assert member in await page.inner_text("#who")
    ARTEFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTEFACTS / "shop-signed-in.png"), full_page=True)
    assert errors == []
    await context.close()
