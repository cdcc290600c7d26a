"""The site a Redis crawl's tests crawl: a few hundred pages over three loopback hosts.

Page n lives on host n % 3 (127.0.0.1, .2 and .3, each on a random port) and links to a
handful of pages on every host, n + 1 among them, so the whole site is reachable from
page 0. Each page answers after a short sleep (10 to 40 ms unless told) so that requests overlap.
Per host the site records the requests in flight at most, each request's start time
and robots.txt fetches; per page, how many times it was fetched. It runs in the test's
event loop: the crawler runs as separate processes that the test awaits with asyncio.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web

HOSTS = ("127.0.0.1", "127.0.0.2", "127.0.0.3")


@dataclass
class HostLog:
    """What one host saw."""

    in_flight: int = 0
    most_in_flight: int = 0
    starts: list[float] = field(default_factory=list)  # page requests, time.monotonic()
    robots: int = 0  # robots.txt fetches


@dataclass
class Site:
    """The pages, where they are served, and what each host saw."""

    pages: int
    crawl_delay: float = 0.0  # robots.txt's Crawl-delay on the first host, if not 0
    sleep: tuple[float, float] = (0.010, 0.040)  # each page answers after this long
    bases: list[str] = field(default_factory=list)  # "http://host:port", per host index
    hosts: dict[int, HostLog] = field(default_factory=dict)
    hits: Counter[int] = field(default_factory=Counter)  # page -> fetches

    def url(self, n: int) -> str:
        """The URL of page n."""
        return f"{self.bases[n % len(HOSTS)]}/p/{n}"

    @property
    def start(self) -> str:
        """The START_URL setting: page 0."""
        return self.url(0)

    def links(self, n: int) -> list[int]:
        """The pages page n links to."""
        return sorted({(n + 1) % self.pages, (3 * n + 1) % self.pages, (7 * n + 2) % self.pages})

    def app(self, index: int) -> web.Application:
        """The application of host `index`: its pages and its robots.txt."""
        log = self.hosts[index] = HostLog()
        draw = random.Random(index)

        async def page(request: web.Request) -> web.Response:
            n = int(request.match_info["n"])
            if not 0 <= n < self.pages or n % len(HOSTS) != index:
                raise web.HTTPNotFound()
            log.starts.append(time.monotonic())
            log.in_flight += 1
            log.most_in_flight = max(log.most_in_flight, log.in_flight)
            try:
                self.hits[n] += 1
                await asyncio.sleep(draw.uniform(*self.sleep))
                links = "".join(f'<a href="{self.url(m)}">{m}</a> ' for m in self.links(n))
                body = f"<html><h1>Page</h1><p class=n>{n}</p>{links}</html>"
                return web.Response(text=body, content_type="text/html")
            finally:
                log.in_flight -= 1

        async def robots(request: web.Request) -> web.Response:
            log.robots += 1
            text = "User-agent: *\nAllow: /\n"
            if self.crawl_delay and index == 0:
                text += f"Crawl-delay: {self.crawl_delay}\n"
            return web.Response(text=text)

        app = web.Application()
        app.router.add_get("/p/{n}", page)
        app.router.add_get("/robots.txt", robots)
        return app


@asynccontextmanager
async def serve(
    pages: int = 240, crawl_delay: float = 0.0, sleep: tuple[float, float] = (0.010, 0.040)
) -> AsyncIterator[Site]:
    """The site, served on the three hosts until the block ends."""
    site = Site(pages, crawl_delay, sleep)
    runners = []
    try:
        for index, host in enumerate(HOSTS):
            runner = web.AppRunner(site.app(index), access_log=None)
            runners.append(runner)
            await runner.setup()
            await web.TCPSite(runner, host, 0).start()
            port = runner.addresses[0][1]
            site.bases.append(f"http://{host}:{port}")
        yield site
    finally:
        for runner in runners:
            await runner.cleanup()
