"""The snippet and the demo shop as served: types, the demo key in the pages, nothing from
outside, and nothing but the listed files."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

from streamproc.api.assets import DEMO, SNIPPET, Assets
from streamproc.api.server import build_app
from streamproc.settings import Settings

NOWHERE = dict(kafka_bootstrap="127.0.0.1:1", redis_url="redis://127.0.0.1:1/0")


@pytest.fixture
async def client() -> AsyncIterator[TestClient]:
    settings = Settings(**NOWHERE, api_keys="shop=shop-key-0001,demo=demo-key-0002")
    async with TestClient(TestServer(build_app(settings))) as c:
        yield c


async def test_the_snippet_is_served_as_javascript_without_a_key(client) -> None:
    resp = await client.get("/v1/streamproc.js")
    assert resp.status == 200
    assert resp.content_type == "application/javascript"
    assert "max-age" in resp.headers["Cache-Control"]
    assert await resp.read() == SNIPPET.read_bytes()


async def test_the_demo_pages_carry_the_demo_sites_key_and_the_snippet(client) -> None:
    for path in ("/demo/", "/demo/category.html", "/demo/product.html", "/demo/cart.html"):
        resp = await client.get(path)
        assert resp.status == 200, path
        assert resp.content_type == "text/html"
        page = await resp.text()
        assert '<script src="../v1/streamproc.js" data-key="demo-key-0002" defer>' in page
        assert "shop-key-0001" not in page
        assert "<!--#" not in page and "{{" not in page
    assert 'data-streamproc-slot="homepage_hero"' in await (await client.get("/demo/")).text()
    cart = await (await client.get("/demo/cart.html")).text()
    assert 'data-streamproc-slot="cart_drawer"' in cart


async def test_the_demo_redirects_and_serves_nothing_else(client) -> None:
    resp = await client.get("/demo", allow_redirects=False)
    assert resp.status == 302 and resp.headers["Location"] == "/demo/"
    for path in ("/demo/_header.html", "/demo/..%2Fserver.py", "/demo/nope.html"):
        resp = await client.get(path)
        assert resp.status == 404, path
        assert "error" in await resp.json()


def test_no_external_url_in_the_shop_or_the_snippet() -> None:
    for path in [SNIPPET, *DEMO.iterdir()]:
        text = re.sub(r"/\*.*?\*/", "", path.read_text(), flags=re.S)  # not the comments
        assert not re.search(r"(src|href)=[\"']?(https?:)?//", text), path
        assert "@import" not in text and "url(http" not in text, path


def test_without_a_demo_key_the_shop_says_which_key_it_lacks() -> None:
    site = Assets.load(Settings(**NOWHERE, api_keys="shop=shop-key-0001"))
    page = site.files["index.html"][0].decode()
    assert "data-key" not in page
    assert "site named <code>demo</code>" in page
    open_site = Assets.load(Settings(**NOWHERE)).files["index.html"][0].decode()
    assert "data-key" not in open_site and "notice" not in open_site
