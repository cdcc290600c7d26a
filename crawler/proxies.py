"""Proxies: which proxy a try goes through, and resting the ones that fail.

PROXY is one proxy URL or a list (`http://user:pass@127.0.0.1:3128`; https too, with TLS
to the proxy; SOCKS would need a package we do not depend on). The fetcher asks `choose()`
once per try, so a retry goes through the next proxy of the list. A proxy that fails (its
connection refused or timed out, a 407, a CONNECT it refuses) is rested, 30 s after its
first failure and twice as long after each next one in a row (at most REST_MAX), and
skipped while it rests; when every proxy rests, the one back soonest is used anyway.
`meta["proxy"]` on a request overrides PROXY for it (None: direct): the one meta key the
framework reads, since Scrapy users expect it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import aiohttp
from yarl import URL

log = logging.getLogger(__name__)

SCHEMES = ("http", "https")
REST_START = 30.0  # seconds a proxy rests after its first failure; doubles each next one
REST_MAX = 600.0


class ProxyError(aiohttp.ClientConnectionError):
    """A try failed at its proxy, not at the target; retried (through another proxy) like
    a connection error, and the kind a page failed with if its last try ended so."""


class Proxy:
    """One proxy: its URL (with its credentials: aiohttp sends them as Proxy-Authorization,
    to a CONNECT too), the same without them (what logs show), and its rest."""

    __slots__ = ("failures", "rested_until", "shown", "url")

    def __init__(self, url: URL) -> None:
        self.url = url
        self.shown = url.with_user(None).with_password(None)
        self.failures = 0  # in a row
        self.rested_until = 0.0  # time.monotonic()


def proxy_problem(text: str) -> str | None:
    """Why `text` is not a proxy URL we can use, or None."""
    try:
        url = URL(text.strip())
    except (TypeError, ValueError) as exc:
        return f"not a URL ({exc})"
    if url.scheme not in SCHEMES:
        if url.scheme.startswith("socks"):
            return "SOCKS proxies need the aiohttp-socks package, which is not a dependency"
        return "expected http://[user:password@]host:port (or https://)"
    if not url.host:
        return "no host"
    try:
        url.port  # noqa: B018 - a bad port raises here
    except ValueError:
        return "bad port"
    if url.path not in ("", "/") or url.query_string or url.fragment:
        return "a proxy URL has no path, query or fragment"
    return None


def parse_proxy(text: str) -> Proxy:
    """A Proxy from its URL; ValueError if it is not one."""
    problem = proxy_problem(text)
    if problem:
        raise ValueError(problem)
    return Proxy(URL(text.strip()))


class Proxies:
    """The PROXY list: round robin over the proxies not resting."""

    def __init__(self, urls: Sequence[str]) -> None:
        self._proxies = [parse_proxy(url) for url in urls]
        self._next = 0
        self._warned = False  # about every proxy resting at once

    def choose(self) -> Proxy:
        """The proxy for the next try."""
        proxies, now = self._proxies, time.monotonic()
        count = len(proxies)
        for step in range(count):
            proxy = proxies[(self._next + step) % count]
            if proxy.rested_until <= now:
                self._next = (self._next + step + 1) % count
                self._warned = False
                return proxy
        soonest = min(proxies, key=lambda p: p.rested_until)
        if not self._warned:
            self._warned = True
            log.warning("every proxy is resting: trying %s, the first back", soonest.shown)
        return soonest

    @staticmethod
    def failed(proxy: Proxy, reason: str) -> None:
        """A try through `proxy` failed at the proxy: rest it (a failure of a try that
        started before the proxy was rested does not lengthen the rest)."""
        now = time.monotonic()
        if proxy.rested_until > now:
            return
        rest = min(REST_MAX, REST_START * 2**proxy.failures)
        proxy.failures += 1
        proxy.rested_until = now + rest
        log.warning("proxy %s failed (%s): resting it %.0f s", proxy.shown, reason, rest)

    @staticmethod
    def worked(proxy: Proxy) -> None:
        """A try through `proxy` got an answer from the target."""
        proxy.failures = 0
