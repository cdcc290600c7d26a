"""The bundled spiders against the saved copies of their sites in ../shared/fixtures.

BooksSpider.parse_book is checked page by page on the 200 saved detail pages (they
cannot be crawled: no catalogue pages were saved). QuotesSpider crawls the complete
saved quotes.toscrape.com, served on loopback, through the whole engine.
"""

from __future__ import annotations

import json
import socket
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer

from crawler import Request, Response, Spider
from crawler.engine import crawl
from crawler.spiders.books import BooksSpider
from crawler.spiders.quotes import QuotesSpider
from crawler.storage.sqlite import Summary
from fixtures_server import StaticSite, fixture_dir, serve_static

Item = dict[str, Any]

BOOK_FIELDS = (
    "title",
    "upc",
    "price",
    "availability",
    "stock",
    "rating",
    "category",
    "num_reviews",
)
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


def load_expected(folder: Path) -> Any:
    """A fixture folder's expected.json."""
    return json.loads((folder / "expected.json").read_text(encoding="utf-8"))


# books.toscrape.com: parse_book on the saved detail pages


@pytest.fixture(scope="module")
def books() -> tuple[list[Item], list[Item]]:
    """(what parse_book extracted from each saved page, what expected.json says), in order."""
    folder = fixture_dir("books-toscrape-detail-pages-partial")
    expected: list[Item] = load_expected(folder)["books"]
    spider = BooksSpider()
    parsed = [item for book in expected for item in spider.parse_book(saved_page(folder, book))]
    return parsed, expected


def saved_page(folder: Path, book: Item) -> Response:
    """A saved detail page as the Response of its original URL."""
    url = "http://books.toscrape.com/" + book["original_path"]
    body = (folder / "pages" / book["file"]).read_bytes()
    headers = {"Content-Type": "text/html"}
    return Response(url=url, status=200, headers=headers, body=body, request=Request(url))


def test_parse_book_extracts_every_saved_page_exactly(
    books: tuple[list[Item], list[Item]],
) -> None:
    parsed, expected = books
    assert len(parsed) == len(expected) == 200
    for item, book in zip(parsed, expected, strict=True):
        assert {key: item[key] for key in BOOK_FIELDS} == {key: book[key] for key in BOOK_FIELDS}
        assert item["url"] == "http://books.toscrape.com/" + book["original_path"]


def test_parse_book_totals_match_the_fixture(books: tuple[list[Item], list[Item]]) -> None:
    parsed, _ = books
    assert sum(Decimal(item["price"].removeprefix("£")) for item in parsed) == Decimal("6956.64")
    assert sum(item["stock"] for item in parsed) == 3240
    assert len({item["upc"] for item in parsed}) == 200
    ratings = Counter(item["rating"] for item in parsed)
    assert ratings == {"One": 49, "Two": 40, "Three": 35, "Four": 38, "Five": 38}


def test_parse_book_ignores_a_page_that_is_not_a_book() -> None:
    url = "http://books.toscrape.com/index.html"
    page = Response(url, 200, {}, b"<html><body><h1>All products</h1></body></html>", Request(url))
    assert list(BooksSpider().parse_book(page)) == []


def test_books_listing_leads_to_detail_pages_and_the_next_page() -> None:
    url = "http://books.toscrape.com/catalogue/page-2.html"
    body = (
        b'<article class="product_pod"><h3><a href="a-book_7/index.html">A</a></h3></article>'
        b'<ul class="pager"><li class="next"><a href="page-3.html">next</a></li></ul>'
    )
    spider = BooksSpider()
    requests = list(spider.parse(Response(url, 200, {}, body, Request(url))))
    assert [(r.url, r.callback) for r in requests] == [
        ("http://books.toscrape.com/catalogue/a-book_7/index.html", spider.parse_book),
        ("http://books.toscrape.com/catalogue/page-3.html", spider.parse),
    ]


# books.toscrape.com: a catalogue made around the saved detail pages, crawled whole

BOOKS_PER_PAGE = 20


class OldBooksSpider(Spider):
    """BooksSpider as it was before it moved onto CrawlSpider: its links by hand."""

    name = "books-old"
    start_urls = BooksSpider.start_urls
    allowed_domains = BooksSpider.allowed_domains
    parse_book = BooksSpider.parse_book

    def parse(self, response: Response) -> Iterator[Request]:
        for link in response.css("article.product_pod h3 a"):
            yield response.follow(link, callback=self.parse_book)
        for link in response.css("li.next a"):
            yield response.follow(link, callback=self.parse)


