"""CrawlSpider's link rules against a catalogue site on loopback, counted by the server."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer

from crawl_cli import count_items
from crawler import CrawlSpider, Request, Response, Rule
from crawler.engine import crawl
from crawler.errors import FetchError, UsageError
from crawler.settings import Settings

Item = dict[str, Any]
PAGES = 3  # listing pages
PER_PAGE = 3  # books on each


@dataclass
class Catalogue:
    """The catalogue site and the requests that reached it, by path and query."""

    base: str
    hits: Counter[str]
    pages: int = PAGES  # listing pages
    delay: float = 0.0  # seconds before each answer

    def fetched(self) -> set[str]:
        """Every path (with its query) requested at least once."""
        return {path for path, count in self.hits.items() if count}


def listing(n: int, pages: int = PAGES) -> str:
    """Listing page n: its books inside article.product, a next link, a sort link, a
    sidebar link to book 1 outside the product regions."""
    books = range((n - 1) * PER_PAGE + 1, n * PER_PAGE + 1)
    articles = "".join(
        f'<article class="product"><h3><a href="book-{k}.html">Book {k}</a></h3></article>'
        for k in books
    )
    nxt = f'<li class="next"><a href="page-{n + 1}.html">next</a></li>' if n < pages else ""
    return (
        f"<html><body><div class='side'><a href='/catalogue/book-1.html'>first</a>"
        f"<a href='page-{n}.html?sort=price'>sort</a></div>{articles}<ul>{nxt}</ul></body></html>"
    )


def book(k: int) -> str:
    """Book k's page: a link to its review and back to the first listing page."""
    return (
        f"<html><body><h1>Book {k}</h1><a href='review-{k}.html'>review</a>"
        f"<a href='page-1.html'>all</a><map><area href='/catalogue/book-{k}.html?img'></map>"
        "</body></html>"
    )


HOME = (
    "<html><body><nav><a href='/catalogue/page-1.html'>catalogue</a>"
    "<a href='/catalogue/page-1.html?sort=price'>sorted</a></nav>"
    "<footer><a href='/about'>about</a><a href='/catalogue/book-99.html'>footer</a>"
    "<a href='/catalogue/gone-1.html'>a book no longer there</a></footer>"
    "</body></html>"
)


