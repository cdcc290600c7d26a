"""PROXY and meta["proxy"], through real forward proxies on loopback (aiohttp.web servers
that take absolute-form requests and forward them with their own client session), to a
real site that records which proxy each request came through."""

from __future__ import annotations

import asyncio
import base64
import logging
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from conftest import HOSTS, serve_on_hosts
from crawler import Request, Response, Spider
from crawler.engine import crawl
from crawler.errors import UsageError
from crawler.settings import Settings

QUICK = {"ROBOTS": False, "RETRIES": 2, "TIMEOUT": 5}
PAGES = 12  # per host
HOP_BY_HOP = {"connection", "proxy-authorization", "proxy-connection", "keep-alive", "host"}


@dataclass
class Target:
    """The site behind the proxies: what reached it, and through which proxy (Via)."""

    urls: dict[str, str] = field(default_factory=dict)
    via: Counter[str] = field(default_factory=Counter)  # proxy name ("" direct) -> requests
    hits: Counter[str] = field(default_factory=Counter)  # "host/path" -> requests
    in_flight: Counter[str] = field(default_factory=Counter)
    max_in_flight: Counter[str] = field(default_factory=Counter)
    delay: float = 0.0

    def url(self, path: str, host: str = HOSTS[0]) -> str:
        return self.urls[host] + path


@asynccontextmanager
async def target_site() -> AsyncIterator[Target]:
    target = Target()

    async def page(request: web.Request) -> web.Response:
        host = request.host.rsplit(":", 1)[0]
        target.via[request.headers.get("Via", "")] += 1
        target.hits[host + request.path] += 1
        target.in_flight[host] += 1
        target.max_in_flight[host] = max(target.max_in_flight[host], target.in_flight[host])
        try:
            if target.delay:
                await asyncio.sleep(target.delay)
        finally:
            target.in_flight[host] -= 1
        if request.path == "/robots.txt":
            return web.Response(text="User-agent: *\nDisallow: /private\n")
        return web.Response(text=f"<title>{request.path}</title>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/{tail:.*}", page)
    async with serve_on_hosts(app, target.urls):
        yield target


@dataclass
class Forward:
    """A forward proxy on 127.0.0.1: counts what it forwarded, can require credentials."""

    name: str
    url: str = ""
    forwarded: int = 0
    refused_auth: int = 0
    credentials: str | None = None  # "user:password" it requires
    seen_auth: set[str] = field(default_factory=set)
    in_flight: int = 0
    max_in_flight: int = 0

    def with_auth(self, user: str, password: str) -> str:
        return self.url.replace("http://", f"http://{user}:{password}@")


@asynccontextmanager
async def forward_proxy(name: str, credentials: str | None = None) -> AsyncIterator[Forward]:
    proxy = Forward(name, credentials=credentials)
    async with aiohttp.ClientSession(auto_decompress=False) as client:

        async def forward(request: web.Request) -> web.StreamResponse:
            if not request.raw_path.startswith("http://"):
                return web.Response(status=400, text="absolute-form only")
            given = request.headers.get("Proxy-Authorization", "")
            proxy.seen_auth.add(given)
            if proxy.credentials is not None:
                wanted = "Basic " + base64.b64encode(proxy.credentials.encode()).decode()
                if given != wanted:
                    proxy.refused_auth += 1
                    return web.Response(status=407, headers={"Proxy-Authenticate": "Basic"})
            headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
            headers["Via"] = proxy.name
            proxy.in_flight += 1
            proxy.max_in_flight = max(proxy.max_in_flight, proxy.in_flight)
            try:
                async with client.request(
                    request.method, request.raw_path, headers=headers,
                    data=await request.read(), allow_redirects=False,
                ) as answer:  # fmt: skip
                    body = await answer.read()
                    kept = {
                        k: v
                        for k, v in answer.headers.items()
                        if k.lower() not in HOP_BY_HOP | {"content-length", "transfer-encoding"}
                    }
            finally:
                proxy.in_flight -= 1
            proxy.forwarded += 1
            return web.Response(status=answer.status, headers=kept, body=body)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", forward)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            proxy.url = f"http://127.0.0.1:{port}"
            yield proxy
        finally:
            await runner.cleanup()


@pytest.fixture
async def target() -> AsyncIterator[Target]:
    async with target_site() as site:
        yield site


