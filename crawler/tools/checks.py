"""`crawler check`: runs the checks a spider declares (`crawler.checks`) through the
crawl's own fetcher and parser (`crawler.tools.page.OnePage`), one line per check."""

from __future__ import annotations

import asyncio
import inspect
import mimetypes
from pathlib import Path
from typing import TextIO
from urllib.parse import urlsplit

from crawler.checks import Bounds, Check, declared_checks
from crawler.errors import FetchError
from crawler.http import Item, PageResult, Request, Response
from crawler.settings import Settings
from crawler.spider import Spider
from crawler.tools.page import OnePage
from crawler.urls import check_url, urljoin


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
