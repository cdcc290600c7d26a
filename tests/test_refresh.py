"""`crawler crawl --refresh AGE`: conditional GETs of a finished crawl's old pages.

A real site on loopback whose pages carry ETag and Last-Modified, answer 304 to a
matching conditional request, and change between crawls; the crawls are the `crawler`
command in real subprocesses, one of them killed with SIGKILL mid-refresh.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from conftest import serve_on_hosts
from crawl_cli import run
from crawler import Request, Response, Spider
from crawler.cli import parse_age
from crawler.engine import crawl as engine_crawl
from crawler.http import redirect_request

SPIDER = """\
from crawler import Spider

class Pages(Spider):
    name = "pages"
    start_urls = ["http://127.0.0.1:9/p/0"]  # the tests point it at their site

    def parse(self, response):
        n = int(response.url.rsplit("/", 1)[1])
        for li in response.css("li"):
            yield {"page": n, "text": li.text()}
            if response.css_first("p.bug"):
                raise ValueError("a bug in the spider, met by this version of the page")
        for a in response.css("a[href]"):
            yield response.follow(a, callback=self.parse)
"""


@dataclass
class PageSite:
    """Pages /p/0../p/N-1 (page 0 links to every other), each with two items of its
    version; even pages carry an ETag and a Last-Modified, odd ones a Last-Modified only."""

    pages: int
    urls: dict[str, str] = field(default_factory=dict)
    versions: Counter[int] = field(default_factory=Counter)  # page -> version - 1
    links: dict[int, list[int]] = field(default_factory=dict)  # extra links, by page
    gone: set[int] = field(default_factory=set)  # answer 404
    buggy: set[int] = field(default_factory=set)  # make the spider raise after one item
    delay: float = 0.0
    hits: Counter[int] = field(default_factory=Counter)
    conditions: dict[int, list[tuple[str | None, str | None]]] = field(default_factory=dict)
    answers: Counter[tuple[int, int]] = field(default_factory=Counter)  # (page, status)

    @property
    def start(self) -> str:
        return self.urls["127.0.0.1"] + "/p/0"

    def version(self, n: int) -> int:
        return self.versions[n] + 1

    def etag(self, n: int) -> str | None:
        return f'"{n}-{self.version(n)}"' if n % 2 == 0 else None

    def last_modified(self, n: int) -> str:
        when = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(days=self.version(n))
        return format_datetime(when, usegmt=True)

    def items(self, n: int) -> list[tuple[int, str]]:
        """The items page n holds now."""
        return [(n, f"{n}.{self.version(n)}.{part}") for part in "ab"]

    def forget(self) -> None:
        """Start counting afresh."""
        self.hits.clear()
        self.conditions.clear()
        self.answers.clear()

    async def page(self, request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        self.hits[n] += 1
        etag, since = request.headers.get("If-None-Match"), request.headers.get("If-Modified-Since")
        self.conditions.setdefault(n, []).append((etag, since))
        if self.delay:
            await asyncio.sleep(self.delay)
        status, response = self._answer(n, etag, since)
        self.answers[n, status] += 1
        return response

    def _answer(self, n: int, etag: str | None, since: str | None) -> tuple[int, web.Response]:
        if n in self.gone:
            return 404, web.Response(status=404, text="gone")
        headers = {"Last-Modified": self.last_modified(n)}
        if self.etag(n):
            headers["ETag"] = self.etag(n) or ""
        if etag is not None:  # If-None-Match wins over If-Modified-Since (RFC 9110)
            unchanged = etag == self.etag(n)
        else:
            unchanged = since is not None and parsedate_to_datetime(since) >= parsedate_to_datetime(
                self.last_modified(n)
            )
        if unchanged:
            return 304, web.Response(status=304, headers=headers)
        others = range(1, self.pages) if n == 0 else ()
        links = "".join(f'<a href="/p/{m}">{m}</a>' for m in [*others, *self.links.get(n, [])])
        items = "".join(f"<li>{text}</li>" for _, text in self.items(n))
        bug = '<p class="bug"></p>' if n in self.buggy else ""
        html = f"<html><title>{n}</title>{bug}<ul>{items}</ul>{links}</html>"
        return 200, web.Response(text=html, content_type="text/html", headers=headers)


async def serve(pages: int) -> AsyncIterator[PageSite]:
    site = PageSite(pages)
    app = web.Application()
    app.router.add_get("/p/{n}", site.page)
    async with serve_on_hosts(app, site.urls):
        yield site


@pytest.fixture
async def small() -> AsyncIterator[PageSite]:
    async for site in serve(8):
        yield site


@pytest.fixture
async def large() -> AsyncIterator[PageSite]:
    async for site in serve(40):
        yield site


def crawl_args(spider: Path, db: Path, site: PageSite, *more: str) -> list[str]:
    return [
        "crawl", str(spider), "--db", str(db), "--log-level", "WARNING",
        "-s", f"START_URL={site.start}", "-s", "ROBOTS=false", *more,
    ]  # fmt: skip


async def crawl(spider: Path, db: Path, site: PageSite, *more: str) -> str:
    """Run `crawler crawl` to its end; its stdout (the status lines)."""
    done = await asyncio.to_thread(run, *crawl_args(spider, db, site, *more))
    assert done.returncode == 0, done.stderr
    return done.stdout


async def exported(db: Path) -> list[tuple[int, str]]:
    """The items as `crawler export` writes them, sorted: duplicates stay visible."""
    done = await asyncio.to_thread(run, "export", str(db))
    assert done.returncode == 0, done.stderr
    items = [json.loads(line) for line in done.stdout.splitlines()]
    return sorted((item["page"], item["text"]) for item in items)


async def status_lines(db: Path) -> list[str]:
    done = await asyncio.to_thread(run, "status", str(db))
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def age_pages(db: Path, seconds: float) -> None:
    """Make every finished page look `seconds` older (no waiting in the tests)."""
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE requests SET finished_at = finished_at - ?", (seconds,))


def spider_file(tmp_path: Path) -> Path:
    path = tmp_path / "pages.py"
    path.write_text(SPIDER)
    return path


def expected(site: PageSite, pages: range | list[int]) -> list[tuple[int, str]]:
    return sorted(item for n in pages for item in site.items(n))


async def test_a_refresh_keeps_unchanged_pages_replaces_changed_ones_and_crawls_new_links(
    small: PageSite, tmp_path: Path
) -> None:
    site, spider, db = small, spider_file(tmp_path), tmp_path / "pages.db"
    await crawl(spider, db, site)
    before = await exported(db)
    assert before == expected(site, range(8))
    age_pages(db, 7200)
    site.forget()
    site.versions.update([1, 2])  # pages 1 and 2 change; 2 now also links to a new page 8
    site.links[2] = [8]
    site.gone.add(3)  # page 3 now answers 404

    out = await crawl(spider, db, site, "--refresh", "1h")

    # Every page done before was asked for once, with the validators it was stored with.
    assert site.hits == Counter(dict.fromkeys(range(9), 1))
    first_version = "Tue, 02 Jan 2024 00:00:00 GMT"
    for n in range(8):
        stored_etag = f'"{n}-1"' if n % 2 == 0 else None
        assert site.conditions[n] == [(stored_etag, first_version)]
    assert site.conditions[8] == [(None, None)]  # new: fetched unconditionally
    assert {page for (page, status) in site.answers if status == 304} == {0, 4, 5, 6, 7}
    # 304s kept their items, changed pages replaced theirs, the failed page kept its last
    # good items, the new page was crawled: each item once.
    assert await exported(db) == sorted(
        [*expected(site, [0, 1, 2, 4, 5, 6, 7, 8]), *[i for i in before if i[0] == 3]]
    )
    lines = await status_lines(db)
    for line in ("not modified: 5", "done: 8", "failed: 1", "queued: 0", "items: 18"):
        assert line in lines and line in out.splitlines()
    assert "404: 1" in next(line for line in lines if line.startswith("errors by kind"))

    # The next refresh starts its own count, and tries the failed page again: back and
    # unchanged, it answers 304 and its kept items are current again.
    age_pages(db, 7200)
    site.forget()
    site.gone.clear()
    await crawl(spider, db, site, "--refresh", "1h")
    assert site.hits == Counter(dict.fromkeys(range(9), 1))
    assert {page for (page, status) in site.answers if status == 304} == set(range(9))
    assert await exported(db) == expected(site, range(9))
    lines = await status_lines(db)
    assert "not modified: 9" in lines and "failed: 0" in lines and "done: 9" in lines


async def test_a_refresh_older_than_every_page_fetches_nothing(
    small: PageSite, tmp_path: Path
) -> None:
    site, spider, db = small, spider_file(tmp_path), tmp_path / "pages.db"
    await crawl(spider, db, site)
    before = await exported(db)
    site.forget()
    site.versions.update(range(8))  # changed, but not old enough to be looked at

    out = await crawl(spider, db, site, "--refresh", "1h")

    assert site.hits == Counter()
    assert await exported(db) == before
    assert "not modified: 0" in out.splitlines() and "done: 8" in out.splitlines()


def refresh_rows(db: Path) -> dict[int, int]:
    """Page number -> its refresh mark, read while a crawl may be writing."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            rows = conn.execute("SELECT url, refresh FROM requests").fetchall()
    except sqlite3.OperationalError:
        return {}
    return {int(url.rsplit("/", 1)[1]): mark for url, mark in rows}


