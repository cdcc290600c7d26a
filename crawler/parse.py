"""Response -> PageResult: runs the spider's callback (or errback) and sorts what it yields.

A redirect (a 3xx with a Location) runs no callback: its PageResult's one request is
the next hop (`redirect_request`), which the frontier admits like any other. Nor does a
304 Not Modified (the answer to a refresh's conditional GET): the store keeps the page's
items as they were.

A callback may be a plain function, a coroutine, a generator or an async generator,
and may yield or return dicts or dataclass instances (items), Requests, or None. An
exception in it is recorded against the page; what it yielded before the exception is
kept. Then the items go through the item pipelines, and typed items are checked
(`crawler.items`), so the page's result holds exactly the items to store.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
from collections.abc import AsyncIterator, Iterable
from typing import Any, NoReturn

from crawler.errors import DropItem, FetchError, SpiderError
from crawler.hooks import HookError, Pipelines, record_drop
from crawler.http import (
    NOT_MODIFIED,
    REDIRECTS,
    Callback,
    PageResult,
    Request,
    Response,
    redirect_request,
)
from crawler.items import to_record
from crawler.spider import Spider

log = logging.getLogger(__name__)

_NO_CALLBACK = REDIRECTS | {NOT_MODIFIED}  # answers that are not a page to parse


class Parser:
    """Runs one spider's callbacks, then its item pipelines."""

    def __init__(self, spider: Spider, pipelines: Pipelines | None = None) -> None:
        self.spider = spider
        self.pipelines = pipelines if pipelines is not None else Pipelines(())
        self.item_type: type | None = getattr(spider, "item_type", None)
        self._finish = bool(self.pipelines.process_item) or self.item_type is not None

    async def parse(
        self, request: Request, outcome: Response | FetchError, attempts: int
    ) -> PageResult:
        """The page's items and new requests, or the error it ended with; for a redirect,
        its next hop."""
        if isinstance(outcome, FetchError):
            result = PageResult(request, status=outcome.status, attempts=outcome.attempts)
            result.error = outcome.reason
            if outcome.response is not None:
                result.url, result.size = outcome.response.url, len(outcome.response.body)
            callback = request.errback
            argument: Any = outcome
        else:
            if outcome.status in _NO_CALLBACK:  # the one check an ordinary page pays
                if outcome.status == NOT_MODIFIED:
                    return self._not_modified(request, outcome, attempts)
                try:
                    hop = redirect_request(outcome)
                except FetchError as exc:  # TooManyRedirects: the page fails, as any does
                    exc.attempts = attempts
                    return await self.parse(request, exc, attempts)
                if hop is not None:
                    return self._redirected(request, outcome, attempts, hop)
            result = PageResult(request, outcome.status, outcome.url, len(outcome.body), attempts)
            headers = outcome.headers  # validators, for a later --refresh
            result.etag, result.last_modified = headers.get("ETag"), headers.get("Last-Modified")
            callback = request.callback or self.spider.parse
            argument = outcome
        if callback is not None:
            try:
                await self._run(callback, argument, result)
            except Exception as exc:  # a spider bug is data about the page, not a crash
                name = getattr(callback, "__name__", "callback")
                result.error = f"{type(exc).__name__} in {name}"
                result.error_text = str(exc)
                log.warning("%s on %s: %s", result.error, request.url, exc, exc_info=exc)
        if (self._finish or result.typed) and result.items:
            page = outcome.response if isinstance(outcome, FetchError) else outcome
            await self._finish_items(result, page)
        return result

    async def _finish_items(self, result: PageResult, response: Response | None) -> None:
        """Each item through the pipelines, then checked and turned into what is stored."""
        kept: list[Any] = []
        types: list[str | None] = []
        pipelines = self.pipelines
        for item in result.items:
            if pipelines.process_item:
                try:
                    item, reason = await pipelines.item(item, response)
                except HookError as exc:  # recorded like a callback's exception
                    result.error = exc.kind
                    log.warning("%s on %s", exc, result.request.url, exc_info=exc.__cause__)
                    continue
                if reason is not None:
                    record_drop(result, item, reason)
                    continue
            try:
                name, data = to_record(item, self.item_type)
            except DropItem as exc:
                record_drop(result, item, str(exc))
                continue
            kept.append(data)
            types.append(name)
        result.items = kept
        result.types = types if any(types) else None

    @staticmethod
    def _redirected(
        request: Request, response: Response, attempts: int, hop: Request
    ) -> PageResult:
        """The page of a redirect: no callback runs, its one request is the next hop."""
        result = PageResult(request, response.status, response.url, len(response.body), attempts)
        result.requests.append(hop)
        result.redirected = True
        return result

    @staticmethod
    def _not_modified(request: Request, response: Response, attempts: int) -> PageResult:
        """The page of a 304: no callback runs, no item, no request; the store keeps
        what the page held (a refresh) or stores it empty (any other request)."""
        result = PageResult(request, response.status, response.url, 0, attempts)
        headers = response.headers
        result.etag, result.last_modified = headers.get("ETag"), headers.get("Last-Modified")
        result.not_modified = True
        return result

    async def _run(self, callback: Callback, argument: Any, result: PageResult) -> None:
        produced = callback(argument)
        if inspect.isawaitable(produced):
            produced = await produced
        if produced is None:
            return
        if isinstance(produced, dict | Request) or dataclasses.is_dataclass(produced):
            self._take(produced, result)
        elif inspect.isasyncgen(produced):
            await self._take_async(produced, result)
        elif isinstance(produced, Iterable):
            spider, requests, take = self.spider, result.requests, self._take
            for output in produced:
                # A link to one of the spider's own methods, the common output, passes
                # check_request's rule here inline; anything else goes through _take.
                if type(output) is Request and output.errback is None:
                    method = output.callback
                    if method is None or getattr(method, "__self__", None) is spider:
                        requests.append(output)
                        continue
                take(output, result)
        else:
            raise SpiderError(f"callback returned {type(produced).__name__}")

    async def _take_async(self, outputs: AsyncIterator[Any], result: PageResult) -> None:
        async for output in outputs:
            self._take(output, result)

    def _take(self, output: Any, result: PageResult) -> None:
        if isinstance(output, Request):  # first: links outnumber items
            self.check_request(output)
            result.requests.append(output)
        elif isinstance(output, dict):
            result.items.append(output)
        elif dataclasses.is_dataclass(output) and not isinstance(output, type):
            result.items.append(output)  # type: ignore[arg-type]  # a dict once checked
            result.typed = True
        elif output is not None:
            raise SpiderError(
                f"callback yielded {type(output).__name__}, not a dict, a dataclass or a Request"
            )

    def check_request(self, request: Request) -> None:
        """A request can be stored only if its callbacks are this spider's methods."""
        spider = self.spider
        callback, errback = request.callback, request.errback
        if callback is not None and getattr(callback, "__self__", None) is not spider:
            self._foreign(callback)
        if errback is not None and getattr(errback, "__self__", None) is not spider:
            self._foreign(errback)

    @staticmethod
    def _foreign(callback: Callback) -> NoReturn:
        name = getattr(callback, "__qualname__", repr(callback))
        raise SpiderError(
            f"callback {name} is not a method of the spider: a stored crawl could not find it again"
        )

    def callback(self, name: str | None) -> Callback | None:
        """The spider's method called `name` (a stored request's callback)."""
        if name is None:
            return None
        method = getattr(self.spider, name, None)
        if not callable(method):
            raise SpiderError(f"spider {self.spider.name!r} has no method {name!r}")
        return method  # type: ignore[no-any-return]
