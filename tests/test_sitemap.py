"""SitemapSpider against a shop on loopback: robots.txt, an index, gzip, lastmod, faults."""

from __future__ import annotations

import asyncio
import gzip
import json
import signal
import sqlite3
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer

from crawl_cli import count_items
from crawl_cli import start as start_cli
from crawler import Request, Response, SitemapSpider
from crawler.engine import crawl
from crawler.errors import SitemapError
from crawler.settings import Settings
from crawler.storage.sqlite import Summary

Item = dict[str, Any]
NS = 'xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"'
XHTML = 'xmlns:xhtml="http://www.w3.org/1999/xhtml"'


def urlset(*entries: tuple[str, str | None]) -> str:
    """A <urlset> of (loc, lastmod or None)."""
    urls = "".join(
        f"<url><loc>{loc}</loc>{f'<lastmod>{mod}</lastmod>' if mod else ''}</url>"
        for loc, mod in entries
    )
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<urlset {NS}>{urls}</urlset>'


def index(*locs: str) -> str:
    """A <sitemapindex> of sitemap URLs."""
    maps = "".join(f"<sitemap><loc>{loc}</loc></sitemap>" for loc in locs)
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<sitemapindex {NS}>{maps}</sitemapindex>'


@dataclass
class Shop:
    """A shop whose files are set per test; hits counted by path."""

    base: str = ""
    files: dict[str, bytes | str] = field(default_factory=dict)
    hits: Counter[str] = field(default_factory=Counter)
    delay: float = 0.0

    def url(self, path: str) -> str:
        return self.base + path

    def fetched(self) -> set[str]:
        return set(self.hits)


@pytest.fixture
async def shop(aiohttp_server: AiohttpServer) -> Shop:
    state = Shop()

    async def answer(request: web.Request) -> web.Response:
        state.hits[request.path] += 1
        if request.path.startswith(("/product/", "/category/", "/blog/", "/about")):
            if state.delay:
                await asyncio.sleep(state.delay)
            title = request.path.rstrip("/").rpartition("/")[2]
            return web.Response(text=f"<html><h1>{title}</h1></html>", content_type="text/html")
        body = state.files.get(request.path)
        if body is None:
            return web.Response(status=404, text="Not Found")
        if isinstance(body, bytes):  # gzip, sent as a file, without Content-Encoding
            return web.Response(body=body, content_type="application/x-gzip")
        kind = "text/plain" if request.path.endswith(".txt") else "application/xml"
        return web.Response(text=body, content_type=kind)

    app = web.Application()
    app.router.add_get("/{tail:.*}", answer)
    server = await aiohttp_server(app)
    state.base = str(server.make_url("")).rstrip("/")
    return state


class ShopSpider(SitemapSpider):
    """Products and categories from the shop's sitemaps; nothing else."""

    name = "shop-sitemap"
    sitemap_rules = [("/product/", "parse_product"), ("/category/", "parse_category")]

    def parse_product(self, response: Response) -> Iterator[Item]:
        yield {"product": response.css_first("h1").text()}  # type: ignore[union-attr]

    def parse_category(self, response: Response) -> Iterator[Item]:
        yield {"category": response.css_first("h1").text()}  # type: ignore[union-attr]


def spider_for(shop: Shop, *paths: str, cls: type[ShopSpider] = ShopSpider) -> ShopSpider:
    spider = cls()
    spider.sitemap_urls = [shop.url(path) for path in paths]
    return spider


async def run(spider: SitemapSpider, db: Path, **settings: Any) -> tuple[Summary, list[Item]]:
    summary = await crawl(spider, db, {"ROBOTS": False, **settings})
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT data FROM items ORDER BY id").fetchall()
    return summary, [json.loads(data) for (data,) in rows]


