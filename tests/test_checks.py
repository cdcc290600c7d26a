"""Spider checks (crawler.checks): declared with @check, run through OnePage on loopback.

run_checks runs its own event loop, so the tests call it in a worker thread while the
test's loop serves the pages.
"""

from __future__ import annotations

import asyncio
import io
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer

from crawl_cli import crawler
from crawler import Request, Response, Spider
from crawler.checks import Check, check, declared_checks
from crawler.settings import Settings
from crawler.spiders.books import BooksSpider
from crawler.spiders.quotes import QuotesSpider
from crawler.tools.checks import run_checks
from fixtures_server import fixture_dir, serve_static

LIST_PAGE = (
    "<ul><li><a href='/item/1'>one</a></li><li><a href='/item/2'>two</a></li>"
    "<li><a href='/item/3'>three</a></li></ul>"
)
HERE = Path(__file__).resolve().parent  # where a test spider's saved pages are looked for


@dataclass
class ListSite:
    """A three-item list page on 127.0.0.1, with hit counters."""

    base: str
    hits: Counter[str]


@pytest.fixture
async def list_site(aiohttp_server: AiohttpServer) -> ListSite:
    hits: Counter[str] = Counter()

    async def listing(request: web.Request) -> web.Response:
        hits[request.path] += 1
        return web.Response(text=LIST_PAGE, content_type="text/html")

    async def missing(request: web.Request) -> web.Response:
        hits[request.path] += 1
        return web.Response(status=404, text="Not Found")

    app = web.Application()
    app.router.add_get("/list", listing)
    app.router.add_get("/{tail:.*}", missing)
    server = await aiohttp_server(app)
    return ListSite(base=str(server.make_url("/")), hits=hits)


class ListSpider(Spider):
    """Yields one item per <li> and a request per link."""

    name: ClassVar[str] = "list"
    start_urls: list[str] = ["http://list.invalid/"]

    def parse(self, response: Response) -> Iterator[dict[str, Any] | Request]:
        for node in response.css("li a"):
            yield {"name": node.text(), "empty": "", "url": response.url}
            yield response.follow(node, callback=self.parse)


class GoodChecks(ListSpider):
    @check("/list", items=3, fields=["name", "url"], requests=(1, None))
    @check("list", items=(1, 3), requests=(None, 3))
    def parse(self, response: Response) -> Iterator[dict[str, Any] | Request]:
        return super().parse(response)


class WrongChecks(ListSpider):
    @check("/list", items=5, fields=["name", "empty", "absent"], requests=0)
    def parse(self, response: Response) -> Iterator[dict[str, Any] | Request]:
        return super().parse(response)


async def checks_of(spider: Spider, **kw: Any) -> tuple[int, list[str]]:
    """run_checks in a worker thread: (exit code, printed lines)."""
    out = io.StringIO()
    settings = Settings.build({"RETRIES": 0, **kw.pop("settings", {})})
    code = await asyncio.to_thread(run_checks, spider, settings, out, **kw)
    return code, out.getvalue().splitlines()


async def test_passing_checks_print_one_pass_line_each_and_exit_0(list_site: ListSite) -> None:
    code, lines = await checks_of(GoodChecks(), base=list_site.base)
    assert lines == [
        "PASS list.parse /list: 3 items, 3 requests",
        "PASS list.parse list: 3 items, 3 requests",
    ]
    assert code == 0
    assert list_site.hits["/list"] == 2


async def test_a_wrong_expectation_fails_with_a_fail_line_and_exit_1(
    list_site: ListSite,
) -> None:
    code, lines = await checks_of(WrongChecks(), base=list_site.base)
    assert code == 1
    assert lines == [
        "FAIL list.parse /list: expected 5 items, got 3; expected 0 requests, got 3; "
        "field 'empty' missing or empty in 3 of 3 items; "
        "field 'absent' missing or empty in 3 of 3 items"
    ]


async def test_start_url_setting_is_the_base_when_no_base_is_given(list_site: ListSite) -> None:
    code, lines = await checks_of(GoodChecks(), settings={"START_URL": list_site.base})
    assert code == 0
    assert [line[:4] for line in lines] == ["PASS", "PASS"]


async def test_a_page_that_404s_fails_cleanly(list_site: ListSite) -> None:
    class Gone(ListSpider):
        @check("/gone/", items=(0, None))
        def parse(self, response: Response) -> Iterator[dict[str, Any] | Request]:
            return super().parse(response)

    code, lines = await checks_of(Gone(), base=list_site.base)
    assert code == 1
    assert lines == [f"FAIL list.parse /gone/: HTTP 404 from {list_site.base}gone/"]
    assert list_site.hits["/gone/"] == 1  # a 404 is not retried


async def test_an_unreachable_page_fails_cleanly(refused_url: str) -> None:
    class Refused(ListSpider):
        @check(refused_url, items=1)
        def parse(self, response: Response) -> Iterator[dict[str, Any] | Request]:
            return super().parse(response)

    code, lines = await checks_of(Refused(), settings={"ROBOTS": "false"})
    assert code == 1
    assert len(lines) == 1
    assert lines[0].startswith(f"FAIL list.parse {refused_url}: cannot fetch {refused_url}: ")


