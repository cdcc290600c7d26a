"""Checks: what a spider's callbacks must make of given pages, declared beside them.

A check is plain data attached to a callback with the `check` decorator: a page (a URL,
or a saved file served as that URL) and what the callback must produce from it. Stack
as many as you like; they run in the order written. `crawler check TARGET` runs every
check of a spider through the crawl's own fetcher and parser (`crawler.page.OnePage`)
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

import asyncio
import inspect
import mimetypes
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO, TypeVar
from urllib.parse import urlsplit

from crawler.errors import FetchError
from crawler.http import Item, PageResult, Request, Response
from crawler.page import OnePage
from crawler.settings import Settings
from crawler.spider import Spider
from crawler.urls import check_url, urljoin

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


def run_checks(
    spider: Spider,
    settings: Settings,
    out: TextIO,
    *,
    base: str | None = None,
    files: Path | None = None,
) -> int:
    """Run every check the spider declares, one line each on `out`: 0 if all pass, else 1."""
    runner = _Runner(spider, settings, out, base=base, files=files)
    return asyncio.run(runner.run())


class _Runner:
    """Runs a spider's checks one after another through one OnePage."""

    def __init__(
        self,
        spider: Spider,
        settings: Settings,
        out: TextIO,
        *,
        base: str | None,
        files: Path | None,
    ) -> None:
        self.spider = spider
        self.settings = settings
        self.out = out
        self.start = base or settings.start_url or next(iter(spider.start_urls), None)
        self.folder = files if files is not None else _module_folder(spider)
        self.files_given = files is not None

    async def run(self) -> int:
        checks = declared_checks(type(self.spider))
        if not checks:
            self._say(f"no checks declared by spider {self._name()!r}")
            return 0
        failed = 0
        async with OnePage(self.settings, self.spider) as page:
            for callback, declared in checks:
                problems, summary = await self._run_one(page, callback, declared)
                failed += bool(problems)
                verdict = "FAIL" if problems else "PASS"
                detail = "; ".join(problems) if problems else summary
                self._say(f"{verdict} {self._name()}.{callback} {declared.label}: {detail}")
        return 1 if failed else 0

    async def _run_one(
        self, page: OnePage, callback: str, declared: Check
    ) -> tuple[list[str], str]:
        """(what is wrong, empty if nothing; a summary of what the callback made)."""
        response = await self._response(page, callback, declared)
        if isinstance(response, str):
            return [response], ""
        if response.status >= 400:
            return [f"HTTP {response.status} from {response.url}"], ""
        result = await page.parse(response, callback)
        return judge(declared, result), _summary(result)

    async def _response(self, page: OnePage, callback: str, declared: Check) -> Response | str:
        """The check's page, or why there is none."""
        url = self._url(declared.url)
        if url is None:
            return "a relative URL, and the spider has no start URL (set START_URL)"
        problem = check_url(url)
        if problem:
            return f"bad URL {url!r}: {problem}"
        request = Request(url, callback=getattr(self.spider, callback), meta=declared.meta)
        if declared.file is not None:
            return self._saved(request, declared.file)
        try:
            return await page.fetch(request)
        except FetchError as exc:
            return f"cannot fetch {url}: {exc.reason}"

    def _url(self, url: str) -> str | None:
        """The check's URL made absolute against the start URL (None if it cannot be)."""
        if urlsplit(url).scheme:
            return url
        return urljoin(self.start, url) if self.start else None

    def _saved(self, request: Request, file: str) -> Response | str:
        path = self.folder / file
        try:
            body = path.read_bytes()
        except OSError as exc:
            hint = "" if self.files_given else " (give its folder with --files)"
            return f"cannot read saved page {path}: {exc.strerror}{hint}"
        kind = mimetypes.guess_type(path.name)[0] or "text/html"
        return Response(request.url, 200, {"Content-Type": kind}, body, request)

    def _name(self) -> str:
        return self.spider.name or type(self.spider).__name__

    def _say(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()


def judge(declared: Check, result: PageResult) -> list[str]:
    """What is wrong with a callback's result against its check (empty: it passes)."""
    problems = [result.error] if result.error else []
    problems += _count_problem("item", declared.items, len(result.items))
    problems += _count_problem("request", declared.requests, len(result.requests))
    problems += _field_problems(declared.fields, result.items)
    return problems


def _count_problem(noun: str, bounds: Bounds | None, got: int) -> list[str]:
    if bounds is None:
        return []
    low, high = bounds
    if low <= got and (high is None or got <= high):
        return []
    return [f"expected {_expected(noun, low, high)}, got {got}"]


def _expected(noun: str, low: int, high: int | None) -> str:
    if high is None:
        return f"at least {low} {_plural(noun, low)}"
    if low == high:
        return f"{low} {_plural(noun, low)}"
    if low == 0:
        return f"at most {high} {_plural(noun, high)}"
    return f"{low} to {high} {noun}s"


def _field_problems(fields: tuple[str, ...], items: list[Item]) -> list[str]:
    problems = []
    for name in fields:
        lacking = sum(1 for item in items if item.get(name) in (None, ""))
        if lacking:
            problems.append(f"field {name!r} missing or empty in {lacking} of {len(items)} items")
    return problems


def _summary(result: PageResult) -> str:
    items, requests = len(result.items), len(result.requests)
    return f"{items} {_plural('item', items)}, {requests} {_plural('request', requests)}"


def _plural(noun: str, count: int) -> str:
    return noun if count == 1 else noun + "s"


def _module_folder(spider: Spider) -> Path:
    try:
        return Path(inspect.getfile(type(spider))).resolve().parent
    except (TypeError, OSError):  # defined at a prompt: no file
        return Path.cwd()