def a_full_shop(shop: Shop) -> None:
    """robots.txt -> an index (-> a plain sitemap and a gzipped one) and a gzipped sitemap."""
    shop.files["/robots.txt"] = (
        f"User-agent: *\nDisallow: /private/\nSitemap: {shop.url('/sitemap_index.xml')}\n"
        f"Sitemap: {shop.url('/news.xml.gz')}\n"
    )
    shop.files["/sitemap_index.xml"] = index(
        shop.url("/sitemap-products.xml"), shop.url("/sitemap-more.xml.gz")
    )
    shop.files["/sitemap-products.xml"] = urlset(
        (shop.url("/product/1"), "2020-01-01"),
        (shop.url("/product/2"), "2024-06-01"),
        (shop.url("/product/3"), None),
        (shop.url("/about"), None),  # no rule matches: not fetched
        (shop.url("/product/4"), "2024-05-31T23:30:00-02:00"),  # 2024-06-01T01:30Z
        (shop.url("/product/5"), "2023"),
    )
    shop.files["/sitemap-more.xml.gz"] = gzip.compress(
        urlset((shop.url("/product/6"), "2024-07"), (shop.url("/category/shoes"), None)).encode()
    )
    shop.files["/news.xml.gz"] = gzip.compress(
        urlset((shop.url("/blog/hello"), None), (shop.url("/product/7"), "2024-06-01")).encode()
    )


@pytest.mark.parametrize("robots", [False, True])
async def test_robots_index_and_gzipped_sitemaps_lead_to_every_matching_page_once(
    shop: Shop, tmp_path: Path, robots: bool
) -> None:
    a_full_shop(shop)
    spider = spider_for(shop, "/robots.txt")
    summary, items = await run(spider, tmp_path / "shop.db", ROBOTS=robots)
    if robots:  # read once for its rules, once as a page
        assert shop.hits.pop("/robots.txt") == 2
        shop.hits["/robots.txt"] = 1
    assert summary.pages_failed == 0, summary.errors
    assert sorted(item.get("product", "") for item in items if "product" in item) == list("1234567")
    assert [item for item in items if "category" in item] == [{"category": "shoes"}]
    assert shop.fetched() == {
        "/robots.txt", "/sitemap_index.xml", "/sitemap-products.xml", "/sitemap-more.xml.gz",
        "/news.xml.gz", *(f"/product/{n}" for n in range(1, 8)), "/category/shoes",
    }  # fmt: skip
    assert set(shop.hits.values()) == {1}  # /about and /blog/hello match no rule


async def test_sitemap_since_skips_entries_modified_before_it(shop: Shop, tmp_path: Path) -> None:
    a_full_shop(shop)
    spider = spider_for(shop, "/robots.txt")
    _, items = await run(spider, tmp_path / "since.db", SITEMAP_SINCE="2024-06-01T01:00:00Z")
    # A date without a time is its midnight, UTC: 2024-06-01 is before 01:00Z.
    products = sorted(item["product"] for item in items if "product" in item)
    assert products == ["3", "4", "6"]  # 3: no lastmod; 4: 01:30Z; 6: July
    assert "/product/1" not in shop.hits and "/product/2" not in shop.hits
    assert "/product/5" not in shop.hits and "/product/7" not in shop.hits
    assert shop.hits["/category/shoes"] == 1  # no lastmod: kept


async def test_start_url_replaces_the_sitemap_urls(shop: Shop, tmp_path: Path) -> None:
    a_full_shop(shop)
    spider = spider_for(shop, "/robots.txt")
    _, items = await run(spider, tmp_path / "start.db", START_URL=shop.url("/sitemap-more.xml.gz"))
    assert sorted(map(str, items)) == [str({"category": "shoes"}), str({"product": "6"})]
    assert "/robots.txt" not in shop.hits


async def test_sitemap_follow_reads_only_the_sitemaps_it_matches(
    shop: Shop, tmp_path: Path
) -> None:
    class OnlyGzipped(ShopSpider):
        name = "only-gzipped"
        sitemap_follow = [r"\.gz$"]

    a_full_shop(shop)
    spider = spider_for(shop, "/sitemap_index.xml", cls=OnlyGzipped)
    _, items = await run(spider, tmp_path / "follow.db")
    assert sorted(next(iter(item.values())) for item in items) == ["6", "shoes"]
    assert "/sitemap-products.xml" not in shop.hits