@pytest.fixture
async def catalogue(aiohttp_server: AiohttpServer) -> Catalogue:
    site = Catalogue("", Counter())

    async def page(request: web.Request) -> web.Response:
        site.hits[request.path_qs] += 1
        if site.delay:
            await asyncio.sleep(site.delay)
        name = request.match_info.get("name", "")
        if request.path == "/":
            text = HOME
        elif name.startswith("page-"):
            text = listing(int(name.removeprefix("page-").removesuffix(".html")), site.pages)
        elif name.startswith("gone-"):
            return web.Response(status=404, text="Not Found")
        elif name.startswith("book-"):
            text = book(int(name.removeprefix("book-").removesuffix(".html")))
        else:
            text = f"<html><body><h1>{name}</h1></body></html>"
        return web.Response(text=text, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_get("/catalogue/{name}", page)
    app.router.add_get("/{name}", page)
    server = await aiohttp_server(app)
    site.base = str(server.make_url("")).rstrip("/")
    return site


def items_of(db: Path) -> list[Item]:
    """The stored items, in commit order."""
    with sqlite3.connect(db) as conn:
        return [json.loads(data) for (data,) in conn.execute("SELECT data FROM items ORDER BY id")]


async def run(spider: CrawlSpider, site: Catalogue, db: Path, **settings: Any) -> list[Item]:
    """Crawl the catalogue from its home page (or the spider's own start URLs)."""
    if not spider.start_urls:
        spider.start_urls = [site.base + "/"]
    summary = await crawl(spider, db, {"ROBOTS": False, **settings})
    assert summary.pages_failed == 0, summary.errors
    return items_of(db)


def book_number(response: Response) -> int:
    return int(response.url.rpartition("book-")[2].partition(".")[0])


class ShopSpider(CrawlSpider):
    """Books from the product regions only; listing pages followed; sorted views denied."""

    name = "shop"
    rules = [
        Rule(allow=r"/catalogue/book-\d+\.html$", css="article.product", callback="parse_book"),
        Rule(allow=r"/catalogue/page-\d+\.html", deny=r"\?sort="),
    ]

    def parse_book(self, response: Response) -> Iterator[Item]:
        yield {"book": book_number(response)}


async def test_rules_take_allowed_links_from_their_regions_and_skip_denied_ones(
    catalogue: Catalogue, tmp_path: Path
) -> None:
    items = await run(ShopSpider(), catalogue, tmp_path / "shop.db")
    assert sorted(item["book"] for item in items) == list(range(1, PAGES * PER_PAGE + 1))
    listings = {f"/catalogue/page-{n}.html" for n in range(1, PAGES + 1)}
    books = {f"/catalogue/book-{k}.html" for k in range(1, PAGES * PER_PAGE + 1)}
    # Not fetched: ?sort= (denied), /about and book 99 (no rule takes them from the home
    # page: book 99 sits outside the product regions), reviews (book pages do not follow).
    assert catalogue.fetched() == {"/"} | listings | books
    assert set(catalogue.hits.values()) == {1}


class ChainSpider(CrawlSpider):
    """A rule that parses and follows, with cb_kwargs; a rule for the pages it leads to."""

    name = "chain"
    rules = [
        Rule(allow=r"/book-\d+\.html$", callback="parse_book", follow=True, cb_kwargs={"shelf": 7}),
        Rule(allow=r"/review-\d+\.html$", callback="parse_review"),
        Rule(allow=r"/page-\d+\.html$"),
    ]

    async def parse_book(self, response: Response, shelf: int) -> Item:
        return {"book": book_number(response), "shelf": shelf}

    def parse_review(self, response: Response) -> Iterator[Item]:
        yield {"review": response.url.rpartition("review-")[2].partition(".")[0]}


async def test_a_rule_with_a_callback_that_follows_parses_the_page_and_its_links(
    catalogue: Catalogue, tmp_path: Path
) -> None:
    items = await run(ChainSpider(), catalogue, tmp_path / "chain.db")
    books = [item for item in items if "book" in item]
    reviews = [item for item in items if "review" in item]
    numbers = [*range(1, PAGES * PER_PAGE + 1), 99]  # the footer's book: no css region here
    assert sorted(item["book"] for item in books) == numbers
    assert {item["shelf"] for item in books} == {7}
    assert sorted(int(item["review"]) for item in reviews) == numbers
    assert set(catalogue.hits.values()) == {1}
    assert "/about" not in catalogue.hits


class FirstRuleSpider(CrawlSpider):
    """Book 2's link matches both book rules, page 2's both listing rules: the first wins."""

    name = "first-rule"
    rules = [
        Rule(allow=r"/book-2\.html$", callback="parse_special"),
        Rule(allow=r"/book-\d+\.html$", callback="parse_book"),
        Rule(allow=r"/page-2\.html$", follow=False),  # fetched; its links not followed
        Rule(allow=r"/page-\d+\.html$"),  # followed
    ]

    def parse_special(self, response: Response) -> Iterator[Item]:
        yield {"special": book_number(response)}

    def parse_book(self, response: Response) -> Iterator[Item]:
        yield {"book": book_number(response)}


async def test_a_link_matching_two_rules_goes_to_the_first(
    catalogue: Catalogue, tmp_path: Path
) -> None:
    items = await run(FirstRuleSpider(), catalogue, tmp_path / "first.db")
    assert sorted(map(str, items)) == sorted(
        map(str, [{"special": 2}, {"book": 1}, {"book": 3}, {"book": 99}])
    )
    # Page 2 went to the rule that neither parses nor follows: its books are not fetched.
    assert catalogue.fetched() == {"/"} | {
        f"/catalogue/{name}.html" for name in ("page-1", "page-2", "book-1", "book-2", "book-3")
    } | {"/catalogue/book-99.html"}
    assert set(catalogue.hits.values()) == {1}


async def test_start_pages_go_through_the_rules_and_parse_start_url(
    catalogue: Catalogue, tmp_path: Path
) -> None:
    class FromPage2(FirstRuleSpider):
        name = "from-page-2"

        def parse_start_url(self, response: Response) -> Iterator[Item]:
            yield {"start": response.url.removeprefix(catalogue.base)}

    spider = FromPage2()
    spider.start_urls = [catalogue.base + "/catalogue/page-2.html"]
    items = await run(spider, catalogue, tmp_path / "start.db")
    assert items[0] == {"start": "/catalogue/page-2.html"}
    # The start page's links go through the rules (although rule 2 would not follow
    # page 2 when a link leads to it): page 3 is followed, page 1 never reached.
    assert sorted(item["book"] for item in items[1:]) == [1, 4, 5, 6, 7, 8, 9]
    assert "/catalogue/page-1.html" not in catalogue.hits
    assert set(catalogue.hits.values()) == {1}


async def test_a_rule_errback_gets_the_failure_of_a_linked_page(
    catalogue: Catalogue, tmp_path: Path
) -> None:
    class Gone(CrawlSpider):
        name = "gone"
        rules = [Rule(allow=r"/gone-", callback="parse_book", errback="gone")]

        def parse_book(self, response: Response) -> Item:
            return {"book": response.url}

        def gone(self, error: FetchError) -> Item:
            return {"gone": error.request.url.removeprefix(catalogue.base), "why": error.reason}

    spider = Gone()
    spider.start_urls = [catalogue.base + "/"]
    summary = await crawl(spider, tmp_path / "gone.db", {"ROBOTS": False})
    assert summary.errors == {"404": 1}
    assert items_of(tmp_path / "gone.db") == [{"gone": "/catalogue/gone-1.html", "why": "404"}]


def test_process_request_changes_or_drops_requests() -> None:
    class Tagging(CrawlSpider):
        name = "tagging"
        rules = [Rule(allow=r"book-", callback="parse_book", process_request="tag")]

        def tag(self, request: Request, response: Response) -> Request | None:
            if request.url.endswith("book-2.html"):
                return None
            return request.replace(meta={"from": response.url}, priority=5)

        def parse_book(self, response: Response) -> None:
            return None

    spider = Tagging()
    spider.prepare(Settings())
    url = "http://shop.test/catalogue/page-1.html"
    requests = list(spider.parse(Response(url, 200, {}, listing(1).encode(), Request(url))))
    assert [(r.url.rpartition("/")[2], r.meta, r.priority) for r in requests] == [
        ("book-1.html", {"from": url}, 5),
        ("book-3.html", {"from": url}, 5),
    ]
    assert {r.callback for r in requests} == {spider.parse_book}


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("Rule(allow=r'/book-(\\d+')", "rule 1: bad allow pattern '/book-(\\\\d+'"),
        ("Rule(deny=['ok', '*bad'])", "rule 1: bad deny pattern '*bad'"),
        ("Rule(callback='parse_item')", "rule 1: no callback 'parse_item' on Bad"),
        ("Rule(css='div[[')", "rule 1: bad css selector 'div[['"),
    ],
)
async def test_a_bad_rule_is_one_line_and_exit_2_before_anything_is_fetched(
    catalogue: Catalogue, tmp_path: Path, rule: str, message: str
) -> None:
    spider = tmp_path / "bad.py"
    spider.write_text(
        "from crawler import CrawlSpider, Rule\n"
        "class Bad(CrawlSpider):\n"
        "    name = 'bad'\n"
        f"    start_urls = ['{catalogue.base}/']\n"
        f"    rules = [Rule(allow='page-'), {rule}]\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "crawler", "crawl", str(spider), "--db", str(tmp_path / "bad.db"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
    assert not catalogue.hits
    assert not (tmp_path / "bad.db").exists()


def test_prepare_refuses_what_is_not_a_rule() -> None:
    class NotRules(CrawlSpider):
        name = "not-rules"
        rules = [{"allow": "x"}]  # type: ignore[list-item]

    with pytest.raises(UsageError, match="rule 0: expected a Rule, got dict"):
        NotRules().prepare(Settings())


async def test_a_rules_crawl_killed_with_sigkill_resumes_storing_each_item_once(
    catalogue: Catalogue, tmp_path: Path
) -> None:
    catalogue.pages, catalogue.delay = 12, 0.03
    books = catalogue.pages * PER_PAGE + 1  # and the footer's book 99
    spider = tmp_path / "chain.py"
    spider.write_text(
        "from crawler import CrawlSpider, Rule\n"
        "class Chain(CrawlSpider):\n"
        "    name = 'chain'\n"
        f"    start_urls = ['{catalogue.base}/']\n"
        "    rules = [\n"  # requests named _rule_0, parse_review and parse: found on resume
        "        Rule(allow=r'/book-\\d+\\.html$', callback='parse_book', follow=True),\n"
        "        Rule(allow=r'/review-\\d+\\.html$', callback='parse_review'),\n"
        "        Rule(allow=r'/page-\\d+\\.html$'),\n"
        "    ]\n"
        "    def parse_book(self, response):\n"
        "        yield {'url': response.url}\n"
        "    def parse_review(self, response):\n"
        "        yield {'url': response.url}\n"
    )
    db = tmp_path / "chain.db"
    argv = [sys.executable, "-m", "crawler", "crawl", str(spider), "--db", str(db)]
    argv += ["--log-level", "WARNING", "-s", "ROBOTS=false", "-s", "CONCURRENCY=2"]
    pipes = {"stdout": asyncio.subprocess.PIPE, "stderr": asyncio.subprocess.PIPE}
    for kill_at in (8, 30):
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, **pipes
        )
        for _ in range(600):  # 30 s at most
            if count_items(db) >= kill_at or proc.returncode is not None:
                break
            await asyncio.sleep(0.05)
        assert proc.returncode is None, "the crawl ended before it could be killed"
        proc.kill()
        await proc.wait()
        assert proc.returncode == -signal.SIGKILL
        assert count_items(db) < 2 * books
    proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL, **pipes)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    assert "failed: 0" in out.decode()
    urls = Counter(item["url"].removeprefix(catalogue.base) for item in items_of(db))
    numbers = [*range(1, books), 99]
    assert set(urls) == {
        f"/catalogue/{kind}-{k}.html" for kind in ("book", "review") for k in numbers
    }
    assert set(urls.values()) == {1}
