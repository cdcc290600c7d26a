"""Issue 5, the hostile web: politeness, bad responses and bad input, each against a real
loopback server that produces the fault (tests/hostile_site.py). No mocked client.

"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import os
import re
import sqlite3
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from crawler import Request, Response, Spider
from crawler.engine import crawl
from crawler.http import MAX_REDIRECTS
from crawler.storage.sqlite import Summary
from hostile_site import (
    BAD_HREFS,
    BINARY,
    HOSTS,
    LONG_PATH,
    MALFORMED,
    PDF,
    PNG,
    SAMPLES,
    Behaviour,
    HostileSite,
    RobotsTxt,
    reset_mid_body,
    serve_raw,
    serve_site,
    silent,
    trickle_body,
    trickle_head,
)

AGENT = "hostilebot/1.0 (+http://127.0.0.1/bot)"
QUICK = {"ROBOTS": False, "RETRIES": 1, "TIMEOUT": 1}
MiB = 1 << 20
TIMEOUT_SLACK = 0.3  # seconds past TIMEOUT a try may take before the client hangs up


@pytest.fixture
async def hostile() -> AsyncIterator[HostileSite]:
    """The hostile site on 127.0.0.1, .2 and .3."""
    async with serve_site() as site:
        yield site


# -- helpers ------------------------------------------------------------------------------


class Echo(Spider):
    """Stores what each page looked like to a callback that asks for HTML."""

    name = "echo"

    def parse(self, response: Response) -> Iterator[dict[str, Any]]:
        title = response.css_first("title")
        para = response.css_first("p")
        yield {
            "url": response.url,
            "status": response.status,
            "title": title.text() if title is not None else None,
            "p": para.text() if para is not None else None,
            "size": len(response.body),
        }


class Blind(Spider):
    """Never asks for HTML: stores each body's type, size and digest."""

    name = "blind"

    def parse(self, response: Response) -> Iterator[dict[str, Any]]:
        yield {
            "url": response.url,
            "type": response.headers.get("Content-Type"),
            "size": len(response.body),
            "sha256": hashlib.sha256(response.body).hexdigest(),
        }


async def run(
    spider: type[Spider], urls: list[str], db: Path, **settings: Any
) -> tuple[Summary, list[dict[str, Any]]]:
    """Crawl `urls` with a fresh `spider`; the summary and the stored items."""
    instance = spider()
    instance.start_urls = urls
    summary = await crawl(instance, db, {**QUICK, **settings})
    return summary, stored_items(db)


def stored_items(db: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(db) as conn:
        return [json.loads(row[0]) for row in conn.execute("SELECT data FROM items ORDER BY id")]


@dataclass(frozen=True, slots=True)
class Row:
    state: int  # 0 queued, 1 done, 2 failed, 3 skipped, 4 redirected
    status: int | None
    error: str | None
    attempts: int | None


def request_rows(db: Path) -> dict[str, Row]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT url, state, status, error, attempts FROM requests")
        return {row[0]: Row(*row[1:]) for row in rows}


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "crawler", *args],
        capture_output=True, text=True, timeout=60, cwd=cwd, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def spider_file(folder: Path, name: str, start_urls: list[str]) -> Path:
    """A spider module as a user writes one; its parse stores the URL and the size."""
    path = folder / f"{name}.py"
    path.write_text(
        "from crawler import Spider\n"
        "class S(Spider):\n"
        f"    name = {name!r}\n"
        f"    start_urls = {start_urls!r}\n"
        "    def parse(self, response):\n"
        "        yield {'url': response.url, 'size': len(response.body)}\n"
    )
    return path