async def test_sitemap_filter_sees_every_entry_as_scrapy_gives_it(
    shop: Shop, tmp_path: Path
) -> None:
    seen: list[dict[str, Any]] = []

    class Filtered(ShopSpider):
        name = "filtered"

        def sitemap_filter(self, entries: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
            for entry in entries:
                seen.append(entry)
                if not entry["loc"].endswith(("/product/2", "/sitemap-more.xml.gz")):
                    yield entry

    a_full_shop(shop)
    _, items = await run(spider_for(shop, "/sitemap_index.xml", cls=Filtered), tmp_path / "f.db")
    assert sorted(item["product"] for item in items) == ["1", "3", "4", "5"]
    assert {"loc": shop.url("/product/1"), "lastmod": "2020-01-01"} in seen
    assert {"loc": shop.url("/product/3")} in seen
    assert {"loc": shop.url("/sitemap-more.xml.gz")} in seen  # index entries too
    assert "/sitemap-more.xml.gz" not in shop.hits


async def test_alternate_links_are_crawled_when_asked_for(shop: Shop, tmp_path: Path) -> None:
    class Alternates(ShopSpider):
        name = "alternates"
        sitemap_alternate_links = True

    shop.files["/alt.xml"] = (
        f"<urlset {NS} {XHTML}><url><loc>{shop.url('/product/en')}</loc>"
        f'<xhtml:link rel="alternate" hreflang="de" href="{shop.url("/product/de")}"/>'
        f'<xhtml:link rel="alternate" hreflang="x" href="{shop.url("/blog/x")}"/></url></urlset>'
    )
    _, items = await run(spider_for(shop, "/alt.xml", cls=Alternates), tmp_path / "alt.db")
    assert sorted(item["product"] for item in items) == ["de", "en"]
    _, items = await run(spider_for(shop, "/alt.xml"), tmp_path / "plain.db")
    assert items == [{"product": "en"}]


async def test_a_sitemap_that_is_not_a_sitemap_fails_its_page_and_keeps_what_was_read(
    shop: Shop, tmp_path: Path
) -> None:
    whole = urlset(*((shop.url(f"/product/{n}"), None) for n in range(1, 4)))
    shop.files.update(
        {
            "/html.xml": "<html><body><p>Our sitemap moved</p></body></html>",
            "/text.xml": "just some words",
            "/cut.xml": whole[: whole.index("/product/3")],  # cut off inside the third <url>
            "/empty.xml": "",
            "/bad.xml.gz": gzip.compress(whole.encode())[:-30],
            "/good.xml": urlset((shop.url("/product/9"), None)),
        }
    )
    paths = ("/html.xml", "/text.xml", "/cut.xml", "/empty.xml", "/bad.xml.gz", "/good.xml")
    summary, items = await run(spider_for(shop, *paths), tmp_path / "bad.db")
    assert summary.errors == {"SitemapError in _parse_sitemap": 5}
    assert summary.pages_failed == 5
    assert sorted(item["product"] for item in items) == ["1", "2", "9"]  # read before the cut


async def test_a_gzip_bomb_stops_at_max_body(shop: Shop, tmp_path: Path) -> None:
    filler = "<!-- " + "x" * 1_000_000 + " -->"
    shop.files["/bomb.xml.gz"] = gzip.compress(
        (urlset((shop.url("/product/1"), None))[:-9] + filler * 3 + "</urlset>").encode()
    )
    assert len(shop.files["/bomb.xml.gz"]) < 50_000
    summary, items = await run(
        spider_for(shop, "/bomb.xml.gz"), tmp_path / "bomb.db", MAX_BODY=2_000_000
    )
    assert summary.errors == {"BodyTooLarge in _parse_sitemap": 1}
    assert items == [{"product": "1"}]  # the entry before the filler was read


def test_sitemap_entries_are_yielded_as_the_body_is_read() -> None:
    spider = ShopSpider()
    spider.prepare(Settings())
    head = urlset(*((f"http://shop.test/product/{n}", None) for n in range(3)))
    body = head[: -len("</urlset>")].encode() + b"<url><loc>" + b"x" * 500_000 + b"&broken;"
    url = "http://shop.test/sitemap.xml"
    response = Response(url, 200, {"Content-Type": "application/xml"}, body, Request(url))
    requests = spider._parse_sitemap(response)
    assert next(requests).url == "http://shop.test/product/0"  # the fault is not read yet
    assert next(requests).url == "http://shop.test/product/1"
    assert next(requests).url == "http://shop.test/product/2"
    with pytest.raises(SitemapError, match="not XML"):
        next(requests)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("sitemap_rules = [('/product/(', 'parse')]", "sitemap_rules: bad pattern '/product/('"),
        ("sitemap_rules = [('/product/', 'parse_item')]", "no callback 'parse_item' on Bad"),
        ("sitemap_follow = ['[']", "sitemap_follow: bad pattern '['"),
        ("custom_settings = {'SITEMAP_SINCE': 'last week'}", "setting SITEMAP_SINCE='last week'"),
    ],
)
async def test_bad_sitemap_declarations_are_one_line_and_exit_2(
    shop: Shop, tmp_path: Path, source: str, message: str
) -> None:
    spider = tmp_path / "bad.py"
    spider.write_text(
        "from crawler import SitemapSpider\n"
        "class Bad(SitemapSpider):\n"
        "    name = 'bad'\n"
        f"    sitemap_urls = ['{shop.url('/sitemap.xml')}']\n"
        f"    {source}\n"
    )
    proc = await start_crawl(spider, tmp_path / "bad.db")
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
    assert not shop.hits
    assert not (tmp_path / "bad.db").exists()


