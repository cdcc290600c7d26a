"""The generated bench site: page shape, link graph, titles, and the server's answers."""

from __future__ import annotations

import re
from collections import Counter, deque
from collections.abc import AsyncIterator
from urllib.parse import urljoin, urlsplit

import aiohttp
import pytest
from selectolax.lexbor import LexborHTMLParser

from crawler.errors import UsageError
from crawler.tools.benchsite import (
    HITS,
    BenchSite,
    expected_titles,
    index_html,
    index_title,
    make_app,
    page_html,
    page_path,
    serve,
)

PAGES = 500
BASE = "http://127.0.0.1:8123"
_PAGE_PATH = re.compile(r"/p/(\d+)\.html")


def hrefs(body: bytes) -> list[str]:
    return [node.attributes["href"] or "" for node in LexborHTMLParser(body).css("a[href]")]


def title(body: bytes) -> str:
    node = LexborHTMLParser(body).css_first("title")
    assert node is not None
    return node.text()


def resolve(page_url: str, href: str) -> str:
    return urljoin(page_url, href).partition("#")[0]


def body_of(path: str, pages: int) -> bytes:
    if path == "/":
        return index_html(pages)
    match = _PAGE_PATH.fullmatch(path)
    assert match is not None, path
    return page_html(int(match[1]), pages, base=BASE)


@pytest.fixture
async def site() -> AsyncIterator[BenchSite]:
    async with await serve(PAGES) as running:
        yield running


def test_pages_are_about_21_kb() -> None:
    sizes = [len(page_html(n, PAGES, base=BASE)) for n in range(PAGES)]
    assert min(sizes) >= 18_000
    assert max(sizes) <= 26_000


def test_each_page_has_about_40_links() -> None:
    counts = {len(hrefs(page_html(n, PAGES, base=BASE))) for n in range(PAGES)}
    assert counts == {40}


def test_links_come_in_every_form_with_duplicates() -> None:
    links = hrefs(page_html(123, PAGES, base=BASE))
    assert any(re.fullmatch(r"/p/\d+\.html", h) for h in links)
    assert any(re.fullmatch(r"\d+\.html", h) for h in links)
    assert any(re.fullmatch(r"\./\d+\.html", h) for h in links)
    assert any(re.fullmatch(r"\.\./p/\d+\.html", h) for h in links)
    assert any(re.fullmatch(re.escape(BASE) + r"/p/\d+\.html", h) for h in links)
    assert any(re.fullmatch(r"[^#]+\.html#\w+", h) for h in links)
    assert "#top" in links
    assert len(set(links)) < len(links)  # the same href twice
    page_url = BASE + page_path(123)
    assert Counter(resolve(page_url, h) for h in links)[BASE + page_path(247)] >= 2


def test_every_page_is_reachable_from_the_start_page() -> None:
    seen = {"/"}
    queue = deque(["/"])
    while queue:
        path = queue.popleft()
        for href in hrefs(body_of(path, PAGES)):
            target = urlsplit(resolve(BASE + path, href))
            assert f"{target.scheme}://{target.netloc}" == BASE
            if target.path not in seen:
                seen.add(target.path)
                queue.append(target.path)
    assert seen == {"/"} | {page_path(n) for n in range(PAGES)}


def test_links_form_cycles() -> None:
    page_url = BASE + page_path(1)
    targets = {resolve(page_url, h) for h in hrefs(page_html(1, PAGES, base=BASE))}
    assert BASE + page_path(0) in targets  # 0 links to 1 (its child) and 1 back to 0


def test_titles_are_unique_and_match_the_pages() -> None:
    titles = expected_titles(PAGES)
    assert len(set(titles.values())) == PAGES
    for n in (0, 1, 123, PAGES - 1):
        assert title(page_html(n, PAGES)) == titles[page_path(n)]
    assert titles[page_path(123)].startswith("Page 123 – ")
    assert title(index_html(PAGES)) == index_title(PAGES)


def test_pages_are_deterministic_and_seeded() -> None:
    assert page_html(7, PAGES, base=BASE) == page_html(7, PAGES, base=BASE)
    assert page_html(7, PAGES, seed=1) != page_html(7, PAGES, seed=2)
    assert expected_titles(PAGES, seed=1) != expected_titles(PAGES, seed=2)


def test_bad_page_numbers_are_refused() -> None:
    with pytest.raises(ValueError):
        page_html(PAGES, PAGES)
    with pytest.raises(ValueError):
        page_html(-1, PAGES)
    with pytest.raises(UsageError):
        make_app(0)


async def test_served_page_is_the_generated_page(site: BenchSite) -> None:
    base = site.url.rstrip("/")
    async with (
        aiohttp.ClientSession() as session,
        session.get(site.url.rstrip("/") + page_path(17)) as response,
    ):
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/html; charset=utf-8"
        assert await response.read() == page_html(17, PAGES, base=base)


async def test_start_page_and_robots_are_served(site: BenchSite) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(site.url) as response:
            assert await response.read() == index_html(PAGES)
            assert response.content_type == "text/html"
        async with session.get(site.url + "robots.txt") as response:
            assert response.status == 200
            assert "Allow: /" in await response.text()


@pytest.mark.parametrize("path", ["p/500.html", "p/007.html", "p/-1.html", "p/1.htm", "nope"])
async def test_out_of_range_and_unknown_paths_are_404(site: BenchSite, path: str) -> None:
    async with aiohttp.ClientSession() as session, session.get(site.url + path) as response:
        assert response.status == 404
    assert site.hits["/" + path] == 1


async def test_hits_count_every_request_by_path(site: BenchSite) -> None:
    async with aiohttp.ClientSession() as session:
        for url in (
            site.url.rstrip("/") + page_path(3),
            site.url.rstrip("/") + page_path(3),
            site.url.rstrip("/") + page_path(4),
            site.url,
        ):
            async with session.get(url) as response:
                await response.read()
    assert site.hits == Counter({page_path(3): 2, page_path(4): 1, "/": 1})
    assert site.requests == 4
    assert site.runner.app[HITS] is site.hits


async def test_closed_site_refuses_connections() -> None:
    async with await serve(10) as running:
        url = running.url
    assert urlsplit(url).hostname == "127.0.0.1"
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectionError):
            await session.get(url)