def one_line_error(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in result.stderr, result.stderr


# -- politeness: robots.txt ---------------------------------------------------------------


async def test_robots_txt_is_fetched_once_per_host_with_our_user_agent_and_obeyed(
    hostile: HostileSite, tmp_path: Path
) -> None:
    for host in HOSTS:
        hostile.robots[host] = RobotsTxt(200, "User-agent: *\nDisallow: /private/\n")
    urls = [
        hostile.url(f"/{kind}/{n}", host)
        for host in HOSTS
        for kind in ("page", "private")
        for n in range(6)
    ]
    summary, items = await run(
        Echo, urls, tmp_path / "r.db", ROBOTS=True, USER_AGENT=AGENT, CONCURRENCY=16
    )

    # 12 requests per host arrive at once: robots.txt is still fetched once per host.
    assert [hostile.hits_of("/robots.txt", host) for host in HOSTS] == [1, 1, 1]
    assert not [hit for hit in hostile.hits if hit.path.startswith("/private/")]
    assert summary.pages_done == 18 and summary.pages_skipped == 18
    assert len(items) == 18
    assert {hit.user_agent for hit in hostile.hits} == {AGENT}  # robots.txt included


@pytest.mark.parametrize("code", [500, 503])
async def test_robots_5xx_means_disallow_all(
    hostile: HostileSite, tmp_path: Path, code: int
) -> None:
    hostile.robots[HOSTS[0]] = RobotsTxt(code)
    urls = [hostile.url(f"/page/{n}") for n in range(4)]
    summary, items = await run(Echo, urls, tmp_path / "r.db", ROBOTS=True)

    # RFC 9309 2.3.1.4: an unreachable robots.txt (server error) means complete disallow.
    assert {hit.path for hit in hostile.hits_on(HOSTS[0])} == {"/robots.txt"}
    assert summary.pages_skipped == 4 and summary.pages_failed == 0
    assert items == []


async def test_robots_timeout_means_disallow_all(hostile: HostileSite, tmp_path: Path) -> None:
    hostile.robots[HOSTS[0]] = RobotsTxt(hang=True)
    urls = [hostile.url(f"/page/{n}") for n in range(4)]
    summary, items = await run(Echo, urls, tmp_path / "r.db", ROBOTS=True, RETRIES=0)

    assert [hit.path for hit in hostile.hits_on(HOSTS[0])] == ["/robots.txt"]
    assert summary.pages_skipped == 4 and summary.pages_failed == 0
    assert items == []


@pytest.mark.parametrize("code", [401, 403, 404, 410])
async def test_robots_4xx_means_allow_all(hostile: HostileSite, tmp_path: Path, code: int) -> None:
    hostile.robots[HOSTS[0]] = RobotsTxt(code, "User-agent: *\nDisallow: /\n")
    urls = [hostile.url(f"/page/{n}") for n in range(4)]
    summary, items = await run(Echo, urls, tmp_path / "r.db", ROBOTS=True)

    # RFC 9309 2.3.1.3: "unavailable" (4xx) means no rules, whatever the body says.
    assert hostile.hits_of("/robots.txt") == 1  # a 4xx is an answer: not retried
    assert summary.pages_done == 4 and summary.pages_skipped == 0
    assert len(items) == 4


async def test_robots_txt_redirect_is_followed(hostile: HostileSite, tmp_path: Path) -> None:
    # RFC 9309 2.3.1.2: follow at least five redirects; the rules are those at the end.
    hostile.robots[HOSTS[0]] = RobotsTxt(body="User-agent: *\nDisallow: /private/\n", redirect=True)
    urls = [hostile.url("/page/1"), hostile.url("/private/1")]
    summary, _ = await run(Echo, urls, tmp_path / "r.db", ROBOTS=True)

    assert hostile.hits_of("/rules.txt") == 1
    assert hostile.hits_of("/private/1") == 0
    assert summary.pages_done == 1 and summary.pages_skipped == 1


async def test_crawl_delay_larger_than_delay_is_honoured(
    hostile: HostileSite, tmp_path: Path
) -> None:
    slow, free = HOSTS[0], HOSTS[1]
    hostile.robots[slow] = RobotsTxt(200, "User-agent: *\nCrawl-delay: 0.4\n")
    urls = [hostile.url(f"/page/{n}", slow) for n in range(5)]
    urls += [hostile.url(f"/page/{n}", free) for n in range(8)]
    summary, _ = await run(
        Echo, urls, tmp_path / "d.db", ROBOTS=True, DELAY=0, CONCURRENCY=8, PER_HOST=8
    )

    assert summary.pages_done == 13
    slow_starts = hostile.starts(slow, "/page/")
    assert len(slow_starts) == 5
    assert min(gaps(slow_starts)) >= 0.4 - 0.02, gaps(slow_starts)
    # The host without a Crawl-delay is not held up by the slow one.
    assert max(hostile.starts(free, "/page/")) < slow_starts[-1]


async def test_delay_holds_across_workers_without_holding_up_other_hosts(
    hostile: HostileSite, tmp_path: Path
) -> None:
    busy, other = HOSTS[0], HOSTS[1]
    urls = [hostile.url(f"/page/{n}", busy) for n in range(8)]
    urls += [hostile.url(f"/page/{n}", other) for n in range(4)]
    summary, _ = await run(Echo, urls, tmp_path / "d.db", DELAY=0.3, CONCURRENCY=8, PER_HOST=8)

    assert summary.pages_done == 12
    busy_starts, other_starts = hostile.starts(busy, "/page/"), hostile.starts(other, "/page/")
    # Eight idle workers and eight free slots, yet one request every DELAY per host.
    assert min(gaps(busy_starts)) >= 0.3 - 0.02, gaps(busy_starts)
    assert min(gaps(other_starts)) >= 0.3 - 0.02, gaps(other_starts)
    # The other host's requests interleave with the busy host's instead of queueing
    # behind them: all four start before the busy host's fifth.
    assert max(other_starts) < busy_starts[4]


# -- bad responses: size ------------------------------------------------------------------


async def test_a_body_over_max_body_is_cut_off_and_the_crawl_goes_on(
    hostile: HostileSite, tmp_path: Path
) -> None:
    endless, declared = "/endless?limit=209715200", f"/declared?size={1 << 30}"
    urls = [hostile.url(endless), hostile.url(declared), hostile.url("/page/fine")]
    db = tmp_path / "b.db"
    summary, items = await run(Echo, urls, db, MAX_BODY=MiB)

    assert summary.errors == {"BodyTooLarge": 2}
    assert summary.pages_failed == 2 and summary.pages_done == 1
    assert [item["title"] for item in items] == ["fine"]
    assert hostile.hits_of(endless) == 1 and hostile.hits_of(declared) == 1  # no retry
    # The client hung up: the server did not get to write its 200 MB, nor its 1 GB.
    assert await hostile.sent_to_end(endless) < 200 * MiB
    assert await hostile.sent_to_end(declared) < 200 * MiB


def peak_rss(args: list[str], cwd: Path) -> tuple[int, str]:
    """Run `python -m crawler ARGS`; its own peak RSS in bytes, and its stdout."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "crawler", *args], cwd=cwd, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    watchdog = threading.Timer(30, proc.kill)
    watchdog.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)  # this child's rusage, no other's
    finally:
        watchdog.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.stdout is not None
    out = proc.stdout.read()
    proc.stdout.close()
    assert proc.returncode == 0, out
    return usage.ru_maxrss * 1024, out  # ru_maxrss is in KiB on Linux


async def memory_growth(hostile: HostileSite, tmp_path: Path, path: str) -> tuple[int, str]:
    """Peak RSS of a CLI crawl of `path` minus that of a crawl of a small page."""
    spider = spider_file(tmp_path, "mem", [hostile.url("/page/x")])

    def crawl_cli(target: str, db: str) -> tuple[int, str]:
        args = ["crawl", str(spider), "--db", db, "--log-level", "ERROR", "-s", "ROBOTS=0"]
        return peak_rss([*args, "-s", f"START_URL={hostile.url(target)}"], tmp_path)

    baseline, _ = await asyncio.to_thread(crawl_cli, "/page/small", "base.db")
    peak, out = await asyncio.to_thread(crawl_cli, path, "big.db")
    return peak - baseline, out


async def test_a_1gb_endless_body_does_not_raise_peak_memory(
    hostile: HostileSite, tmp_path: Path
) -> None:
    path = f"/endless?limit={1 << 30}"
    growth, out = await memory_growth(hostile, tmp_path, path)

    assert "BodyTooLarge: 1" in out, out
    assert await hostile.sent_to_end(path) < 1 << 30  # cut off, not read to the end
    assert growth < 20 * MiB, f"peak RSS grew by {growth / MiB:.1f} MiB"


async def test_a_gzip_bomb_is_cut_off_without_inflating_it_in_memory(
    hostile: HostileSite, tmp_path: Path
) -> None:
    growth, out = await memory_growth(hostile, tmp_path, f"/bomb?size={256 * MiB}")

    assert "BodyTooLarge: 1" in out, out
    assert growth < 20 * MiB, f"peak RSS grew by {growth / MiB:.1f} MiB"


# -- bad responses: charsets --------------------------------------------------------------


@pytest.mark.parametrize(
    "encoding",
    ["cp1251", "shift_jis", "latin-1"],
)
async def test_an_undeclared_charset_is_detected(
    hostile: HostileSite, tmp_path: Path, encoding: str
) -> None:
    _, items = await run(Echo, [hostile.url(f"/charset/{encoding}")], tmp_path / "c.db")

    assert [item["p"] for item in items] == [SAMPLES[encoding]]


@pytest.mark.parametrize("declare", ["header-utf-8", "meta-utf-8", "bogus"])
@pytest.mark.parametrize("encoding", list(SAMPLES))
async def test_a_wrong_declared_charset_does_not_garble_the_text(
    hostile: HostileSite, tmp_path: Path, encoding: str, declare: str
) -> None:
    url = hostile.url(f"/charset/{encoding}?declare={declare}")
    _, items = await run(Echo, [url], tmp_path / "c.db")

    assert [item["p"] for item in items] == [SAMPLES[encoding]]


# -- bad responses: odd bodies ------------------------------------------------------------


async def test_malformed_empty_and_binary_html_are_stored_without_a_crash(
    hostile: HostileSite, tmp_path: Path
) -> None:
    kinds = ("malformed", "empty", "binary")
    db = tmp_path / "o.db"
    summary, items = await run(Echo, [hostile.url(f"/odd/{kind}") for kind in kinds], db)

    assert summary.pages_done == 3 and summary.pages_failed == 0 and summary.errors == {}
    by_kind = {item["url"].rsplit("/", 1)[1]: item for item in items}
    assert by_kind["malformed"]["title"] == "broken"
    assert by_kind["malformed"]["size"] == len(MALFORMED)
    assert by_kind["empty"] == {**by_kind["empty"], "title": None, "p": None, "size": 0}
    assert by_kind["binary"]["size"] == len(BINARY)


async def test_non_html_bodies_reach_the_callback_unparsed(
    hostile: HostileSite, tmp_path: Path
) -> None:
    db = tmp_path / "n.db"
    summary, items = await run(Blind, [hostile.url("/odd/pdf"), hostile.url("/odd/png")], db)

    assert summary.pages_done == 2 and summary.errors == {}
    assert {item["type"]: (item["size"], item["sha256"]) for item in items} == {
        "application/pdf": (len(PDF), hashlib.sha256(PDF).hexdigest()),
        "image/png": (len(PNG), hashlib.sha256(PNG).hexdigest()),
    }
    assert {row.state for row in request_rows(db).values()} == {1}  # stored as pages
    assert hostile.hits_of("/page/in-pdf") == 0  # nothing in the PDF was taken for a link


async def test_a_spider_that_asks_to_parse_a_binary_body_does_not_crash(
    hostile: HostileSite, tmp_path: Path
) -> None:
    db = tmp_path / "n.db"
    summary, items = await run(Echo, [hostile.url("/odd/pdf"), hostile.url("/odd/png")], db)

    assert summary.pages_done == 2 and summary.errors == {}
    assert sorted(item["size"] for item in items) == sorted([len(PDF), len(PNG)])


# -- bad responses: redirects -------------------------------------------------------------
# The fetcher follows no redirect: each hop is a request of its own, admitted by the
# frontier like a link (at the depth of the page that redirected) and fetched once.


def hops(db: Path) -> list[tuple[str, int, int]]:
    """(url, state, redirects) of every request, in the order they were admitted."""
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT url, state, redirects FROM requests ORDER BY id").fetchall()


async def test_a_chain_of_five_redirects_is_followed(hostile: HostileSite, tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    summary, items = await run(Echo, [hostile.url("/chain/5")], db)

    assert [hostile.hits_of(f"/chain/{n}") for n in range(6)] == [1] * 6
    assert [(item["url"], item["title"]) for item in items] == [
        (hostile.url("/chain/0"), "end of chain")
    ]
    assert summary.pages_done == 1 and summary.pages_redirected == 5 and summary.errors == {}
    assert hops(db) == [(hostile.url(f"/chain/{5 - n}"), 4 if n < 5 else 1, n) for n in range(6)]
    with sqlite3.connect(db) as conn:  # a hop is the page it stands for, not a link from it
        assert {depth for (depth,) in conn.execute("SELECT depth FROM requests")} == {0}


async def test_a_cached_redirect_is_replayed_hop_by_hop(
    hostile: HostileSite, tmp_path: Path
) -> None:
    cache = str(tmp_path / "cache.sqlite")
    await run(Echo, [hostile.url("/chain/2")], tmp_path / "a.db", CACHE=cache)
    before = len(hostile.hits)
    summary, items = await run(Echo, [hostile.url("/chain/2")], tmp_path / "b.db", CACHE=cache)

    assert len(hostile.hits) == before  # the 302s came from the cache, with their Location
    assert summary.pages_redirected == 2 and summary.pages_done == 1
    assert [item["url"] for item in items] == [hostile.url("/chain/0")]


async def test_a_redirect_loop_ends_and_the_crawl_goes_on(
    hostile: HostileSite, tmp_path: Path
) -> None:
    db = tmp_path / "r.db"
    summary, items = await run(Echo, [hostile.url("/loop/0"), hostile.url("/page/after")], db)

    # /loop/0 -> /loop/1 -> /loop/0, a page already crawled: the loop ends there.
    assert [hostile.hits_of("/loop/0"), hostile.hits_of("/loop/1")] == [1, 1]
    assert summary.pages_redirected == 2 and summary.pages_done == 1
    assert summary.pages_failed == 0 and summary.pages_queued == 0
    assert summary.dropped == {"redirect to a page already crawled": 1}
    assert [item["title"] for item in items] == ["after"]  # the crawl went on


class Unfiltered(Echo):
    """Every start request with dont_filter: a redirect loop is not cut by the seen-set."""

    name = "unfiltered"

    def start_requests(self) -> Iterator[Request]:
        for url in self.start_urls:
            yield Request(url, dont_filter=True)


async def test_more_than_max_redirects_fails_the_page_with_too_many_redirects(
    hostile: HostileSite, tmp_path: Path
) -> None:
    db = tmp_path / "r.db"
    summary, items = await run(Unfiltered, [hostile.url("/loop/0"), hostile.url("/page/after")], db)

    loop_hits = sum(1 for hit in hostile.hits if hit.path.startswith("/loop/"))
    assert loop_hits == MAX_REDIRECTS + 1  # the start, then 10 hops; the 10th redirects too
    assert summary.pages_redirected == MAX_REDIRECTS and summary.pages_failed == 1
    assert summary.errors == {"TooManyRedirects": 1}
    last = hops(db)[-1]
    assert last[1:] == (2, MAX_REDIRECTS) and hostile.url("/loop/") in last[0]
    assert [item["title"] for item in items] == ["after"]


async def test_two_urls_redirecting_to_one_page_yield_one_item(
    hostile: HostileSite, tmp_path: Path
) -> None:
    # Two spellings of one target (query order differs): one page, one item.
    urls = [
        hostile.url("/redirect?to=/page/one%3Fa%3D1%26b%3D2"),
        hostile.url("/redirect?to=/page/one%3Fb%3D2%26a%3D1"),
    ]
    db = tmp_path / "r.db"
    summary, items = await run(Echo, urls, db)

    assert sum(1 for hit in hostile.hits if hit.path.startswith("/page/one")) == 1
    assert len(items) == 1 and items[0]["title"] == "one"
    assert summary.pages_done == 1 and summary.pages_redirected == 2
    assert summary.dropped == {"redirect to a page already crawled": 1}
    status = await asyncio.to_thread(cli, "status", str(db))
    lines = status.stdout.splitlines()
    assert lines[lines.index("skipped: 0") + 1] == "redirected: 2", lines
    assert "links not queued: redirect to a page already crawled: 1" in lines


class HomeOnly(Echo):
    name = "homeonly"
    allowed_domains = [HOSTS[0]]


async def test_an_off_domain_or_invalid_redirect_target_is_dropped(
    hostile: HostileSite, tmp_path: Path
) -> None:
    off = hostile.url("/page/off", HOSTS[2])
    urls = [hostile.url(f"/redirect?to={off}"), hostile.url("/redirect?to=mailto:a@b.example")]
    summary, items = await run(HomeOnly, urls, tmp_path / "r.db")

    assert hostile.hits_on(HOSTS[2]) == []
    assert items == [] and summary.pages_done == 0 and summary.pages_redirected == 2
    assert summary.dropped == {"redirect off-domain": 1, "redirect to an invalid URL": 1}


async def test_a_redirect_into_a_robots_disallowed_path_is_not_followed(
    hostile: HostileSite, tmp_path: Path
) -> None:
    hostile.robots[HOSTS[0]] = RobotsTxt(200, "User-agent: *\nDisallow: /private/\n")
    db = tmp_path / "r.db"
    summary, items = await run(Echo, [hostile.url("/redirect?to=/private/secret")], db, ROBOTS=True)

    assert hostile.hits_of("/private/secret") == 0
    assert items == [] and summary.pages_done == 0
    assert summary.pages_redirected == 1 and summary.pages_skipped == 1
    assert request_rows(db)[hostile.url("/private/secret")] == Row(
        3, None, "forbidden by robots.txt", 0
    )


async def test_a_crawl_stopped_with_a_hop_queued_resumes_with_its_redirect_count(
    hostile: HostileSite, tmp_path: Path
) -> None:
    db = tmp_path / "r.db"
    # /chain/12 -> /chain/11 -> ...: stopped after 10 pages, with the 10th hop queued.
    first, _ = await run(Echo, [hostile.url("/chain/12")], db, MAX_PAGES=MAX_REDIRECTS)
    assert first.pages_redirected == MAX_REDIRECTS and first.pages_queued == 1
    assert hops(db)[-1] == (hostile.url("/chain/2"), 0, MAX_REDIRECTS)

    summary, items = await run(Echo, [hostile.url("/chain/12")], db)

    # Resumed at 10 hops, not 0: /chain/2's redirect is one too many.
    assert hostile.hits_of("/chain/2") == 1 and hostile.hits_of("/chain/1") == 0
    assert summary.errors == {"TooManyRedirects": 1} and items == []
    assert [hostile.hits_of(f"/chain/{n}") for n in range(2, 13)] == [1] * 11


# -- bad responses: broken connections ----------------------------------------------------


async def crawl_raw(behaviour: Behaviour, tmp_path: Path) -> tuple[Summary, Row, list[float]]:
    """Crawl one URL of a raw server with TIMEOUT=1, RETRIES=1."""
    async with serve_raw(behaviour) as server:
        db = tmp_path / "raw.db"
        summary, items = await run(Echo, [server.url], db, TIMEOUT=1, RETRIES=1)
        assert items == []
        assert server.requests == 2  # tried, retried once, recorded
        return summary, request_rows(db)[server.url], server.lasted


async def test_a_connection_reset_mid_body_is_retried_then_recorded(tmp_path: Path) -> None:
    summary, row, _ = await crawl_raw(reset_mid_body, tmp_path)

    assert summary.pages_failed == 1 and row.state == 2 and row.attempts == 2
    assert row.error in {"ClientPayloadError", "ClientOSError", "ServerDisconnectedError"}


async def test_a_server_that_never_answers_ends_within_timeout(tmp_path: Path) -> None:
    summary, row, lasted = await crawl_raw(silent, tmp_path)

    assert summary.errors == {"TimeoutError": 1} and row.attempts == 2
    assert max(lasted) < 1 + TIMEOUT_SLACK, lasted  # the client hung up at TIMEOUT


@pytest.mark.parametrize("behaviour", [trickle_body, trickle_head], ids=["body", "head"])
async def test_a_server_that_trickles_a_byte_a_second_ends_within_timeout(
    tmp_path: Path, behaviour: Behaviour
) -> None:
    summary, row, lasted = await crawl_raw(behaviour, tmp_path)

    assert summary.errors == {"TimeoutError": 1} and row.attempts == 2
    assert max(lasted) < 1 + TIMEOUT_SLACK, lasted


@pytest.mark.parametrize(
    "encoding",
    ["gzip", "deflate"],
)
async def test_a_truncated_compressed_body_is_retried_then_recorded(
    hostile: HostileSite, tmp_path: Path, encoding: str
) -> None:
    path = f"/truncated/{encoding}"
    db = tmp_path / "t.db"
    summary, items = await run(Echo, [hostile.url(path)], db)

    assert hostile.hits_of(path) == 2
    assert items == [] and summary.pages_failed == 1
    row = request_rows(db)[hostile.url(path)]
    assert row.state == 2 and row.attempts == 2
    # The kind names the broken payload, whichever layer notices it.
    assert row.error is not None and re.search("payload|encoding|truncat", row.error, re.I), row


async def test_4xx_other_than_408_and_429_are_not_retried_and_shown_by_code(
    hostile: HostileSite, tmp_path: Path
) -> None:
    final = (400, 401, 403, 405, 410, 418, 451)
    retried = (408, 429)
    urls = [hostile.url(f"/status/{code}") for code in (*final, *retried)]
    spider = spider_file(tmp_path, "codes", urls)
    db = str(tmp_path / "codes.db")
    settings = ["-s", "ROBOTS=0", "-s", "RETRIES=1"]
    crawled = await asyncio.to_thread(cli, "crawl", str(spider), "--db", db, *settings)
    assert crawled.returncode == 0, crawled.stderr

    assert [hostile.hits_of(f"/status/{code}") for code in final] == [1] * len(final)
    assert [hostile.hits_of(f"/status/{code}") for code in retried] == [2, 2]
    status = await asyncio.to_thread(cli, "status", db)
    assert status.returncode == 0
    lines = status.stdout.splitlines()
    assert f"failed: {len(final) + len(retried)}" in lines
    errors = next(line for line in lines if line.startswith("errors by kind"))
    for code in (*final, *retried):
        assert f"{code}: 1" in errors, errors


# -- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    ["http://", "not a url", "http://[::1", "http://127.0.0.1:99999/", "javascript:alert(1)"],
)
def test_an_invalid_start_url_is_one_line_and_exit_2(tmp_path: Path, url: str) -> None:
    spider = spider_file(tmp_path, "badstart", [url])
    result = cli("crawl", str(spider), "--db", str(tmp_path / "bad.db"))

    one_line_error(result, "start URL")
    assert not list(tmp_path.glob("*.db*"))  # refused before any database was made


class Yielder(Spider):
    """Yields a request for every bad URL, and one good link."""

    name = "yielder"
    bad: list[str] = []

    def parse(self, response: Response) -> Iterator[dict[str, Any] | Request]:
        yield {"url": response.url}
        if response.url.endswith("/page/start"):
            yield from (Request(url) for url in self.bad)
            yield response.follow("/page/good")


def bad_urls(hostile: HostileSite) -> list[str]:
    return [*BAD_HREFS, hostile.url(LONG_PATH)]


async def crawl_bad_links(hostile: HostileSite, db: Path) -> tuple[Yielder, Summary]:
    """Crawl from a page that yields every bad URL and one good link."""
    spider = Yielder()
    spider.start_urls = [hostile.url("/page/start")]
    spider.bad = bad_urls(hostile)
    return spider, await crawl(spider, db, QUICK)


async def test_invalid_urls_yielded_by_a_callback_are_dropped_and_never_fetched(
    hostile: HostileSite, tmp_path: Path
) -> None:
    db = tmp_path / "y.db"
    _, summary = await crawl_bad_links(hostile, db)

    assert sorted(hit.path for hit in hostile.hits) == ["/page/good", "/page/start"]
    assert summary.pages_done == 2 and summary.pages_failed == 0 and summary.errors == {}
    assert set(request_rows(db)) == {hostile.url("/page/start"), hostile.url("/page/good")}


async def test_dropped_urls_are_counted_and_shown_in_status(
    hostile: HostileSite, tmp_path: Path
) -> None:
    db = tmp_path / "y.db"
    spider, summary = await crawl_bad_links(hostile, db)

    assert sum(summary.dropped.values()) == len(spider.bad), summary.dropped
    assert "duplicate" not in summary.dropped
    status = await asyncio.to_thread(cli, "status", str(db))
    assert status.returncode == 0
    line = next(line for line in status.stdout.splitlines() if line.startswith("links not queued"))
    assert sum(int(n) for n in re.findall(r": (\d+)", line)) == len(spider.bad), line


class Follower(Spider):
    """Follows every <a href> of a page, as the README's spider does."""

    name = "follower"

    def parse(self, response: Response) -> Iterator[dict[str, Any] | Request]:
        yield {"url": response.url}
        for link in response.css("a[href]"):
            yield response.follow(link, callback=self.parse)


async def test_a_malformed_href_followed_by_a_callback_is_dropped(
    hostile: HostileSite, tmp_path: Path
) -> None:
    summary, items = await run(Follower, [hostile.url("/links")], tmp_path / "l.db")

    assert summary.errors == {} and summary.pages_failed == 0
    assert sorted(hit.path for hit in hostile.hits) == ["/links", "/page/good"]
    assert len(items) == 2


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into any folder")
def test_a_database_folder_that_is_not_writable_is_refused(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        spider = spider_file(tmp_path, "locked", ["http://127.0.0.1:9/"])
        result = cli("crawl", str(spider), "--db", str(locked / "l.db"))
        one_line_error(result, "not writable")
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)
