"""Checks: what a spider's callbacks must make of given pages, declared beside them.

A check is plain data attached to a callback with the `check` decorator: a page (a URL,
or a saved file served as that URL) and what the callback must produce from it. Stack
as many as you like; they run in the order written. `crawler check TARGET` runs every
check of a spider through the crawl's own fetcher and parser (`crawler.tools.checks`)
and prints one line per check; the exit status is 1 if any failed.

    from crawler import Spider
    from crawler.checks import check

    class QuotesSpider(Spider):
        name = "quotes"
        start_urls = ["http://quotes.toscrape.com/"]

        @check("/page/1/", items=10, fields=["text", "author", "tags"], requests=(1, None))
        @check("/page/10/", items=10, requests=(0, 10))
        def parse_listing(self, response): ...

        @check(
            "http://books.toscrape.com/catalogue/a-light-in-the-attic_1000/index.html",
            file="1.html", items=1, fields=["title", "price", "upc"], requests=0,
        )
        def parse_book(self, response): ...

prints

    PASS quotes.parse_listing /page/1/: 10 items, 11 requests
    FAIL quotes.parse_listing /page/10/: expected 0 to 10 requests, got 11
    PASS quotes.parse_book 1.html: 1 item, 0 requests

`check(url, *, file=None, items=None, fields=(), requests=None, meta=None)`:

- `url`: the page, absolute or relative to the start URL: `run_checks(base=...)`, else
  the `START_URL` setting, else the spider's first `start_urls`. `-s START_URL=...` thus
  runs the checks against a local copy of the site.
- `file`: do not fetch; hand the callback this saved page as the response of `url`
  (which relative links resolve against). A relative path is looked for in the folder
  given with `--files`, else in the spider module's folder.
- `items`, `requests`: how many the callback must yield: a number, or `(min, max)` with
  None for no bound (`(1, None)`: at least one). None: not checked.
- `fields`: keys every item must have, with a value that is not None or "".
- `meta`: the request's `meta`, for callbacks that read `response.meta`.

Every check also fails if the page cannot be fetched, answers an error status (4xx,
5xx), or the callback raises.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from crawler.spider import Spider

Count = int | tuple[int | None, int | None]
Bounds = tuple[int, int | None]  # (min, max); max None: unbounded
F = TypeVar("F", bound=Callable[..., Any])

_ATTR = "_crawler_checks"


@dataclass(frozen=True, slots=True)
class Check:
    """One declared check of a callback (see the module docstring)."""

    url: str
    file: str | None = None
    items: Bounds | None = None
    fields: tuple[str, ...] = ()
    requests: Bounds | None = None
    meta: Mapping[str, Any] | None = None

    @property
    def label(self) -> str:
        """How the check names its page: the saved file, else the URL as written."""
        return self.file or self.url


def check(
    url: str,
    *,
    file: str | None = None,
    items: Count | None = None,
    fields: Iterable[str] = (),
    requests: Count | None = None,
    meta: Mapping[str, Any] | None = None,
) -> Callable[[F], F]:
    """Declare a check of the decorated callback; stackable."""
    if not isinstance(url, str) or not url.strip():
        raise ValueError(f"check: url must be a non-empty string, not {url!r}")
    if isinstance(fields, str):
        raise ValueError(f"check: fields must be a list of names, not the string {fields!r}")
    declared = Check(
        url=url.strip(),
        file=file,
        items=_bounds("items", items),
        fields=tuple(fields),
        requests=_bounds("requests", requests),
        meta=meta,
    )

    def decorate(callback: F) -> F:
        earlier: tuple[Check, ...] = getattr(callback, _ATTR, ())
        vars(callback)[_ATTR] = (declared, *earlier)  # decorators apply bottom-up
        return callback

    return decorate


def _bounds(name: str, value: Count | None) -> Bounds | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value, value
    if isinstance(value, tuple) and len(value) == 2:
        low, high = value
        if _count_or_none(low) and _count_or_none(high):
            low = low or 0
            if high is None or low <= high:
                return low, high
    raise ValueError(f"check: {name}={value!r}: expected N or (min, max), None for no bound")


def _count_or_none(value: object) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 0)


def declared_checks(spider_class: type[Spider]) -> list[tuple[str, Check]]:
    """(callback name, check) for every check of a spider class, base classes' first."""
    names: dict[str, None] = {}
    for cls in reversed(spider_class.__mro__):
        names.update(dict.fromkeys(vars(cls)))
    found: list[tuple[str, Check]] = []
    for name in names:
        attribute = inspect.getattr_static(spider_class, name, None)
        found.extend((name, c) for c in getattr(attribute, _ATTR, ()))
    return found
