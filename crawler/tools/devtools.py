"""The spider author's commands for one page: fetch, parse, new, cache clear.

Pages go through the crawl's own stages (`OnePage`: the Fetcher with robots.txt, the
Parser); `parse --db` stores through the crawl's own LocalFrontier admission and Store, so
what it leaves is a crawl database that `crawler crawl` can resume.
"""

from __future__ import annotations

import json
import keyword
import re
from contextlib import AsyncExitStack
from pathlib import Path
from typing import BinaryIO, TextIO
from urllib.parse import urlsplit

from crawler.errors import FetchError, SpiderError, UsageError
from crawler.frontier import LocalFrontier
from crawler.http import PageResult, Request
from crawler.settings import Settings
from crawler.spider import Spider
from crawler.storage.sqlite import Store
from crawler.tools.page import OnePage
from crawler.urls import check_url


async def fetch_page(url: str, settings: Settings, out: BinaryIO, *, headers: bool) -> int:
    """Print a page's body (or its status and headers); 0 if it answered below 400."""
    _check(url)
    async with OnePage(settings) as page:
        try:
            response = await page.fetch(url)
        except FetchError as exc:
            raise UsageError(f"{url}: {exc.reason}") from None
    if headers:
        lines = [f"{response.status} {response.url}"]
        lines += [f"{name}: {value}" for name, value in response.headers.items()]
        out.write(("\n".join(lines) + "\n").encode())
    else:
        out.write(response.body)
    out.flush()
    return 0 if response.status < 400 else 1


async def parse_pages(
    url: str,
    spider: Spider,
    settings: Settings,
    out: TextIO,
    *,
    callback: str | None = None,
    depth: int = 1,
    db: Path | None = None,
) -> int:
    """Run a callback on a page and print its items and requests, following the requests
    `depth` - 1 levels further; with `db`, store it all as a crawl. 1 if a page failed."""
    _check(url)
    if depth < 1:
        raise UsageError(f"--depth {depth}: expected 1 or more")
    failed = False
    async with AsyncExitStack() as stack:
        page = await stack.enter_async_context(OnePage(settings, spider))
        store = await stack.enter_async_context(Store(db, spider.name)) if db else None
        frontier = LocalFrontier(settings, spider.allowed_domains)
        try:
            first = Request(url, callback=page.parser.callback(callback or "parse"))
        except SpiderError as exc:
            raise UsageError(str(exc)) from None
        level = await _admit(frontier, store, [first], None)
        for _ in range(depth):
            following: list[Request] = []
            for request in level:
                result = await _one(page, request)
                failed |= bool(result.error)
                admission = frontier.admit(result.requests, request)
                _print_page(result, out)
                result.requests, result.dropped = admission.accepted, admission.dropped
                new = {r.key for r in admission.accepted}
                if store is not None:
                    new = await store.commit_pages([result])
                following += [r for r in admission.accepted if r.key in new]
            level = following
    return 1 if failed else 0


async def _admit(
    frontier: LocalFrontier, store: Store | None, requests: list[Request], parent: Request | None
) -> list[Request]:
    if store is not None:
        stored = await store.load()
        frontier.restore(stored.next_key, stored.pages_started, stored.queued)
    admission = frontier.admit(requests, parent)
    if store is not None:
        new = await store.add_requests(admission.accepted, admission.dropped)
        if not new:
            raise UsageError(f"{store.path} has {requests[0].url} already")
    return admission.accepted


async def _one(page: OnePage, request: Request) -> PageResult:
    try:
        response = await page.fetch(request)
    except FetchError as exc:
        return PageResult(request, attempts=exc.attempts, error=exc.reason)
    result = await page.parse(response)
    result.request = request  # the page stored is the one asked for, not its last hop
    return result


def _print_page(result: PageResult, out: TextIO) -> None:
    request = result.request
    outcome = result.error or f"{len(result.items)} items, {len(result.requests)} requests"
    out.write(f"# {request.url} ({result.status or '-'}, depth {request.depth}): {outcome}\n")
    for item in result.items:
        out.write(json.dumps(item, ensure_ascii=False, default=str) + "\n")
    for new in result.requests:
        name = getattr(new.callback, "__name__", "parse")
        out.write(f"-> {new.method} {new.url} {name}\n")
    out.flush()


def _check(url: str) -> None:
    problem = check_url(url)
    if problem:
        raise UsageError(f"{url!r}: {problem}")


_TEMPLATE = '''"""{title}: a spider made by `crawler new`. Run it: crawler crawl {file}"""

from crawler import DropItem, Spider


class CleanTitles:
    """An item pipeline: every item passes through process_item (sync or async) after
    the callback and before it is stored. Return the item (changed or not) to keep it;
    return None or raise DropItem("reason") to drop it (`crawler status` counts drops by
    reason). Optional: open(crawl) and close(crawl), around each run."""

    def process_item(self, item, response):
        if not item["title"]:
            raise DropItem("no title")
        item["title"] = " ".join(item["title"].split())
        return item


class AcceptEnglish:
    """A middleware: process_request(request) runs before each fetch; return the request
    (changed: headers, auth, a signature) or None to skip the page. Optional:
    process_response(request, response) and process_error(request, error) after it."""

    def process_request(self, request):
        return request.replace(headers={{**(request.headers or {{}}), "Accept-Language": "en"}})


class {cls}(Spider):
    """Stores every page's title and follows the links within {domain}."""

    name = "{name}"
    start_urls = ["{url}"]
    allowed_domains = ["{domain}"]
    custom_settings = {{
        "PER_HOST": 4,
        "PIPELINES": [CleanTitles],  # in order; or -s PIPELINES=module:Class,...
        "MIDDLEWARES": [AcceptEnglish],  # in order; or -s MIDDLEWARES=module:Class,...
    }}

    def parse(self, response):
        title = response.css_first("title")
        yield {{"url": response.url, "title": title.text(strip=True) if title else None}}
        for link in response.css("a[href]"):
            yield response.follow(link, callback=self.parse)
'''


def new_spider(name: str, url: str | None, folder: Path) -> Path:
    """Write `<name>.py`, a spider that runs as it is; never overwrites a file."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) or keyword.iskeyword(name):
        raise UsageError(f"{name!r}: a spider name is a Python identifier, like my_site")
    url = url or "http://quotes.toscrape.com/"
    problem = check_url(url)
    if problem:
        raise UsageError(f"{url!r}: {problem}")
    path = folder / f"{name}.py"
    if path.exists():
        raise UsageError(f"{path} exists; choose another name or remove it")
    domain = urlsplit(url).hostname or ""
    cls = "".join(part.capitalize() for part in name.split("_") if part) + "Spider"
    text = _TEMPLATE.format(
        title=name, file=path.name, cls=cls, name=name, url=url, domain=domain.lower()
    )
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{path}: cannot write ({exc.strerror})") from None
    return path