@pytest.fixture
async def proxies() -> AsyncIterator[list[Forward]]:
    """Two forward proxies, "p1" and "p2"."""
    async with AsyncExitStack() as stack:
        yield [await stack.enter_async_context(forward_proxy(f"p{n}")) for n in (1, 2)]


@pytest.fixture
def refused_proxy() -> Iterator[str]:
    """A proxy URL whose port is bound but never listens: every connection is refused."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


@pytest.fixture
def silent_proxy() -> Iterator[str]:
    """A proxy URL whose listening socket's backlog is full: connections are never accepted
    (the kernel drops their SYNs), so every connection attempt times out."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    address = server.getsockname()
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(address)
        fillers.append(filler)
    try:
        yield f"http://127.0.0.1:{address[1]}"
    finally:
        for filler in fillers:
            filler.close()
        server.close()


class Pages(Spider):
    """Stores each page's URL; its start requests are set by the test."""

    name = "pages"
    requests: list[Request] = []

    def start_requests(self) -> Iterator[Request]:
        yield from self.requests

    def parse(self, response: Response) -> Iterator[dict[str, Any]]:
        yield {"url": response.url}


async def crawl_pages(tmp_path: Path, requests: list[Request], **settings: Any) -> Any:
    spider = Pages()
    spider.requests = requests
    return await crawl(spider, tmp_path / "p.db", {**QUICK, **settings})


def pages_of(target: Target, hosts: tuple[str, ...] = HOSTS[:2]) -> list[Request]:
    return [Request(target.url(f"/page/{n}", host)) for host in hosts for n in range(PAGES)]


async def test_every_request_goes_through_the_proxy_with_its_credentials(
    target: Target, tmp_path: Path
) -> None:
    async with forward_proxy("p1", credentials="crawl:s3cret") as proxy:
        requests = [*pages_of(target), Request(target.url("/private/1"))]
        summary = await crawl_pages(
            tmp_path, requests, PROXY=proxy.with_auth("crawl", "s3cret"), ROBOTS=True
        )

    assert summary.pages_done == 2 * PAGES and summary.pages_skipped == 1
    assert target.via == {"p1": 2 * PAGES + 2}  # robots.txt of both hosts too, all proxied
    assert proxy.forwarded == 2 * PAGES + 2 and proxy.refused_auth == 0
    assert target.hits["127.0.0.1/robots.txt"] == target.hits["127.0.0.2/robots.txt"] == 1
    assert target.hits["127.0.0.1/private/1"] == 0  # the target host's robots.txt obeyed
    assert proxy.seen_auth == {"Basic " + base64.b64encode(b"crawl:s3cret").decode()}


async def test_a_list_of_proxies_is_rotated_through(
    target: Target, proxies: list[Forward], tmp_path: Path
) -> None:
    summary = await crawl_pages(
        tmp_path, pages_of(target), PROXY=",".join(p.url for p in proxies), CONCURRENCY=4
    )

    assert summary.pages_done == 2 * PAGES and summary.retries == 0
    assert target.via == {"p1": PAGES, "p2": PAGES}  # round robin, one try each


async def test_a_refused_proxy_is_rested_and_the_page_fetched_through_another(
    target: Target,
    proxies: list[Forward],
    refused_proxy: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="crawler.proxies")
    summary = await crawl_pages(
        tmp_path, pages_of(target), PROXY=[refused_proxy, proxies[0].url], CONCURRENCY=4
    )

    assert summary.pages_done == 2 * PAGES and summary.errors == {}
    assert target.via == {"p1": 2 * PAGES}
    # Tries sent to it before its first refusal came back failed too, then it rested.
    assert 1 <= summary.retries <= 4
    rested = [r.getMessage() for r in caplog.records if "resting it" in r.getMessage()]
    assert rested == [f"proxy {refused_proxy} failed (ClientProxyConnectionError): resting it 30 s"]


async def test_a_proxy_that_refuses_is_an_error_kind_of_its_own(
    target: Target, refused_proxy: str, tmp_path: Path
) -> None:
    summary = await crawl_pages(tmp_path, pages_of(target)[:3], PROXY=refused_proxy, RETRIES=1)

    assert summary.pages_failed == 3 and summary.retries == 3
    assert summary.errors == {"ProxyError": 3}
    assert sum(target.hits.values()) == 0
    status = cli("status", str(tmp_path / "p.db"))
    assert "ProxyError: 3" in status.stdout


