"""QuotesSpider: every quote and every author of quotes.toscrape.com.

The crawl walks the listing pages `/page/1/`, `/page/2/`, ... through their pagination
links and visits each author's "(about)" page. Quotes are taken from `/page/N/` only:
the home page `/` shows the same quotes as `/page/1/`, and the tag pages repeat them,
so the home page merely leads to `/page/1/` and tag links are never followed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, ClassVar
from urllib.parse import urlsplit

from selectolax.lexbor import LexborNode

from crawler import Request, Response, Spider
from crawler.checks import check

Item = dict[str, Any]

_LISTING_PATH = re.compile(r"/page/(\d+)/?$")
_AUTHOR_PATH = re.compile(r"/author/([^/]+)/?$")

QUOTE_FIELDS = ("text", "author", "author_url", "tags", "page")
AUTHOR_FIELDS = ("name", "born_date", "born_location", "description")


class QuotesSpider(Spider):
    """Quotes (`kind: "quote"`) and author biographies (`kind: "author"`)."""

    name: ClassVar[str] = "quotes"
    start_urls: list[str] = ["http://quotes.toscrape.com/"]
    allowed_domains: list[str] = ["quotes.toscrape.com"]

    @check("/", items=0, requests=1)
    def parse(self, response: Response) -> Iterator[Item | Request]:
        """The start page: a listing page is parsed as one; anything else leads to page 1."""
        if listing_page_number(response.url) is not None:
            yield from self.parse_listing(response)
        else:
            yield response.follow("/page/1/", callback=self.parse_listing)

    @check("/page/1/", items=10, fields=QUOTE_FIELDS, requests=11)  # 10 authors, next page
    def parse_listing(self, response: Response) -> Iterator[Item | Request]:
        """A `/page/N/` page: its quotes, its authors' pages and its neighbouring pages."""
        page = listing_page_number(response.url) or 1
        for node in response.css("div.quote"):
            yield quote_item(node, page)
            about = node.css_first('a[href*="/author/"]')
            if about is not None:
                yield response.follow(about, callback=self.parse_author)
        for link in response.css("li.next a, li.previous a"):
            yield response.follow(link, callback=self.parse_listing)

    @check("/author/Albert-Einstein/", items=1, fields=AUTHOR_FIELDS, requests=0)
    def parse_author(self, response: Response) -> Iterator[Item]:
        """An `/author/<slug>/` page: the author's name, birth and biography."""
        match = _AUTHOR_PATH.search(urlsplit(response.url).path)
        if match is None or response.css_first("div.author-details") is None:
            return
        yield {
            "kind": "author",
            "slug": match.group(1),
            "name": text_of(response.css_first("h3.author-title")),
            "born_date": text_of(response.css_first("span.author-born-date")),
            "born_location": text_of(response.css_first("span.author-born-location")),
            "description": text_of(response.css_first("div.author-description")),
        }


def quote_item(node: LexborNode, page: int) -> Item:
    """One `div.quote` as an item."""
    about = node.css_first('a[href*="/author/"]')
    return {
        "kind": "quote",
        "text": text_of(node.css_first("span.text")),
        "author": text_of(node.css_first("small.author")),
        "author_url": (about.attributes.get("href") or "") if about is not None else "",
        "tags": [text_of(tag) for tag in node.css("div.tags a.tag")],
        "page": page,
    }


def listing_page_number(url: str) -> int | None:
    """N for a `/page/N/` URL, None for any other page."""
    match = _LISTING_PATH.search(urlsplit(url).path)
    return int(match.group(1)) if match else None


def text_of(node: LexborNode | None) -> str:
    """A node's text with surrounding whitespace removed ("" for a missing node)."""
    return node.text(strip=False).strip() if node is not None else ""