def catalogue_page(books: list[Item], n: int, pages: int) -> str:
    """Listing page n as books.toscrape.com lays it out: the home page is page 1, its
    links start with catalogue/; an image link and a title link per book; a sidebar of
    categories; previous and next links."""
    prefix = "catalogue/" if n == 1 else ""
    chunk = books[(n - 1) * BOOKS_PER_PAGE : n * BOOKS_PER_PAGE]
    pods = "".join(
        f'<li><article class="product_pod"><div class="image_container">'
        f'<a href="{prefix}{book["original_path"].removeprefix("catalogue/")}"><img></a></div>'
        f'<h3><a href="{prefix}{book["original_path"].removeprefix("catalogue/")}" '
        f'title="{book["title"]}">{book["title"][:20]}</a></h3></article></li>'
        for book in chunk
    )
    pager = ""
    if n > 1:
        pager += f'<li class="previous"><a href="{prefix}page-{n - 1}.html">previous</a></li>'
    if n < pages:
        pager += f'<li class="next"><a href="{prefix}page-{n + 1}.html">next</a></li>'
    side = f'<ul class="nav"><li><a href="{prefix}category/books/poetry_23/index.html">Poetry</a>'
    return (
        f"<html><body><div class='side_categories'>{side}</ul></div><section><ol class='row'>"
        f"{pods}</ol><ul class='pager'>{pager}</ul></section></body></html>"
    )


