"""The extension points as a user writes them: item pipelines, request/response middleware,
crawl events, typed items; against real sites on loopback and real crawl databases."""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import pytest
from aiohttp import web

from conftest import HOSTS, PAGES_PER_HOST, Site, serve_on_hosts
from crawl_cli import count_items, crawler, start
from crawler import DropItem, IgnoreRequest, Request, Response, Spider
from crawler.engine import crawl
from crawler.errors import FetchError
from crawler.hooks import Crawl
from crawler.storage.sqlite import Summary
from graph_spider import GraphSpider
from hostile_site import PDF, PNG

SPIDER = Path(__file__).with_name("graph_spider.py")
ALL_PAGES = len(HOSTS) * PAGES_PER_HOST
FAST = {"ROBOTS": False}


def stored(db: Path) -> list[tuple[dict[str, Any], str | None]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT data, type FROM items ORDER BY id").fetchall()
    return [(json.loads(data), kind) for data, kind in rows]


def rows(db: Path) -> dict[str, tuple[int, str | None, int | None]]:
    """url -> (state, error, attempts)."""
    with sqlite3.connect(db) as conn:
        found = conn.execute("SELECT url, state, error, attempts FROM requests")
        return {url: (state, error, attempts) for url, state, error, attempts in found}


def number(url: str) -> int:
    return int(url.rsplit("/", 1)[1])


# -- item pipelines ---------------------------------------------------------------------

PIPES = '''
"""Pipelines a user keeps beside the crawl, imported from the current folder."""
from pathlib import Path

from crawler import DropItem


class Clean:
    def open(self, crawl):
        with Path("opens.log").open("a") as log:
            log.write(crawl.spider.name + "\\n")

    def process_item(self, item, response):
        item["title"] = item["title"].upper()
        item["status"] = response.status
        return item


class DropSome:
    async def process_item(self, item, response):
        n = int(item["url"].rsplit("/", 1)[1])
        if n % 5 == 0:
            raise DropItem("multiple of five")
        if n % 7 == 0:
            return None
        return item
'''

FIVES = sum(1 for n in range(PAGES_PER_HOST) if n % 5 == 0) * len(HOSTS)
SEVENS = sum(1 for n in range(PAGES_PER_HOST) if n % 7 == 0 and n % 5) * len(HOSTS)


async def test_pipelines_clean_and_drop_exactly_once_across_a_kill(
    site: Site, tmp_path: Path
) -> None:
    (tmp_path / "pipes.py").write_text(PIPES)
    site.page_delay = 0.05
    db = tmp_path / "graph.db"
    args = ["crawl", str(SPIDER), "--db", str(db), "--log-level", "WARNING",
            "-s", f"START_URL={site.url('/g/0')}", "-s", "ROBOTS=false", "-s", "CONCURRENCY=4",
            "-s", "PIPELINES=pipes:Clean,pipes:DropSome"]  # fmt: skip
    proc = await start(*args, cwd=tmp_path)
    for _ in range(600):  # 30 s at most
        if count_items(db) >= 20 or proc.returncode is not None:
            break
        await asyncio.sleep(0.05)
    assert proc.returncode is None, "the crawl ended before it could be killed"
    proc.kill()
    await proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert 20 <= count_items(db) < ALL_PAGES

    code, out, err = await crawler(*args, cwd=tmp_path)
    assert code == 0, err

    items = [item for item, _ in stored(db)]
    urls = Counter(item["url"] for item in items)
    kept = {url for url in site.graph_urls() if number(url) % 5 and number(url) % 7}
    assert set(urls) == kept and set(urls.values()) == {1}
    assert all(item["title"] == item["title"].upper() and item["status"] == 200 for item in items)
    # Drops are counted with their pages, in the same transaction: exactly once, too.
    assert f"items dropped: multiple of five: {FIVES}, " in out
    assert f"dropped by DropSome.process_item: {SEVENS}" in out
    assert f"items: {len(kept)}\n" in out
    assert (tmp_path / "opens.log").read_text() == "graph\ngraph\n"  # open on each run

    code, status, _ = await crawler("status", str(db), cwd=tmp_path)
    assert code == 0 and f"items dropped: multiple of five: {FIVES}" in status


class Explode:
    """A pipeline with a bug on some items."""

    def process_item(self, item: dict[str, Any], response: Response) -> dict[str, Any]:
        if number(item["url"]) == 3:
            raise ValueError("a bug in the pipeline")
        return item


async def test_a_pipeline_exception_is_recorded_against_its_page(
    site: Site, tmp_path: Path
) -> None:
    db = tmp_path / "g.db"
    settings = {**FAST, "START_URL": site.url("/g/0"), "PIPELINES": [Explode]}
    summary = await crawl(GraphSpider, db, settings)

    assert summary.errors == {"ValueError in Explode.process_item": len(HOSTS)}
    assert summary.pages_failed == len(HOSTS)
    assert summary.items == ALL_PAGES - len(HOSTS)
    assert {number(item["url"]) for item, _ in stored(db)} == set(range(PAGES_PER_HOST)) - {3}


# -- typed items -------------------------------------------------------------------------


@dataclass
class Page:
    url: str
    title: str
    number: int
    tags: list[str] = field(default_factory=list)
    note: str | None = None


class TypedSpider(Spider):
    """Yields dataclass items, some of them wrong."""

    name = "typed"

    def parse(self, response: Response) -> Iterator[Page | Request]:
        n = number(response.url)
        title = response.css_first("title")
        if n == 1:
            yield Page(response.url, title.text() if title else "", "one")  # type: ignore[arg-type]
        elif n == 2:
            yield Page(response.url, title.text() if title else "", n, tags=["a", 2])  # type: ignore[list-item]
        else:
            yield Page(response.url, title.text() if title else "", n, tags=["x"])
        for link in response.css("a[href]"):
            yield response.follow(link, callback=self.parse)


class Quote(TypedDict):
    text: str
    author: str
    year: int | None


class QuoteSpider(Spider):
    """Yields dicts checked against a TypedDict."""

    name = "quotes-typed"
    item_type = Quote

    def parse(self, response: Response) -> Iterator[dict[str, Any]]:
        yield {"text": "kept", "author": "a", "year": 1900}
        yield {"text": "no author", "year": None}
        yield {"text": "typo", "author": "b", "year": None, "yeer": 1}
        yield {"text": "kept too", "author": "c", "year": None}


async def test_typed_items_are_checked_and_stored_with_their_type_name(
    site: Site, tmp_path: Path
) -> None:
    db = tmp_path / "t.db"
    summary = await crawl(TypedSpider, db, {**FAST, "START_URL": site.url("/g/0")})

    assert summary.pages_done == ALL_PAGES and summary.errors == {}
    assert summary.items_dropped == {
        "Page: field 'number': expected int, got str": len(HOSTS),
        "Page: field 'tags': expected list[str], got list": len(HOSTS),
    }
    items = stored(db)
    assert len(items) == ALL_PAGES - 2 * len(HOSTS)
    assert {kind for _, kind in items} == {"Page"}
    item = next(item for item, _ in items if number(item["url"]) == 5)
    assert item == {
        "url": item["url"], "title": item["title"], "number": 5, "tags": ["x"], "note": None
    }  # fmt: skip
    code, out, _ = await crawler("export", str(db), "--format", "csv", cwd=tmp_path)
    assert code == 0 and out.splitlines()[0] == "url,title,number,tags,note"

    db = tmp_path / "q.db"
    summary = await crawl(QuoteSpider, db, {**FAST, "START_URL": site.url("/g/0")})
    assert [item["text"] for item, kind in stored(db) if kind == "Quote"] == ["kept", "kept too"]
    assert summary.items_dropped == {
        "Quote: missing field 'author'": 1,
        "Quote: unknown field 'yeer'": 1,
    }


def test_an_item_type_that_is_not_a_dataclass_or_typeddict_is_refused(tmp_path: Path) -> None:
    spider = tmp_path / "bad.py"
    spider.write_text(
        "from crawler import Spider\n"
        "class Bad(Spider):\n"
        "    name = 'bad'\n"
        "    start_urls = ['http://127.0.0.1:9/']\n"
        "    item_type = dict\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "crawler", "crawl", str(spider), "--db", str(tmp_path / "b.db")],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "dataclass or a TypedDict" in done.stderr
    assert not (tmp_path / "b.db").exists()


# -- middleware ---------------------------------------------------------------------------

SECRET = b"s3cret"


def signature(path: str) -> str:
    return hashlib.sha256(SECRET + path.encode()).hexdigest()


@dataclass
class Server:
    url: str = ""
    hits: Counter[str] = field(default_factory=Counter)
    unsigned: int = 0
    headers: list[dict[str, str]] = field(default_factory=list)


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    """Pages /s/{n} that need a signature header, and pages that answer 200 "blocked"."""
    state = Server()

    async def signed(request: web.Request) -> web.Response:
        state.hits[request.path] += 1
        if request.headers.get("X-Signature") != signature(request.path):
            state.unsigned += 1
            return web.Response(status=403, text="unsigned")
        n = int(request.match_info["n"])
        link = f'<a href="/s/{n + 1}">next</a>' if n < 9 else ""
        return web.Response(text=f"<title>s{n}</title>{link}", content_type="text/html")

    async def blocked(request: web.Request) -> web.Response:
        state.hits[request.path_qs] += 1
        free_after = int(request.query.get("free_after", "1000"))
        if state.hits[request.path_qs] <= free_after:
            return web.Response(text="<p>captcha: are you human?</p>", content_type="text/html")
        return web.Response(text="<title>real page</title>", content_type="text/html")

    async def other(request: web.Request) -> web.Response:
        state.hits[request.path] += 1
        state.headers.append(dict(request.headers))
        if request.path.startswith("/fail"):
            return web.Response(status=503, text="down")
        return web.Response(text=f"<title>{request.path}</title>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/s/{n}", signed)
    app.router.add_get("/blocked", blocked)
    app.router.add_get("/{tail:.*}", other)
    urls: dict[str, str] = {}
    async with serve_on_hosts(app, urls):
        state.url = urls[HOSTS[0]]
        yield state


class Sign:
    """Signs every request, as an API that checks a header wants."""

    def process_request(self, request: Request) -> Request:
        path = request.url.split("/", 3)[3]
        headers = {**(request.headers or {}), "X-Signature": signature("/" + path)}
        return request.replace(headers=headers)


class Titles(Spider):
    name = "titles"

    def parse(self, response: Response) -> Iterator[dict[str, Any] | Request]:
        title = response.css_first("title")
        yield {"url": response.url, "title": title.text() if title else None}
        for link in response.css("a[href]"):
            yield response.follow(link, callback=self.parse)


async def test_a_middleware_signs_every_request(server: Server, tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    settings = {**FAST, "START_URL": server.url + "/s/0", "MIDDLEWARES": [Sign]}
    summary = await crawl(Titles, db, settings)

    assert summary.pages_done == 10 and summary.pages_failed == 0
    assert server.unsigned == 0
    assert server.hits == Counter({f"/s/{n}": 1 for n in range(10)})

    unsigned = await crawl(Titles, tmp_path / "u.db", {**settings, "MIDDLEWARES": []})
    assert unsigned.errors == {"403": 1}  # the server does check


class Unblock:
    """Turns a 200 "captcha" page into a retry, as Scrapy users do."""

    async def process_response(self, request: Request, response: Response) -> Request | Response:
        if b"captcha" in response.body:
            return request.replace(dont_filter=True)
        return response


async def test_a_200_blocked_page_is_retried_within_retries(server: Server, tmp_path: Path) -> None:
    db = tmp_path / "b.db"

    class Start(Titles):
        def start_requests(self) -> Iterator[Request]:
            yield Request(server.url + "/blocked", callback=self.parse)
            yield Request(server.url + "/blocked?free_after=1", callback=self.parse)

    summary = await crawl(Start, db, {**FAST, "RETRIES": 2, "MIDDLEWARES": [Unblock]})

    assert server.hits["/blocked"] == 1 + 2  # the first try and RETRIES more
    assert server.hits["/blocked?free_after=1"] == 2
    assert summary.pages_done == 1 and summary.pages_failed == 1
    assert summary.errors == {"retries exhausted by Unblock.process_response": 1}
    assert [item["title"] for item, _ in stored(db)] == ["real page"]
    state, _, attempts = rows(db)[server.url + "/blocked"]
    assert (state, attempts) == (2, 3)
    assert summary.retries == 2 + 1


class Gate:
    """Drops some requests before the fetch and some pages after it."""

    def process_request(self, request: Request) -> Request | None:
        if "/private" in request.url:
            raise IgnoreRequest("private area")
        if "/skip" in request.url:
            return None
        return request

    def process_response(self, request: Request, response: Response) -> Response | None:
        return None if "/empty" in response.url else response


async def test_a_middleware_drops_requests_and_pages_with_a_reason(
    server: Server, tmp_path: Path
) -> None:
    class Start(Titles):
        def start_requests(self) -> Iterator[Request]:
            for path in ("/private/1", "/skip/1", "/empty/1", "/kept/1"):
                yield Request(server.url + path, callback=self.parse)

    summary = await crawl(Start, tmp_path / "d.db", {**FAST, "MIDDLEWARES": [Gate]})

    assert server.hits["/private/1"] == server.hits["/skip/1"] == 0  # never fetched
    assert server.hits["/empty/1"] == server.hits["/kept/1"] == 1
    assert summary.pages_done == 1 and summary.pages_skipped == 3 and summary.pages_failed == 0
    assert summary.errors == {
        "dropped by Gate.process_request": 1,
        "dropped by Gate.process_response": 1,
        "private area": 1,
    }


class Recover:
    """Answers a failed fetch with another page of the same host."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def process_error(self, request: Request, error: Exception) -> Request | None:
        assert isinstance(error, FetchError)
        self.seen.append(error.reason)
        if request.url.endswith("/fail/soft"):
            return request.replace(url=request.url.replace("/fail/soft", "/fallback"))
        return None


class Broken:
    def process_request(self, request: Request) -> Request:
        if request.url.endswith("/bug"):
            raise ValueError("a bug in the middleware")
        return request


async def test_process_error_recovers_and_a_middleware_bug_fails_its_page(
    server: Server, tmp_path: Path
) -> None:
    recover = Recover()

    class Start(Titles):
        def start_requests(self) -> Iterator[Request]:
            for path in ("/fail/soft", "/fail/hard", "/bug", "/fine"):
                yield Request(server.url + path, callback=self.parse)

    settings = {**FAST, "RETRIES": 1, "MIDDLEWARES": [recover, Broken]}
    db = tmp_path / "e.db"
    summary = await crawl(Start, db, settings)

    assert recover.seen == ["503", "503"]
    assert summary.pages_done == 2 and summary.pages_failed == 2
    assert summary.errors == {"503": 1, "ValueError in Broken.process_request": 1}
    assert sorted(item["title"] for item, _ in stored(db)) == ["/fallback", "/fine"]
    assert server.hits["/bug"] == 0
    assert server.hits["/fail/soft"] == server.hits["/fail/hard"] == 2  # 1 + RETRIES
    assert server.hits["/fallback"] == 1


# -- events ---------------------------------------------------------------------------------


class Watched(GraphSpider):
    """Counts every event it is sent, and stops itself once, half-way."""

    name = "watched"
    stop_after = 0

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.closed_with: Summary | None = None
        self.stored_seen: list[int] = []

    def opened(self, crawl: Crawl) -> None:
        self.calls["opened"] += 1
        crawl.subscribe("page_stored", self.on_stored)
        crawl.subscribe("page_failed", lambda page, stats: self.calls.update(["failed"]))
        crawl.subscribe("item_dropped", self.on_dropped)
        self.crawl = crawl

    async def on_stored(self, page: Any, stats: Any) -> None:
        self.calls["stored"] += 1
        self.stored_seen.append(stats.pages_done)
        if self.stop_after and self.calls["stored"] == self.stop_after:
            self.crawl.stop()

    def on_dropped(self, item: dict[str, Any], reason: str, stats: Any) -> None:
        self.calls[f"dropped: {reason}"] += 1

    async def closed(self, crawl: Crawl, summary: Summary) -> None:
        self.calls["closed"] += 1
        self.closed_with = summary

    def parse(self, response: Response) -> Iterator[dict[str, Any] | Request]:
        if number(response.url) == 39:
            raise ValueError("page 39 is broken")
        yield from super().parse(response)


class DropEvens:
    def process_item(self, item: dict[str, Any], response: Response) -> dict[str, Any]:
        if number(item["url"]) % 2 == 0:
            raise DropItem("even")
        return item


async def test_events_fire_once_each_and_closed_once_at_the_real_end(
    site: Site, tmp_path: Path
) -> None:
    db = tmp_path / "w.db"
    settings = {**FAST, "START_URL": site.url("/g/0"), "PIPELINES": [DropEvens],
                "CONCURRENCY": 2}  # fmt: skip
    first = Watched()
    first.stop_after = 10
    summary = await crawl(first, db, settings)  # stopped: not the end

    assert first.calls["opened"] == 1 and first.calls["closed"] == 0
    assert not summary.finished
    assert first.calls["stored"] == summary.pages_done

    second = Watched()
    summary = await crawl(second, db, settings)  # resumed to the end

    assert summary.finished
    assert second.calls["opened"] == 1 and second.calls["closed"] == 1
    assert first.calls["stored"] + second.calls["stored"] == summary.pages_done == ALL_PAGES - 3
    assert first.calls["failed"] + second.calls["failed"] == summary.pages_failed == 3
    evens = first.calls["dropped: even"] + second.calls["dropped: even"]
    assert evens == summary.items_dropped["even"] == ALL_PAGES // 2
    assert second.closed_with is not None and second.closed_with.pages_done == ALL_PAGES - 3
    assert second.closed_with.items == summary.items == ALL_PAGES // 2 - 3
    assert second.stored_seen == sorted(second.stored_seen)  # stats move with the commits
    assert second.stored_seen[-1] == ALL_PAGES - 3

    third = Watched()
    await crawl(third, db, settings)  # a finished crawl: opened again, never closed twice
    assert third.calls == Counter(opened=1)


# -- loading: bad input is one line before anything is fetched --------------------------------


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("PIPELINES=nowhere_at_all:Clean", "cannot import 'nowhere_at_all'"),
        ("PIPELINES=pipes:Missing", "pipes has no 'Missing'"),
        ("PIPELINES=pipes", "expected an import path"),
        ("MIDDLEWARES=pipes:Clean", "has no process_request or process_response or process_error"),
        ("PIPELINES=pipes:NeedsArgs", "NeedsArgs() failed: TypeError"),
        ("PIPELINES=pipes:broken_module_attr", "is not a class"),
    ],
)
def test_a_pipeline_or_middleware_that_cannot_load_is_one_line_and_exit_2(
    tmp_path: Path, setting: str, message: str
) -> None:
    (tmp_path / "pipes.py").write_text(
        PIPES
        + "\nclass NeedsArgs:\n    def __init__(self, x):\n        pass\n"
        + "    def process_item(self, item, response):\n        return item\n"
        + "\ndef broken_module_attr(item, response):\n    return item\n"
    )
    db = tmp_path / "never.db"
    done = subprocess.run(
        [sys.executable, "-m", "crawler", "crawl", str(SPIDER), "--db", str(db), "-s", setting],
        capture_output=True, text=True, timeout=60, cwd=tmp_path, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert not db.exists()


# -- responses that are not markup ------------------------------------------------------------


def response(content_type: str | None, body: bytes) -> Response:
    headers = {"Content-Type": content_type} if content_type else {}
    return Response("http://127.0.0.1/x", 200, headers, body, Request("http://127.0.0.1/x"))


LINKS = b"<html><title>t</title><a href='/in'>in</a></html>"


@pytest.mark.parametrize(
    ("content_type", "body", "nodes"),
    [
        ("text/html; charset=utf-8", LINKS, 1),
        ("application/xhtml+xml", LINKS, 1),
        ("application/xml", b"<?xml version='1.0'?><urlset><a href='/in'/></urlset>", 1),
        ("application/pdf", PDF, 0),
        ("image/png", PNG, 0),
        ("application/octet-stream", LINKS, 0),
        ("application/json", b'{"a": "<a href=\\"/in\\">"}', 0),
        ("text/plain", LINKS, 0),
        (None, LINKS, 1),  # no Content-Type: it looks like markup
        (None, PDF, 0),
    ],
)
def test_css_finds_nodes_only_in_html_or_xml(
    content_type: str | None, body: bytes, nodes: int
) -> None:
    page = response(content_type, body)
    assert len(page.css("a")) == nodes
    assert (page.css_first("a") is not None) == bool(nodes)


class FollowEverything(Spider):
    name = "follow-everything"

    def parse(self, response: Response) -> Iterator[Request]:
        for link in response.css("a[href]"):
            yield response.follow(link, callback=self.parse)


async def test_a_spider_asking_every_page_for_links_follows_none_inside_a_pdf(
    tmp_path: Path,
) -> None:
    hits: Counter[str] = Counter()

    async def pdf(request: web.Request) -> web.Response:
        hits[request.path] += 1
        return web.Response(body=PDF, content_type="application/pdf")

    app = web.Application()
    app.router.add_get("/{tail:.*}", pdf)
    urls: dict[str, str] = {}
    async with serve_on_hosts(app, urls):
        spider = FollowEverything()
        spider.start_urls = [urls[HOSTS[0]] + "/doc.pdf"]
        summary = await crawl(spider, tmp_path / "p.db", FAST)
    assert summary.pages_done == 1
    assert hits == Counter({"/doc.pdf": 1})  # '/page/in-pdf' inside it was never taken


class Rewrite:
    """Adds an API key to every URL of its host; sends one page to another host."""

    def process_request(self, request: Request) -> Request:
        if request.url.endswith("/elsewhere"):
            return request.replace(url="http://127.0.0.2:9/elsewhere")
        return request.replace(url=request.url + "?key=abc")


async def test_a_middleware_may_change_the_url_on_its_host_only(
    server: Server, tmp_path: Path
) -> None:
    class Start(Titles):
        def start_requests(self) -> Iterator[Request]:
            for path in ("/keyed", "/elsewhere"):
                yield Request(server.url + path, callback=self.parse)

    summary = await crawl(Start, tmp_path / "r.db", {**FAST, "MIDDLEWARES": [Rewrite]})

    assert server.hits["/keyed"] == 1 and server.hits["/elsewhere"] == 0
    assert summary.pages_done == 1 and summary.pages_failed == 1
    assert summary.errors == {"Rewrite.process_request returned a request for another host": 1}