def items_by_page(db: Path) -> dict[int, list[str]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT data FROM items ORDER BY id").fetchall()
    pages: dict[int, list[str]] = {}
    for (data,) in rows:
        item = json.loads(data)
        pages.setdefault(item["page"], []).append(item["text"])
    return pages


async def test_a_refresh_killed_with_sigkill_resumes_and_stores_each_item_once(
    large: PageSite, tmp_path: Path
) -> None:
    site, spider, db = large, spider_file(tmp_path), tmp_path / "pages.db"
    await crawl(spider, db, site)
    age_pages(db, 7200)
    site.forget()
    changed = range(0, 40, 2)
    site.versions.update(changed)  # even pages change, odd ones do not
    site.delay = 0.05
    args = crawl_args(spider, db, site, "--refresh", "1h", "-s", "CONCURRENCY=2")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "crawler", *args,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        stdin=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    for _ in range(600):  # 30 s at most
        if sum(mark in (2, 3) for mark in refresh_rows(db).values()) >= 10:
            break
        if proc.returncode is not None:
            break
        await asyncio.sleep(0.05)
    assert proc.returncode is None, "the refresh ended before it could be killed"
    proc.kill()
    assert await proc.wait() == -signal.SIGKILL

    # At the kill: each page holds one version of its items, whole; some refreshes wait.
    marks = refresh_rows(db)
    assert 10 <= sum(mark in (2, 3) for mark in marks.values()) < 40
    assert any(mark == 1 for mark in marks.values())
    for n, texts in items_by_page(db).items():
        assert len(texts) == 2 and len({text.split(".")[1] for text in texts}) == 1, (n, texts)
    refreshed_before_kill = {n for n, mark in marks.items() if mark in (2, 3)}

    site.delay = 0.0
    out = await crawl(spider, db, site, "--refresh", "1h")

    assert await exported(db) == expected(site, range(40))
    assert "not modified: 20" in out.splitlines() and "done: 40" in out.splitlines()
    # A page refreshed before the kill is new again: the rerun did not queue it again.
    assert all(site.hits[n] == 1 for n in refreshed_before_kill)
    assert all(1 <= site.hits[n] <= 2 for n in range(40))


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30m", 1800), ("12h", 43200), ("7d", 604800), ("2w", 1209600), ("90", 90),
     ("1.5h", 5400), (" 45s ", 45), ("0", 0), ("3D", 259200)],
)  # fmt: skip
def test_age_takes_a_unit_or_seconds(text: str, seconds: float) -> None:
    assert parse_age(text) == seconds


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--refresh", "soon"], ["--refresh 'soon'", "30m, 12h, 7d, 2w"]),
        (["--refresh=-5m"], ["--refresh '-5m'"]),
        (["--refresh", "3 days"], ["--refresh '3 days'"]),
        (["--refresh", "1h"], ["no such database"]),
    ],
)
def test_bad_refresh_input_is_one_line_and_exit_2(
    args: list[str], words: list[str], tmp_path: Path
) -> None:
    db = tmp_path / "missing.db"
    spider = spider_file(tmp_path)
    result = run("crawl", str(spider), "--db", str(db), *args)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in result.stderr
    assert not db.exists()


