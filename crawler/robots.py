"""robots.txt: fetched once per host through the crawl's fetcher, parsed by Protego.

What a failed fetch means follows RFC 9309: a 4xx answer means no rules (all allowed);
a 5xx answer, a timeout or a connection error means the host is unreachable, so
nothing on it is fetched. Redirects are followed here, up to MAX_REDIRECTS hops (the
RFC asks for at least five); past that, robots.txt is taken as unavailable (no rules).

In a crawl shared by many processes (Redis), `SharedRobots` keeps each host's robots.txt
for all of them: one process fetches it, the others wait for its text.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol
from urllib.parse import urlsplit

from protego import Protego

from crawler.errors import FetchError
from crawler.http import Request, Response, redirect_request

log = logging.getLogger(__name__)

Fetch = Callable[[Request], Awaitable[tuple[Response, int]]]
UNREACHABLE = "\x00unreachable"  # kept for a host whose robots.txt could not be fetched
SHARED_WAIT = 0.2  # seconds between two asks while another process fetches robots.txt


class SharedRobots(Protocol):
    """Each host's robots.txt, kept for every process of a crawl."""

    async def take(self, netloc: str) -> tuple[str | None, bool]:
        """The host's robots.txt if kept; else whether this process is to fetch it."""
        ...

    async def put(self, netloc: str, text: str) -> None:
        """Keep the host's robots.txt (UNREACHABLE if it could not be fetched)."""
        ...


class Robots:
    """Answers whether a URL may be fetched, one robots.txt fetch per host (and with
    `shared`, per host for every process of the crawl)."""

    def __init__(self, fetch: Fetch, user_agent: str, shared: SharedRobots | None = None) -> None:
        self._fetch = fetch
        self._agent = user_agent
        self._shared = shared
        self._rules: dict[str, asyncio.Task[Protego | None]] = {}

    async def rules(self, url: str) -> Protego | None:
        """The parsed robots.txt of the URL's host; None when the host is unreachable."""
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        task = self._rules.get(origin)
        if task is None:
            load = self._load(origin) if self._shared is None else self._share(origin, parts.netloc)
            task = asyncio.ensure_future(load)
            self._rules[origin] = task
        return await asyncio.shield(task)

    async def allowed(self, url: str) -> bool:
        """Whether robots.txt lets our user agent fetch `url`."""
        rules = await self.rules(url)
        return rules is not None and bool(rules.can_fetch(url, self._agent))

    async def crawl_delay(self, url: str) -> float:
        """The Crawl-delay robots.txt asks of our user agent (0 if none)."""
        rules = await self.rules(url)
        delay = rules.crawl_delay(self._agent) if rules is not None else None
        return float(delay or 0.0)

    async def _share(self, origin: str, netloc: str) -> Protego | None:
        """The rules another process has kept, or fetched here and kept for the others."""
        assert self._shared is not None
        while True:
            text, mine = await self._shared.take(netloc)
            if text is not None:
                return None if text == UNREACHABLE else Protego.parse(text)
            if mine:
                break
            await asyncio.sleep(SHARED_WAIT)
        text = await self._text(origin)
        await self._shared.put(netloc, UNREACHABLE if text is None else text)
        return None if text is None else Protego.parse(text)

    async def _load(self, origin: str) -> Protego | None:
        text = await self._text(origin)
        return None if text is None else Protego.parse(text)

    async def _text(self, origin: str) -> str | None:
        """The text of robots.txt ("" for none); None when the host is unreachable."""
        # No cookies: robots.txt is the host's, not a session's (its hops keep the meta).
        robots = Request(f"{origin}/robots.txt", meta={"dont_merge_cookies": True})
        request: Request | None = robots
        try:
            while request is not None:
                response, _ = await self._fetch(request)
                request = redirect_request(response)
        except FetchError as exc:
            status = exc.status
            if exc.reason == "TooManyRedirects" or (status is not None and 400 <= status < 500):
                return ""
            log.warning("robots.txt of %s unreachable (%s): skipping the host", origin, exc.reason)
            return None
        return response.text

    def close(self) -> None:
        """Cancel fetches still under way."""
        for task in self._rules.values():
            task.cancel()