async def test_a_callback_that_raises_fails(list_site: ListSite) -> None:
    class Broken(ListSpider):
        @check("/list", items=(0, None))
        def parse(self, response: Response) -> Iterator[dict[str, Any] | Request]:
            yield {"name": "first"}
            raise ValueError("selector gone")

    code, lines = await checks_of(Broken(), base=list_site.base)
    assert code == 1
    assert lines == ["FAIL list.parse /list: ValueError in parse"]


class SavedPage(ListSpider):
    seen: ClassVar[list[str]] = []

    @check("http://shop.example/a/b/page.html", file="saved.html", items=3, requests=3)
    def parse(self, response: Response) -> Iterator[dict[str, Any] | Request]:
        for output in super().parse(response):
            if isinstance(output, Request):
                self.seen.append(output.url)
            yield output


async def test_a_saved_page_is_served_as_its_url_without_fetching(tmp_path: Path) -> None:
    (tmp_path / "saved.html").write_text(LIST_PAGE.replace("/item/", "item-"))
    code, lines = await checks_of(SavedPage(), files=tmp_path)
    assert lines == ["PASS list.parse saved.html: 3 items, 3 requests"]
    assert code == 0
    assert SavedPage.seen == [f"http://shop.example/a/b/item-{n}" for n in (1, 2, 3)]


async def test_a_missing_saved_page_fails_and_points_at_files(tmp_path: Path) -> None:
    code, lines = await checks_of(SavedPage())
    assert code == 1
    assert lines == [
        f"FAIL list.parse saved.html: cannot read saved page {HERE / 'saved.html'}: "
        "No such file or directory (give its folder with --files)"
    ]


async def test_a_spider_without_checks_says_so_and_passes() -> None:
    code, lines = await checks_of(ListSpider())
    assert (code, lines) == (0, ["no checks declared by spider 'list'"])


def test_checks_are_found_in_written_order_and_inherited() -> None:
    class More(GoodChecks):
        @check("/other", items=1)
        def parse_other(self, response: Response) -> None:
            """Not a real page."""

    assert [(name, c.url) for name, c in declared_checks(More)] == [
        ("parse", "/list"),
        ("parse", "list"),
        ("parse_other", "/other"),
    ]
    assert declared_checks(More)[1][1] == Check(url="list", items=(1, 3), requests=(0, 3))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"items": (5, 2)},
        {"items": -1},
        {"requests": (1, 2, 3)},
        {"requests": True},
        {"fields": "name"},
    ],
)
def test_a_bad_declaration_is_refused_where_it_is_written(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="check: "):
        check("/page/", **kwargs)


# the bundled spiders' own checks, on the saved sites in ../shared/fixtures


async def test_the_quotes_checks_pass_on_the_saved_site(aiohttp_server: AiohttpServer) -> None:
    site = await serve_static(aiohttp_server, fixture_dir("quotes-toscrape") / "site")
    code, lines = await checks_of(QuotesSpider(), base=site.url("/"))
    assert lines == [
        "PASS quotes.parse /: 0 items, 1 request",
        "PASS quotes.parse_listing /page/1/: 10 items, 11 requests",
        "PASS quotes.parse_author /author/Albert-Einstein/: 1 item, 0 requests",
    ]
    assert code == 0


async def test_the_books_check_passes_on_a_saved_detail_page() -> None:
    pages = fixture_dir("books-toscrape-detail-pages-partial") / "pages"
    code, lines = await checks_of(BooksSpider(), files=pages)
    assert lines == ["PASS books.parse_book 1.html: 1 item, 0 requests"]
    assert code == 0


async def test_the_quotes_checks_fail_on_the_wrong_site(list_site: ListSite) -> None:
    code, lines = await checks_of(QuotesSpider(), base=list_site.base)
    assert code == 1
    assert [line.split(":")[0] for line in lines] == [
        "FAIL quotes.parse /",
        "FAIL quotes.parse_listing /page/1/",
        "FAIL quotes.parse_author /author/Albert-Einstein/",
    ]
    assert all(": HTTP 404 from " in line for line in lines)


# the command, as a user runs it


async def test_crawler_check_passes_on_the_saved_sites_and_fails_on_a_wrong_one(
    aiohttp_server: AiohttpServer, list_site: ListSite
) -> None:
    site = await serve_static(aiohttp_server, fixture_dir("quotes-toscrape") / "site")
    code, out, err = await crawler("check", "quotes", "-s", f"START_URL={site.url('/')}")
    assert code == 0, err
    assert out.count("PASS quotes.") == 3 and "FAIL" not in out

    pages = fixture_dir("books-toscrape-detail-pages-partial") / "pages"
    code, out, err = await crawler("check", "books", "--files", str(pages))
    assert (code, out) == (0, "PASS books.parse_book 1.html: 1 item, 0 requests\n"), err

    code, out, err = await crawler("check", "quotes", "-s", f"START_URL={list_site.base}")
    assert code == 1 and out.count("FAIL quotes.") == 3 and err == ""


async def test_crawler_check_bad_input_is_one_line() -> None:
    for args in (["check", "nope"], ["check", "quotes", "-s", "START_URL=notaurl"]):
        code, out, err = await crawler(*args)
        assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, (args, err)