async def test_a_database_made_before_refresh_existed_is_refreshed_unconditionally(
    small: PageSite, tmp_path: Path
) -> None:
    site, spider, db = small, spider_file(tmp_path), tmp_path / "pages.db"
    await crawl(spider, db, site)
    with sqlite3.connect(db) as conn:  # the schema of the version before --refresh
        for column in ("etag", "last_modified", "refresh"):
            conn.execute(f"ALTER TABLE requests DROP COLUMN {column}")
    assert "not modified: 0" in await status_lines(db)  # read as it is, not upgraded
    age_pages(db, 7200)
    site.forget()
    site.versions.update([1])

    out = await crawl(spider, db, site, "--refresh", "1h")

    # No validators were stored: each page is fetched in full, and its items replaced.
    assert site.conditions == {n: [(None, None)] for n in range(8)}
    assert await exported(db) == expected(site, range(8))
    assert "not modified: 0" in out.splitlines() and "done: 8" in out.splitlines()
    site.forget()
    age_pages(db, 7200)
    await crawl(spider, db, site, "--refresh", "1h")  # now it has them
    assert set(site.answers) == {(n, 304) for n in range(8)}


def test_a_redirect_hop_does_not_carry_the_refreshed_pages_conditions() -> None:
    request = Request(
        "http://127.0.0.1:9/old",
        headers={"If-None-Match": '"1-1"', "if-modified-since": "Tue, 02 Jan 2024", "X-Key": "k"},
    )
    moved = Response("http://127.0.0.1:9/old", 301, {"Location": "/new"}, b"", request)
    hop = redirect_request(moved)
    assert hop is not None and hop.url == "http://127.0.0.1:9/new"
    assert hop.headers == {"X-Key": "k"}


