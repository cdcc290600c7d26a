"""BooksSpider: every book of the books.toscrape.com catalogue.

Two link rules: a listing page (the home page, `catalogue/page-N.html`) leads to each
book's detail page, parsed by `parse_book`, and to the next listing page, whose links go
through the rules in turn. `parse_book` turns a detail page into one item, and can be
called on its own with any saved detail page.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

from selectolax.lexbor import LexborNode

from crawler import CrawlSpider, Response, Rule
from crawler.checks import check

Item = dict[str, Any]

RATINGS = ("One", "Two", "Three", "Four", "Five")
_STOCK = re.compile(r"\((\d+) available\)")
BOOK_FIELDS = ("title", "price", "availability", "upc", "rating", "category", "url")


class BooksSpider(CrawlSpider):
    """One item per book: title, price, availability, stock, UPC, rating, category, reviews."""

    name: ClassVar[str] = "books"
    start_urls: list[str] = ["http://books.toscrape.com/"]
    allowed_domains: list[str] = ["books.toscrape.com"]
    rules: ClassVar[Sequence[Rule]] = (
        Rule(css="article.product_pod h3", callback="parse_book"),  # a book's detail page
        Rule(css="li.next"),  # the next listing page, whose links go through the rules too
    )

    @check(
        "http://books.toscrape.com/catalogue/a-light-in-the-attic_1000/index.html",
        file="1.html",  # a saved detail page: run with --files DIR, the folder that holds it
        items=1,
        fields=BOOK_FIELDS,
        requests=0,
    )
    def parse_book(self, response: Response) -> Iterator[Item]:
        """A book's detail page as one item (nothing if the page is not a product page)."""
        main = response.css_first("article.product_page div.product_main")
        if main is None:
            return
        table = product_table(response)
        availability = table.get("Availability") or text_of(main.css_first("p.availability"))
        yield {
            "title": text_of(main.css_first("h1")),
            "price": text_of(main.css_first("p.price_color")),
            "availability": availability,
            "stock": stock_count(availability),
            "upc": table.get("UPC", ""),
            "rating": star_rating(main.css_first("p.star-rating")),
            "category": category(response),
            "num_reviews": int(table.get("Number of reviews") or 0),
            "url": response.url,
        }


def product_table(response: Response) -> dict[str, str]:
    """The "Product Information" table as header -> value."""
    table: dict[str, str] = {}
    for row in response.css("article.product_page table tr"):
        header, value = row.css_first("th"), row.css_first("td")
        if header is not None and value is not None:
            table[text_of(header)] = text_of(value)
    return table


def stock_count(availability: str) -> int:
    """The number in "In stock (22 available)"; 0 when none is shown."""
    match = _STOCK.search(availability)
    return int(match.group(1)) if match else 0


def star_rating(node: LexborNode | None) -> str:
    """ "One" to "Five", from the classes of `p.star-rating` ("" if absent)."""
    classes = (node.attributes.get("class") or "").split() if node is not None else []
    return next((name for name in classes if name in RATINGS), "")


def category(response: Response) -> str:
    """The category: the breadcrumb link just before the book itself."""
    links = response.css("ul.breadcrumb li a")
    return text_of(links[-1]) if len(links) >= 3 else ""


def text_of(node: LexborNode | None) -> str:
    """A node's text with surrounding whitespace removed ("" for a missing node)."""
    return node.text(strip=False).strip() if node is not None else ""