async def serve_books_catalogue(aiohttp_server: AiohttpServer) -> tuple[str, Counter[str]]:
    """The 200 saved detail pages at their original paths, behind 10 listing pages."""
    folder = fixture_dir("books-toscrape-detail-pages-partial")
    books: list[Item] = load_expected(folder)["books"]
    pages = -(-len(books) // BOOKS_PER_PAGE)
    files = {"/" + book["original_path"]: folder / "pages" / book["file"] for book in books}
    hits: Counter[str] = Counter()

    async def answer(request: web.Request) -> web.StreamResponse:
        hits[request.path] += 1
        if request.path == "/":
            return web.Response(text=catalogue_page(books, 1, pages), content_type="text/html")
        name = request.path.removeprefix("/catalogue/")
        if name.startswith("page-") and name.endswith(".html"):
            n = int(name[5:-5])
            return web.Response(text=catalogue_page(books, n, pages), content_type="text/html")
        if request.path in files:
            return web.FileResponse(files[request.path])
        return web.Response(status=404, text="Not Found")

    app = web.Application()
    app.router.add_get("/{tail:.*}", answer)
    server = await aiohttp_server(app)
    return str(server.make_url("/")), hits


async def test_books_on_crawl_rules_stores_and_fetches_exactly_what_it_did_before(
    aiohttp_server: AiohttpServer, tmp_path: Path, offsite_lookups: list[str]
) -> None:
    crawls = {}
    for spider in (OldBooksSpider, BooksSpider):
        url, hits = await serve_books_catalogue(aiohttp_server)
        db = tmp_path / f"{spider.name}.db"
        summary = await crawl(spider, db=db, settings={"START_URL": url, "ROBOTS": False})
        async with aiosqlite.connect(db) as conn:
            rows = await conn.execute_fetchall("SELECT data FROM items")
        items = sorted(row[0].replace(url, "/") for row in rows)  # ports differ
        crawls[spider.name] = (summary.pages_done, summary.pages_failed, items, hits)
    old, new = crawls["books-old"], crawls["books"]
    assert new == old
    pages_done, pages_failed, items, hits = new
    assert (pages_done, pages_failed, len(items)) == (210, 0, 200)
    assert set(hits.values()) == {1} and len(hits) == 210  # home, pages 2-10, 200 books
    assert offsite_lookups == []


# quotes.toscrape.com: a whole crawl of the saved site through the engine


@dataclass
class QuotesCrawl:
    """One finished crawl of the saved quotes site, and what it left behind."""

    site: StaticSite
    summary: Summary
    items: list[Item]
    offsite_lookups: list[str]
    expected: Any


@pytest.fixture
def offsite_lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Host names anyone tried to resolve other than loopback; the lookups fail."""
    looked_up: list[str] = []
    real_getaddrinfo = socket.getaddrinfo

    def guarded(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name not in LOOPBACK_NAMES:
            looked_up.append(name)
            raise socket.gaierror(socket.EAI_NONAME, f"test: no network for {name}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", guarded)
    return looked_up


class OffsiteLinksQuotesSpider(QuotesSpider):
    """QuotesSpider that also follows every footer link (to goodreads and zyte)."""

    name = "quotes-offsite"

    def parse_listing(self, response: Response) -> Iterator[Item | Request]:
        """The listing page as QuotesSpider parses it, plus its off-site footer links."""
        yield from super().parse_listing(response)
        for link in response.css("footer a"):
            yield response.follow(link, callback=self.parse_listing)


async def crawl_quotes_site(
    aiohttp_server: AiohttpServer, db: Path, spider: type[QuotesSpider], lookups: list[str]
) -> QuotesCrawl:
    """Crawl the saved quotes site with `spider`, START_URL pointing at loopback."""
    folder = fixture_dir("quotes-toscrape")
    site = await serve_static(aiohttp_server, folder / "site")
    settings = {"START_URL": site.url("/"), "ROBOTS": False}
    summary = await crawl(spider, db=db, settings=settings)
    async with aiosqlite.connect(db) as conn:
        rows = await conn.execute_fetchall("SELECT data FROM items ORDER BY id")
    items = [json.loads(row[0]) for row in rows]
    return QuotesCrawl(site, summary, items, lookups, load_expected(folder))


@pytest.fixture
async def quotes_crawl(
    aiohttp_server: AiohttpServer, tmp_path: Path, offsite_lookups: list[str]
) -> QuotesCrawl:
    """One crawl of the saved quotes site with QuotesSpider."""
    return await crawl_quotes_site(aiohttp_server, tmp_path / "q.db", QuotesSpider, offsite_lookups)


def quote_key(quote: Item) -> tuple[Any, ...]:
    """What identifies a quote: text, author, author link, tags (and its listing page)."""
    tags = tuple(quote["tags"])
    return quote["text"], quote["author"], quote["author_url"], tags, quote["page"]


def of_kind(items: list[Item], kind: str) -> Iterator[Item]:
    """The items of one kind ("quote" or "author")."""
    return (item for item in items if item.get("kind") == kind)


async def test_quotes_crawl_stores_every_quote_once(quotes_crawl: QuotesCrawl) -> None:
    quotes = list(of_kind(quotes_crawl.items, "quote"))
    assert len(quotes) == 100
    assert Counter(map(quote_key, quotes)) == Counter(
        map(quote_key, quotes_crawl.expected["quotes"])
    )


async def test_quotes_crawl_stores_every_author_once(quotes_crawl: QuotesCrawl) -> None:
    authors = list(of_kind(quotes_crawl.items, "author"))
    assert len(authors) == 50
    got = {
        author["slug"]: {
            "name": author["name"],
            "born_date": author["born_date"],
            "born_location": author["born_location"],
            "description_chars": len(author["description"]),
        }
        for author in authors
    }
    assert got == quotes_crawl.expected["authors"]


async def test_quotes_crawl_stores_nothing_else(quotes_crawl: QuotesCrawl) -> None:
    assert Counter(item.get("kind") for item in quotes_crawl.items) == {"quote": 100, "author": 50}


async def test_quotes_crawl_fetches_each_needed_page_once(quotes_crawl: QuotesCrawl) -> None:
    expected = quotes_crawl.expected
    slugs = sorted(expected["authors"])
    pages = {f"/page/{n}/" for n in range(1, expected["listing_pages"] + 1)}
    site = quotes_crawl.site
    answered = {path for path, status in site.statuses.items() if status == 200}
    redirected = {path for path, status in site.statuses.items() if status == 301}
    assert answered == {"/"} | pages | {f"/author/{slug}/" for slug in slugs}
    assert redirected == {f"/author/{slug}" for slug in slugs}
    assert {path: site.hits[path] for path in answered} == dict.fromkeys(answered, 1)
    assert set(site.statuses.values()) == {200, 301}  # nothing answered 404


async def test_quotes_crawl_stays_on_the_site(quotes_crawl: QuotesCrawl) -> None:
    assert quotes_crawl.offsite_lookups == []  # goodreads and zyte links were dropped
    failed_pages = sum(status == 404 for status in quotes_crawl.site.statuses.values())
    assert quotes_crawl.summary.pages_failed == failed_pages == 0


async def test_offsite_links_are_dropped_by_allowed_domains(
    aiohttp_server: AiohttpServer, tmp_path: Path, offsite_lookups: list[str]
) -> None:
    db = tmp_path / "offsite.db"
    result = await crawl_quotes_site(aiohttp_server, db, OffsiteLinksQuotesSpider, offsite_lookups)
    assert result.offsite_lookups == []
    assert result.summary.pages_failed == 0
    assert Counter(item["kind"] for item in result.items) == {"quote": 100, "author": 50}