async def test_a_refetch_whose_callback_raises_keeps_the_last_good_items(
    small: PageSite, tmp_path: Path
) -> None:
    site, spider, db = small, spider_file(tmp_path), tmp_path / "pages.db"
    await crawl(spider, db, site)
    before = await exported(db)
    age_pages(db, 7200)
    site.versions.update([5])
    site.buggy.add(5)  # the new version makes the callback raise after its first item

    out = await crawl(spider, db, site, "--refresh", "1h")

    assert await exported(db) == before  # not the new version's first item beside the old
    assert "failed: 1" in out.splitlines() and "not modified: 7" in out.splitlines()
    assert "ValueError in parse: 1" in next(
        line for line in out.splitlines() if line.startswith("errors by kind")
    )
    age_pages(db, 7200)
    site.forget()
    site.buggy.clear()
    await crawl(spider, db, site, "--refresh", "1h")
    assert site.conditions[5] == [(None, "Tue, 02 Jan 2024 00:00:00 GMT")]  # the kept items'
    assert await exported(db) == expected(site, range(8))
    assert "failed: 0" in await status_lines(db)


class OwnConditions(Spider):
    """Asks for page 0 with an If-None-Match of its own: not a refresh."""

    name = "own"

    def start_requests(self) -> Iterator[Request]:
        yield Request(self.start_urls[0], headers={"If-None-Match": '"0-1"'})

    def parse(self, response: Response) -> Iterator[dict[str, Any]]:
        yield {"status": response.status}


async def test_a_304_to_a_request_that_is_not_a_refresh_runs_no_callback(
    small: PageSite, tmp_path: Path
) -> None:
    spider = OwnConditions()
    spider.start_urls = [small.start]
    summary = await engine_crawl(spider, tmp_path / "own.db", {"ROBOTS": False})

    assert small.answers == Counter({(0, 304): 1})
    assert summary.pages_done == 1 and summary.items == 0 and summary.not_modified == 0
    assert summary.status_codes == {304: 1}


async def test_a_plain_crawl_finishes_a_refresh_left_queued(
    small: PageSite, tmp_path: Path
) -> None:
    site, spider, db = small, spider_file(tmp_path), tmp_path / "pages.db"
    await crawl(spider, db, site)
    before = await exported(db)
    with sqlite3.connect(db) as conn:  # as a refresh killed right after it queued pages
        conn.execute("UPDATE requests SET state = 0, refresh = 1 WHERE url NOT LIKE '%/p/0'")
    site.forget()
    site.versions.update([7])

    out = await crawl(spider, db, site)  # no --refresh: a resume

    assert site.hits == Counter(dict.fromkeys(range(1, 8), 1))
    assert all(etag or since for n in range(1, 8) for etag, since in site.conditions[n])
    assert await exported(db) == sorted([*(i for i in before if i[0] != 7), *site.items(7)])
    assert "not modified: 6" in out.splitlines() and "queued: 0" in out.splitlines()