def test_sitemap_since_accepts_dates_and_datetimes() -> None:
    for raw, expected in [
        ("2024-06-01", "2024-06-01 00:00:00+00:00"),
        ("2024-06-01T12:30:00+02:00", "2024-06-01 12:30:00+02:00"),
        ("2024-06-01T12:30Z", "2024-06-01 12:30:00+00:00"),
    ]:
        assert str(Settings.build({"SITEMAP_SINCE": raw}).sitemap_since) == expected


async def test_a_sitemap_crawl_killed_with_sigkill_resumes_storing_each_item_once(
    shop: Shop, tmp_path: Path
) -> None:
    products = 300
    shop.delay = 0.02
    shop.files["/index.xml"] = index(shop.url("/a.xml.gz"), shop.url("/b.xml"))
    half = products // 2
    shop.files["/a.xml.gz"] = gzip.compress(
        urlset(*((shop.url(f"/product/{n}"), None) for n in range(half))).encode()
    )
    shop.files["/b.xml"] = urlset(
        *((shop.url(f"/product/{n}"), None) for n in range(half, products))
    )
    spider = tmp_path / "shop.py"
    spider.write_text(
        "from crawler import SitemapSpider\n"
        "class Shop(SitemapSpider):\n"
        "    name = 'shop'\n"
        f"    sitemap_urls = ['{shop.url('/index.xml')}']\n"
        "    sitemap_rules = [('/product/', 'parse_product')]\n"
        "    def parse_product(self, response):\n"
        "        yield {'url': response.url}\n"
    )
    db = tmp_path / "shop.db"
    settings = ("ROBOTS=false", "CONCURRENCY=4", "PER_HOST=4")
    for kill_at in (20, 120):
        proc = await start_crawl(spider, db, *settings)
        for _ in range(600):  # 30 s at most
            if count_items(db) >= kill_at or proc.returncode is not None:
                break
            await asyncio.sleep(0.05)
        assert proc.returncode is None, "the crawl ended before it could be killed"
        proc.kill()
        await proc.wait()
        assert proc.returncode == -signal.SIGKILL
        assert count_items(db) < products
    proc = await start_crawl(spider, db, *settings)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    assert "failed: 0" in out.decode()
    with sqlite3.connect(db) as conn:
        urls = Counter(json.loads(d)["url"] for (d,) in conn.execute("SELECT data FROM items"))
    assert set(urls) == {shop.url(f"/product/{n}") for n in range(products)}
    assert set(urls.values()) == {1}
    # The sitemaps were read once each (committed before the first kill), or again if not.
    assert shop.hits["/index.xml"] <= 2 and shop.hits["/b.xml"] <= 2


async def start_crawl(spider: Path, db: Path, *settings: str) -> asyncio.subprocess.Process:
    args = ["crawl", str(spider), "--db", str(db), "--log-level", "WARNING"]
    for setting in settings:
        args += ["-s", setting]
    return await start_cli(*args)
