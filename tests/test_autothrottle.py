"""AUTOTHROTTLE against a real host that slows down under load: it answers after
0.05 s per request in flight to it, and 503 above OVERLOAD in flight. Assertions are on
what the server saw and on the direction the delays moved, never on speed."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from conftest import HOSTS, serve_on_hosts
from crawler import Request, Response, Spider
from crawler.engine import crawl
from crawler.progress import Estimate, frame
from crawler.settings import Settings
from crawler.stats import HostState, Snapshot
from crawler.throttle import TROUBLE_MIN, AutoThrottle

PAGES = 40
OVERLOAD = 3  # more requests in flight than this: 503
SETTINGS = {"ROBOTS": False, "RETRIES": 8, "CONCURRENCY": 8, "PER_HOST": 8, "TIMEOUT": 10}
CHANGE = re.compile(r"AUTOTHROTTLE (\S+): delay ([\d.]+) s -> ([\d.]+) s \((\d+) in")


@dataclass
class Loaded:
    """A host whose answers slow down with the requests in flight to it."""

    urls: dict[str, str] = field(default_factory=dict)
    in_flight: int = 0
    max_in_flight: int = 0
    answers: list[int] = field(default_factory=list)  # statuses, in order
    trouble: set[int] = field(default_factory=set)  # these requests (1, 2, ...) get a 503

    def url(self, path: str) -> str:
        return self.urls[HOSTS[0]] + path


@pytest.fixture
async def loaded() -> AsyncIterator[Loaded]:
    host = Loaded()

    async def page(request: web.Request) -> web.Response:
        host.in_flight += 1
        host.max_in_flight = max(host.max_in_flight, host.in_flight)
        try:
            number = len(host.answers) + 1
            overloaded = host.in_flight > OVERLOAD or number in host.trouble
            host.answers.append(503 if overloaded else 200)
            await asyncio.sleep(0.05 * host.in_flight)
        finally:
            host.in_flight -= 1
        if overloaded:
            return web.Response(status=503, text="busy")
        return web.Response(text=f"<title>{request.path}</title>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/{tail:.*}", page)
    async with serve_on_hosts(app, host.urls):
        yield host


class Pages(Spider):
    name = "loaded"
    urls: list[str] = []

    def start_requests(self) -> Iterator[Request]:
        for url in self.urls:
            yield Request(url)

    def parse(self, response: Response) -> Iterator[dict[str, Any]]:
        yield {"url": response.url}


async def crawl_pages(host: Loaded, tmp_path: Path, name: str, **settings: Any) -> Any:
    spider = Pages()
    spider.urls = [host.url(f"/p/{n}") for n in range(PAGES)]
    return await crawl(spider, tmp_path / f"{name}.db", {**SETTINGS, **settings})


def delays(caplog: pytest.LogCaptureFixture) -> list[tuple[float, float, int]]:
    """Each change of the host's delay: (before, after, status)."""
    found = [CHANGE.search(record.getMessage()) for record in caplog.records]
    return [(float(m[2]), float(m[3]), int(m[4])) for m in found if m is not None]


async def test_a_throttled_crawl_overloads_the_host_less(loaded: Loaded, tmp_path: Path) -> None:
    plain = await crawl_pages(loaded, tmp_path, "plain")
    plain_503s, plain_max = loaded.answers.count(503), loaded.max_in_flight
    loaded.answers.clear()
    loaded.max_in_flight = 0
    throttled = await crawl_pages(loaded, tmp_path, "throttled", AUTOTHROTTLE=True)

    assert plain.pages_done == throttled.pages_done == PAGES
    assert plain_503s > 0 and plain_max > OVERLOAD  # eight workers, eight slots: overloaded
    assert loaded.answers.count(503) < plain_503s
    assert loaded.max_in_flight < plain_max


async def test_the_delay_rises_after_503s_and_falls_once_the_host_recovers(
    loaded: Loaded, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="crawler.frontier")
    loaded.trouble = {10, 11, 12}  # three bad answers in a row, then the host recovers
    summary = await crawl_pages(loaded, tmp_path, "t", AUTOTHROTTLE=True, DELAY=0.01)

    assert summary.pages_done == PAGES
    changes = delays(caplog)
    troubled = [(before, after) for before, after, status in changes if status == 503]
    assert troubled and all(after >= max(2 * before, TROUBLE_MIN) for before, after in troubled)
    peak = max(after for _, after, _ in changes)
    assert peak >= 4 * TROUBLE_MIN  # at least 0.25 s, doubled twice
    last = changes[-1][1]
    assert 0.01 <= last < peak / 4  # fell back towards the latency, never below DELAY
    assert all(after >= 0.01 for _, after, _ in changes)


def test_the_delay_follows_latency_within_its_bounds() -> None:
    throttle = AutoThrottle(target_concurrency=2.0, max_delay=5.0)
    assert throttle.delay(0.1, 0.0, latency=1.0, status=200) == 0.5  # a rise: at once
    assert throttle.delay(0.5, 0.0, latency=0.1, status=200) == 0.275  # a fall: averaged
    assert throttle.delay(0.5, 0.0, latency=0.1, status=404) == 0.5  # an error page: no fall
    assert throttle.delay(0.5, 0.0, latency=0.1, status=503) == 1.0  # trouble: doubled
    assert throttle.delay(0.0, 0.0, latency=0.01, status=429) == TROUBLE_MIN
    assert throttle.delay(4.0, 0.0, latency=0.1, status=503) == 5.0  # AUTOTHROTTLE_MAX_DELAY
    assert throttle.delay(0.5, 0.3, latency=0.0, status=200) == 0.3  # DELAY or Crawl-delay
    assert throttle.delay(9.0, 8.0, latency=20.0, status=200) == 8.0  # a floor over the max


def test_autothrottle_settings() -> None:
    settings = Settings.build(
        {"AUTOTHROTTLE": "on", "AUTOTHROTTLE_MAX_DELAY": "10", "AUTOTHROTTLE_TARGET_CONCURRENCY": 4}
    )
    assert settings.autothrottle and settings.autothrottle_max_delay == 10.0
    assert settings.autothrottle_target_concurrency == 4.0
    assert not Settings.build().autothrottle


def snapshot_of(*hosts: HostState) -> Snapshot:
    return Snapshot(
        elapsed=1.0, pages_done=10, pages_failed=0, pages_skipped=0, pages_redirected=0,
        queued=5, in_flight=2, items=10, bytes=1000, retries=0, max_pages=0, hosts=hosts,
    )  # fmt: skip


def test_the_live_display_shows_each_hosts_delay_when_one_has_a_delay() -> None:
    throttled = snapshot_of(
        HostState("127.0.0.1:8000", 3977, 8, "capped", 0.0),
        HostState("127.0.0.2:8001", 310, 3, "fetching", 0.35),
    )
    lines = frame(throttled, Estimate(None, None)).plain.splitlines()[-3:]
    assert lines == [
        " host            waiting  in flight     delay  state",
        " 127.0.0.1:8000    3,977          8    0.00 s  capped",
        " 127.0.0.2:8001      310          3    0.35 s  fetching",
    ]
    plain = snapshot_of(HostState("127.0.0.1:8000", 3977, 8, "capped"))
    assert "delay" not in frame(plain, Estimate(None, None)).plain
