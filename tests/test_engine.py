"""The crawl end to end, in process, against the real site of conftest.py."""

from __future__ import annotations

import asyncio
import gc
import json
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from conftest import HOSTS, PAGES_PER_HOST, Site
from crawler import Request, Response, Spider, frontier
from crawler.engine import _Budget, crawl
from crawler.errors import FetchError
from crawler.http import MAX_REDIRECTS, redirect_request
from crawler.settings import Settings
from crawler.urls import fingerprint
from graph_spider import GraphSpider

FAST = {"ROBOTS": False, "RETRIES": 3}


def stored_items(db: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(db) as conn:
        return [json.loads(row[0]) for row in conn.execute("SELECT data FROM items ORDER BY id")]


def page_rows(db: Path) -> dict[str, tuple[int, int | None, str | None, int]]:
    """url -> (state, status, error, attempts)."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT url, state, status, error, attempts FROM requests")
        return {
            url: (state, status, error, attempts) for url, state, status, error, attempts in rows
        }


async def test_every_reachable_page_is_fetched_and_stored_once(site: Site, tmp_path: Path) -> None:
    db = tmp_path / "g.db"
    summary = await crawl(GraphSpider, db, {**FAST, "START_URL": site.url("/g/0")})

    pages = len(HOSTS) * PAGES_PER_HOST
    assert summary.pages_done == pages
    assert summary.pages_failed == 0 and summary.pages_queued == 0
    graph_hits = {k: v for k, v in site.hits.items() if "/g/" in k}
    assert len(graph_hits) == pages
    assert set(graph_hits.values()) == {1}
    items = stored_items(db)
    assert {item["url"] for item in items} == site.graph_urls()
    assert len(items) == pages
    for item in items:
        host, n = item["url"].removeprefix("http://").split("/g/")
        assert item["title"] == f"{host.split(':')[0]} {n}"


async def test_a_frontier_larger_than_its_memory_window_loses_nothing(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(frontier, "WINDOW", 6)  # most of the queue lives only in SQLite
    monkeypatch.setattr(frontier, "RECENT", 4)  # most duplicates are caught by SQLite
    db = tmp_path / "g.db"
    summary = await crawl(GraphSpider, db, {**FAST, "START_URL": site.url("/g/0")})

    assert summary.pages_done == len(HOSTS) * PAGES_PER_HOST
    assert set(v for k, v in site.hits.items() if "/g/" in k) == {1}
    assert {item["url"] for item in stored_items(db)} == site.graph_urls()
    assert summary.dropped["duplicate"] > 0


async def test_per_host_cap_is_never_exceeded(site: Site, tmp_path: Path) -> None:
    site.page_delay = 0.02
    settings = {**FAST, "START_URL": site.url("/g/0"), "PER_HOST": 2, "CONCURRENCY": 16}
    summary = await crawl(GraphSpider, tmp_path / "g.db", settings)

    assert summary.pages_done == len(HOSTS) * PAGES_PER_HOST
    assert set(site.max_in_flight) == {site.urls[h].removeprefix("http://") for h in HOSTS}
    assert max(site.max_in_flight.values()) == 2  # the cap was reached, never passed


async def test_a_slow_host_does_not_block_the_others(site: Site, tmp_path: Path) -> None:
    slow, fast = HOSTS[0], HOSTS[1]
    site.host_delay[slow] = 1.5
    spider = FaultSpider()
    spider.start_urls = [site.url(f"/g/{n}", slow) for n in range(4)]
    spider.start_urls += [site.url(f"/g/{n}", fast) for n in range(PAGES_PER_HOST)]
    settings = {**FAST, "CONCURRENCY": 4, "PER_HOST": 2}
    summary = await crawl(spider, tmp_path / "s.db", settings)

    assert summary.pages_done == 4 + PAGES_PER_HOST
    slow_starts = sorted(t for k, ts in site.hit_times.items() if slow in k for t in ts)
    fast_starts = sorted(t for k, ts in site.hit_times.items() if fast in k for t in ts)
    # The slow host's first two pages take both its slots; the two other workers
    # crawl the whole fast host before the slow host's next page even starts.
    assert fast_starts[-1] < slow_starts[2]


class FaultSpider(Spider):
    name = "faults"

    def parse(self, response: Response) -> Iterator[dict[str, Any]]:
        yield {"url": response.url, "status": response.status}


async def crawl_urls(tmp_path: Path, urls: list[str], **settings: Any) -> Any:
    spider = FaultSpider()
    spider.start_urls = urls
    return await crawl(spider, tmp_path / "f.db", {**FAST, **settings})


async def test_a_page_that_keeps_failing_is_tried_one_plus_retries_times(
    site: Site, tmp_path: Path
) -> None:
    summary = await crawl_urls(tmp_path, [site.url("/status/500"), site.url("/status/404")])

    assert site.hits_of("/status/500") == 4
    assert site.hits_of("/status/404") == 1
    assert summary.pages_failed == 2 and summary.pages_done == 0
    assert summary.errors == {"404": 1, "500": 1}
    assert summary.retries == 3
    assert summary.items == 0


async def test_retries_count_follows_the_setting(site: Site, tmp_path: Path) -> None:
    await crawl_urls(tmp_path, [site.url("/status/502")], RETRIES=1)
    assert site.hits_of("/status/502") == 2


async def test_a_flaky_page_is_retried_until_it_answers(site: Site, tmp_path: Path) -> None:
    summary = await crawl_urls(tmp_path, [site.url("/flaky?fails=2&code=503")])

    assert site.hits_of("/flaky?fails=2&code=503") == 3
    assert summary.pages_done == 1 and summary.items == 1 and summary.retries == 2
    assert summary.errors == {}


async def test_retry_after_seconds_is_honoured(site: Site, tmp_path: Path) -> None:
    path = "/flaky?fails=1&code=429&after=1"
    summary = await crawl_urls(tmp_path, [site.url(path)])

    times = site.hit_times[site.url(path).removeprefix("http://")]
    assert len(times) == 2 and summary.items == 1
    assert times[1] - times[0] >= 1.0  # never sooner than the server asked


async def test_retry_after_http_date_is_honoured(site: Site, tmp_path: Path) -> None:
    path = "/flaky?fails=1&code=503&after_date=2"
    summary = await crawl_urls(tmp_path, [site.url(path)])

    times = site.hit_times[site.url(path).removeprefix("http://")]
    assert len(times) == 2 and summary.items == 1
    # An HTTP-date has whole seconds: 2 s from now is at least 1 s after the first hit.
    assert times[1] - times[0] >= 1.0


async def test_a_timeout_is_retried_then_recorded(site: Site, tmp_path: Path) -> None:
    summary = await crawl_urls(tmp_path, [site.url("/hang")], TIMEOUT=0.3, RETRIES=1)

    assert site.hits_of("/hang") == 2
    assert summary.pages_failed == 1
    assert summary.errors == {"TimeoutError": 1}


async def test_a_refused_connection_is_retried_then_recorded(
    refused_url: str, tmp_path: Path
) -> None:
    summary = await crawl_urls(tmp_path, [refused_url], RETRIES=2)

    assert summary.pages_failed == 1
    assert summary.retries == 2
    assert list(summary.errors) == ["ClientConnectorError"]


async def test_a_redirect_is_followed_and_its_target_deduplicated(
    site: Site, tmp_path: Path
) -> None:
    target = site.url("/g/1")
    urls = [site.url(f"/redirect?to={target}"), site.url(f"/redirect?to={target}&x=1")]
    summary = await crawl_urls(tmp_path, urls)

    # Each hop is admitted like a link: the second one is a duplicate, not fetched.
    assert site.hits_of("/g/1") == 1
    assert summary.items == 1
    assert summary.pages_done == 1 and summary.pages_redirected == 2
    assert summary.dropped == {"redirect to a page already crawled": 1}


def test_a_hop_keeps_its_request_and_a_303_or_a_redirected_post_becomes_a_get() -> None:
    form = {"Content-Type": "application/x-www-form-urlencoded", "X-Kept": "1"}
    post = Request(
        "http://a.example/form", method="POST", body=b"x=1", meta={"m": 1}, priority=3,
        headers={**form, "Authorization": "secret"}, dont_filter=True, depth=2,
    )  # fmt: skip

    def answer(status: int, location: str, request: Request = post) -> Response:
        return Response(request.url, status, {"Location": location}, b"", request)

    hop = redirect_request(answer(303, "done"))
    assert hop is not None and hop.url == "http://a.example/done"
    assert hop.method == "GET" and hop.body is None  # and no Content-Type left
    assert hop.headers == {"X-Kept": "1", "Authorization": "secret"}
    assert hop.meta == {"m": 1} and hop.priority == 3 and hop.dont_filter
    assert hop.depth == 2 and hop.redirects == 1  # the same page, one hop on
    found = redirect_request(answer(302, "/b"))
    assert found is not None and found.method == "GET"
    kept = redirect_request(answer(307, "http://b.example/x"))
    assert kept is not None and (kept.method, kept.body, kept.headers) == ("POST", b"x=1", form)
    assert redirect_request(answer(302, "")) is None  # no Location: the callback gets it
    assert redirect_request(answer(200, "/x")) is None
    with pytest.raises(FetchError, match="TooManyRedirects"):
        redirect_request(answer(301, "/y", post.replace(redirects=MAX_REDIRECTS)))


async def test_a_redirect_to_another_host_waits_for_that_hosts_per_host_cap(
    site: Site, tmp_path: Path
) -> None:
    site.page_delay = 0.05  # the targets answer slowly, the redirects at once
    other = HOSTS[1]
    urls = [site.url(f"/redirect?to={site.url(f'/g/{n}', other)}") for n in range(8)]
    summary = await crawl_urls(tmp_path, urls, PER_HOST=2, CONCURRENCY=16)

    assert summary.pages_redirected == 8 and summary.pages_done == 8
    assert [site.hits_of(f"/g/{n}", other) for n in range(8)] == [1] * 8
    assert site.max_in_flight[site.urls[other].removeprefix("http://")] == 2


# The requests table as the version before `redirects` made it.
OLD_REQUESTS_TABLE = """
CREATE TABLE crawl (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE requests (
    id INTEGER PRIMARY KEY,
    fp BLOB NOT NULL,
    url TEXT NOT NULL,
    method TEXT NOT NULL,
    headers TEXT,
    body BLOB,
    meta TEXT,
    callback TEXT,
    errback TEXT,
    priority INTEGER NOT NULL,
    depth INTEGER NOT NULL,
    dont_filter INTEGER NOT NULL,
    parent INTEGER,
    state INTEGER NOT NULL DEFAULT 0,
    status INTEGER,
    final_url TEXT,
    size INTEGER,
    attempts INTEGER,
    error TEXT,
    finished_at REAL
);
CREATE INDEX requests_queued ON requests (id) WHERE state = 0;
CREATE UNIQUE INDEX requests_seen ON requests (fp) WHERE dont_filter = 0;
CREATE TABLE dropped (reason TEXT PRIMARY KEY, count INTEGER NOT NULL);
CREATE TABLE items (
    id INTEGER PRIMARY KEY,
    page INTEGER NOT NULL REFERENCES requests (id),
    data TEXT NOT NULL
);
"""


async def test_a_database_of_the_previous_schema_opens_and_resumes(
    site: Site, tmp_path: Path
) -> None:
    db = tmp_path / "f.db"
    done = site.url("/g/1")
    # Queued: a redirect to a new page, and one to the page done before.
    queued = [site.url(f"/redirect?to={site.url(path)}") for path in ("/g/2", "/g/1")]
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.executescript(OLD_REQUESTS_TABLE)
        conn.executemany(
            "INSERT INTO crawl VALUES (?, ?)",
            [("spider", FaultSpider.name), ("schema", "1"), ("created", "0")],
        )
        conn.executemany(
            "INSERT INTO requests (id, fp, url, method, priority, depth, dont_filter, state)"
            " VALUES (?, ?, ?, 'GET', 0, 0, 0, ?)",
            [(key, fingerprint("GET", url, None), url, int(key == 1))
             for key, url in enumerate([done, *queued], 1)],
        )  # fmt: skip
    summary = await crawl_urls(tmp_path, [done])

    assert site.hits_of("/g/1") == 0  # done before: not fetched again
    assert site.hits_of("/g/2") == 1 and summary.items == 1
    assert summary.pages_done == 2 and summary.pages_redirected == 2
    # Caught by the database's unique index alone: this run's memory had not seen /g/1.
    assert summary.dropped == {"redirect to a page already crawled": 1}
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT url, redirects FROM requests ORDER BY id").fetchall()
    assert rows == [(done, 0), (queued[0], 0), (queued[1], 0), (site.url("/g/2"), 1)]


class Callbacks(Spider):
    """One callback of each kind: function, coroutine, generator, async generator."""

    name = "callbacks"

    def start_requests(self) -> Iterator[Request]:
        base = self.start_urls[0]
        yield Request(base + "/g/1", callback=self.plain)
        yield Request(base + "/g/2", callback=self.coroutine)
        yield Request(base + "/g/3", callback=self.generator)
        yield Request(base + "/g/4", callback=self.async_generator)
        yield Request(base + "/g/5", callback=self.broken)
        yield Request(base + "/status/404", errback=self.on_error)

    def plain(self, response: Response) -> list[Any]:
        return [{"kind": "plain"}, {"kind": "plain"}]

    async def coroutine(self, response: Response) -> dict[str, Any]:
        return {"kind": "coroutine"}

    def generator(self, response: Response) -> Iterator[Any]:
        yield {"kind": "generator"}
        yield response.follow("/g/6", callback=self.generator)

    async def async_generator(self, response: Response) -> AsyncIterator[dict[str, Any]]:
        yield {"kind": "async generator"}

    def broken(self, response: Response) -> Iterator[dict[str, Any]]:
        yield {"kind": "before the bug"}
        raise ValueError("a bug in the spider")

    def on_error(self, failure: FetchError) -> Iterator[dict[str, Any]]:
        yield {"kind": "errback", "reason": failure.reason}


async def test_callbacks_of_every_kind_and_a_broken_one(site: Site, tmp_path: Path) -> None:
    spider = Callbacks()
    spider.start_urls = [site.urls[HOSTS[0]]]
    db = tmp_path / "c.db"
    summary = await crawl(spider, db, FAST)

    kinds = sorted(item["kind"] for item in stored_items(db))
    assert kinds == sorted(
        ["plain", "plain", "coroutine", "generator", "generator", "async generator",
         "before the bug", "errback"]
    )  # fmt: skip
    assert summary.errors == {"ValueError in broken": 1, "404": 1}
    assert summary.pages_done == 5 and summary.pages_failed == 2


def a_function(response: Response) -> None:
    """Not a method of any spider: a stored request could not name it."""


class Foreign(Spider):
    """Yields links to its own methods, and to callbacks a stored crawl could not find."""

    name = "foreign"

    def parse(self, response: Response) -> Iterator[Any]:
        yield response.follow("/g/1", callback=self.page)
        yield response.follow("/g/2", errback=self.failed)  # callback: the spider's parse
        if response.url.endswith("/g/1"):
            yield response.follow("/g/3", callback=a_function)
        elif response.url.endswith("/g/2"):
            yield response.follow("/g/4", callback=Foreign().page)  # another spider's
        yield {"url": response.url, "collector": gc.get_threshold()[0]}

    def page(self, response: Response) -> Iterator[Any]:
        yield from self.parse(response)

    def failed(self, failure: FetchError) -> None:
        """Never called: every page answers."""


async def test_callbacks_of_another_object_are_an_error_of_the_page(
    site: Site, tmp_path: Path
) -> None:
    spider = Foreign()
    base = site.urls[HOSTS[0]]
    spider.start_urls = [base + "/g/0"]
    db = tmp_path / "f.db"
    before = gc.get_threshold()
    summary = await crawl(spider, db, FAST)

    assert sorted(page_rows(db)) == [base + p for p in ["/g/0", "/g/1", "/g/2"]]
    assert summary.errors == {"SpiderError in page": 1, "SpiderError in parse": 1}
    items = stored_items(db)  # only the page without a bad request yielded its item
    assert [item["url"] for item in items] == [base + "/g/0"]
    # The cycle collector runs less often during the crawl, and as before after it.
    assert items[0]["collector"] >= 50_000 > before[0]
    assert gc.get_threshold() == before


async def test_max_pages_ends_the_crawl(site: Site, tmp_path: Path) -> None:
    summary = await crawl(
        GraphSpider, tmp_path / "g.db", {**FAST, "START_URL": site.url("/g/0"), "MAX_PAGES": 10}
    )

    assert summary.pages_done == 10
    assert sum(v for k, v in site.hits.items() if "/g/" in k) == 10
    assert summary.pages_queued > 0


async def test_max_depth_drops_deeper_requests(site: Site, tmp_path: Path) -> None:
    db = tmp_path / "g.db"
    await crawl(GraphSpider, db, {**FAST, "START_URL": site.url("/g/0"), "MAX_DEPTH": 1})

    with sqlite3.connect(db) as conn:
        depths = {d for (d,) in conn.execute("SELECT depth FROM requests")}
    assert depths == {0, 1}
    # /g/0 links to /g/1, /g/2, /g/1 (relative), /g/0 and page 0 of the next host.
    assert len(stored_items(db)) == 4


class OneHost(GraphSpider):
    name = "onehost"
    allowed_domains = ["127.0.0.2"]


async def test_off_domain_requests_are_dropped(site: Site, tmp_path: Path) -> None:
    db = tmp_path / "o.db"
    summary = await crawl(OneHost, db, {**FAST, "START_URL": site.url("/g/0", HOSTS[1])})

    assert summary.pages_done == PAGES_PER_HOST
    assert {item["url"].split("/g/")[0] for item in stored_items(db)} == {site.urls[HOSTS[1]]}


class Variants(Spider):
    """Spellings of one URL that must be fetched once, and one that must be fetched twice."""

    name = "variants"

    def start_requests(self) -> Iterator[Request]:
        base = self.start_urls[0]
        upper = base.replace("http://", "HTTP://")
        for url in (base + "/flaky?a=1&b=2&fails=0", upper + "/flaky?b=2&fails=0&a=1#x",
                    base + "/fla%6By?fails=0&a=1&b=2"):  # fmt: skip
            yield Request(url)
        yield Request(base + "/g/1")
        yield Request(base + "/g/1", dont_filter=True)

    def parse(self, response: Response) -> Iterator[dict[str, Any]]:
        yield {"url": response.url}


async def test_canonical_duplicates_are_fetched_once_unless_dont_filter(
    site: Site, tmp_path: Path
) -> None:
    spider = Variants()
    spider.start_urls = [site.urls[HOSTS[0]]]
    summary = await crawl(spider, tmp_path / "v.db", FAST)

    assert site.hits_of("/flaky?a=1&b=2&fails=0") == 1
    assert sum(v for k, v in site.hits.items() if "/flaky" in k) == 1
    assert site.hits_of("/g/1") == 2
    assert summary.items == 3


class Prioritised(Spider):
    name = "priorities"

    def start_requests(self) -> Iterator[Request]:
        for n, priority in ((1, 0), (2, 5), (3, -1), (4, 10)):
            yield Request(f"{self.start_urls[0]}/g/{n}", priority=priority)

    def parse(self, response: Response) -> Iterator[dict[str, Any]]:
        yield {"url": response.url}


async def test_higher_priority_is_fetched_first(site: Site, tmp_path: Path) -> None:
    spider = Prioritised()
    spider.start_urls = [site.urls[HOSTS[0]]]
    db = tmp_path / "p.db"
    await crawl(spider, db, {**FAST, "CONCURRENCY": 1})

    assert [item["url"].rsplit("/", 1)[1] for item in stored_items(db)] == ["4", "2", "1", "3"]


async def test_robots_txt_is_obeyed_and_fetched_once_per_host(site: Site, tmp_path: Path) -> None:
    site.robots = "User-agent: *\nDisallow: /g/3$\n"
    db = tmp_path / "r.db"
    settings = {"ROBOTS": True, "START_URL": site.url("/g/0"), "USER_AGENT": "testbot/1"}
    summary = await crawl(GraphSpider, db, settings)

    assert all(site.hits_of("/g/3", host) == 0 for host in HOSTS)
    assert all(site.hits_of("/robots.txt", host) == 1 for host in HOSTS)
    assert summary.pages_skipped == len(HOSTS)
    assert summary.pages_done == len(HOSTS) * (PAGES_PER_HOST - 1)
    assert site.user_agents == {"testbot/1"}


async def test_a_finished_crawl_run_again_fetches_nothing(site: Site, tmp_path: Path) -> None:
    db = tmp_path / "g.db"
    settings = {**FAST, "START_URL": site.url("/g/0")}
    await crawl(GraphSpider, db, settings)
    before = site.hits.total()
    summary = await crawl(GraphSpider, db, settings)

    assert site.hits.total() == before
    assert summary.items == len(HOSTS) * PAGES_PER_HOST


def test_recent_keeps_the_latest_keys_and_stays_bounded() -> None:
    recent: frontier.Recent[int, str] = frontier.Recent(1000)
    for key in range(100_000):
        recent.put(key, str(key))
        assert len(recent) <= 1000
        assert recent.get(key) == str(key)
    assert all(recent.get(key) == str(key) for key in range(99_500, 100_000))
    assert recent.get(0) is None and 0 not in recent
    recent.put(-1, "")  # a falsy value is still a value
    assert recent.get(-1) == "" and -1 in recent
    # A key found in the older half is kept as if put again.
    old = next(key for key in range(99_000, 100_000) if key in recent)
    for key in range(100_000, 100_499):
        recent.put(key, "new")
    assert old in recent


async def test_a_budget_lets_one_taker_at_a_time_past_its_limit() -> None:
    budget = _Budget(10)
    taken: list[int] = []

    async def taker(n: int) -> None:
        await budget.take(4)
        taken.append(n)

    tasks = [asyncio.create_task(taker(n)) for n in range(6)]
    for _ in range(3):
        await asyncio.sleep(0)
    assert len(taken) == 3 and budget.used == 12  # the third took it past 10
    budget.give(4)  # 8: room for one more, not for every waiter
    for _ in range(3):
        await asyncio.sleep(0)
    assert len(taken) == 4 and budget.used == 12
    budget.give(12)
    await asyncio.gather(*tasks)
    assert sorted(taken) == list(range(6)) and budget.used == 8


async def test_a_host_held_by_its_crawl_delay_says_so() -> None:
    settings = Settings.build({"DELAY": 0.5, "ROBOTS": True})
    front = frontier.LocalFrontier(settings)
    front.restore(1, 0, 0)
    admitted = front.admit([Request("http://127.0.0.9/a"), Request("http://127.0.0.9/b")], None)
    front.push(admitted.accepted, admitted.accepted[-1].key)
    first = await front.get()
    assert first is not None
    front.learned(first.url, 30.0)  # robots.txt asks for more than DELAY
    front.release(first)
    assert [state for *_, state, _delay in front.busiest(1)] == ["held by Crawl-delay"]
    front.stop()
