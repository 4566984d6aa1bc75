"""What a browser loads from the API itself: the JavaScript snippet and the demo shop.

- ``GET /v1/streamproc.js``: the snippet (``static/streamproc.js``), one dependency-free file a
  site includes with its write key (docs/api.md, "The JavaScript snippet").
- ``GET /demo/``: a small shop (``demo/``) that uses nothing of streamproc but the snippet; its
  pages carry the write key of the site named ``demo`` (``STREAMPROC_API_KEYS=demo=...``), or
  none when the API is open. Without such a key the shop still works, with its own content, and
  says which key it lacks.

Everything is read once, when the app is built, and served from memory: nothing from the
request reaches the file system, and the pages name no external URL (the browser may have no
internet).

>>> from streamproc.settings import Settings
>>> site = Assets.load(Settings(api_keys="demo=demo-key-123"))
>>> 'data-key="demo-key-123"' in site.files["index.html"][0].decode()
True
>>> sorted(site.files)
['cart.html', 'category.html', 'favicon.svg', 'index.html', 'product.html', 'shop.css', 'shop.js']
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from streamproc.settings import Settings

HERE = Path(__file__).parent
SNIPPET = HERE / "static" / "streamproc.js"
DEMO = HERE / "demo"
DEMO_SITE = "demo"  # the site whose write key the demo pages carry
TYPES = {".html": "text/html", ".css": "text/css", ".js": "application/javascript",
         ".svg": "image/svg+xml"}
# Sites pick up a new snippet within minutes; the demo's pages always fresh.
SNIPPET_CACHE = "public, max-age=300"


def demo_key(settings: Settings) -> str | None:
    """The demo site's write key; "" when the API is open; None when keys exist but not one
    for the demo site.

    >>> demo_key(Settings()), demo_key(Settings(api_keys="shop=k-shop-123"))
    ('', None)
    """
    keys = settings.api_write_keys()
    if not keys:
        return ""
    return next((k for k, site in keys.items() if site == DEMO_SITE), None)


def _page(text: str, header: str, footer: str, key: str | None) -> str:
    notice = "" if key is not None else (
        '<div class="notice">This demo shop has no write key: add one for a site named '
        f"<code>{DEMO_SITE}</code> to STREAMPROC_API_KEYS (e.g. <code>{DEMO_SITE}=a-long-key"
        "</code>) and the blocks below get personalised.</div>")
    attr = f'data-key="{html.escape(key)}"' if key else ""
    return (text.replace("<!--#header-->", header).replace("<!--#footer-->", footer)
            .replace("{{NOTICE}}", notice).replace("{{KEY_ATTR}}", attr))


def file_response(files: dict[str, tuple[bytes, str]], request: web.Request) -> web.Response:
    """The file named by the route's ``name`` (``index.html`` without one), from memory;
    404 for any other name."""
    found = files.get(request.match_info.get("name") or "index.html")
    if found is None:
        raise web.HTTPNotFound()
    body, content_type = found
    return web.Response(body=body, content_type=content_type, charset="utf-8",
                        headers={"Cache-Control": "no-cache"})


@dataclass(frozen=True)
class Assets:
    snippet: bytes
    files: dict[str, tuple[bytes, str]]  # name: (body, content type)

    @classmethod
    def load(cls, settings: Settings) -> Assets:
        key = demo_key(settings)
        header = (DEMO / "_header.html").read_text()
        footer = (DEMO / "_footer.html").read_text()
        files: dict[str, tuple[bytes, str]] = {}
        for path in sorted(DEMO.iterdir()):
            if path.name.startswith("_") or path.suffix not in TYPES:
                continue
            text = path.read_text()
            if path.suffix == ".html":
                text = _page(text, header, footer, key)
            files[path.name] = (text.encode(), TYPES[path.suffix])
        return cls(SNIPPET.read_bytes(), files)

    async def snippet_js(self, request: web.Request) -> web.Response:
        return web.Response(body=self.snippet, content_type="application/javascript",
                            charset="utf-8", headers={"Cache-Control": SNIPPET_CACHE})

    async def demo(self, request: web.Request) -> web.Response:
        return file_response(self.files, request)

    async def demo_slash(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("/demo/")

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/v1/streamproc.js", self.snippet_js)
        router.add_get("/demo", self.demo_slash)
        router.add_get("/demo/", self.demo)
        router.add_get("/demo/{name}", self.demo)
