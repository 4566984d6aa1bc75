"""Who may call what: per-site write keys, the admin token, CORS origins and rate limits.

Pure (no aiohttp): the server asks these objects and turns their answers into responses.

- **Write keys** (``STREAMPROC_API_KEYS``, ``site=key`` pairs): the event, decide and feedback
  endpoints need one in the ``X-API-Key`` header. Every configured key is compared in constant
  time (``hmac.compare_digest``), all of them, so the time taken says nothing about which key
  was close. With no keys configured the endpoints are open, which the server allows only on
  a loopback address (a developer's machine): :func:`check_open_access`.
- **Admin token** (``STREAMPROC_API_ADMIN_TOKEN``): ``Authorization: Bearer <token>`` for the
  customer access and erasure endpoints; without a token configured they are off.
- **Read token** (``STREAMPROC_API_READ_TOKEN``): the dashboard's data: :class:`ReadAccess`.
- **CORS** (``STREAMPROC_API_ORIGINS``): only the configured origins get CORS headers, and only
  on the browser endpoints.
- **Rate** (``STREAMPROC_API_RATE``): a token bucket per site (per client address without
  keys), ``rate`` requests a second with bursts of as many.

>>> keys = WriteKeys({"k-shop-123": "shop"})
>>> keys.site("k-shop-123"), keys.site("nope"), keys.site(None)
('shop', None, None)
>>> WriteKeys({}).site(None)
'local'
"""

from __future__ import annotations

import hmac
import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence

from streamproc.errors import ConfigError

OPEN_SITE = "local"  # the site name of requests when no write keys are configured


def check_open_access(host: str, keys: Mapping[str, str]) -> None:
    """Refuse to serve open (keyless) write endpoints on anything but loopback."""
    if keys or _loopback(host):
        return
    raise ConfigError(
        f"STREAMPROC_API_KEYS is empty and STREAMPROC_API_HOST={host!r} is not a loopback "
        "address: anyone could write events. Set write keys (site=key,...) or listen on "
        "127.0.0.1")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class WriteKeys:
    """The configured write keys ({key: site})."""

    def __init__(self, keys: Mapping[str, str]) -> None:
        self._keys = [(k.encode(), site) for k, site in keys.items()]

    @property
    def open(self) -> bool:
        return not self._keys

    def site(self, given: str | None) -> str | None:
        """The site a key belongs to; None when it is missing or wrong. Open access: 'local'."""
        if not self._keys:
            return OPEN_SITE
        if not given:
            return None
        raw = given.encode("utf-8", "replace")
        found = None
        for key, site in self._keys:  # no early exit: every key costs the same
            if hmac.compare_digest(raw, key):
                found = site
        return found


class AdminToken:
    """The admin bearer token; ``enabled`` is False when none is configured.

    >>> AdminToken("s3cret-token").allows("Bearer s3cret-token"), AdminToken("").allows("Bearer ")
    (True, False)
    """

    def __init__(self, token: str) -> None:
        self._token = token.encode()

    @property
    def enabled(self) -> bool:
        return bool(self._token)

    def allows(self, authorization: str | None) -> bool:
        if not self._token or not authorization:
            return False
        scheme, _, given = authorization.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode("utf-8", "replace"), self._token)


class ReadAccess:
    """Who may read the dashboard's data (``/v1/kpis...``): business figures, no personal data,
    but not for the world. With a read token (``STREAMPROC_API_READ_TOKEN``) or an admin token
    configured, a bearer of either; with neither, anyone while the API listens on loopback (a
    developer's machine, as open write keys), nobody otherwise.

    >>> ReadAccess("r-token-123", "", "0.0.0.0").refusal("Bearer r-token-123") is None
    True
    >>> ReadAccess("r-token-123", "a-token-456", "0.0.0.0").refusal("Bearer a-token-456") is None
    True
    >>> ReadAccess("r-token-123", "", "0.0.0.0").refusal(None)[0]
    401
    >>> ReadAccess("", "", "127.0.0.1").refusal(None), ReadAccess("", "", "::").refusal(None)[0]
    (None, 403)
    """

    def __init__(self, read_token: str, admin_token: str, host: str) -> None:
        self._tokens = [AdminToken(t) for t in (read_token, admin_token) if t]
        self._loopback = _loopback(host)

    @property
    def needs_token(self) -> bool:
        return bool(self._tokens)

    def refusal(self, authorization: str | None) -> tuple[int, str] | None:
        """None when allowed; else (401 or 403, what to do)."""
        if self._tokens:
            allowed = [t.allows(authorization) for t in self._tokens]  # each one, every time
            if any(allowed):
                return None
            return 401, ("send the read token (STREAMPROC_API_READ_TOKEN) or the admin token "
                         "as Authorization: Bearer <token>")
        if self._loopback:
            return None
        return 403, ("the dashboard's data is off on a non-loopback address without a token: "
                     "set STREAMPROC_API_READ_TOKEN")


class Origins:
    """The browser origins allowed by CORS.

    >>> o = Origins(["https://shop.example"])
    >>> o.allows("https://shop.example"), o.allows("https://evil.example"), o.allows(None)
    (True, False, False)
    """

    def __init__(self, origins: Sequence[str]) -> None:
        self._origins = frozenset(origins)

    def allows(self, origin: str | None) -> bool:
        return origin is not None and origin in self._origins


class RateLimiter:
    """Token buckets by name: ``rate`` tokens a second, at most ``rate`` kept (the burst).
    At most ``max_buckets`` names are remembered (the least recently used go first), so a flood
    of client addresses cannot grow the memory.

    >>> t = [0.0]
    >>> limiter = RateLimiter(2, clock=lambda: t[0])
    >>> [limiter.allow("a") for _ in range(3)]
    [True, True, False]
    >>> t[0] = 0.5
    >>> limiter.allow("a"), limiter.retry_after("a")
    (True, 0.5)
    """

    def __init__(self, rate: int, clock: Callable[[], float] = time.monotonic,
                 max_buckets: int = 10_000) -> None:
        self.rate = rate
        self.clock = clock
        self.max_buckets = max_buckets
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, at

    def allow(self, name: str) -> bool:
        if self.rate <= 0:
            return True
        now = self.clock()
        tokens, at = self._buckets.pop(name, (float(self.rate), now))
        tokens = min(float(self.rate), tokens + (now - at) * self.rate)
        allowed = tokens >= 1.0
        self._buckets[name] = (tokens - 1.0 if allowed else tokens, now)
        while len(self._buckets) > self.max_buckets:
            self._buckets.popitem(last=False)
        return allowed

    def retry_after(self, name: str) -> float:
        """Seconds until ``name`` has a token again."""
        tokens, _ = self._buckets.get(name, (float(self.rate), 0.0))
        return max(0.0, (1.0 - tokens) / self.rate) if self.rate > 0 else 0.0
