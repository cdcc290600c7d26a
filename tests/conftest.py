"""A real site on loopback: a page graph over several hosts, fault routes, hit counters.

Hosts are 127.0.0.1, 127.0.0.2, 127.0.0.3 (each its own port). The server counts hits
per path and the requests in flight per host, so tests assert on what really reached it.
"""

from __future__ import annotations

import asyncio
import socket
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from aiohttp import web

HOSTS = ("127.0.0.1", "127.0.0.2", "127.0.0.3")
PAGES_PER_HOST = 40


@dataclass
class Site:
    """The running servers and what they saw."""

    urls: dict[str, str] = field(default_factory=dict)  # host -> "http://host:port"
    hits: Counter[str] = field(default_factory=Counter)  # "host:port/path?query" -> count
    hit_times: dict[str, list[float]] = field(default_factory=dict)
    in_flight: Counter[str] = field(default_factory=Counter)
    max_in_flight: Counter[str] = field(default_factory=Counter)
    page_delay: float = 0.0
    host_delay: dict[str, float] = field(default_factory=dict)  # host -> extra seconds
    robots: str = ""
    user_agents: set[str] = field(default_factory=set)

    def url(self, path: str, host: str = HOSTS[0]) -> str:
        """The full URL of `path` on one of the hosts."""
        return self.urls[host] + path

    def hits_of(self, path: str, host: str = HOSTS[0]) -> int:
        """How many requests reached `path` on `host`."""
        return self.hits[self.urls[host].removeprefix("http://") + path]

    def graph_urls(self) -> set[str]:
        """Every page of the graph, on every host."""
        return {self.url(f"/g/{n}", host) for host in HOSTS for n in range(PAGES_PER_HOST)}


def graph_page(site: Site, host: str, n: int) -> str:
    """Page n of the graph on `host`: cycles, duplicate links, cross-host links, odd forms."""
    nxt = HOSTS[(HOSTS.index(host) + 1) % len(HOSTS)]
    links = [
        f"/g/{(2 * n + 1) % PAGES_PER_HOST}",
        f"/g/{(2 * n + 2) % PAGES_PER_HOST}",
        f"/g/{(2 * n + 2) % PAGES_PER_HOST}#again",  # a duplicate, with a fragment
        f"{(n + 1) % PAGES_PER_HOST}",  # relative to /g/
        "/g/0",  # back to the root: a cycle
        site.urls[nxt].upper().replace("HTTP://", "http://") + f"/g/{n}",  # host case
        "mailto:someone@example.com",
        "javascript:void(0)",
    ]
    anchors = "".join(f'<a href="{href}">link</a>' for href in links)
    return f"<html><head><title>{host} {n}</title></head><body><h1>{n}</h1>{anchors}</body></html>"


def _app(site: Site) -> web.Application:
    flaky: Counter[str] = Counter()

    @web.middleware
    async def count(
        request: web.Request, handler: Callable[..., Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        key = request.host + request.path_qs
        site.hits[key] += 1
        site.hit_times.setdefault(key, []).append(asyncio.get_running_loop().time())
        site.user_agents.add(request.headers.get("User-Agent", ""))
        host = request.host
        site.in_flight[host] += 1
        site.max_in_flight[host] = max(site.max_in_flight[host], site.in_flight[host])
        try:
            return await handler(request)
        finally:
            site.in_flight[host] -= 1

    async def graph(request: web.Request) -> web.Response:
        host = request.host.rsplit(":", 1)[0]
        delay = site.page_delay + site.host_delay.get(host, 0.0)
        if delay:
            await asyncio.sleep(delay)
        html = graph_page(site, host, int(request.match_info["n"]))
        return web.Response(text=html, content_type="text/html")

    async def status(request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["code"]), text="no")

    async def flaky_route(request: web.Request) -> web.Response:
        flaky[request.path_qs] += 1
        fails = int(request.query.get("fails", "2"))
        if flaky[request.path_qs] <= fails:
            headers = {}
            if "after" in request.query:
                headers["Retry-After"] = request.query["after"]
            if "after_date" in request.query:
                when = datetime.now(UTC) + timedelta(seconds=float(request.query["after_date"]))
                headers["Retry-After"] = format_datetime(when, usegmt=True)
            return web.Response(status=int(request.query.get("code", "503")), headers=headers)
        return web.Response(text="<h1>recovered</h1>", content_type="text/html")

    async def hang(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response(text="late")

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPMovedPermanently(request.query["to"])

    async def robots(request: web.Request) -> web.Response:
        return web.Response(text=site.robots) if site.robots else web.Response(status=404)

    app = web.Application(middlewares=[count])
    app.router.add_get("/g/{n}", graph)
    app.router.add_get("/status/{code}", status)
    app.router.add_get("/flaky", flaky_route)
    app.router.add_get("/hang", hang)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/robots.txt", robots)
    return app


@asynccontextmanager
async def serve_on_hosts(app: web.Application, urls: dict[str, str]) -> AsyncIterator[None]:
    """Serve `app` on a free port of every host of HOSTS, filling `urls` (host -> base URL)."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    try:
        for host in HOSTS:
            tcp = web.TCPSite(runner, host, 0)
            await tcp.start()
            port = tcp._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            urls[host] = f"http://{host}:{port}"
        yield
    finally:
        await runner.cleanup()


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    """The site, served on every host of HOSTS."""
    state = Site()
    async with serve_on_hosts(_app(state), state.urls):
        yield state


@pytest.fixture
def refused_url() -> AsyncIterator[str]:
    """A URL whose port is bound but never listens: every connection is refused."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/nothing"
    finally:
        sock.close()