async def test_a_proxy_that_does_not_accept_is_rested_and_its_pages_fetched_through_another(
    target: Target,
    proxies: list[Forward],
    silent_proxy: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="crawler.proxies")
    summary = await crawl_pages(
        tmp_path, pages_of(target)[:4], PROXY=[silent_proxy, proxies[0].url], TIMEOUT=2
    )

    assert summary.pages_done == 4 and summary.errors == {}
    assert target.via == {"p1": 4}
    rested = [r.getMessage() for r in caplog.records if "resting it" in r.getMessage()]
    assert rested == [f"proxy {silent_proxy} failed (ConnectionTimeoutError): resting it 30 s"]


async def test_a_proxy_that_never_accepts_fails_its_pages_as_proxy_errors(
    target: Target, silent_proxy: str, tmp_path: Path
) -> None:
    summary = await crawl_pages(tmp_path, pages_of(target)[:2], PROXY=silent_proxy, TIMEOUT=1)

    assert summary.errors == {"ProxyError": 2} and sum(target.hits.values()) == 0


async def test_wrong_proxy_credentials_are_a_proxy_error(target: Target, tmp_path: Path) -> None:
    async with forward_proxy("p1", credentials="crawl:s3cret") as proxy:
        summary = await crawl_pages(
            tmp_path, pages_of(target)[:2], PROXY=proxy.with_auth("crawl", "wrong"), RETRIES=1
        )

    assert summary.errors == {"ProxyError": 2}
    assert proxy.refused_auth == 4 and proxy.forwarded == 0  # 407 each try, 2 tries a page


async def test_meta_proxy_overrides_proxy_and_none_means_direct(
    target: Target, proxies: list[Forward], tmp_path: Path
) -> None:
    requests = [
        Request(target.url("/page/1")),
        Request(target.url("/page/2"), meta={"proxy": proxies[1].url}),
        Request(target.url("/page/3"), meta={"proxy": None}),
        Request(target.url("/page/4"), meta={"other": 1}),
    ]
    summary = await crawl_pages(tmp_path, requests, PROXY=proxies[0].url)

    assert summary.pages_done == 4
    assert target.via == {"p1": 2, "p2": 1, "": 1}
    assert proxies[1].forwarded == 1


async def test_per_host_caps_hold_by_target_host_through_one_proxy(
    target: Target, proxies: list[Forward], tmp_path: Path
) -> None:
    target.delay = 0.05
    summary = await crawl_pages(
        tmp_path, pages_of(target), PROXY=proxies[0].url, PER_HOST=2, CONCURRENCY=16
    )

    assert summary.pages_done == 2 * PAGES
    assert target.max_in_flight == {HOSTS[0]: 2, HOSTS[1]: 2}
    assert proxies[0].max_in_flight > 2  # the cap is the target host's, not the proxy's


def test_proxy_setting_takes_one_url_a_list_or_a_comma_separated_list() -> None:
    one = Settings.build({"PROXY": "http://u:p@127.0.0.1:3128"})
    assert one.proxy == ("http://u:p@127.0.0.1:3128",)
    listed = Settings.build({"PROXY": ["http://127.0.0.1:1", "https://127.0.0.2:2"]})
    assert listed.proxy == ("http://127.0.0.1:1", "https://127.0.0.2:2")
    assert Settings.build({"PROXY": "http://a:1, http://b:2"}).proxy == ("http://a:1", "http://b:2")
    for bad in ("ftp://127.0.0.1:21", "socks5://127.0.0.1:1080", "http://:3128", "", []):
        with pytest.raises(UsageError, match="PROXY"):
            Settings.build({"PROXY": bad})


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "crawler", *args],
        capture_output=True, text=True, timeout=60, cwd=cwd, stdin=subprocess.DEVNULL,
    )  # fmt: skip


@pytest.mark.parametrize(
    "proxy", ["127.0.0.1:3128", "http://127.0.0.1:99999", "http://127.0.0.1:1/x", "socks5://h:1"]
)
def test_a_malformed_proxy_is_one_line_and_exit_2(proxy: str, tmp_path: Path) -> None:
    spider = tmp_path / "one.py"
    spider.write_text(
        "from crawler import Spider\n"
        "class One(Spider):\n"
        "    name = 'one'\n"
        "    start_urls = ['http://127.0.0.1:9/']\n"
    )
    result = cli("crawl", str(spider), "-s", f"PROXY={proxy}", cwd=tmp_path)

    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "PROXY" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "one.db").exists()
